"""Instance segmentation metrics: Sartorius/DSB2018 mAP over IoU thresholds, HuBMAP AP@0.6, COCO AP.

Inputs are instance label maps (`int32 H x W`, 0 = background), one per image, or lists of
them. IoU matrices come from both label maps at once by pair counting (`np.bincount` on
`true * (n_pred + 1) + pred`), never pair by pair. Ground truth that overlaps (and so cannot be
a label map) is scored from lists of masks or COCO RLEs with `iou_matrix_from_masks` and
`map_iou_from_iou_matrices`.

Conventions (the same as Kaggle's DSB2018 and Sartorius metrics):
- a prediction matches a truth when IoU > t (strictly); for t >= 0.5 matches are one-to-one,
- per image and threshold: TP / (TP + FP + FN); an image with no truth and no prediction
  scores 1.0 (nothing to find, nothing wrongly found); no truth but some predictions scores
  0.0; truth but no prediction scores 0.0,
- mean over thresholds 0.50:0.05:0.95, then mean over images.

numpy, pandas and OpenCV (through `cell_seg.data.labels`) at import time; pycocotools is imported
inside the functions that need it.

Example:
    >>> truth = np.array([[1, 1, 0, 2, 2]], np.int32)
    >>> result = map_iou(truth, truth)
    >>> result["map"], result["per_image"]
    (1.0, [1.0])
"""

import contextlib
import copy
import io
from pathlib import Path

import numpy as np
import pandas as pd

from cell_seg.data import labels as label_ops
from cell_seg.errors import DataError

DEFAULT_THRESHOLDS = np.arange(0.5, 1.0, 0.05)
# Above this many (true + 1) x (pred + 1) cells the pair counts use np.unique instead of bincount.
_DENSE_PAIR_LIMIT = 1 << 24


# --- IoU matrices ------------------------------------------------------------------------------


def iou_matrix(true_labels, pred_labels, return_ids=False):
    """IoU of every (truth, prediction) pair of two label maps of the same shape.

    Args:
        true_labels, pred_labels: `H x W` integer label maps (ids need not be contiguous).
        return_ids: also return the label ids that the rows and columns stand for.

    Returns:
        float64 array [n_true, n_pred] (rows: true ids ascending, columns: pred ids ascending),
        or (matrix, true_ids, pred_ids) when `return_ids`.

    Example:
        >>> iou_matrix(np.array([[1, 1, 0, 0]]), np.array([[0, 3, 3, 0]]))
        array([[0.33333333]])
    """
    true_labels, pred_labels = np.asarray(true_labels), np.asarray(pred_labels)
    if true_labels.shape != pred_labels.shape:
        raise DataError(f"truth has shape {true_labels.shape} but prediction has shape {pred_labels.shape}")
    true_flat, true_ids = label_ops.compact_labels(true_labels)
    pred_flat, pred_ids = label_ops.compact_labels(pred_labels)
    n_true, n_pred = true_ids.size, pred_ids.size
    true_area = np.bincount(true_flat, minlength=n_true + 1)[1:]
    pred_area = np.bincount(pred_flat, minlength=n_pred + 1)[1:]
    both = (true_flat > 0) & (pred_flat > 0)
    codes = true_flat[both] * (n_pred + 1) + pred_flat[both]
    if (n_true + 1) * (n_pred + 1) <= _DENSE_PAIR_LIMIT:
        intersection = np.bincount(codes, minlength=(n_true + 1) * (n_pred + 1)).reshape(n_true + 1, n_pred + 1)[1:, 1:]
    else:
        pairs, counts = np.unique(codes, return_counts=True)
        rows, cols = np.divmod(pairs, n_pred + 1)
        intersection = np.zeros((n_true, n_pred), np.int64)
        intersection[rows - 1, cols - 1] = counts
    union = true_area[:, None] + pred_area[None, :] - intersection
    iou = intersection / np.maximum(union, 1)
    return (iou, true_ids, pred_ids) if return_ids else iou


