"""Cross-check on real data: DSB2018's label CSV through `convert csv-rle` against the mask folders.

The 332 images of `stage1_train/` have both one PNG per nucleus and rows in the competition's
`stage1_train_labels.csv` (column-major RLE). Converting the CSV over both image folders (all 664
images) must give, on those 332, exactly the instances `convert masks` reads from the PNGs. Prints
the number of images compared, the differences (0 expected) and the time of each converter, with
the ratio (the CSV path against the mask-folder path, per image).

Usage:
    python -m bench.convert_dsb [--data ../shared/data]
"""

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared data folder")
    args = parser.parse_args(argv)
    root = Path(args.data) / "dsb2018"
    if not (root / "stage1_train_labels.csv").is_file():
        print(f"{root / 'stage1_train_labels.csv'} not found: nothing to measure", file=sys.stderr)
        return 0
    from cell_seg.data.convert import convert_csv_rle, convert_masks, instance_differences

    started = time.perf_counter()
    from_csv, csv_stats = convert_csv_rle(root / "stage1_train_labels.csv", [root / "stage1_train", root / "stage1_train_rest"],
                                          order="col", category="nucleus", progress=True)
    csv_seconds = time.perf_counter() - started
    started = time.perf_counter()
    from_masks, mask_stats = convert_masks(root / "stage1_train", progress=True)
    mask_seconds = time.perf_counter() - started
    differences = instance_differences(from_csv, from_masks)
    compared = len({i["key"] for i in from_csv["images"]} & {i["key"] for i in from_masks["images"]})
    print(f"csv-rle: {csv_stats.images} images, {csv_stats.instances} nuclei in {csv_seconds:.1f} s "
          f"({1000 * csv_seconds / csv_stats.images:.1f} ms/image)")
    print(f"masks:   {mask_stats.images} images, {mask_stats.instances} nuclei in {mask_seconds:.1f} s "
          f"({1000 * mask_seconds / mask_stats.images:.1f} ms/image)")
    print(f"per image, csv-rle takes {(csv_seconds / csv_stats.images) / (mask_seconds / mask_stats.images):.2f}x "
          f"the time of the mask folders")
    print(f"compared {compared} images with both: {len(differences)} differences")
    for key, what in differences[:10]:
        print(f"  {key}: {what}")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
