"""Benchmark: instance label map decoding per image on real Sartorius images, against an annToMask loop.

Measured in the same run, on the same images, from `coco_reference.json`:
- project: `CocoDataset.load_labels` (every compressed RLE counts string of the image decoded
  to sorted pixel indices in one numpy pass, all instances painted in one `paint_instances`
  call, overlaps counted), no cache.
- baseline ("annToMask loop"): the usual notebook code with a pycocotools `COCO` index:
  `labels = zeros; for k, ann in enumerate(anns, 1): labels[coco.annToMask(ann) > 0] = k`,
  i.e. one full 520 x 704 mask decoded and scanned per cell.
Both give the same label map (checked on every image). Reported as ms per image and the
ratio baseline / project, over a spread of images of every cell type and separately over
shsy5y images (the crowded ones, about 300 cells each).

Usage:
    python -m bench.load [--data ../shared/data] [--images 40] [--shsy5y 15] [--repeats 3]
"""

import argparse
import sys
import time

import numpy as np

from bench.common import DEFAULT_DATA, pycocotools_index, sartorius_reference


def baseline_labels(coco_index, image_id, shape):
    """Label map by decoding one full mask per annotation (later annotation wins, as the project)."""
    labels = np.zeros(shape, np.int32)
    for k, ann in enumerate(coco_index.imgToAnns[image_id], start=1):
        labels[coco_index.annToMask(ann) > 0] = k
    return labels


def time_per_image(function, image_ids, repeats):
    """Best-of-`repeats` mean milliseconds per image of `function(image_id)` over `image_ids`."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for image_id in image_ids:
            function(image_id)
        best = min(best, (time.perf_counter() - start) / len(image_ids) * 1000)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="shared data folder")
    parser.add_argument("--images", type=int, default=40, help="images of all types, evenly spaced in the file")
    parser.add_argument("--shsy5y", type=int, default=15, help="shsy5y images measured separately")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (best is kept)")
    args = parser.parse_args(argv)
    reference = sartorius_reference(args.data)
    if reference is None:
        return 0
    coco_path, coco, dataset = reference
    index = pycocotools_index(coco)
    print(f"data: {coco_path} ({len(dataset)} images, {len(coco['annotations'])} annotations)")

    ids = dataset.image_ids
    spread = [ids[i] for i in np.linspace(0, len(ids) - 1, min(args.images, len(ids))).round().astype(int)]
    shsy5y = [i for i in ids if dataset.image_class(i) == "shsy5y"][: args.shsy5y]

    def project(image_id):
        return dataset.load_labels(image_id)[0]

    def baseline(image_id):
        return baseline_labels(index, image_id, dataset.image_shape(image_id))

    for image_id in sorted(set(spread) | set(shsy5y)):
        if not np.array_equal(project(image_id), baseline(image_id)):
            print(f"label maps differ on image {image_id}")
            return 1
    print("label maps identical to the baseline on every measured image")
    stats = dict(dataset.stats)  # one build per measured image so far

    print(f"{'images':<34}{'cells/img':>10}{'project ms':>12}{'annToMask ms':>14}{'speed-up':>10}")
    for name, chosen in (("all types (evenly spaced)", spread), ("shsy5y", shsy5y)):
        if not chosen:
            continue
        cells = np.mean([dataset.n_instances(i) for i in chosen])
        ours = time_per_image(project, chosen, args.repeats)
        theirs = time_per_image(baseline, chosen, args.repeats)
        print(f"{name + f' ({len(chosen)})':<34}{cells:>10.0f}{ours:>12.2f}{theirs:>14.2f}{theirs / ours:>9.1f}x")
    print(
        f"overlaps resolved: {stats['overlapping_pixels']} pixels in {stats['images_with_overlaps']} of "
        f"{stats['label_maps_built']} label maps built; instances left empty: {stats['empty_instances']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