def _as_coco_rles(masks):
    """Compressed pycocotools RLEs (bytes counts) of binary masks or COCO RLE dicts."""
    from pycocotools import mask as mask_utils

    out = []
    for i, item in enumerate(masks):
        if isinstance(item, dict):
            height, width = item["size"]
            counts = item["counts"]
            if isinstance(counts, list):
                out.append(mask_utils.frPyObjects(item, height, width))
            else:
                counts = counts.encode("ascii") if isinstance(counts, str) else counts
                out.append({"size": [height, width], "counts": counts})
        else:
            mask = np.asarray(item)
            if mask.ndim != 2:
                raise DataError(f"mask {i} has shape {mask.shape}, expected H x W")
            out.append(mask_utils.encode(np.asfortranarray(mask != 0, dtype=np.uint8)))
    return out


def iou_matrix_from_masks(true_masks, pred_masks):
    """IoU matrix [n_true, n_pred] from lists of masks (H x W arrays) or COCO RLE dicts.

    For ground truth whose instances overlap (a label map cannot hold it). Uses
    `pycocotools.mask.iou`.

    Example:
        >>> a = np.zeros((4, 4), np.uint8); a[:2] = 1
        >>> b = np.zeros((4, 4), np.uint8); b[1:3] = 1
        >>> iou_matrix_from_masks([a], [a, b]).round(3).tolist()
        [[1.0, 0.333]]
    """
    from pycocotools import mask as mask_utils

    true_rles, pred_rles = _as_coco_rles(true_masks), _as_coco_rles(pred_masks)
    if not true_rles or not pred_rles:
        return np.zeros((len(true_rles), len(pred_rles)))
    sizes = {tuple(r["size"]) for r in true_rles + pred_rles}
    if len(sizes) > 1:
        raise DataError(f"masks of different sizes: {sorted(sizes)}")
    return np.asarray(mask_utils.iou(true_rles, pred_rles, [0] * len(pred_rles)), np.float64).reshape(
        len(true_rles), len(pred_rles)
    )


# --- Sartorius / DSB2018 mAP -------------------------------------------------------------------


def _as_list(labels):
    if isinstance(labels, np.ndarray) and labels.ndim == 2:
        return [labels]
    return list(labels)


def _true_positives(iou, threshold):
    """Number of one-to-one matches with IoU > threshold."""
    if iou.size == 0:
        return 0
    if threshold >= 0.5:
        return int((iou > threshold).sum())  # IoU > 0.5 pairs are already one-to-one
    return len(_greedy_matches(iou, np.arange(iou.shape[1]), threshold, strict=True))


def _greedy_matches(iou, pred_order, threshold, strict=False):
    """Greedy one-to-one matching: predictions in `pred_order` each take the highest-IoU
    unmatched truth with IoU >= threshold (> when strict). Returns {pred index: truth index}."""
    if threshold > 0.5 or (threshold == 0.5 and strict):
        above = iou > threshold if strict else iou >= threshold
        rows, cols = np.nonzero(above)
        return dict(zip(cols.tolist(), rows.tolist()))
    matches, taken = {}, np.zeros(iou.shape[0], bool)
    for p in pred_order:
        candidates = np.where(taken, -1.0, iou[:, p])
        t = int(candidates.argmax()) if candidates.size else -1
        if t >= 0 and (candidates[t] > threshold if strict else candidates[t] >= threshold) and candidates[t] > 0:
            matches[int(p)] = t
            taken[t] = True
    return matches


