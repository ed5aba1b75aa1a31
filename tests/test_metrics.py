"""Tests of cell_seg.metrics against hand-computed cases and a plain reference implementation."""

import numpy as np
import pandas as pd
import pytest

from cell_seg import metrics
from cell_seg.errors import DataError
from cell_seg.metrics import ap_at_iou, coco_eval, foreground_iou, iou_matrix, map_iou

THRESHOLDS = np.arange(0.5, 1.0, 0.05)


def rectangles(shape, boxes, ids=None):
    label_map = np.zeros(shape, np.int32)
    for k, (r0, r1, c0, c1) in enumerate(boxes):
        label_map[r0:r1, c0:c1] = (ids[k] if ids else k + 1)
    return label_map


# --- hand-computed cases -----------------------------------------------------------------------


def test_perfect_prediction_with_other_ids_scores_one():
    truth = rectangles((10, 10), [(0, 3, 0, 3), (5, 9, 5, 9)])
    pred = rectangles((10, 10), [(5, 9, 5, 9), (0, 3, 0, 3)], ids=[7, 40])
    result = map_iou(truth, pred)
    assert result["map"] == 1.0 and result["per_image"] == [1.0]
    assert result["table"]["tp"].tolist() == [2] * 10
    assert result["table"]["fp"].sum() == result["table"]["fn"].sum() == 0


def test_empty_cases():
    empty = np.zeros((6, 6), np.int32)
    cells = rectangles((6, 6), [(0, 2, 0, 2), (3, 5, 3, 5)])
    assert map_iou(empty, empty)["map"] == 1.0  # nothing to find, nothing wrongly found
    assert map_iou(cells, empty)["map"] == 0.0  # everything missed
    assert map_iou(empty, cells)["map"] == 0.0  # only false positives
    table = map_iou(cells, empty)["table"]
    assert table["fn"].tolist() == [2] * 10 and table["tp"].sum() == 0


def test_split_cell():
    truth = rectangles((4, 12), [(0, 4, 0, 10)])  # 40 px
    halves = rectangles((4, 12), [(0, 4, 0, 5), (0, 4, 5, 10)])  # IoU 0.5 each: not > 0.5
    assert map_iou(truth, halves)["map"] == 0.0
    uneven = rectangles((4, 12), [(0, 4, 0, 8), (0, 4, 8, 10)])  # IoU 0.8 and 0.2
    result = map_iou(truth, uneven)
    # thresholds 0.50 .. 0.75 (6 of them) have TP 1, FP 1, FN 0 -> 1/2; the other 4 score 0
    assert result["map"] == pytest.approx(6 * 0.5 / 10)
    assert result["table"]["tp"].tolist() == [1] * 6 + [0] * 4
    assert result["table"]["fp"].tolist() == [1] * 6 + [2] * 4


def test_merged_cells():
    truth = rectangles((4, 12), [(0, 4, 0, 5), (0, 4, 5, 10)])
    merged = rectangles((4, 12), [(0, 4, 0, 10)])
    result = map_iou(truth, merged)
    assert result["map"] == 0.0
    assert result["table"]["fn"].tolist() == [2] * 10 and result["table"]["fp"].tolist() == [1] * 10
    mostly_one = rectangles((4, 12), [(0, 4, 0, 8), (0, 4, 8, 10)])
    # truth 1 (32 px) vs prediction (40 px): IoU 0.8; truth 2 (8 px): IoU 0.2
    assert map_iou(mostly_one, merged)["map"] == pytest.approx(6 * (1 / 2) / 10)


def test_mean_over_images_and_per_class():
    truth = rectangles((6, 6), [(0, 3, 0, 3)])
    result = map_iou([truth, truth, truth], [truth, np.zeros_like(truth), truth], classes=["a", "b", "a"])
    assert result["per_image"] == [1.0, 0.0, 1.0]
    assert result["map"] == pytest.approx(2 / 3)
    assert result["per_class"] == {"a": 1.0, "b": 0.0}
    table = result["table"]
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["threshold", "tp", "fp", "fn", "precision", "mean_precision"]
    assert table["precision"].tolist() == pytest.approx([2 / 3] * 10)
    assert table["mean_precision"].mean() == pytest.approx(result["map"])


def test_shape_and_count_mismatch_raise_data_error():
    with pytest.raises(DataError, match="shape"):
        map_iou(np.zeros((3, 3), np.int32), np.zeros((3, 4), np.int32))
    with pytest.raises(DataError, match="2 ground-truth"):
        map_iou([np.zeros((3, 3))] * 2, [np.zeros((3, 3))])
    with pytest.raises(DataError, match="classes"):
        map_iou(np.zeros((3, 3)), np.zeros((3, 3)), classes=["a", "b"])


