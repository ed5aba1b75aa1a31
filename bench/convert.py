"""Benchmark: Sartorius train.csv to COCO, rows per second, against a per-row full-mask baseline.

Measured in the same run:
- project: `cell_seg.data.convert.convert_kaggle` end to end (CSV read, every image decoded and
  checked, RLE to COCO through sorted indices, area/bbox, overlap statistics), all rows; and its
  RLE-to-COCO step alone (`rle_to_coco` + `coco_area_bbox`) over all rows.
- baseline ("per-row full mask"): what many Kaggle notebooks do, i.e. for each row allocate a
  520 x 704 mask, fill it with a Python loop over the runs, then `pycocotools.mask.encode`
  + area + bbox. It runs on a subset of rows (--baseline-rows) and is extrapolated per row.

Usage:
    python -m bench.convert [--data ../shared/data] [--baseline-rows 3000]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from bench.common import DEFAULT_DATA
from cell_seg.data import rle as rle_codec
from cell_seg.data.convert import convert_kaggle


def baseline_row(annotation, height, width):
    """Per-row baseline: full mask filled run by run in Python, then pycocotools encode."""
    values = [int(v) for v in annotation.split()]
    flat = np.zeros(height * width, np.uint8)
    for start, length in zip(values[0::2], values[1::2]):
        flat[start - 1 : start - 1 + length] = 1
    mask = np.asfortranarray(flat.reshape(height, width))
    encoded = mask_utils.encode(mask)
    return encoded, mask_utils.area(encoded), mask_utils.toBbox(encoded)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="shared data folder")
    parser.add_argument("--baseline-rows", type=int, default=3000, help="rows the baseline converts (extrapolated)")
    args = parser.parse_args(argv)
    folder = Path(args.data) / "sartorius"
    csv, images = folder / "train.csv", folder / "train"
    if not csv.is_file() or not images.is_dir():
        print(f"{csv} or {images} not found: benchmark skipped")
        return 0
    import pandas as pd

    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    rows = table["annotation"].tolist()
    shapes = list(zip(table["height"].astype(int), table["width"].astype(int)))
    print(f"data: {csv} ({len(rows)} rows, {table['id'].nunique()} images)")

    start = time.perf_counter()
    coco, stats = convert_kaggle(csv, images)
    end_to_end = time.perf_counter() - start
    print(f"project convert_kaggle end to end: {end_to_end:.2f} s, {len(rows) / end_to_end:,.0f} rows/s")
    print(f"  {stats.summary()}")

    start = time.perf_counter()
    for annotation, shape in zip(rows, shapes):
        rle_codec.coco_area_bbox(rle_codec.rle_to_coco(annotation, shape, order="row"))
    project_rle = time.perf_counter() - start
    print(f"project RLE-to-COCO step alone: {project_rle:.2f} s, {len(rows) / project_rle:,.0f} rows/s")

    subset = np.linspace(0, len(rows) - 1, min(args.baseline_rows, len(rows))).round().astype(int)
    start = time.perf_counter()
    for i in subset:
        baseline_row(rows[i], *shapes[i])
    baseline = time.perf_counter() - start
    per_row = baseline / len(subset)
    print(
        f"baseline per-row full mask + pycocotools.encode: {len(subset)} of {len(rows)} rows (evenly spaced) in "
        f"{baseline:.2f} s, {1 / per_row:,.0f} rows/s; extrapolated to all rows: {per_row * len(rows):.1f} s"
    )
    check = [
        rle_codec.rle_to_coco(rows[i], shapes[i])["counts"] == baseline_row(rows[i], *shapes[i])[0]["counts"].decode()
        for i in subset[:200]
    ]
    print(f"same COCO counts as the baseline on {len(check)} checked rows: {all(check)}")
    print(f"ratio RLE-to-COCO step: {per_row * len(rows) / project_rle:.1f}x faster than the baseline")
    print(
        "ratio end to end (project including image checks, vs baseline RLE work only): "
        f"{per_row * len(rows) / end_to_end:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