def map_iou_from_iou_matrices(iou_matrices, thresholds=DEFAULT_THRESHOLDS, classes=None):
    """The Sartorius/DSB2018 score from precomputed IoU matrices, one [n_true, n_pred] per image.

    Args:
        iou_matrices: list of 2-D arrays (rows: truths, columns: predictions); an image with
            no truth has shape (0, n_pred).
        thresholds: IoU thresholds (a match needs IoU > t).
        classes: optional class name per image, for the per-class means.

    Returns:
        dict: "map" (float, mean over images of the per-image score), "per_image" (list of
        floats), "table" (DataFrame: threshold, tp, fp, fn summed over images, "precision"
        = TP / (TP + FP + FN) of the sums, as the DSB kernels print, and "mean_precision", the
        mean over images of the per-image ratio, whose mean over thresholds is "map"),
        "per_class" ({class: mean score}, only when `classes` is given).

    Example:
        >>> result = map_iou_from_iou_matrices([np.array([[0.9, 0.0], [0.0, 0.55]])], thresholds=[0.5, 0.6])
        >>> round(result["map"], 3), result["table"]["tp"].tolist()   # (2/2 + 1/3) / 2
        (0.667, [2, 1])
    """
    thresholds = np.atleast_1d(np.asarray(thresholds, np.float64))
    iou_matrices = [np.asarray(m, np.float64) for m in iou_matrices]
    n_images = len(iou_matrices)
    tp = np.zeros((n_images, thresholds.size), np.int64)
    fp = np.zeros_like(tp)
    fn = np.zeros_like(tp)
    ratio = np.zeros((n_images, thresholds.size))
    for i, iou in enumerate(iou_matrices):
        if iou.ndim != 2:
            raise DataError(f"IoU matrix of image {i} has {iou.ndim} dimensions, expected 2")
        n_true, n_pred = iou.shape
        for j, threshold in enumerate(thresholds):
            hits = _true_positives(iou, threshold)
            tp[i, j], fp[i, j], fn[i, j] = hits, n_pred - hits, n_true - hits
        denominator = tp[i] + fp[i] + fn[i]
        ratio[i] = np.where(denominator > 0, tp[i] / np.maximum(denominator, 1), 1.0)
    per_image = ratio.mean(axis=1) if thresholds.size else np.zeros(n_images)
    tp_sum, fp_sum, fn_sum = tp.sum(0), fp.sum(0), fn.sum(0)
    pooled = tp_sum + fp_sum + fn_sum
    table = pd.DataFrame(
        {
            "threshold": np.round(thresholds, 4),
            "tp": tp_sum,
            "fp": fp_sum,
            "fn": fn_sum,
            "precision": np.where(pooled > 0, tp_sum / np.maximum(pooled, 1), 1.0),
            "mean_precision": ratio.mean(axis=0) if n_images else np.zeros(thresholds.size),
        }
    )
    result = {
        "map": float(per_image.mean()) if n_images else float("nan"),
        "per_image": [float(v) for v in per_image],
        "table": table,
    }
    if classes is not None:
        classes = list(classes)
        if len(classes) != n_images:
            raise DataError(f"{len(classes)} classes given for {n_images} images", field="classes")
        per_class = {}
        for name in dict.fromkeys(classes):
            per_class[name] = float(np.mean([s for s, c in zip(per_image, classes) if c == name]))
        result["per_class"] = per_class
    return result


def map_iou(true_labels, pred_labels, thresholds=DEFAULT_THRESHOLDS, classes=None):
    """The Sartorius / DSB2018 score: mean over images of the mean over IoU thresholds of
    TP / (TP + FP + FN).

    Args:
        true_labels: one `H x W` label map or a list of them (one per image).
        pred_labels: the same for predictions (same shapes, same order).
        thresholds: IoU thresholds (a prediction matches a truth when IoU > t).
        classes: optional list of class names, one per image (adds "per_class").

    Returns:
        dict with "map", "per_image", "table" and (with `classes`) "per_class"; see
        `map_iou_from_iou_matrices`. Empty truth and empty prediction scores 1.0 for that image;
        empty truth with predictions, or truth with no prediction, scores 0.0.

    Example:
        >>> truth = np.array([[1, 1, 1, 1, 0, 0]], np.int32)
        >>> split = np.array([[1, 1, 2, 2, 0, 0]], np.int32)   # one cell cut in two halves
        >>> map_iou(truth, split)["map"]                        # IoU 0.5 is not > 0.5
        0.0
        >>> map_iou([truth, truth], [truth, split], classes=["a", "b"])["per_class"]
        {'a': 1.0, 'b': 0.0}
    """
    true_list, pred_list = _as_list(true_labels), _as_list(pred_labels)
    if len(true_list) != len(pred_list):
        raise DataError(f"{len(true_list)} ground-truth maps but {len(pred_list)} predictions", field="pred_labels")
    matrices = []
    for i, (truth, pred) in enumerate(zip(true_list, pred_list)):
        try:
            matrices.append(iou_matrix(truth, pred))
        except DataError as error:
            raise error.located(row=i) from None
    return map_iou_from_iou_matrices(matrices, thresholds, classes)


