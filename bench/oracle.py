"""Oracle benchmark: how much can a border or distance channel buy on Sartorius, given perfect maps?

For each image the "network output" is made from the ground truth itself, with the package's own
target code (`cell_seg.data.targets.build_targets`, what training fits):
- baseline `components`: foreground = union of the cells, connected components;
- `watershed + contact border`: the "border" target with `border_width` 0 (pixels whose 3x3
  neighbourhood holds another cell's label), seeds grow back over the foreground;
- `watershed + contact + k px ring`: the "border" target with `border_width` k (also a k-pixel
  inner ring of every cell, elliptic structuring element);
- `distance (t)`: the "distance" target (per-cell distance to the outline over its maximum, 0 at
  contacts); seeds are its cores above t, grown over the foreground (mode "distance").
With `--blur S` every map is blurred (Gaussian, sigma S px) before post-processing, a crude
stand-in for a network that cannot draw one-pixel lines: it shows how much of each
representation survives; give several thresholds to see the best of each.
Each is scored with the competition metric (`cell_seg.metrics.map_iou`) against the same ground
truth label map (train.csv decoded, overlaps resolved with the later cell winning), per cell
type, on a seeded subset (default 20 images per type) or on every image (--all).

Usage:
    python -m bench.oracle [--data ../shared/data] [--per-type 20] [--all] [--seed 0] [--min-area 10]
                           [--distance-thresholds 0.05 0.2 0.5] [--border-thresholds 0.5] [--blur 0]
"""

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from bench.common import DEFAULT_DATA, SARTORIUS_SHAPE
from cell_seg.data.targets import build_targets
from cell_seg.metrics import map_iou
from cell_seg.postprocess import PostprocessConfig, to_instances
from cell_seg.submission import read_sartorius_csv

CHANNELS = ["foreground", "border", "distance"]


def oracle_probs(label_map, border_width=0, blur=0.0):
    """Perfect foreground / border (with this ring width) / distance maps from the package's targets,
    blurred with a Gaussian of sigma `blur` px when `blur` > 0."""
    probs = build_targets(label_map, None, CHANNELS, 0, border_width=border_width)
    return cv2.GaussianBlur(probs, (0, 0), blur) if blur > 0 else probs


def variants(distance_thresholds, border_thresholds=(0.5,)):
    """(name, mode, border_width, postprocess overrides) of every variant, components first."""
    rows = [("components (union only)", "components", 0, {})]
    for width, name in ((0, "contact border"), (1, "contact + 1px ring"), (2, "contact + 2px ring")):
        for b in border_thresholds:
            suffix = f" (b={b:g})" if len(border_thresholds) > 1 else ""
            rows.append((f"watershed + {name}{suffix}", "watershed", width, {"border_threshold": b}))
    rows += [(f"distance (t={t:g})", "distance", 0, {"distance_threshold": t}) for t in distance_thresholds]
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="shared data root")
    parser.add_argument("--per-type", type=int, default=20, help="images per cell type in the seeded subset")
    parser.add_argument("--all", action="store_true", help="use every image instead of the subset")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset")
    parser.add_argument("--min-area", type=int, default=PostprocessConfig().min_area, help="post-processing min_area")
    parser.add_argument("--distance-thresholds", type=float, nargs="+", default=[0.05, 0.2, 0.5],
                        help="distance-mode seed thresholds to score")
    parser.add_argument("--border-thresholds", type=float, nargs="+", default=[0.5],
                        help="watershed border thresholds to score")
    parser.add_argument("--blur", type=float, default=0.0, help="Gaussian blur (sigma, px) of every map; 0 = perfect")
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
          f"post-processing {config.to_dict()}; maps blurred with sigma {args.blur:g} px")

    rows = variants(args.distance_thresholds, args.border_thresholds)
    truths, predictions, seconds = [], {row[0]: [] for row in rows}, {row[0]: 0.0 for row in rows}
    label_maps = read_sartorius_csv(csv, SARTORIUS_SHAPE, allow_overlap=True, column="annotation",
                                    ids=list(chosen.index))
    for image_id in chosen.index:
        truth = label_maps[image_id]
        truths.append(truth)
        probs_by_width = {}
        for name, mode, border_width, overrides in rows:
            if border_width not in probs_by_width:
                probs_by_width[border_width] = oracle_probs(truth, border_width, args.blur)
            probs = probs_by_width[border_width]
            start = time.perf_counter()
            label_map, _ = to_instances(probs, CHANNELS, mode=mode, config=config, **overrides)
            seconds[name] += time.perf_counter() - start
            predictions[name].append(label_map)

    classes = list(chosen.values)
    type_names = sorted(set(classes))
    n_true = sum(int(np.count_nonzero(np.bincount(m.ravel())[1:])) for m in truths)
    header = f"{'variant':42s}" + "".join(f"{t:>9s}" for t in type_names)
    header += f"{'all':>9s}{'cells found':>13s}{'ms/img':>8s}{'vs base':>9s}"
    print(header)
    print("-" * len(header))
    baseline = None
    for name, *_ in rows:
        result = map_iou(truths, predictions[name], classes=classes)
        found = sum(int(m.max()) for m in predictions[name]) / max(n_true, 1)
        baseline = result["map"] if baseline is None else baseline
        row = f"{name:42s}" + "".join(f"{result['per_class'][t]:9.3f}" for t in type_names)
        row += f"{result['map']:9.3f}{found:12.2f}x{1000 * seconds[name] / len(truths):8.1f}"
        row += f"{result['map'] / baseline:8.2f}x"
        print(row)
    print("scores: mean over images of the Sartorius metric (IoU 0.50:0.05:0.95); 'cells found' = predicted / true "
          "instances; 'vs base' = ratio to the components baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