def test_foreground_iou():
    truth = rectangles((4, 4), [(0, 2, 0, 2)])
    pred = rectangles((4, 4), [(0, 2, 1, 3)])
    assert foreground_iou(truth, pred) == pytest.approx(2 / 6)
    assert foreground_iou([truth, np.zeros_like(truth)], [truth, np.zeros_like(truth)]) == 1.0


# --- cross-check against a plain implementation ------------------------------------------------


def plain_iou(truth, pred):
    true_ids = [k for k in np.unique(truth) if k]
    pred_ids = [k for k in np.unique(pred) if k]
    out = np.zeros((len(true_ids), len(pred_ids)))
    for i, t in enumerate(true_ids):
        for j, p in enumerate(pred_ids):
            a, b = truth == t, pred == p
            out[i, j] = (a & b).sum() / (a | b).sum()
    return out


def plain_score(truth, pred):
    iou = plain_iou(truth, pred)
    scores = []
    for t in THRESHOLDS:
        tp = sum(1 for i in range(iou.shape[0]) for j in range(iou.shape[1]) if iou[i, j] > t)
        fp, fn = iou.shape[1] - tp, iou.shape[0] - tp
        scores.append(1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn))
    return float(np.mean(scores))


def random_maps(seed, shape=(40, 50), n=15):
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        r, c = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        h, w = rng.integers(3, 12, size=2)
        truth[r : r + h, c : c + w] = k * 3  # non-contiguous ids, some covered completely
    # prediction: shifted, some cells dropped, some merged, noise blobs added
    pred = np.roll(truth, (int(rng.integers(-1, 2)), int(rng.integers(-1, 2))), axis=(0, 1))
    pred[pred == 6] = 9
    pred[pred == 12] = 0
    pred[rng.random(shape) < 0.01] = 1000
    return truth, pred


@pytest.mark.parametrize("seed", range(8))
def test_map_iou_matches_plain_implementation(seed):
    truth, pred = random_maps(seed)
    assert np.allclose(iou_matrix(truth, pred), plain_iou(truth, pred))
    assert map_iou(truth, pred)["map"] == pytest.approx(plain_score(truth, pred))


def test_map_iou_over_several_images_matches_plain_mean():
    pairs = [random_maps(seed) for seed in range(4)]
    result = map_iou([t for t, _ in pairs], [p for _, p in pairs])
    expected = [plain_score(t, p) for t, p in pairs]
    assert result["per_image"] == pytest.approx(expected)
    assert result["map"] == pytest.approx(np.mean(expected))


def test_iou_matrix_sparse_path_matches_dense(monkeypatch):
    truth, pred = random_maps(3)
    dense = iou_matrix(truth, pred)
    monkeypatch.setattr(metrics, "_DENSE_PAIR_LIMIT", 0)
    assert np.array_equal(iou_matrix(truth, pred), dense)


def test_iou_matrix_from_masks_and_overlapping_truth():
    from cell_seg.data.labels import label_map_to_coco

    truth, pred = random_maps(5)
    masks = [truth == k for k in np.unique(truth) if k]
    rles = list(label_map_to_coco(pred).values())  # COCO RLE dicts with str counts
    assert np.allclose(metrics.iou_matrix_from_masks(masks, rles), iou_matrix(truth, pred))
    # overlapping ground truth: two masks sharing pixels, scored through IoU matrices
    a = np.zeros((6, 6), bool)
    a[0:4, 0:4] = True
    b = np.zeros((6, 6), bool)
    b[2:6, 2:6] = True
    prediction = np.zeros((6, 6), np.int32)
    prediction[0:4, 0:4] = 1
    iou = metrics.iou_matrix_from_masks([a, b], [prediction == 1])
    assert iou[:, 0] == pytest.approx([1.0, 4 / 28])
    result = metrics.map_iou_from_iou_matrices([iou])
    assert result["map"] == pytest.approx(0.5)  # TP 1, FN 1 at every threshold
    assert metrics.iou_matrix_from_masks([], [a]).shape == (0, 1)


def test_thresholds_below_one_half_use_one_to_one_matching():
    truth = rectangles((4, 12), [(0, 4, 0, 10)])
    thirds = rectangles((4, 12), [(0, 4, 0, 4), (0, 4, 4, 8), (0, 4, 8, 10)])  # IoU .4 .4 .2
    result = map_iou(truth, thirds, thresholds=[0.3])
    assert result["table"]["tp"].tolist() == [1]  # one truth can match only once
    assert result["map"] == pytest.approx(1 / 3)


# --- HuBMAP AP ---------------------------------------------------------------------------------


