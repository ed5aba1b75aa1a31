"""Overlays of instances on images, at the image's own resolution: numpy and OpenCV only.

The `*_overlay` functions return RGB `uint8` arrays (for files, for `cv2`, or for your own
figures). Colours of the comparison view (Okabe-Ito, colour-blind safe): true positive
predictions bluish green, false positive predictions vermillion, missed truths (false negatives)
yellow outlines. Matching is the competition metric's: a prediction matches a truth when their
IoU is > the threshold, one to one (`cell_seg.metrics`), so the counts shown are exactly those of
`cell_seg.metrics.map_iou`'s table.

Example:
    >>> truth = np.zeros((8, 8), np.int32); truth[1:4, 1:4] = 1; truth[5:7, 5:7] = 2
    >>> pred = np.zeros_like(truth); pred[1:4, 1:4] = 7; pred[0, 6] = 9
    >>> match_instances(truth, pred, threshold=0.5)["counts"]
    {'tp': 1, 'fp': 1, 'fn': 1}
"""

import cv2
import numpy as np

from cell_seg.data.labels import instance_edges, relabel_sequential
from cell_seg.errors import DataError

# Okabe-Ito colours: readable with the common colour-vision deficiencies.
MATCH_COLORS = {"tp": (0, 158, 115), "fp": (213, 94, 0), "fn": (240, 228, 66)}
MATCH_LABELS = {"tp": "matched (TP)", "fp": "spurious (FP)", "fn": "missed (FN)"}


# --- colours and overlays ------------------------------------------------------------------


def display_image(image, stretch=False):
    """RGB `uint8` version of an image for display.

    uint16 and float images are scaled between their 0.2 and 99.8 percentiles; uint8 images too
    when `stretch` (dim fluorescence and flat brightfield become visible), else kept as they are.
    Grayscale is repeated to three channels; a fourth (alpha) channel is dropped.

    Example:
        >>> display_image(np.array([[0, 1000]], np.uint16)).shape
        (1, 2, 3)
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3):
        raise DataError(f"cannot display an image of shape {image.shape}")
    if image.dtype != np.uint8 or stretch:
        values = image.astype(np.float32)
        low, high = np.percentile(values, (0.2, 99.8)) if values.size else (0.0, 1.0)
        if high <= low:
            low, high = float(values.min(initial=0)), float(values.max(initial=1))
        scale = 255.0 / (high - low) if high > low else 1.0
        image = np.clip((values - low) * scale, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def label_colors(n, seed=0):
    """`(n + 1) x 3` uint8 RGB colours: row 0 (background) black, rows 1..n bright random hues.

    Example:
        >>> colors = label_colors(3)
        >>> colors.shape, colors[0].tolist()
        ((4, 3), [0, 0, 0])
    """
    rng = np.random.default_rng(seed)
    hsv = np.empty((1, n, 3), np.uint8)
    hsv[0, :, 0] = rng.integers(0, 180, n)  # OpenCV hue range
    hsv[0, :, 1] = rng.integers(150, 256, n)
    hsv[0, :, 2] = rng.integers(200, 256, n)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0] if n else np.zeros((0, 3), np.uint8)
    return np.concatenate([np.zeros((1, 3), np.uint8), rgb])


def check_labels(image, label_map, name="labels"):
    """The label map as an array; `DataError` unless it is H x W, non-negative and as large as `image`."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise DataError(f"a label map must be H x W, found shape {label_map.shape}", field=name)
    if image is not None and np.asarray(image).shape[:2] != label_map.shape:
        raise DataError(
            f"label map is {label_map.shape[0]}x{label_map.shape[1]} but the image is "
            f"{np.asarray(image).shape[0]}x{np.asarray(image).shape[1]}",
            field=name,
        )
    if label_map.size and label_map.min() < 0:
        raise DataError("label maps must not contain negative labels", field=name)
    return label_map


def outline_overlay(image, label_map, color=(255, 255, 0), stretch=False, width=1):
    """RGB uint8 copy of `image` with instance outlines drawn.

    Args:
        image: H x W or H x W x 3 image (uint8, uint16 or float; see `display_image`).
        label_map: H x W instance label map.
        color: RGB outline colour, or None for one random colour per instance.
        stretch: contrast-stretch uint8 images too.
        width: outline thickness in pixels.

    Example:
        >>> rgb = outline_overlay(np.zeros((5, 5), np.uint8), np.pad(np.ones((3, 3), np.int32), 1))
        >>> rgb[1, 1].tolist(), rgb[2, 2].tolist()
        ([255, 255, 0], [0, 0, 0])
    """
    label_map = check_labels(image, label_map)
    rgb = display_image(image, stretch=stretch).copy()
    edges = instance_edges(label_map, width)
    if color is None:
        compact, ids = relabel_sequential(label_map)
        n = len(ids)
        rgb[edges] = label_colors(n)[compact[edges]]
    else:
        rgb[edges] = color
    return rgb


