"""Synthetic phase-contrast-like data (cell_seg.data.synthetic) and its writers."""

import csv

import numpy as np

from cell_seg.data import labels as label_ops
from cell_seg.data import rle as rle_codec
from cell_seg.data.dataset import CocoDataset
from cell_seg.data.synthetic import (
    KAGGLE_COLUMNS,
    SYNTHETIC_CATEGORIES,
    _generate,
    main,
    make_synthetic,
    write_synthetic_coco,
    write_synthetic_kaggle,
)
from cell_seg.files import read_image, read_json

SHAPE = (64, 80)


def test_deterministic_per_seed_and_image():
    first = make_synthetic(3, shape=SHAPE, seed=7)
    again = make_synthetic(2, shape=SHAPE, seed=7)
    for (k1, i1, l1, c1), (k2, i2, l2, c2) in zip(first, again):
        assert k1 == k2
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(l1, l2)
        np.testing.assert_array_equal(c1, c2)
    other = make_synthetic(1, shape=SHAPE, seed=8)[0]
    assert not np.array_equal(other[1], first[0][1])
    assert len({key for key, *_ in first}) == 3


def test_outputs_are_consistent():
    items = make_synthetic(8, shape=SHAPE, seed=1, cells=(5, 12))
    seen_types = set()
    for key, image, label_map, classes in items:
        assert image.dtype == np.uint8 and image.shape == SHAPE
        assert label_map.dtype == np.int32 and label_map.shape == SHAPE
        assert classes.dtype == np.int32 and classes[0] == -1
        n = len(classes) - 1
        assert 1 <= n <= 12
        assert set(np.unique(label_map)) <= set(range(n + 1))
        assert len(set(classes[1:].tolist())) == 1  # one cell type per image
        seen_types.add(int(classes[1]))
        # cells look like phase contrast: bright halo just outside, darker inside
        inside = label_map > 0
        assert image[inside].mean() < image[~inside].mean()
    assert len(seen_types) >= 2


def test_ground_truth_overlaps_a_few_pixels():
    overlapping, covered = 0, 0
    for _, _, index_arrays, _, _ in _generate(10, SHAPE, 0, (15, 30)):
        _, contested = label_ops.paint_instances(index_arrays, SHAPE, order="row")
        overlapping += contested
        covered += sum(len(a) for a in index_arrays)
    assert overlapping > 0
    assert overlapping < 0.03 * covered


def test_coco_writer_reads_back_as_made(tmp_path):
    path = write_synthetic_coco(tmp_path, n_images=3, shape=SHAPE, seed=2, cells=(4, 10))
    coco = read_json(path)
    assert [image["id"] for image in coco["images"]] == [1, 2, 3]
    assert [c["name"] for c in coco["categories"]] == list(SYNTHETIC_CATEGORIES)
    annotation = coco["annotations"][0]
    assert isinstance(annotation["segmentation"]["counts"], str)
    assert {"area", "bbox", "iscrowd", "category_id"} <= set(annotation)
    dataset = CocoDataset(path, tmp_path / "images")
    for image_id, (key, image, label_map, classes) in zip(
        dataset.image_ids, make_synthetic(3, shape=SHAPE, seed=2, cells=(4, 10))
    ):
        assert dataset.key(image_id) == key
        assert dataset.image_class(image_id) == SYNTHETIC_CATEGORIES[classes[1]]
        np.testing.assert_array_equal(dataset.load_image(image_id), image)
        loaded, loaded_classes = dataset.load_labels(image_id)
        np.testing.assert_array_equal(loaded, label_map)
        np.testing.assert_array_equal(loaded_classes, classes)


def test_kaggle_writer_layout(tmp_path):
    path = write_synthetic_kaggle(tmp_path, n_images=2, shape=SHAPE, seed=3, cells=(4, 8))
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == KAGGLE_COLUMNS
    made = make_synthetic(2, shape=SHAPE, seed=3, cells=(4, 8))
    for key, image, label_map, classes in made:
        own = [row for row in rows[1:] if row[0] == key]
        assert len(own) == len(classes) - 1
        assert all(row[2:4] == [str(SHAPE[1]), str(SHAPE[0])] and row[5:] == ["", "", "", ""] for row in own)
        assert own[0][4] == SYNTHETIC_CATEGORIES[classes[1]]
        arrays = [rle_codec.rle_to_indices(row[1], SHAPE, "row") for row in own]
        painted, _ = label_ops.paint_instances(arrays, SHAPE, order="row")
        np.testing.assert_array_equal(painted, label_map)
        np.testing.assert_array_equal(read_image(tmp_path / "train" / f"{key}.png"), image)


def test_cli(tmp_path):
    assert main(["--out", str(tmp_path), "--n", "2", "--format", "coco", "--height", "32", "--width", "40"]) == 0
    coco = read_json(tmp_path / "coco.json")
    assert len(coco["images"]) == 2 and coco["images"][0]["height"] == 32
    assert (tmp_path / "images" / f"{coco['images'][1]['key']}.png").exists()