def test_ap_at_iou_hand_case():
    truth = rectangles((10, 20), [(0, 4, 0, 4), (0, 4, 6, 10), (6, 10, 0, 4)])
    pred = np.zeros_like(truth)
    pred[0:4, 0:4] = 1  # hit
    pred[0:4, 6:9] = 2  # IoU 0.75: hit at 0.6
    pred[6:10, 12:16] = 3  # miss
    # ranking hit(0.9), miss(0.8), hit(0.7): precision 1, 1/2, 2/3 at recall 1/3, 1/3, 2/3
    ap, precision, recall = ap_at_iou(truth, pred, [np.array([0.9, 0.7, 0.8])], return_curve=True)
    assert precision == pytest.approx([1, 0.5, 2 / 3])
    assert recall == pytest.approx([1 / 3, 1 / 3, 2 / 3])
    assert ap == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    # a dict of scores and a stricter threshold: the 0.75 match is lost
    assert ap_at_iou(truth, pred, [{1: 0.9, 2: 0.7, 3: 0.8}], iou_threshold=0.8) == pytest.approx(1 / 3)
    assert ap_at_iou(truth, truth, None) == 1.0


def test_ap_pools_predictions_over_images():
    truth = rectangles((6, 6), [(0, 3, 0, 3)])
    empty = np.zeros_like(truth)
    # image 1: one hit scored 0.5; image 2: a false positive scored 0.9 (truth but no hit)
    miss = rectangles((6, 6), [(4, 6, 4, 6)])
    ap = ap_at_iou([truth, truth], [truth, miss], [np.array([0.5]), np.array([0.9])])
    # ranking: FP (0.9), TP (0.5): precision 0, 1/2; recall 0, 1/2 -> AP = 1/2 * 1/2
    assert ap == pytest.approx(0.25)
    assert np.isnan(ap_at_iou(empty, miss, [np.array([0.3])]))


def test_ap_greedy_matching_prefers_high_scores():
    truth = rectangles((4, 12), [(0, 4, 0, 10)])
    pred = rectangles((4, 12), [(0, 4, 0, 6), (0, 4, 6, 10)])  # IoU 0.6 and 0.4, both >= 0.3
    _, precision, _ = ap_at_iou(truth, pred, [np.array([0.2, 0.9])], iou_threshold=0.3, return_curve=True)
    assert precision.tolist() == [1.0, 0.5]  # the 0.9 prediction takes the truth first


def test_ap_score_errors():
    truth = rectangles((6, 6), [(0, 3, 0, 3)])
    with pytest.raises(DataError, match="score"):
        ap_at_iou(truth, truth, [{5: 1.0}])
    with pytest.raises(DataError, match="scores"):
        ap_at_iou(truth, truth, [np.array([])])


# --- COCO --------------------------------------------------------------------------------------


def grid_cells(n_rows, n_cols, size=4, gap=1):
    shape = (n_rows * (size + gap), n_cols * (size + gap))
    boxes = [
        (r * (size + gap), r * (size + gap) + size, c * (size + gap), c * (size + gap) + size)
        for r in range(n_rows)
        for c in range(n_cols)
    ]
    return rectangles(shape, boxes)


def test_coco_eval_perfect_prediction_scores_one_even_with_many_cells():
    truth = [grid_cells(3, 4), grid_cells(12, 13)]  # the second image has 156 cells (> 100)
    gt = metrics.coco_gt_from_label_maps(truth, image_ids=["a", "b"])
    results = metrics.coco_results_from_label_maps(truth, image_ids=["a", "b"])
    stats = coco_eval(gt, results)
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
    assert stats["AR3"] == pytest.approx(1.0)
    # with COCO's default limit of 100 detections per image the recall drops
    assert coco_eval(gt, results, max_dets=(1, 10, 100))["AR3"] < 1.0


def test_coco_eval_partial_and_empty_results(capsys):
    truth = grid_cells(2, 2)
    gt = metrics.coco_gt_from_label_maps([truth])
    pred = truth.copy()
    pred[pred == 4] = 0
    stats = coco_eval(gt, metrics.coco_results_from_label_maps([pred]))
    assert 0.5 < stats["AP"] < 1.0
    assert capsys.readouterr().out == ""  # COCOeval's report is silenced
    assert coco_eval(gt, [])["AP"] == 0.0
    with pytest.raises(DataError, match="not in the ground truth"):
        coco_eval(gt, metrics.coco_results_from_label_maps([pred], image_ids=[99]))


def test_coco_gt_fills_missing_fields(tmp_path):
    import json

    truth = grid_cells(2, 2)
    gt = metrics.coco_gt_from_label_maps([truth])
    for ann in gt["annotations"]:
        del ann["area"], ann["bbox"], ann["iscrowd"]
        ann["id"] = 0
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    assert coco_eval(path, metrics.coco_results_from_label_maps([truth]))["AP"] == pytest.approx(1.0)
