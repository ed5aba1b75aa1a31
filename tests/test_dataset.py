"""COCO reader (cell_seg.data.dataset) on tiny COCO dicts made in code."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from cell_seg.data.dataset import CocoDataset, decode_counts_batch
from cell_seg.data.labels import label_map_to_coco
from cell_seg.data.rle import coco_area_bbox, coco_to_indices, indices_to_coco
from cell_seg.errors import DataError

from conftest import SHARED_DATA, write_png


def _annotation(ann_id, image_id, category_id, rle):
    area, bbox = coco_area_bbox(rle)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": rle,
        "area": area,
        "bbox": bbox,
        "iscrowd": 0,
    }


def _coco_from_label_maps(label_maps, classes, image_ids=None, tmp_path=None):
    """COCO dict of label maps (instances in label order); classes[i][k] = category id of instance k (default 1)."""
    coco = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 2, "name": "cort"}, {"id": 1, "name": "astro"}, {"id": 3, "name": "shsy5y"}],
    }
    for i, label_map in enumerate(label_maps):
        image_id = (image_ids or list(range(1, len(label_maps) + 1)))[i]
        height, width = label_map.shape
        coco["images"].append(
            {"id": image_id, "file_name": f"img{i}.png", "height": height, "width": width, "key": f"key{i}"}
        )
        for k, rle in sorted(label_map_to_coco(label_map).items()):
            coco["annotations"].append(_annotation(len(coco["annotations"]) + 1, image_id, classes[i].get(k, 1), rle))
        if tmp_path is not None:
            write_png(tmp_path / f"img{i}.png", (label_map * 20).astype(np.uint8))
    return coco


def test_label_map_round_trip_and_classes(tmp_path, small_label_map):
    coco = _coco_from_label_maps([small_label_map], [{1: 1, 2: 2, 3: 3, 4: 2}], tmp_path=tmp_path)
    dataset = CocoDataset(coco, tmp_path)
    assert dataset.image_ids == [1] and len(dataset) == 1
    assert dataset.category_names == ["astro", "cort", "shsy5y"]  # ordered by category id
    label_map, classes = dataset.load_labels(1)
    assert label_map.dtype == np.int32
    np.testing.assert_array_equal(label_map, small_label_map)
    assert classes.tolist() == [-1, 0, 1, 2, 1]
    assert dataset.image_class(1) == "cort"  # most common category
    assert dataset.key(1) == "key0"
    image = dataset.load_image(1)
    assert image.dtype == np.uint8 and image.shape == (12, 16)
    assert dataset.stats["images_loaded"] == 1 and dataset.stats["overlapping_pixels"] == 0


def test_overlap_later_annotation_wins_and_is_counted(tmp_path):
    first = np.zeros((6, 8), np.uint8)
    first[1:4, 1:5] = 1
    second = np.zeros((6, 8), np.uint8)
    second[2:5, 3:7] = 1  # shares rows 2-3, columns 3-4 with the first: 4 pixels
    rles = [label_map_to_coco(m.astype(np.int32))[1] for m in (first, second)]
    coco = {
        "images": [{"id": "abc", "file_name": "abc.png", "height": 6, "width": 8}],
        "annotations": [_annotation(10, "abc", 1, rles[0]), _annotation(11, "abc", 1, rles[1])],
        "categories": [{"id": 1, "name": "cell"}],
    }
    dataset = CocoDataset(coco, tmp_path)
    label_map, classes = dataset.load_labels("abc")
    assert (label_map[2:4, 3:5] == 2).all()
    assert (label_map == 1).sum() == 12 - 4 and (label_map == 2).sum() == 12
    assert dataset.stats["overlapping_pixels"] == 4 and dataset.stats["images_with_overlaps"] == 1
    assert dataset.key("abc") == "abc"  # file stem without a key field

    # an instance covered completely by a later one is counted as empty
    coco["annotations"].append(_annotation(12, "abc", 1, rles[0]))
    coco["annotations"].append(_annotation(13, "abc", 1, rles[0]))
    dataset = CocoDataset(coco, tmp_path)
    label_map, classes = dataset.load_labels("abc")
    assert len(classes) == 5 and set(np.unique(label_map)) == {0, 2, 4}
    assert dataset.stats["empty_instances"] == 2


def test_polygons_and_uncompressed_rle(tmp_path):
    height, width = 20, 24
    polygon = [[2.0, 3.0, 12.0, 3.0, 12.0, 9.0, 2.0, 9.0]]
    mask = np.zeros((height, width), np.uint8, order="F")
    mask[12:18, 5:20] = 1
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": height, "width": width, "image_class": 2}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": polygon},
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": {"size": [height, width], "counts": counts}},
            {"id": 3, "image_id": 1, "category_id": 2, "segmentation": []},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    dataset = CocoDataset(coco, tmp_path)
    label_map, classes = dataset.load_labels(1)
    expected_polygon = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, height, width)))
    np.testing.assert_array_equal(label_map == 1, expected_polygon > 0)
    np.testing.assert_array_equal(label_map == 2, mask > 0)
    assert classes.tolist() == [-1, 0, 1, 1]
    assert dataset.image_class(1) == "b"  # an image_class given as a category id is named


def test_batch_decoder_matches_one_by_one_decoding():
    rng = np.random.default_rng(0)
    shape = (300, 257)
    n_pixels = shape[0] * shape[1]
    index_sets = [
        np.zeros(0, np.int64),  # empty
        np.arange(n_pixels),  # full image
        np.array([0]),  # first pixel: the first background run is 0
        np.array([n_pixels - 1]),  # last pixel
        np.arange(5, 70000),  # long runs: counts need several characters
    ]
    for _ in range(40):  # random blobs and speckles: runs growing and shrinking (negative deltas)
        mask = np.zeros(n_pixels, bool)
        start = rng.integers(n_pixels)
        mask[start : start + rng.integers(1, 20000)] = True
        mask[rng.integers(0, n_pixels, rng.integers(0, 300))] = True
        index_sets.append(np.flatnonzero(mask))
    rles = [indices_to_coco(indices, shape) for indices in index_sets]
    batch = decode_counts_batch([rle["counts"] for rle in rles[:-1]] + [rles[-1]["counts"].encode()], n_pixels)
    assert len(batch) == len(rles)
    for decoded, rle, indices in zip(batch, rles, index_sets):
        np.testing.assert_array_equal(decoded, coco_to_indices(rle))
        np.testing.assert_array_equal(decoded, indices)
    too_long = indices_to_coco(np.arange(10), (1000, 1000))["counts"]
    assert decode_counts_batch([rles[5]["counts"], too_long], n_pixels) is None  # past the end of the image
    assert decode_counts_batch([rles[5]["counts"], "\x7f"], n_pixels) is None  # outside the alphabet
    assert decode_counts_batch([rles[5]["counts"][:-1] + "h"], n_pixels) is None  # truncated
    assert decode_counts_batch([], n_pixels) == []


def test_malformed_rle_names_the_annotation(tmp_path, small_label_map):
    coco = _coco_from_label_maps([small_label_map], [{}])
    coco["annotations"][1]["segmentation"]["counts"] += "h"
    with pytest.raises(DataError, match="annotation id 2"):
        CocoDataset(coco, tmp_path).load_labels(1)


def test_image_class_field_and_none(tmp_path):
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 2, "width": 2, "image_class": "astro"},
            {"id": 2, "file_name": "b.png", "height": 2, "width": 2},
        ],
        "annotations": [],
        "categories": [{"id": 1, "name": "cort"}],
    }
    dataset = CocoDataset(coco, tmp_path)
    assert dataset.image_class(1) == "astro" and dataset.image_class(2) is None
    label_map, classes = dataset.load_labels(2)
    assert label_map.shape == (2, 2) and not label_map.any() and classes.tolist() == [-1]


def test_errors_name_the_file_and_annotation(tmp_path, small_label_map):
    coco = _coco_from_label_maps([small_label_map], [{}])
    dataset = CocoDataset(coco, tmp_path)
    with pytest.raises(DataError, match="img0.png"):
        dataset.load_image(1)
    coco["annotations"][2]["segmentation"] = dict(coco["annotations"][2]["segmentation"], size=[12, 15])
    with pytest.raises(DataError, match="annotation id 3"):
        CocoDataset(coco, tmp_path).load_labels(1)
    coco["annotations"][2]["image_id"] = 99
    with pytest.raises(DataError, match="unknown image id 99"):
        CocoDataset(coco, tmp_path)
    with pytest.raises(DataError, match="missing.json"):
        CocoDataset(tmp_path / "missing.json", tmp_path)
    with pytest.raises(DataError, match="images"):
        CocoDataset({"annotations": []}, tmp_path)


def test_reads_a_json_file_and_caches(tmp_path, small_label_map):
    coco = _coco_from_label_maps([small_label_map, small_label_map.T.copy()], [{}, {}], tmp_path=tmp_path)
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    dataset = CocoDataset(path, tmp_path, cache_size=1)
    first, _ = dataset.load_labels(1)
    first[:] = 0  # the caller's copy: must not change the cache
    again, _ = dataset.load_labels(1)
    np.testing.assert_array_equal(again, small_label_map)
    assert dataset.stats["cache_hits"] == 1 and dataset.stats["label_maps_built"] == 1
    dataset.load_labels(2)
    dataset.load_labels(1)  # evicted by image 2 (cache of one)
    assert dataset.stats["label_maps_built"] == 3


SARTORIUS = SHARED_DATA / "sartorius"


@pytest.mark.real_data
@pytest.mark.skipif(not (SARTORIUS / "coco_reference.json").exists(), reason="needs ../shared/data/sartorius")
def test_matches_ann_to_mask_on_real_sartorius_images():
    from pycocotools.coco import COCO

    data = json.loads((SARTORIUS / "coco_reference.json").read_text())
    keep = {image["id"] for image in data["images"][:3]}
    data = {
        "images": [i for i in data["images"] if i["id"] in keep],
        "annotations": [a for a in data["annotations"] if a["image_id"] in keep],
        "categories": data["categories"],
    }
    dataset = CocoDataset(data, SARTORIUS / "train")
    index = COCO()
    index.dataset = data
    index.createIndex()
    for image_id in dataset.image_ids:
        label_map, classes = dataset.load_labels(image_id)
        expected = np.zeros_like(label_map)
        for k, ann in enumerate(dataset.annotations(image_id), start=1):
            expected[index.annToMask(ann) > 0] = k
        np.testing.assert_array_equal(label_map, expected)
        assert dataset.load_image(image_id).shape == label_map.shape == (520, 704)
