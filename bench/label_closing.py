"""What closing the annotations costs and gives (`data.close_labels`, `cell_seg.data.labels.close_instances`).

Training can close each instance of chosen image classes before its targets are made, so that
cells drawn as broken pieces (Sartorius astrocytes) are learnt as one piece. Scoring stays against
the annotations as drawn, so closing costs whatever the closed masks lose against them. For each
disc size this prints, per image class of the Sartorius training set (the label maps training
reads: `bench/out/sartorius.json` through `CocoDataset`, converted once when missing):
- the competition mAP of the closed masks scored against the drawn ones (1.0 = nothing lost),
- the pieces per cell before and after (4-connected / 8-connected: a thin process drawn as a
  diagonal line of pixels is one 8-connected piece but many 4-connected ones), and the area ratio,
- the time `close_instances` takes per image.

Usage:
    python -m bench.label_closing [--data ../shared/data] [--sizes 3 5 9] [--kind astro ...]
"""

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from bench.common import DEFAULT_DATA, REPO
from cell_seg.data.labels import close_instances
from cell_seg.metrics import map_iou


def pieces_per_cell(label_map, connectivity):
    """Mean number of `connectivity`-connected (4 or 8) pieces per instance."""
    ids = np.unique(label_map)[1:]
    counts = [cv2.connectedComponents((label_map == i).view(np.uint8), connectivity=connectivity)[0] - 1 for i in ids]
    return float(np.mean(counts)) if counts else 0.0


def pieces(label_maps):
    """'4-connected / 8-connected' pieces per instance, mean over the label maps."""
    return " / ".join(f"{np.mean([pieces_per_cell(m, c) for m in label_maps]):.2f}" for c in (4, 8))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (holds sartorius/)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 5, 9], help="closing disc sizes (px)")
    parser.add_argument("--kind", nargs="+", default=None, help="image classes to measure (default all)")
    args = parser.parse_args(argv)
    from bench.accuracy import convert
    from cell_seg.data.dataset import CocoDataset

    if not (Path(args.data) / "sartorius" / "train.csv").is_file():
        print(f"{args.data}/sartorius/train.csv not found: nothing to measure")
        return 0
    coco, images = convert("sartorius", Path(args.data), REPO / "bench" / "out")
    dataset = CocoDataset(str(coco), str(images))
    by_kind = {}
    for image_id in dataset.image_ids:
        by_kind.setdefault(dataset.image_class(image_id), []).append(image_id)
    print("| class | images | disc (px) | mAP of closed against drawn | pieces per cell (4 / 8), drawn | closed | area ratio | ms per image |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind in sorted(by_kind):
        if args.kind and kind not in args.kind:
            continue
        drawn = [dataset.load_labels(i)[0] for i in by_kind[kind]]
        before = pieces(drawn)
        for size in args.sizes:
            start = time.perf_counter()
            closed = [close_instances(m, size) for m in drawn]
            ms = 1000 * (time.perf_counter() - start) / len(drawn)
            score = map_iou(drawn, closed)["map"]
            after = pieces(closed)
            ratio = np.mean([(c > 0).sum() / max((d > 0).sum(), 1) for c, d in zip(closed, drawn)])
            print(f"| {kind} | {len(drawn)} | {size} | {score:.3f} | {before} | {after} | {ratio:.3f} | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