def foreground_iou(true_labels, pred_labels):
    """Mean over images of the IoU of the semantic foreground (label > 0) masks.

    An image where both masks are empty counts 1.0.

    Example:
        >>> foreground_iou(np.array([[1, 1, 0, 0]]), np.array([[0, 2, 2, 0]]))
        0.3333333333333333
    """
    true_list, pred_list = _as_list(true_labels), _as_list(pred_labels)
    if len(true_list) != len(pred_list):
        raise DataError(f"{len(true_list)} ground-truth maps but {len(pred_list)} predictions", field="pred_labels")
    scores = []
    for i, (truth, pred) in enumerate(zip(true_list, pred_list)):
        truth, pred = np.asarray(truth) > 0, np.asarray(pred) > 0
        if truth.shape != pred.shape:
            raise DataError(f"truth has shape {truth.shape} but prediction has shape {pred.shape}", row=i)
        union = int(np.count_nonzero(truth | pred))
        scores.append(np.count_nonzero(truth & pred) / union if union else 1.0)
    return float(np.mean(scores)) if scores else float("nan")


# --- HuBMAP: average precision at one IoU threshold -------------------------------------------


def ap_at_iou(true_list, pred_list, scores_list, iou_threshold=0.6, return_curve=False):
    """Average precision over confidence at one IoU threshold, over a whole dataset (HuBMAP).

    Open Images / COCO style: within each image, predictions in decreasing score take the
    highest-IoU truth not yet matched with IoU >= `iou_threshold` (true positive) or none
    (false positive). All predictions of the dataset are then ranked by score; precision and
    recall (over all truths) follow the ranking, and AP is the area under the precision-recall
    curve with the precision made monotone (each point takes the best precision at any higher
    recall).

    Args:
        true_list, pred_list: label maps (one, or one per image).
        scores_list: per image, the scores of the predicted labels: an array with the score of
            label k at index k-1, or a dict {label: score}; None gives every prediction 1.0.
        iou_threshold: IoU needed for a match (>=).
        return_curve: also return (precision, recall) arrays along the ranking.

    Returns:
        AP as a float (nan when the dataset has no truth at all), or (ap, precision, recall).

    Example:
        >>> truth = np.array([[1, 1, 0, 2, 2, 0]], np.int32)
        >>> pred = np.array([[1, 1, 0, 0, 0, 2]], np.int32)   # one hit, one miss
        >>> ap_at_iou(truth, pred, [np.array([0.9, 0.8])])    # precision 1 up to recall 0.5
        0.5
        >>> ap_at_iou(truth, pred, [np.array([0.7, 0.8])])    # the miss ranks first
        0.25
    """
    true_maps, pred_maps = _as_list(true_list), _as_list(pred_list)
    if scores_list is None:
        scores_list = [None] * len(pred_maps)
    elif isinstance(scores_list, dict) or (isinstance(scores_list, np.ndarray) and scores_list.ndim == 1):
        scores_list = [scores_list]
    scores_list = list(scores_list)
    if not len(true_maps) == len(pred_maps) == len(scores_list):
        raise DataError(
            f"{len(true_maps)} ground-truth maps, {len(pred_maps)} predictions and {len(scores_list)} score lists"
        )
    all_scores, all_hits, n_true_total = [], [], 0
    for i, (truth, pred, scores) in enumerate(zip(true_maps, pred_maps, scores_list)):
        try:
            iou, true_ids, pred_ids = iou_matrix(truth, pred, return_ids=True)
            image_scores = label_ops.scores_by_label(scores, pred_ids)
        except DataError as error:
            raise error.located(row=i) from None
        order = np.argsort(-image_scores, kind="stable")
        matches = _greedy_matches(iou, order, iou_threshold)
        hits = np.zeros(pred_ids.size, bool)
        hits[list(matches)] = True
        all_scores.append(image_scores)
        all_hits.append(hits)
        n_true_total += true_ids.size
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    hits = np.concatenate(all_hits) if all_hits else np.zeros(0, bool)
    ranking = np.argsort(-scores, kind="stable")
    hits = hits[ranking]
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, hits.size + 1)
    recall = true_positives / n_true_total if n_true_total else np.zeros(hits.size)
    if n_true_total == 0:
        ap = float("nan")
    else:
        padded_recall = np.concatenate([[0.0], recall, [1.0]])
        envelope = np.concatenate([[0.0], precision, [0.0]])
        envelope = np.maximum.accumulate(envelope[::-1])[::-1]
        steps = np.flatnonzero(padded_recall[1:] != padded_recall[:-1])
        ap = float(np.sum((padded_recall[steps + 1] - padded_recall[steps]) * envelope[steps + 1]))
    return (ap, precision, recall) if return_curve else ap


