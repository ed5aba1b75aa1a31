"""Regenerate the embedded demo set `cell_seg/sample_data/` from DSB2018 stage1_train (CC0).

Selection rule (fixed, no randomness): convert every sample folder with the project's own
`masks` converter, sort ids, group them by `modality` (see `cell_seg.data.convert.image_modality`)
and take evenly spaced ids (numpy.linspace over the sorted candidates) from each group:
12 fluorescence images with both sides <= 520 px, 6 histology (H&E-like colour) images and
2 brightfield images (the only brightfield size in the set is 1024 x 1024).

Images are written as `images/<id>.png` (grayscale when the three colour channels are equal,
RGB otherwise; alpha dropped) and the annotations as `dsb2018_sample.json`, whose `file_name`
fields ("<id>.png") are relative to the `images` folder, as for every converter's output
(`file_name` relative to the folder passed as `--images`).

Usage:
    python -m bench.make_sample_data [--data ../shared/data] [--out cell_seg/sample_data]
"""

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from bench.common import DEFAULT_DATA, REPO
from cell_seg.data.convert import convert_masks
from cell_seg.files import read_image, write_json_atomic

PICKS = (("fluorescence", 12, 520), ("histology", 6, 520), ("brightfield", 2, None))


def select_ids(images, picks=PICKS):
    """Ids chosen by the fixed rule from COCO image records (with `key`, `modality`, size)."""
    chosen = []
    for modality, count, max_side in picks:
        candidates = sorted(
            image["key"]
            for image in images
            if image.get("modality") == modality
            and (max_side is None or max(image["height"], image["width"]) <= max_side)
        )
        if len(candidates) < count:
            raise SystemExit(f"only {len(candidates)} {modality} images, {count} wanted")
        chosen += [candidates[i] for i in np.linspace(0, len(candidates) - 1, count).round().astype(int)]
    return sorted(chosen)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="shared data folder")
    parser.add_argument("--out", default=str(REPO / "cell_seg" / "sample_data"), help="sample_data folder to write")
    args = parser.parse_args(argv)
    root = Path(args.data) / "dsb2018" / "stage1_train"
    if not root.is_dir():
        print(f"{root} not found: nothing to do")
        return 0
    out = Path(args.out)

    full, _ = convert_masks(root, progress=True)
    ids = select_ids(full["images"])
    coco, stats = convert_masks(root, ids=ids)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for stale in (out / "images").glob("*.png"):
        if stale.stem not in ids:
            stale.unlink()
    for image in coco["images"]:
        pixels = read_image(root / image["file_name"])
        if pixels.ndim == 3 and (pixels == pixels[..., :1]).all():
            pixels = pixels[..., 0]
        elif pixels.ndim == 3:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
        target = out / "images" / f"{image['key']}.png"
        cv2.imwrite(str(target), pixels, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        image["file_name"] = f"{image['key']}.png"
    coco["info"] = {
        "description": "DSB2018 (BBBC038) stage1_train sample, CC0; made by bench/make_sample_data.py",
        "converter": "masks",
        "url": "https://bbbc.broadinstitute.org/BBBC038",
    }
    write_json_atomic(coco, out / "dsb2018_sample.json")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(stats.summary(f"wrote {out / 'dsb2018_sample.json'}"))
    print(f"{len(ids)} images, {total / 1e6:.2f} MB in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
