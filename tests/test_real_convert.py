"""Converters on the real shared data (skipped when ../shared/data is absent).

- Sartorius train.csv -> COCO must match coco_reference.json (converted independently by public
  Kaggle solutions) instance by instance.
- DSB2018 stage1_train mask folders -> 332 images, 14,312 nuclei.
"""

import json
from collections import defaultdict
from pathlib import Path

import pytest

from cell_seg.data.convert import convert_kaggle, convert_masks
from cell_seg.data.split import split_coco

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

pytestmark = [
    pytest.mark.real_data,
    pytest.mark.skipif(not SHARED.exists(), reason="shared real data (../shared/data) not present"),
]


def test_kaggle_matches_reference_instance_by_instance():
    sartorius = SHARED / "sartorius"
    coco, stats = convert_kaggle(sartorius / "train.csv", sartorius / "train")
    reference = json.loads((sartorius / "coco_reference.json").read_text())
    assert (stats.images, stats.instances, stats.skipped_rows, stats.empty_images) == (440, 35228, 0, 0)
    assert {i["image_class"] for i in coco["images"]} == {"astro", "cort", "shsy5y"}

    keys = {image["id"]: image["key"] for image in coco["images"]}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    reference_names = {c["id"]: c["name"] for c in reference["categories"]}
    ours, theirs = defaultdict(list), defaultdict(list)
    for annotation in coco["annotations"]:
        ours[keys[annotation["image_id"]]].append(annotation)
    for annotation in reference["annotations"]:
        theirs[annotation["image_id"]].append(annotation)
    assert len(theirs) == 439 and set(theirs) <= set(ours)

    mismatches = []
    for key, expected in theirs.items():
        got = ours[key]
        if len(got) != len(expected):
            mismatches.append((key, "count", len(got), len(expected)))
            continue
        for mine, other in zip(got, expected):
            same = (
                mine["segmentation"]["counts"] == other["segmentation"]["counts"]
                and mine["segmentation"]["size"] == other["segmentation"]["size"]
                and names[mine["category_id"]] == reference_names[other["category_id"]]
                and mine["area"] == other["area"]
                and mine["bbox"] == other["bbox"]
            )
            if not same:
                mismatches.append((key, mine["id"]))
    assert mismatches == []

    extra = next(image for image in coco["images"] if image["key"] == "0030fd0e6378")
    assert extra["sample_id"] and extra["plate_time"]  # the one image with all columns filled
    train, val = split_coco(coco, 0.2, seed=0, group="sample_id")
    assert len(train["images"]) + len(val["images"]) == 440


def test_masks_converter_on_dsb2018():
    coco, stats = convert_masks(SHARED / "dsb2018" / "stage1_train")
    assert (stats.images, stats.instances) == (332, 14312)
    assert stats.skipped_rows == stats.skipped_images == 0
    assert {image["modality"] for image in coco["images"]} == {"fluorescence", "histology", "brightfield"}