# --- COCO --------------------------------------------------------------------------------------

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR2", "AR3", "ARs", "ARm", "ARl")


def coco_gt_from_label_maps(label_maps, image_ids=None, category_ids=1, categories=None):
    """A COCO ground-truth dict (images, annotations with compressed RLE, categories).

    Args:
        label_maps: one label map or a list.
        image_ids: one id per image (default 1..n).
        category_ids: one int for every instance, or per image an int / array indexed by
            label-1 / dict {label: category}.
        categories: COCO categories (default [{"id": 1, "name": "cell"}] plus any other ids used).

    Example:
        >>> gt = coco_gt_from_label_maps([np.array([[0, 1], [2, 2]], np.int32)])
        >>> len(gt["annotations"]), gt["annotations"][1]["area"], gt["annotations"][1]["bbox"]
        (2, 2, [0, 1, 2, 1])
    """
    maps = _as_list(label_maps)
    image_ids = list(range(1, len(maps) + 1)) if image_ids is None else list(image_ids)
    per_image_categories = _per_image(category_ids, len(maps))
    images, annotations, used = [], [], set()
    for image_id, label_map, image_categories in zip(image_ids, maps, per_image_categories):
        label_map = np.asarray(label_map)
        height, width = label_map.shape[:2]
        images.append({"id": image_id, "width": int(width), "height": int(height), "file_name": f"{image_id}.png"})
        rles = label_ops.label_map_to_coco(label_map)
        areas, boxes = label_ops.label_stats(label_map)
        for label, rle in rles.items():
            category = _category_of(image_categories, label)
            used.add(category)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "segmentation": rle,
                    "area": int(areas[label - 1]),
                    "bbox": boxes[label - 1],
                    "iscrowd": 0,
                }
            )
    if categories is None:
        categories = [{"id": c, "name": "cell" if c == 1 else f"class_{c}"} for c in sorted(used | {1})]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_results_from_label_maps(label_maps, scores_list=None, image_ids=None, category_ids=1):
    """COCO results (list of {image_id, category_id, segmentation, score}) for label maps.

    Args: as `coco_gt_from_label_maps`; scores_list: per image an array (index label-1) or a
    dict {label: score}, or None for 1.0.

    Example:
        >>> results = coco_results_from_label_maps([np.array([[0, 1], [2, 2]], np.int32)], [np.array([0.9, 0.4])])
        >>> [(r["image_id"], r["score"]) for r in results]
        [(1, 0.9), (1, 0.4)]
    """
    from cell_seg.submission import coco_results

    maps = _as_list(label_maps)
    image_ids = list(range(1, len(maps) + 1)) if image_ids is None else list(image_ids)
    scores_list = [None] * len(maps) if scores_list is None else list(scores_list)
    results = []
    categories_list = _per_image(category_ids, len(maps))
    for image_id, label_map, scores, categories in zip(image_ids, maps, scores_list, categories_list):
        results.extend(coco_results(image_id, label_map, scores, categories))
    return results


def _per_image(category_ids, n_images):
    if isinstance(category_ids, (int, np.integer)):
        return [int(category_ids)] * n_images
    category_ids = list(category_ids)
    if len(category_ids) != n_images:
        raise DataError(f"{len(category_ids)} category entries for {n_images} images", field="category_ids")
    return category_ids


def _category_of(image_categories, label):
    if isinstance(image_categories, (int, np.integer)):
        return int(image_categories)
    if isinstance(image_categories, dict):
        return int(image_categories[label])
    return int(np.asarray(image_categories)[label - 1])


