"""Run-length codecs (cell_seg.data.rle) and label-map helpers (cell_seg.data.labels)."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from cell_seg.data import rle
from cell_seg.data.labels import (
    compact_labels,
    instance_indices,
    label_map_to_coco,
    label_map_to_rle,
    paint_instances,
    relabel_sequential,
    scores_by_label,
)
from cell_seg.errors import DataError


def random_mask(rng, shape, density=0.3):
    return (rng.random(shape) < density).astype(np.uint8)


def reference_rle(mask, order):
    """Straightforward per-pixel Kaggle RLE, written independently of the codec."""
    flat = mask.ravel(order="C" if order == "row" else "F")
    values, i = [], 0
    while i < flat.size:
        if flat[i]:
            j = i
            while j < flat.size and flat[j]:
                j += 1
            values += [i + 1, j - i]
            i = j
        else:
            i += 1
    return " ".join(map(str, values))


def pycoco(mask):
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}


# --- Kaggle strings -------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["row", "col"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (5, 9), (17, 13)])
def test_round_trip_random_masks(rng, order, shape):
    for density in (0.05, 0.5, 0.95):
        mask = random_mask(rng, shape, density)
        text = rle.encode_rle(mask, order)
        assert text == reference_rle(mask, order)
        np.testing.assert_array_equal(rle.decode_rle(text, shape, order), mask)


def test_orders_differ_and_transpose():
    mask = np.array([[0, 1, 1], [1, 0, 0]], np.uint8)
    assert rle.encode_rle(mask, "row") == "2 3"
    assert rle.encode_rle(mask, "col") == "2 2 5 1"
    np.testing.assert_array_equal(rle.decode_rle(rle.encode_rle(mask.T, "row"), (3, 2), "row"), mask.T)
    np.testing.assert_array_equal(rle.decode_rle("2 3", (2, 3), "col"), [[0, 1, 0], [1, 1, 0]])


@pytest.mark.parametrize("order", ["row", "col"])
def test_empty_masks(order):
    assert rle.encode_rle(np.zeros((4, 5)), order) == ""
    for empty in ("", "   ", None, float("nan")):
        decoded = rle.decode_rle(empty, (4, 5), order)
        assert decoded.shape == (4, 5) and decoded.dtype == np.uint8 and not decoded.any()
    assert rle.rle_to_coco("", (4, 5), order) == pycoco(np.zeros((4, 5), np.uint8))


@pytest.mark.parametrize("order", ["row", "col"])
def test_masks_touching_first_and_last_pixel(order):
    mask = np.zeros((4, 5), np.uint8)
    mask[0, 0] = mask[-1, -1] = 1
    text = rle.encode_rle(mask, order)
    assert text == "1 1 20 1"
    np.testing.assert_array_equal(rle.decode_rle(text, (4, 5), order), mask)
    assert rle.rle_to_coco(text, (4, 5), order) == pycoco(mask)
    full = np.ones((4, 5), np.uint8)
    assert rle.encode_rle(full, order) == "1 20"
    assert rle.rle_to_coco("1 20", (4, 5), order) == pycoco(full)


def test_decode_rejects_unknown_order():
    with pytest.raises(ValueError):
        rle.decode_rle("1 2", (2, 2), order="rows")


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("1 2 3", "odd number"),
        ("1 a", "non-integer"),
        ("1.5 2", "non-integer"),
        ("1 2e1", "non-integer"),
        ("99999999999999999999 1", "too large"),
        ("1 0", "length 0"),
        ("1 -3", "length -3"),
        ("0 2", "outside"),
        ("-4 2", "outside"),
        ("21 1", "outside"),
        ("5 3 6 2", "overlaps"),
        ("10 2 3 2", "overlaps or precedes"),
        ("18 4", "past the end"),
        ("1 1 19 3", "past the end"),
    ],
)
def test_parse_rle_bad_input(text, pattern):
    with pytest.raises(DataError, match=pattern):
        rle.parse_rle(text, 20)


def test_parse_rle_accepts_adjacent_runs_and_exact_end():
    starts, lengths = rle.parse_rle("1 2 3 2 19 2", 20)
    assert starts.tolist() == [0, 2, 18] and lengths.tolist() == [2, 2, 2]


def test_parse_error_is_located_by_callers():
    with pytest.raises(DataError) as caught:
        rle.decode_rle("1 2 3", (4, 5))
    located = caught.value.located(file="train.csv", row=7, field="annotation")
    assert str(located) == "train.csv, row 7, field annotation: odd number of values (3) in run-length string"


# --- COCO RLE -------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["row", "col"])
def test_rle_to_coco_matches_pycocotools(rng, order):
    for shape in [(1, 1), (3, 1), (6, 11), (37, 23), (64, 64)]:
        for density in (0.02, 0.5, 0.98):
            mask = random_mask(rng, shape, density)
            coco = rle.rle_to_coco(rle.encode_rle(mask, order), shape, order)
            assert coco == pycoco(mask)
            assert isinstance(coco["counts"], str)
            np.testing.assert_array_equal(mask_utils.decode({**coco, "counts": coco["counts"].encode()}), mask)


def test_coco_counts_decodes_pycocotools_strings(rng):
    # Large images and long runs exercise multi-character values and negative deltas.
    for shape in [(300, 200), (1000, 1300)]:
        mask = np.zeros(shape, np.uint8)
        mask[rng.integers(0, shape[0], 40), :] = 1
        mask[:, rng.integers(0, shape[1], 3)] = 1
        encoded = mask_utils.encode(np.asfortranarray(mask))
        counts = rle.coco_counts(encoded)
        assert counts.sum() == mask.size
        indices = rle.coco_to_indices(encoded)
        np.testing.assert_array_equal(indices, np.flatnonzero(mask.ravel(order="F")))
        assert rle.coco_to_rle(encoded, "row") == rle.encode_rle(mask, "row")
        assert rle.coco_to_rle({**encoded, "counts": encoded["counts"].decode()}, "col") == rle.encode_rle(mask, "col")


def test_coco_counts_uncompressed_and_bad_strings():
    assert rle.coco_counts({"size": [2, 2], "counts": [1, 2, 1]}).tolist() == [1, 2, 1]
    with pytest.raises(DataError, match="outside the encoding"):
        rle.coco_counts({"size": [2, 2], "counts": " !"})
    with pytest.raises(DataError, match="truncated"):
        rle.coco_counts({"size": [2, 2], "counts": "o"})  # continuation bit set on the last char


def test_indices_to_coco_and_reorder(rng):
    mask = random_mask(rng, (9, 14))
    row_indices = np.flatnonzero(mask.ravel())
    col_indices = rle.reorder_indices(row_indices, mask.shape, "row", "col")
    np.testing.assert_array_equal(col_indices, np.flatnonzero(mask.ravel(order="F")))
    np.testing.assert_array_equal(rle.reorder_indices(col_indices, mask.shape, "col", "row"), row_indices)
    assert rle.indices_to_coco(col_indices, mask.shape) == pycoco(mask)


def test_polygons_and_segmentation_to_coco():
    square = [[1.0, 1.0, 5.0, 1.0, 5.0, 4.0, 1.0, 4.0]]
    coco = rle.polygons_to_coco(square, (8, 10))
    expected = mask_utils.merge(mask_utils.frPyObjects(square, 8, 10))
    assert coco["counts"] == expected["counts"].decode() and coco["size"] == [8, 10]
    assert rle.segmentation_to_coco(square, (8, 10)) == coco
    uncompressed = {"size": [2, 3], "counts": [1, 2, 3]}
    compressed = rle.segmentation_to_coco(uncompressed, (2, 3))
    assert rle.coco_to_indices(compressed).tolist() == [1, 2]
    assert rle.segmentation_to_coco(compressed, (2, 3)) is compressed


def test_coco_area_bbox_matches_pycocotools(rng):
    mask = np.zeros((20, 30), np.uint8)
    mask[3:9, 4:20] = 1
    mask[15, 25] = 1
    area, bbox = rle.coco_area_bbox(pycoco(mask))
    assert area == int(mask.sum())
    assert bbox == [4.0, 3.0, 22.0, 13.0]


# --- label maps -----------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["row", "col"])
def test_paint_instances_later_wins_and_counts_overlap(order):
    shape = (4, 5)
    a, b = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    a[0:3, 0:3] = 1
    b[2:4, 2:5] = 1
    flat = "C" if order == "row" else "F"
    arrays = [np.flatnonzero(m.ravel(order=flat)) for m in (a, b)]
    labels, overlapping = paint_instances(arrays, shape, order)
    assert overlapping == 1
    assert labels.dtype == np.int32
    assert labels[2, 2] == 2 and labels[0, 0] == 1 and labels[3, 4] == 2
    labels, _ = paint_instances(arrays[::-1], shape, order, ids=[7, 9])
    assert labels[2, 2] == 9 and labels[3, 4] == 7


def test_paint_instances_empty():
    labels, overlapping = paint_instances([], (3, 4))
    assert labels.shape == (3, 4) and not labels.any() and overlapping == 0
    labels, overlapping = paint_instances([np.zeros(0, np.int64)], (3, 4))
    assert not labels.any() and overlapping == 0


@pytest.mark.parametrize("order", ["row", "col"])
def test_instance_indices_round_trip(small_label_map, order):
    ids, arrays = instance_indices(small_label_map, order)
    assert ids.tolist() == [1, 2, 3, 4]
    for i, indices in zip(ids, arrays):
        expected = np.flatnonzero((small_label_map == i).ravel(order="C" if order == "row" else "F"))
        np.testing.assert_array_equal(indices, expected)
    painted, overlapping = paint_instances(arrays, small_label_map.shape, order, ids)
    np.testing.assert_array_equal(painted, small_label_map)
    assert overlapping == 0
    assert instance_indices(np.zeros((3, 3), np.int32), order)[1] == []


def test_label_map_to_rle_and_coco(small_label_map):
    strings = label_map_to_rle(small_label_map, "row")
    cocos = label_map_to_coco(small_label_map)
    assert sorted(strings) == sorted(cocos) == [1, 2, 3, 4]
    for i in strings:
        mask = (small_label_map == i).astype(np.uint8)
        assert strings[i] == rle.encode_rle(mask, "row")
        assert cocos[i] == pycoco(mask)
    assert strings[4].endswith(f"{small_label_map.size - 2} 3")  # last row of instance 4 ends on the last pixel


def test_relabel_sequential():
    labels = np.array([[0, 7, 7], [3, 0, 12]], np.int32)
    relabelled, old_ids = relabel_sequential(labels)
    assert relabelled.tolist() == [[0, 2, 2], [1, 0, 3]]
    assert old_ids.tolist() == [3, 7, 12]
    assert relabelled.dtype == np.int32 and old_ids.dtype == labels.dtype


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
def test_compact_labels_is_relabel_sequential_flattened(dtype):
    rng = np.random.default_rng(3)
    labels = (rng.integers(0, 6, (9, 11)) * 5).astype(dtype)  # gaps between ids
    flat, ids = compact_labels(labels)
    relabelled, old_ids = relabel_sequential(labels)
    assert flat.dtype == ids.dtype == np.int64
    assert np.array_equal(flat, relabelled.ravel()) and np.array_equal(ids, old_ids)
    already = np.arange(6).reshape(2, 3)
    assert np.array_equal(compact_labels(already)[0], already.ravel())  # 1..n kept as they are
    with pytest.raises(DataError, match="negative"):
        compact_labels(np.array([[-1, 1]]))


def test_scores_by_label_reads_arrays_dicts_and_none():
    assert scores_by_label([0.9, 0.4, 0.7], np.array([3, 1])).tolist() == [0.7, 0.9]
    assert scores_by_label({2: 0.5, 9: 0.25}, [9, 2]).tolist() == [0.25, 0.5]
    assert scores_by_label(None, [4, 5]).tolist() == [1.0, 1.0]
    assert scores_by_label([], []).size == 0
    with pytest.raises(DataError, match="no score for label 9"):
        scores_by_label({2: 0.5}, [2, 9])
    with pytest.raises(DataError, match="2 scores for label 3"):
        scores_by_label([0.1, 0.2], [1, 3])
