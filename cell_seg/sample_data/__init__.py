"""Embedded demo set: 20 DSB2018 (BBBC038, CC0) images with their nuclei as COCO JSON.

`COCO_JSON` holds the annotations (compressed RLE, one category "nucleus"); its `file_name`
fields ("<id>.png") are relative to `IMAGES_DIR`, like every converter's output relative to its
`--images` folder. So `--coco cell_seg/sample_data/dsb2018_sample.json --images
cell_seg/sample_data/images` works for evaluate, and `--images cell_seg/sample_data/images` for
predict. See README.md in this folder for attribution and how it was made.

Example:
    >>> import json
    >>> from cell_seg.sample_data import COCO_JSON, IMAGES_DIR
    >>> image = json.loads(COCO_JSON.read_text())["images"][0]
    >>> (IMAGES_DIR / image["file_name"]).is_file()
    True
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent
COCO_JSON = ROOT / "dsb2018_sample.json"
IMAGES_DIR = ROOT / "images"