def coco_eval(true_coco, pred_results, iou_type="segm", max_dets=(100, 500, 1000), use_categories=True, verbose=False):
    """COCO AP / AR through pycocotools' COCOeval, with `maxDets` raised for crowded images.

    Args:
        true_coco: COCO ground truth: a dict, a path to a JSON file, or a `pycocotools.coco.COCO`.
        pred_results: COCO results: list of {image_id, category_id, segmentation, score} or a
            path to a JSON file.
        iou_type: "segm" or "bbox".
        max_dets: the three detection limits (COCO's default is 1, 10, 100; cells need more).
            AP figures use the largest (pycocotools' own `summarize` reports its headline AP at
            100 detections whatever `maxDets` says; these numbers do not have that quirk).
        use_categories: False scores class-agnostically.
        verbose: print COCOeval's report (silenced by default).

    Returns:
        dict {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR2", "AR3", "ARs", "ARm",
        "ARl"} (AR1..AR3 at the three `max_dets`); -1 where COCO has nothing to average (e.g.
        no truth in an area range). Empty results give 0.0 everywhere.

    Example:
        >>> truth = [np.array([[0, 1, 1], [2, 2, 0]], np.int32)]
        >>> gt = coco_gt_from_label_maps(truth)
        >>> coco_eval(gt, coco_results_from_label_maps(truth))["AP"]
        1.0
    """
    from cell_seg.files import read_json

    if isinstance(pred_results, (str, Path)):
        pred_results = read_json(pred_results)
    if not pred_results:
        return {name: 0.0 for name in COCO_STAT_NAMES}
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        if isinstance(true_coco, COCO):
            gt = true_coco
        else:
            data = read_json(true_coco) if isinstance(true_coco, (str, Path)) else true_coco
            gt = COCO()
            gt.dataset = _complete_gt(data)
            gt.createIndex()
        known = set(gt.getImgIds())
        unknown = [r["image_id"] for r in pred_results if r["image_id"] not in known]
        if unknown:
            raise DataError(f"result for image {unknown[0]!r}, which is not in the ground truth", field="image_id")
        detections = gt.loadRes(copy.deepcopy(list(pred_results)))
        evaluator = COCOeval(gt, detections, iouType=iou_type)
        evaluator.params.maxDets = [int(m) for m in max_dets]
        evaluator.params.useCats = int(bool(use_categories))
        evaluator.evaluate()
        evaluator.accumulate()
        if verbose:
            evaluator.summarize()  # its first AP line uses maxDets=100 whatever params say
    largest = evaluator.params.maxDets[-1]
    specs = [(True, None, "all", largest), (True, 0.5, "all", largest), (True, 0.75, "all", largest)]
    specs += [(True, None, area, largest) for area in ("small", "medium", "large")]
    specs += [(False, None, "all", m) for m in evaluator.params.maxDets]
    specs += [(False, None, area, largest) for area in ("small", "medium", "large")]
    return {name: _coco_stat(evaluator, *spec) for name, spec in zip(COCO_STAT_NAMES, specs)}


def _coco_stat(evaluator, precision, iou_threshold, area, max_dets):
    """One COCO summary number, read from the accumulated arrays.

    Computed here rather than by `COCOeval.summarize`, whose headline AP is hard-wired to
    100 detections per image, too few for crowded cell images.
    """
    params = evaluator.params
    values = evaluator.eval["precision" if precision else "recall"]  # [T, R, K, A, M] / [T, K, A, M]
    if iou_threshold is not None:
        values = values[np.isclose(params.iouThrs, iou_threshold)]
    values = values[..., params.areaRngLbl.index(area), list(params.maxDets).index(max_dets)]
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else -1.0


def _complete_gt(data):
    """Copy of a COCO dict with the fields COCOeval needs (iscrowd, area, non-zero ids)."""
    from cell_seg.data.rle import coco_area_bbox, segmentation_to_coco

    data = dict(data)
    heights = {img["id"]: (img["height"], img["width"]) for img in data.get("images", [])}
    annotations = []
    for index, ann in enumerate(data.get("annotations", [])):
        ann = dict(ann)
        ann.setdefault("iscrowd", 0)
        ann["id"] = ann.get("id") or index + 1  # COCOeval uses id 0 as "unmatched"
        if "area" not in ann or "bbox" not in ann:
            rle = segmentation_to_coco(ann["segmentation"], heights[ann["image_id"]])
            area, box = coco_area_bbox(rle)
            ann.setdefault("area", area)
            ann.setdefault("bbox", box)
        annotations.append(ann)
    data["annotations"] = annotations
    data.setdefault("categories", [{"id": c, "name": str(c)} for c in sorted({a["category_id"] for a in annotations})])
    return data
