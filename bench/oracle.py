"""Oracle benchmark: how much can a border channel buy on Sartorius, given perfect probabilities?

For each image the "network output" is made from the ground truth itself:
- baseline `components`: foreground = union of the cells, border = 0, connected components;
- `watershed + contact border`: border = pixels whose 3x3 neighbourhood holds two different
  cell labels (where cells touch), seeds grow back over the foreground;
- `watershed + contact + k px ring`: the border also covers a k-pixel inner ring of every cell
  (pixels whose (2k+1)x(2k+1) neighbourhood holds another label or background).
Each is scored with the competition metric (`cell_seg.metrics.map_iou`) against the same ground
truth label map (train.csv decoded, overlaps resolved with the later cell winning), per cell
type, on a seeded subset (default 20 images per type) or on every image (--all).

Usage:
    python bench/oracle.py [--data ../shared/data] [--per-type 20] [--all] [--seed 0] [--min-area 10]
"""

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cell_seg.data import labels as labels_lib  # noqa: E402
from cell_seg.data import rle as rle_codec  # noqa: E402
from cell_seg.metrics import map_iou  # noqa: E402
from cell_seg.postprocess import PostprocessConfig, to_instances  # noqa: E402

SHAPE = (520, 704)
CHANNELS = ["foreground", "border"]


def ground_truth(frame, image_id):
    """Label map of one image from its train.csv rows (later cells win overlapping pixels)."""
    annotations = frame.loc[frame["id"] == image_id, "annotation"]
    arrays = [rle_codec.rle_to_indices(a, SHAPE, "row") for a in annotations]
    label_map, _ = labels_lib.paint_instances(arrays, SHAPE, order="row")
    return label_map


def window_has_other_label(label_map, radius, ignore_background):
    """Pixels of a cell whose (2r+1)^2 window contains a different label (background counts
    unless `ignore_background`)."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    as_float = label_map.astype(np.float32)  # exact for ids < 2**24
    high = cv2.dilate(as_float, kernel)
    if ignore_background:
        low = -cv2.dilate(-np.where(label_map > 0, as_float, np.float32(np.inf)), kernel)
    else:
        low = cv2.erode(as_float, kernel)
    return (label_map > 0) & (high != low)


def oracle_probs(label_map, ring=None):
    """Foreground = union; border = contact pixels (+ a ring of `ring` px), or none."""
    foreground = (label_map > 0).astype(np.float32)
    border = np.zeros_like(foreground)
    if ring is not None:
        border = window_has_other_label(label_map, 1, ignore_background=True)
        if ring > 0:
            border |= window_has_other_label(label_map, ring, ignore_background=False)
        border = border.astype(np.float32)
    return np.stack([foreground, border], axis=-1)


VARIANTS = [
    ("components (union only)", "components", None),
    ("watershed + contact border", "watershed", 0),
    ("watershed + contact + 1px ring", "watershed", 1),
    ("watershed + contact + 2px ring", "watershed", 2),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="shared data root")
    parser.add_argument("--per-type", type=int, default=20, help="images per cell type in the seeded subset")
    parser.add_argument("--all", action="store_true", help="use every image instead of the subset")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset")
    parser.add_argument("--min-area", type=int, default=PostprocessConfig().min_area, help="post-processing min_area")
    args = parser.parse_args(argv)

    csv = Path(args.data) / "sartorius" / "train.csv"
    if not csv.is_file():
        print(f"{csv} not found: nothing to measure (the oracle needs the Sartorius ground truth)")
        return 0
    frame = pd.read_csv(csv, usecols=["id", "annotation", "cell_type"])
    types = frame.groupby("id")["cell_type"].first()
    if args.all:
        chosen = types
    else:
        rng = np.random.default_rng(args.seed)
        chosen = pd.concat(
            [group.iloc[np.sort(rng.permutation(len(group))[: args.per_type])] for _, group in types.groupby(types)]
        )
    config = PostprocessConfig(min_area=args.min_area)
    print(f"{len(chosen)} images ({', '.join(f'{t} {n}' for t, n in chosen.value_counts().sort_index().items())}); "
          f"post-processing {config.to_dict()}")

    truths, predictions, seconds = [], {name: [] for name, _, _ in VARIANTS}, {name: 0.0 for name, _, _ in VARIANTS}
    for image_id in chosen.index:
        truth = ground_truth(frame, image_id)
        truths.append(truth)
        for name, mode, ring in VARIANTS:
            probs = oracle_probs(truth, ring)
            start = time.perf_counter()
            label_map, _ = to_instances(probs, CHANNELS, mode=mode, config=config)
            seconds[name] += time.perf_counter() - start
            predictions[name].append(label_map)

    classes = list(chosen.values)
    type_names = sorted(set(classes))
    n_true = sum(int(np.count_nonzero(np.bincount(m.ravel())[1:])) for m in truths)
    header = f"{'variant':34s}" + "".join(f"{t:>9s}" for t in type_names)
    header += f"{'all':>9s}{'cells found':>13s}{'ms/img':>8s}{'vs base':>9s}"
    print(header)
    print("-" * len(header))
    baseline = None
    for name, _, _ in VARIANTS:
        result = map_iou(truths, predictions[name], classes=classes)
        found = sum(int(m.max()) for m in predictions[name]) / max(n_true, 1)
        baseline = result["map"] if baseline is None else baseline
        row = f"{name:34s}" + "".join(f"{result['per_class'][t]:9.3f}" for t in type_names)
        row += f"{result['map']:9.3f}{found:12.2f}x{1000 * seconds[name] / len(truths):8.1f}"
        row += f"{result['map'] / baseline:8.2f}x"
        print(row)
    print("scores: mean over images of the Sartorius metric (IoU 0.50:0.05:0.95); 'cells found' = predicted / true "
          "instances; 'vs base' = ratio to the components baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