def fill_overlay(image, label_map, alpha=0.45, stretch=False, seed=0, outline=True):
    """RGB uint8 copy of `image` with every instance filled in its own random colour.

    Args:
        alpha: opacity of the fill (outlines, when drawn, are opaque).
        seed: seed of the colours.
        outline: also draw each instance's outline in its colour, so touching cells stay apart.

    Example:
        >>> labels = np.array([[0, 1], [2, 2]], np.int32)
        >>> rgb = fill_overlay(np.zeros((2, 2), np.uint8), labels, alpha=1.0)
        >>> rgb[0, 0].tolist(), bool(rgb[1, 0].any())
        ([0, 0, 0], True)
    """
    label_map = check_labels(image, label_map)
    rgb = display_image(image, stretch=stretch).astype(np.float32)
    compact, ids = relabel_sequential(label_map)
    n = len(ids)
    colors = label_colors(n, seed).astype(np.float32)
    inside = compact > 0
    rgb[inside] = (1 - alpha) * rgb[inside] + alpha * colors[compact[inside]]
    if outline:
        edges = instance_edges(label_map)
        rgb[edges] = colors[compact[edges]]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def instance_overlay(image, label_map, style="fill", stretch=False):
    """`fill_overlay` (style "fill") or `outline_overlay` with per-instance colours (style "outline")."""
    if style == "fill":
        return fill_overlay(image, label_map, stretch=stretch)
    if style == "outline":
        return outline_overlay(image, label_map, color=None, stretch=stretch)
    raise DataError(f"unknown overlay style {style!r} (use fill or outline)", field="style")


# --- matching truth and prediction ---------------------------------------------------------


def match_instances(true_labels, pred_labels, threshold=0.5):
    """Match predicted to true instances one to one at IoU > `threshold`, as the metric does.

    Uses `cell_seg.metrics.iou_matrix` and the metric's own matching rule (for thresholds below
    0.5, where several matches are possible, predictions in id order take their best free
    truth), so `counts` equals the row of `cell_seg.metrics.map_iou(...)["table"]` at that
    threshold.

    Returns:
        dict: "counts" {"tp", "fp", "fn"}; "matches" list of (true id, pred id, IoU);
        "missed" true ids (FN); "spurious" pred ids (FP); "threshold".

    Example:
        >>> truth = np.array([[1, 1, 0, 2, 2]], np.int32)
        >>> pred = np.array([[3, 3, 0, 0, 4]], np.int32)
        >>> result = match_instances(truth, pred)
        >>> result["matches"], result["missed"], result["spurious"]
        ([(1, 3, 1.0)], [2], [4])
    """
    from cell_seg import metrics

    true_labels = check_labels(None, true_labels, "true_labels")
    pred_labels = check_labels(None, pred_labels, "pred_labels")
    iou, true_ids, pred_ids = metrics.iou_matrix(true_labels, pred_labels, return_ids=True)
    # The metric's matching rule (private there, shared here so the counts can never disagree).
    pairs = metrics._greedy_matches(iou, np.arange(iou.shape[1]), float(threshold), strict=True) if iou.size else {}
    matched_pred = np.zeros(pred_ids.size, bool)
    matched_true = np.zeros(true_ids.size, bool)
    matches = []
    for p, t in sorted(pairs.items(), key=lambda item: item[1]):
        matched_pred[p] = matched_true[t] = True
        matches.append((int(true_ids[t]), int(pred_ids[p]), round(float(iou[t, p]), 4)))
    counts = {"tp": len(matches), "fp": int((~matched_pred).sum()), "fn": int((~matched_true).sum())}
    return {
        "counts": counts,
        "matches": matches,
        "missed": true_ids[~matched_true].tolist(),
        "spurious": pred_ids[~matched_pred].tolist(),
        "threshold": float(threshold),
    }


def comparison_overlay(image, true_labels, pred_labels, threshold=0.5, alpha=0.45, stretch=False, match=None):
    """RGB overlay of a prediction against the truth at one IoU threshold; returns (rgb, match).

    Predictions that match a truth are filled bluish green, spurious ones vermillion (both with
    an opaque outline); missed truths get a yellow outline, and a yellow tint where no
    prediction covers them. `match` is `match_instances`' result (computed when not given).

    Example:
        >>> truth = np.zeros((6, 6), np.int32); truth[1:3, 1:3] = 1; truth[4:6, 4:6] = 2
        >>> rgb, match = comparison_overlay(np.zeros((6, 6), np.uint8), truth, truth * (truth == 1))
        >>> match["counts"], rgb[1, 1].tolist() == list(MATCH_COLORS["tp"])
        ({'tp': 1, 'fp': 0, 'fn': 1}, True)
    """
    true_labels = check_labels(image, true_labels, "true_labels")
    pred_labels = check_labels(image, pred_labels, "pred_labels")
    match = match if match is not None else match_instances(true_labels, pred_labels, threshold)
    rgb = display_image(image, stretch=stretch).astype(np.float32)
    colors = np.array([(0, 0, 0), MATCH_COLORS["tp"], MATCH_COLORS["fp"], MATCH_COLORS["fn"]], np.float32)

    # Kind of every predicted pixel: 1 = part of a matched prediction, 2 = spurious.
    pred_kind = np.zeros(int(pred_labels.max(initial=0)) + 1, np.uint8)
    pred_kind[[p for _, p, _ in match["matches"]]] = 1
    pred_kind[match["spurious"]] = 2
    kind = pred_kind[pred_labels]
    missed_lookup = np.zeros(int(true_labels.max(initial=0)) + 1, bool)
    missed_lookup[match["missed"]] = True
    missed = missed_lookup[true_labels]
    kind[missed & (kind == 0)] = 3  # tint missed cells only where no prediction is drawn

    tinted = kind > 0
    rgb[tinted] = (1 - alpha) * rgb[tinted] + alpha * colors[kind[tinted]]
    pred_edges = instance_edges(pred_labels)
    rgb[pred_edges] = colors[pred_kind[pred_labels[pred_edges]]]
    missed_edges = instance_edges(true_labels) & missed
    rgb[missed_edges] = colors[3]
    return np.clip(rgb, 0, 255).astype(np.uint8), match
