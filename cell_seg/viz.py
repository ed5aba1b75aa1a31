"""Figures: instance overlays, truth-vs-prediction comparisons, score tables, data-set exploration,
training curves and per-class scores (matplotlib, headless-safe), plus a command-line overlay tool.

    python -m cell_seg.viz --image IMG --labels LABELS.png [--out overlay.png]
    python -m cell_seg.viz --image IMG --submission submission.csv --id ID [--truth TRUTH.png]

Every `plot_*` function returns the matplotlib figure and takes `save=None`: a path there writes
the figure as a PNG atomically (`cell_seg.io.atomic_path`), at `dpi` dots per inch of the figure's
size (no tight bounding box, so a figure of 6 x 4 inches at dpi 100 is a 600 x 400 PNG). Without a
display matplotlib switches to the Agg backend; in Jupyter the inline backend is kept.

The `*_overlay` functions return RGB `uint8` arrays at the image's own resolution (for files, for
`cv2`, or for your own figures). Colours of the comparison view (Okabe-Ito, colour-blind safe):
true positive predictions bluish green, false positive predictions vermillion, missed truths
(false negatives) yellow outlines. Matching is the competition metric's: a prediction matches a
truth when their IoU is > the threshold, one to one (`cell_seg.metrics`), so the counts shown are
exactly those of `cell_seg.metrics.map_iou`'s table.

Only numpy, OpenCV, pandas and matplotlib are imported (matplotlib when a figure is drawn).

Example:
    >>> truth = np.zeros((8, 8), np.int32); truth[1:4, 1:4] = 1; truth[5:7, 5:7] = 2
    >>> pred = np.zeros_like(truth); pred[1:4, 1:4] = 7; pred[0, 6] = 9
    >>> match_instances(truth, pred, threshold=0.5)["counts"]
    {'tp': 1, 'fp': 1, 'fn': 1}
"""

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from cell_seg.cli import run_main
from cell_seg.errors import DataError
from cell_seg.metrics import DEFAULT_THRESHOLDS

# Okabe-Ito colours: readable with the common colour-vision deficiencies.
MATCH_COLORS = {"tp": (0, 158, 115), "fp": (213, 94, 0), "fn": (240, 228, 66)}
MATCH_LABELS = {"tp": "matched (TP)", "fp": "spurious (FP)", "fn": "missed (FN)"}
DPI = 100


# --- plumbing --------------------------------------------------------------------------------


def _headless():
    """True where no window can open: Linux (or another Unix) without an X11 or Wayland display."""
    if sys.platform in ("win32", "darwin"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _pyplot():
    """matplotlib.pyplot, switched to the Agg backend when there is no display.

    Jupyter's inline backend and any backend chosen with MPLBACKEND or matplotlib.use are kept
    where a display exists.
    """
    import matplotlib

    backend = matplotlib.get_backend().lower()
    if _headless() and backend != "agg" and not backend.startswith("module://"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(n_rows=1, n_cols=1, size=(6, 4)):
    """A figure with an `n_rows x n_cols` grid of axes (always a 2-D array), constrained layout."""
    plt = _pyplot()
    fig, axes = plt.subplots(n_rows, n_cols, figsize=size, squeeze=False, layout="constrained")
    return fig, axes


def _save(fig, save, dpi=DPI):
    """Write `fig` to `save` (PNG unless the suffix says otherwise) atomically; returns `fig`."""
    if save is not None:
        from cell_seg.io import atomic_path

        suffix = Path(save).suffix or ".png"
        with atomic_path(save) as tmp:
            fig.savefig(tmp, dpi=dpi, format=suffix.lstrip("."))
    return fig


def _image_size(image, width=6.0, max_height=8.0):
    """Figure size (inches) for showing an image `width` inches wide."""
    height, image_width = np.asarray(image).shape[:2]
    return width, min(max_height, width * height / max(image_width, 1))


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


def _check_labels(image, label_map, name="labels"):
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


def instance_edges(label_map, width=1):
    """Boolean mask of instance pixels that touch another label or the background.

    Example:
        >>> instance_edges(np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1]])).astype(int).tolist()
        [[1, 1, 1], [1, 0, 1], [1, 1, 1]]
    """
    label_map = np.asarray(label_map)
    labels = label_map.astype(np.float32)  # exact for ids below 2**24
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    # Pad with 0 so instances cut by the image edge still show an outline there.
    padded = cv2.copyMakeBorder(labels, width, width, width, width, cv2.BORDER_CONSTANT, value=0)
    high = cv2.dilate(padded, kernel)[width:-width, width:-width]
    low = cv2.erode(padded, kernel)[width:-width, width:-width]
    return (high != low) & (label_map > 0)


def _compact_labels(label_map):
    """Label map renumbered 1..n (0 stays 0) and n."""
    ids, inverse = np.unique(label_map, return_inverse=True)
    inverse = inverse.reshape(label_map.shape)
    if ids.size and ids[0] == 0:
        return inverse, ids.size - 1
    return inverse + 1, ids.size


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
    label_map = _check_labels(image, label_map)
    rgb = display_image(image, stretch=stretch).copy()
    edges = instance_edges(label_map, width)
    if color is None:
        compact, n = _compact_labels(label_map)
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
    label_map = _check_labels(image, label_map)
    rgb = display_image(image, stretch=stretch).astype(np.float32)
    compact, n = _compact_labels(label_map)
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

    true_labels = _check_labels(None, true_labels, "true_labels")
    pred_labels = _check_labels(None, pred_labels, "pred_labels")
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
    true_labels = _check_labels(image, true_labels, "true_labels")
    pred_labels = _check_labels(image, pred_labels, "pred_labels")
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


# --- images and instances ------------------------------------------------------------------


def _show(ax, rgb, title=None):
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)


def plot_instances(image, label_map, style="fill", title=None, stretch=True, save=None, dpi=DPI):
    """Image with its instances (filled random colours or coloured outlines); returns the figure.

    Example:
        >>> fig = plot_instances(image, label_map, title="ground truth", save="truth.png")  # doctest: +SKIP
    """
    rgb = instance_overlay(image, label_map, style=style, stretch=stretch)
    fig, axes = _figure(size=_image_size(image))
    _show(axes[0, 0], rgb, title)
    return _save(fig, save, dpi)


def plot_overlay(image, label_map, title=None, save=None, style="outline", stretch=False, dpi=DPI):
    """Image with instance outlines (yellow; `style="fill"` fills them); returns the figure."""
    if style == "outline":
        rgb = outline_overlay(image, label_map, stretch=stretch)
    else:
        rgb = instance_overlay(image, label_map, style=style, stretch=stretch)
    fig, axes = _figure(size=_image_size(image))
    _show(axes[0, 0], rgb, title)
    return _save(fig, save, dpi)


def _legend(fig, kinds=("tp", "fp", "fn")):
    """The TP / FP / FN colour key, below the panels."""
    from matplotlib.patches import Patch

    handles = [Patch(color=np.array(MATCH_COLORS[k]) / 255, label=MATCH_LABELS[k]) for k in kinds]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(kinds), fontsize=9, frameon=False)


def _counts_text(match):
    c = match["counts"]
    return f"IoU > {match['threshold']:g}: TP {c['tp']}, FP {c['fp']}, FN {c['fn']}"


def plot_comparison(image, true_labels, pred_labels, threshold=0.5, title=None, stretch=True, save=None, dpi=DPI):
    """The TP / FP / FN view of a prediction at one IoU threshold (see `comparison_overlay`).

    The counts are written in the title and kept on the figure as `fig.counts` (a dict with
    tp, fp, fn) and the whole match as `fig.match`.

    Example:
        >>> fig = plot_comparison(image, truth, prediction, threshold=0.5)   # doctest: +SKIP
        >>> fig.counts                                                      # doctest: +SKIP
        {'tp': 41, 'fp': 3, 'fn': 6}
    """
    rgb, match = comparison_overlay(image, true_labels, pred_labels, threshold, stretch=stretch)
    fig, axes = _figure(size=_image_size(image))
    heading = _counts_text(match)
    _show(axes[0, 0], rgb, f"{title}\n{heading}" if title else heading)
    _legend(fig)
    fig.counts, fig.match = match["counts"], match
    return _save(fig, save, dpi)


def plot_truth_vs_prediction(
    image, true_labels, pred_labels, threshold=0.5, style="outline", title=None, stretch=True, save=None, dpi=DPI
):
    """Ground truth and prediction side by side, plus the TP / FP / FN view (`threshold=None` omits it).

    Each panel's title gives its instance count; with a threshold the figure carries `fig.counts`
    and `fig.match` as in `plot_comparison`.

    Example:
        >>> fig = plot_truth_vs_prediction(image, truth, prediction, save="val_0.png")  # doctest: +SKIP
    """
    true_labels = _check_labels(image, true_labels, "true_labels")
    pred_labels = _check_labels(image, pred_labels, "pred_labels")
    n_panels = 2 if threshold is None else 3
    width, height = _image_size(image, width=4.5, max_height=6.0)
    fig, axes = _figure(1, n_panels, size=(width * n_panels, height + 0.6))
    n_true = int(np.unique(true_labels[true_labels > 0]).size)
    n_pred = int(np.unique(pred_labels[pred_labels > 0]).size)
    _show(axes[0, 0], instance_overlay(image, true_labels, style, stretch), f"ground truth ({n_true} instances)")
    _show(axes[0, 1], instance_overlay(image, pred_labels, style, stretch), f"prediction ({n_pred} instances)")
    if threshold is not None:
        rgb, match = comparison_overlay(image, true_labels, pred_labels, threshold, stretch=stretch)
        _show(axes[0, 2], rgb, _counts_text(match))
        _legend(fig)
        fig.counts, fig.match = match["counts"], match
    if title:
        fig.suptitle(title)
    return _save(fig, save, dpi)


def plot_comparisons(image, true_labels, predictions, threshold=0.5, show_truth=True, title=None, stretch=True,
                     save=None, dpi=DPI):
    """Several predictions of one image side by side, each as its TP / FP / FN view.

    Args:
        predictions: {name: label map}, e.g. {"components": a, "watershed": b}.
        show_truth: start with a panel of the ground truth.

    Each panel's title gives the image's score (mAP over IoU 0.50:0.95) and the counts at
    `threshold`; `fig.counts` is {name: {"tp", "fp", "fn"}} and `fig.scores` {name: mAP}.

    Example:
        >>> fig = plot_comparisons(image, truth, {"components": a, "watershed": b})   # doctest: +SKIP
    """
    from cell_seg.metrics import map_iou

    true_labels = _check_labels(image, true_labels, "true_labels")
    if not predictions:
        raise DataError("no predictions to compare", field="predictions")
    n_panels = len(predictions) + bool(show_truth)
    width, height = _image_size(image, width=4.5, max_height=6.0)
    fig, axes = _figure(1, n_panels, size=(width * n_panels, height + (1.1 if title else 0.8)))
    panels = iter(axes[0])
    if show_truth:
        n_true = int(np.unique(true_labels[true_labels > 0]).size)
        _show(next(panels), instance_overlay(image, true_labels, "outline", stretch), f"ground truth ({n_true} instances)")
    fig.counts, fig.scores = {}, {}
    for (name, pred_labels), ax in zip(predictions.items(), panels):
        pred_labels = _check_labels(image, pred_labels, name)
        rgb, match = comparison_overlay(image, true_labels, pred_labels, threshold, stretch=stretch)
        score = map_iou(true_labels, pred_labels)["map"]
        _show(ax, rgb, f"{name}: mAP {score:.3f}\n{_counts_text(match)}")
        fig.counts[name], fig.scores[name] = match["counts"], score
    _legend(fig)
    if title:
        fig.suptitle(title)
    return _save(fig, save, dpi)


def plot_probabilities(image, probs, channels, title=None, stretch=True, save=None, dpi=DPI):
    """The image and each predicted probability map (foreground, border, class_*) side by side.

    Args:
        probs: `H x W x C` probabilities in [0, 1] (what `Predictor.predict_probs` returns).
        channels: the C channel names.

    Example:
        >>> probs = np.random.default_rng(0).random((8, 8, 2))
        >>> fig = plot_probabilities(np.zeros((8, 8), np.uint8), probs, ["foreground", "border"])
        >>> [ax.get_title() for ax in fig.axes[:3]]
        ['image', 'foreground', 'border']
    """
    probs = np.asarray(probs, np.float32)
    probs = probs[..., None] if probs.ndim == 2 else probs
    channels = list(channels)
    if probs.shape[:2] != np.asarray(image).shape[:2] or probs.shape[2] != len(channels):
        raise DataError(f"probabilities of shape {probs.shape} do not fit the image {np.asarray(image).shape[:2]} "
                        f"and {len(channels)} channels", field="probs")
    width, height = _image_size(image, width=4.0, max_height=5.0)
    fig, axes = _figure(1, len(channels) + 1, size=(width * (len(channels) + 1) + 0.8, height + 0.5))
    _show(axes[0, 0], display_image(image, stretch=stretch), "image")
    for ax, index in zip(axes[0, 1:], range(len(channels))):
        shown = ax.imshow(probs[..., index], vmin=0, vmax=1, cmap="magma", interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(channels[index], fontsize=10)
    fig.colorbar(shown, ax=list(axes[0, 1:]), shrink=0.8, label="probability")
    if title:
        fig.suptitle(title)
    return _save(fig, save, dpi)


# --- score tables ----------------------------------------------------------------------------


def score_table(true_labels, pred_labels, thresholds=DEFAULT_THRESHOLDS):
    """Per-threshold TP / FP / FN / precision of an image (a list of images: summed) and its score.

    Returns:
        (DataFrame with columns threshold, tp, fp, fn, precision = TP / (TP + FP + FN); the
        score: the image's mean precision over the thresholds, for a list the mean over images).

    Example:
        >>> truth = np.array([[1, 1, 0, 2, 2]], np.int32)
        >>> table, score = score_table(truth, truth, thresholds=[0.5, 0.9])
        >>> table["tp"].tolist(), score
        ([2, 2], 1.0)
    """
    from cell_seg.metrics import map_iou

    result = map_iou(true_labels, pred_labels, thresholds=thresholds)
    return result["table"][["threshold", "tp", "fp", "fn", "precision"]], result["map"]


def format_score_table(true_labels, pred_labels, thresholds=DEFAULT_THRESHOLDS):
    """The table as the DSB2018 / Sartorius metric kernels print it (a string).

    Example:
        >>> truth = np.array([[1, 1, 0, 2, 2, 2]], np.int32)
        >>> pred = np.array([[1, 1, 0, 0, 2, 2]], np.int32)    # IoU 1 and 2/3
        >>> print(format_score_table(truth, pred, thresholds=[0.5, 0.75]))
        Thresh   TP   FP   FN  Prec.
        0.500     2    0    0  1.000
        0.750     1    1    1  0.333
        AP        -    -    -  0.667
    """
    table, score = score_table(true_labels, pred_labels, thresholds)
    lines = [f"{'Thresh':<6} {'TP':>4} {'FP':>4} {'FN':>4} {'Prec.':>6}"]
    for row in table.itertuples(index=False):
        lines.append(f"{row.threshold:<6.3f} {row.tp:>4d} {row.fp:>4d} {row.fn:>4d} {row.precision:>6.3f}")
    lines.append(f"{'AP':<6} {'-':>4} {'-':>4} {'-':>4} {score:>6.3f}")
    return "\n".join(lines)


def plot_score_table(true_labels, pred_labels, thresholds=DEFAULT_THRESHOLDS, title=None, save=None, dpi=DPI):
    """The per-threshold table as a matplotlib table figure; returns the figure.

    Example:
        >>> fig = plot_score_table(truth, prediction, save="table.png")   # doctest: +SKIP
    """
    table, score = score_table(true_labels, pred_labels, thresholds)
    cells = [[f"{r.threshold:.2f}", str(r.tp), str(r.fp), str(r.fn), f"{r.precision:.3f}"] for r in table.itertuples()]
    cells.append(["AP", "", "", "", f"{score:.3f}"])
    fig, axes = _figure(size=(4.2, 0.5 + 0.25 * (len(cells) + 1)))
    ax = axes[0, 0]
    ax.set_axis_off()
    drawn = ax.table(cellText=cells, colLabels=["IoU >", "TP", "FP", "FN", "precision"], cellLoc="right",
                     colWidths=[0.18, 0.17, 0.17, 0.17, 0.31], bbox=[0, 0, 1, 1])
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(9)
    for (row, _), cell in drawn.get_celld().items():
        if row == 0 or row == len(cells):
            cell.set_text_props(fontweight="bold")
    ax.set_title(title or f"precision = TP / (TP + FP + FN); AP {score:.3f}", fontsize=10)
    return _save(fig, save, dpi)


# --- data-set exploration -----------------------------------------------------------------


def _as_dataset(source, images_dir=None):
    """A CocoDataset from a CocoDataset, a COCO dict or a COCO JSON path."""
    from cell_seg.data.dataset import CocoDataset

    if isinstance(source, CocoDataset):
        return source
    if isinstance(source, (str, Path)):
        return CocoDataset(source, images_dir if images_dir is not None else Path(source).parent)
    return CocoDataset(source, images_dir if images_dir is not None else ".")


_IMAGE_COLUMNS = ("id", "file_name", "height", "width", "key", "image_class")


def dataset_tables(source, images_dir=None):
    """Per-image and per-instance tables of a COCO data set, from the annotations alone.

    Args:
        source: a `CocoDataset`, a COCO dict or the path of a COCO JSON file.
        images_dir: the images folder (only needed later, for intensities and examples).

    Returns:
        (images, instances) DataFrames. images: image_id, key, file_name, height, width, class
        (the image's class, see `CocoDataset.image_class`), n_instances and every other scalar
        image field (e.g. modality, sample_id); instances: image_id, category, area (pixels).

    Example:
        >>> from cell_seg.sample_data import COCO_JSON
        >>> images, instances = dataset_tables(COCO_JSON)
        >>> len(images), len(instances), sorted(instances["category"].unique())
        (20, 796, ['nucleus'])
    """
    import pandas as pd

    from cell_seg.data import rle as rle_codec

    dataset = _as_dataset(source, images_dir)
    names = dict(zip(dataset.category_ids, dataset.category_names))
    image_rows, instance_rows = [], []
    for image_id in dataset.image_ids:
        info = dataset.image_info(image_id)
        annotations = dataset.annotations(image_id)
        row = {
            "image_id": image_id,
            "key": dataset.key(image_id),
            "file_name": info["file_name"],
            "height": info.get("height"),
            "width": info.get("width"),
            "class": dataset.image_class(image_id),
            "n_instances": len(annotations),
        }
        row.update({k: v for k, v in info.items() if k not in _IMAGE_COLUMNS and isinstance(v, (str, int, float, bool))})
        image_rows.append(row)
        for ann in annotations:
            area = ann.get("area")
            if area is None:
                shape = dataset.image_shape(image_id)
                area = rle_codec.coco_area_bbox(rle_codec.segmentation_to_coco(ann["segmentation"], shape))[0]
            instance_rows.append({"image_id": image_id, "category": names[ann["category_id"]], "area": float(area)})
    images = pd.DataFrame(image_rows)
    instances = pd.DataFrame(instance_rows, columns=["image_id", "category", "area"])
    return images, instances


def _grouped(images, instances, by):
    """Group name of every image and of every instance, for `by` = "class" or an image field.

    With "class", instances are grouped by their own category and images by their class;
    with a field (e.g. "modality"), instances take the field of their image.
    """
    if by == "class":
        return images["class"].fillna("none").astype(str), instances["category"].astype(str)
    if by not in images.columns:
        fields = ", ".join(c for c in images.columns if c not in ("image_id", "file_name", "n_instances"))
        raise DataError(f"no image field {by!r} to group by (fields: {fields})", field="by")
    image_groups = images[by].fillna("none").astype(str)
    lookup = dict(zip(images["image_id"], image_groups))
    return image_groups, instances["image_id"].map(lookup).astype(str)


def _tables(source, images_dir):
    if isinstance(source, tuple) and len(source) == 2:
        return source  # already (images, instances)
    return dataset_tables(source, images_dir)


def _bar(ax, names, values, title, ylabel):
    bars = ax.bar(range(len(names)), values, color="#4c72b0")
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center")
    ax.bar_label(bars, fmt="%d", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)


def _draw_class_counts(axes, images, instances, by):
    image_groups, instance_groups = _grouped(images, instances, by)
    inst = instance_groups.value_counts().sort_index()
    imgs = image_groups.value_counts().sort_index()
    _bar(axes[0], list(inst.index), inst.values, f"instances per {by}", "instances")
    _bar(axes[1], list(imgs.index), imgs.values, f"images per {by}", "images")


def _draw_instances_per_image(ax, images, instances, by):
    image_groups, _ = _grouped(images, instances, by)
    names = sorted(image_groups.unique())
    data = [images.loc[image_groups == name, "n_instances"].to_numpy() for name in names]
    ax.boxplot(data, showfliers=False)
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, s=8, alpha=0.6, color="#dd8452", zorder=3)
    ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_title(f"instances per image, by {by}", fontsize=10)
    ax.set_ylabel("instances in an image")


def _draw_instance_areas(ax, images, instances, by, log=True):
    _, instance_groups = _grouped(images, instances, by)
    areas = instances["area"].to_numpy(np.float64)
    positive = areas[areas > 0]
    if positive.size == 0:
        ax.set_title("instance area (no instances)", fontsize=10)
        return
    if log:
        bins = np.geomspace(max(1.0, positive.min()), positive.max() * 1.01 + 1, 40)
        ax.set_xscale("log")
    else:
        bins = np.linspace(0, positive.max() * 1.01 + 1, 40)
    for name in sorted(instance_groups.unique()):
        values = areas[(instance_groups == name).to_numpy()]
        median = float(np.median(values)) if values.size else 0.0
        ax.hist(values, bins=bins, histtype="step", linewidth=1.5, label=f"{name} (median {median:.0f})")
    ax.set_title(f"instance area by {by}", fontsize=10)
    ax.set_xlabel("area (pixels)")
    ax.set_ylabel("instances")
    ax.legend(fontsize=8)


def _gray(image):
    image = np.asarray(image)
    if image.ndim == 3:
        return image[..., :3].mean(axis=2).astype(image.dtype)
    return image


def _draw_intensities(ax, dataset, images, instances, by, max_images):
    image_groups, _ = _grouped(images, instances, by)
    top = 255
    samples = {}
    for name in sorted(image_groups.unique()):
        ids = images.loc[(image_groups == name).to_numpy(), "image_id"].tolist()
        picks = np.unique(np.linspace(0, len(ids) - 1, min(max_images, len(ids))).round().astype(int))
        samples[name] = [_gray(dataset.load_image(ids[i])) for i in picks]
        top = max([top] + [int(s.max(initial=0)) for s in samples[name] if s.dtype != np.uint8])
    bins = np.linspace(0, top + 1, 129)
    for name, grays in samples.items():
        counts = sum(np.histogram(g, bins=bins)[0] for g in grays)
        share = counts / max(1, counts.sum())
        ax.plot(bins[:-1], share, drawstyle="steps-post", label=f"{name} ({len(grays)} images)")
    ax.set_yscale("log")
    ax.set_title(f"pixel intensity by {by}", fontsize=10)
    ax.set_xlabel("intensity (grayscale, as stored)")
    ax.set_ylabel("share of pixels")
    ax.legend(fontsize=8)


def plot_class_counts(source, by="class", images_dir=None, save=None, dpi=DPI):
    """Instances per class and images per class (two bar charts); returns the figure.

    `source` is a `CocoDataset`, COCO dict, COCO JSON path or `dataset_tables`' result; `by` is
    "class" (instances by category, images by image class) or an image field such as "modality".

    Example:
        >>> from cell_seg.sample_data import COCO_JSON
        >>> fig = plot_class_counts(COCO_JSON, by="modality")
        >>> [t.get_text() for t in fig.axes[1].get_xticklabels()]
        ['brightfield', 'fluorescence', 'histology']
    """
    images, instances = _tables(source, images_dir)
    fig, axes = _figure(1, 2, size=(9, 3.5))
    _draw_class_counts(axes[0], images, instances, by)
    return _save(fig, save, dpi)


def plot_instances_per_image(source, by="class", images_dir=None, save=None, dpi=DPI):
    """Distribution of the number of instances per image, by class (box plot and points)."""
    images, instances = _tables(source, images_dir)
    fig, axes = _figure(size=(6, 4))
    _draw_instances_per_image(axes[0, 0], images, instances, by)
    return _save(fig, save, dpi)


def plot_instance_areas(source, by="class", images_dir=None, log=True, save=None, dpi=DPI):
    """Histogram of instance areas (pixels, log scale unless `log=False`) by class."""
    images, instances = _tables(source, images_dir)
    fig, axes = _figure(size=(6, 4))
    _draw_instance_areas(axes[0, 0], images, instances, by, log)
    return _save(fig, save, dpi)


def plot_intensity_histograms(source, images_dir=None, by="class", max_images=8, save=None, dpi=DPI):
    """Histograms of pixel intensities (grayscale), pooled over up to `max_images` images per class.

    Reads the images, so `source` must be a `CocoDataset` or come with `images_dir` (a JSON
    path defaults to its own folder).
    """
    dataset = _as_dataset(source, images_dir)
    images, instances = dataset_tables(dataset)
    fig, axes = _figure(size=(6, 4))
    _draw_intensities(axes[0, 0], dataset, images, instances, by, max_images)
    return _save(fig, save, dpi)


def plot_dataset_overview(source, images_dir=None, by="class", max_images=8, intensities=True, save=None, dpi=DPI):
    """Five panels: instances and images per class, instances per image, areas, intensities.

    The sixth panel sums the data set up in text. `intensities=False` skips reading images.

    Example:
        >>> from cell_seg.sample_data import COCO_JSON, IMAGES_DIR
        >>> fig = plot_dataset_overview(COCO_JSON, IMAGES_DIR, by="modality")   # doctest: +SKIP
    """
    dataset = _as_dataset(source, images_dir)
    images, instances = dataset_tables(dataset)
    fig, axes = _figure(2, 3, size=(14, 7.5))
    _draw_class_counts(axes[0, :2], images, instances, by)
    _draw_instances_per_image(axes[0, 2], images, instances, by)
    _draw_instance_areas(axes[1, 0], images, instances, by)
    if intensities:
        _draw_intensities(axes[1, 1], dataset, images, instances, by, max_images)
    else:
        axes[1, 1].set_axis_off()
    ax = axes[1, 2]
    ax.set_axis_off()
    sizes = images[["height", "width"]].astype(str).agg("x".join, axis=1).value_counts()
    lines = [
        f"{len(images)} images, {len(instances)} instances",
        f"categories: {', '.join(dataset.category_names) or '-'}",
        f"instances per image: median {images['n_instances'].median():.0f}, max {images['n_instances'].max():.0f}",
        f"empty images: {int((images['n_instances'] == 0).sum())}",
        f"instance area: median {instances['area'].median():.0f} px" if len(instances) else "instance area: -",
        "image sizes: " + ", ".join(f"{s} ({n})" for s, n in sizes.head(4).items()),
    ]
    ax.text(0.0, 0.95, "\n".join(lines), va="top", fontsize=10, family="monospace", wrap=True)
    return _save(fig, save, dpi)


def plot_examples(source, image_ids=None, n=4, images_dir=None, style="fill", stretch=True, save=None, dpi=DPI):
    """A few images (top row) above their instances (bottom row); returns the figure.

    Args:
        image_ids: which images (COCO ids); default `n` evenly spaced over the data set.
        style: "fill" or "outline".

    Example:
        >>> from cell_seg.sample_data import COCO_JSON, IMAGES_DIR
        >>> fig = plot_examples(COCO_JSON, n=3, images_dir=IMAGES_DIR)   # doctest: +SKIP
    """
    dataset = _as_dataset(source, images_dir)
    if image_ids is None:
        picks = np.unique(np.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().astype(int))
        image_ids = [dataset.image_ids[i] for i in picks]
    image_ids = list(image_ids)
    if not image_ids:
        raise DataError("no images to show", file=dataset.source)
    fig, axes = _figure(2, len(image_ids), size=(3.2 * len(image_ids), 6.8))
    for column, image_id in enumerate(image_ids):
        image = dataset.load_image(image_id)
        label_map, _ = dataset.load_labels(image_id)
        group = dataset.image_info(image_id).get("modality") or dataset.image_class(image_id) or ""
        heading = f"{dataset.key(image_id)[:10]}\n{group} {image.shape[1]}x{image.shape[0]}"
        _show(axes[0, column], display_image(image, stretch=stretch), heading)
        _show(axes[1, column], instance_overlay(image, label_map, style, stretch), f"{label_map.max()} instances")
    return _save(fig, save, dpi)


# --- how much the union mask merges touching cells ----------------------------------------


def merge_stats(label_map, connectivity=8):
    """How many instances a plain foreground mask would merge: components of the union vs instances.

    Args:
        label_map: H x W instance label map.
        connectivity: 4 or 8 (8, as post-processing uses by default).

    Returns:
        dict: "instances", "components" (connected components of `label_map > 0`),
        "merged_components" (components holding more than one instance), "instances_merged"
        (instances that share their component with another), "lost" (instances - components:
        the fewest instances a components-only method must get wrong).

    Example:
        >>> labels = np.array([[1, 1, 2, 2, 0, 3]], np.int32)   # 1 and 2 touch, 3 is alone
        >>> merge_stats(labels)
        {'instances': 3, 'components': 2, 'merged_components': 1, 'instances_merged': 2, 'lost': 1}
    """
    label_map = _check_labels(None, label_map)
    n_components, components = cv2.connectedComponents((label_map > 0).astype(np.uint8), connectivity=connectivity)
    inside = label_map > 0
    pairs = np.unique(np.stack([components[inside].astype(np.int64), label_map[inside].astype(np.int64)]), axis=1)
    n_instances = int(np.unique(pairs[1]).size)
    per_component = np.bincount(pairs[0], minlength=n_components)
    crowded = per_component > 1
    merged_instances = int(np.unique(pairs[1][crowded[pairs[0]]]).size)
    n_found = n_components - 1
    return {
        "instances": n_instances,
        "components": n_found,
        "merged_components": int(crowded.sum()),
        "instances_merged": merged_instances,
        "lost": n_instances - n_found,
    }


def merge_table(source, images_dir=None, by="class", connectivity=8, progress=False):
    """`merge_stats` of every image of a data set as a DataFrame (one row per image, with its group).

    Example:
        >>> from cell_seg.sample_data import COCO_JSON
        >>> table = merge_table(COCO_JSON, by="modality")
        >>> int(table["instances"].sum())
        796
    """
    import pandas as pd

    dataset = _as_dataset(source, images_dir)
    images, instances = dataset_tables(dataset)
    groups, _ = _grouped(images, instances, by)
    rows = []
    ids = dataset.image_ids
    if progress:
        from tqdm import tqdm

        ids = tqdm(ids, desc="label maps", unit="img", file=sys.stderr)
    for image_id, group in zip(ids, groups):
        label_map, _ = dataset.load_labels(image_id)
        rows.append({"key": dataset.key(image_id), by: group, **merge_stats(label_map, connectivity)})
    return pd.DataFrame(rows)


def plot_merge_stats(table, by="class", save=None, dpi=DPI):
    """Instances against union components per image (`merge_table`'s result); points under the
    diagonal are images where touching cells merge."""
    fig, axes = _figure(size=(5, 4.5))
    ax = axes[0, 0]
    groups = table[by] if by in table else ["all"] * len(table)
    groups = np.asarray(groups, dtype=str)
    for name in sorted(set(groups)):
        rows = table[groups == name]
        ax.scatter(rows["instances"], rows["components"], s=14, alpha=0.7, label=name)
    top = max(1, int(table["instances"].max())) if len(table) else 1
    ax.plot([0, top], [0, top], color="gray", linewidth=1, linestyle="--", label="no merging")
    ax.set_xlabel("instances")
    ax.set_ylabel("connected components of the union mask")
    merged = table["instances_merged"].sum() / max(1, table["instances"].sum())
    ax.set_title(f"{merged:.1%} of instances touch another", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, save, dpi)


# --- training curves and scores -----------------------------------------------------------


def plot_history(history, save=None):
    """Loss and metrics per epoch, training against validation, from history.csv or a DataFrame.

    Returns the figure; `save` writes it (PNG) atomically.
    """
    import pandas as pd

    frame = pd.read_csv(history) if not isinstance(history, pd.DataFrame) else history
    frame = frame.drop_duplicates("epoch", keep="last") if "epoch" in frame else frame
    names = [c for c in frame.columns if c not in ("epoch", "learning_rate", "lr") and not c.startswith("val_")]
    fig, axes = _figure(1, max(1, len(names)), size=(4 * max(1, len(names)), 3.2))
    epochs = frame["epoch"] + 1 if "epoch" in frame else np.arange(1, len(frame) + 1)
    for ax, name in zip(axes[0], names):
        ax.plot(epochs, frame[name], marker="o", label="train")
        validation = frame[f"val_{name}"].dropna() if f"val_{name}" in frame else None
        if validation is not None and len(validation):
            ax.plot(epochs[validation.index], validation, marker="o", label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend()
    return _save(fig, save)


def _read_metrics(metrics):
    from cell_seg.io import read_json

    if isinstance(metrics, (str, Path)):
        path = Path(metrics)
        return read_json(path / "metrics.json" if path.is_dir() else path)
    return metrics


def plot_class_scores(metrics, save=None, dpi=DPI):
    """Validation mAP per class and post-processing mode, from metrics.json (bar chart).

    Args:
        metrics: the dict `cell_seg.evaluate` writes, the path of `metrics.json`, or a run directory.

    Example:
        >>> fig = plot_class_scores("runs/demo")   # doctest: +SKIP
    """
    metrics = _read_metrics(metrics)
    modes = metrics.get("modes") or {}
    if not modes:
        raise DataError("no 'modes' in the metrics (written by cell_seg.evaluate)", field="modes")
    classes = sorted({name for values in modes.values() for name in (values.get("per_class") or {})})
    columns = ["all"] + classes if len(classes) != 1 else ["all"]
    fig, axes = _figure(size=(max(4.5, 1.4 * len(columns) * len(modes)), 3.8))
    ax = axes[0, 0]
    width = 0.8 / len(modes)
    for i, (mode, values) in enumerate(modes.items()):
        scores = [values.get("map", np.nan) if c == "all" else (values.get("per_class") or {}).get(c, np.nan) for c in columns]
        label = mode + (" (best)" if mode == metrics.get("best_mode") else "")
        bars = ax.bar(np.arange(len(columns)) + (i - (len(modes) - 1) / 2) * width, scores, width, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylim(0, 1.18)
    ax.set_ylabel("mAP @ IoU 0.50:0.95")
    ax.set_title("validation score per class", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", ncol=len(modes))
    return _save(fig, save, dpi)


# --- command line ----------------------------------------------------------------------------


def read_csv_labels(path, image_id, shape, column=None):
    """Label map of one image from a Sartorius-style CSV (submission `id,predicted` or train.csv
    `id,annotation`): row-major Kaggle RLE, one instance per row, later rows win overlaps.

    Raises `DataError` naming the file, CSV line and field for a missing column, an unknown id
    or a bad run-length string.

    Example:
        >>> labels = read_csv_labels("submission.csv", "0030fd0e6378", (520, 704))   # doctest: +SKIP
    """
    from cell_seg.data import labels as labels_lib
    from cell_seg.data import rle as rle_codec
    from cell_seg.io import read_csv_table

    frame = read_csv_table(path, ["id"])
    if column is None:
        column = next((c for c in ("predicted", "annotation") if c in frame.columns), "predicted")
    if column not in frame.columns:
        raise DataError(f"missing column (columns are {', '.join(map(str, frame.columns))})", file=path, field=column)
    rows = np.flatnonzero((frame["id"] == str(image_id)).to_numpy())
    if rows.size == 0:
        raise DataError(f"no row for image {image_id!r}", file=path, field="id")
    arrays = []
    for row in rows:
        text = frame[column].iat[row]
        if not text.strip():
            continue
        try:
            arrays.append(rle_codec.rle_to_indices(text, shape, "row"))
        except DataError as error:
            raise error.located(file=path, row=int(row) + 2, field=column) from None
    label_map, _ = labels_lib.paint_instances(arrays, shape, order="row")
    return label_map


def _read_labels_file(path, shape):
    from cell_seg.submission import read_label_image

    label_map = read_label_image(path)
    if label_map.shape != tuple(shape):
        raise DataError(f"label image is {label_map.shape[0]}x{label_map.shape[1]}, the image {shape[0]}x{shape[1]}", file=path)
    return label_map


def main(argv=None):
    """Render an overlay of instances (from a label image or a Sartorius CSV) on an image."""
    parser = argparse.ArgumentParser(
        prog="python -m cell_seg.viz",
        description="Draw instances on an image: from a label image (uint16 PNG / TIFF, 0 = background) or from "
        "the rows of one image in a Sartorius CSV (submission id,predicted or train.csv id,annotation). With "
        "--truth, colour the prediction as matched / spurious / missed at an IoU threshold.",
        epilog="Examples:\n"
        "  python -m cell_seg.viz --image test/abc.png --labels out/abc.png --out abc_overlay.png\n"
        "  python -m cell_seg.viz --image train/abc.png --submission submission.csv --id abc --style fill\n"
        "  python -m cell_seg.viz --image img.png --labels pred.png --truth truth.png --threshold 0.5 --figure",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image", required=True, help="the image (PNG, TIFF or JPEG)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", help="instance label image of the same size (as predict --format labels writes)")
    source.add_argument("--submission", metavar="CSV", help="Sartorius-style CSV with run-length encoded instances")
    parser.add_argument("--id", help="image id of the CSV rows to draw (default: the image's file stem)")
    parser.add_argument("--column", help="CSV column holding the RLE (default: predicted, else annotation)")
    parser.add_argument("--truth", help="ground-truth label image: draw TP / FP / FN instead of plain instances")
    parser.add_argument("--threshold", type=float, default=0.5, help="IoU a match must exceed (with --truth; default 0.5)")
    parser.add_argument("--style", choices=("outline", "fill"), default="outline", help="how to draw instances")
    parser.add_argument("--stretch", action="store_true", help="contrast-stretch 8-bit images too")
    parser.add_argument("--figure", action="store_true", help="write a titled matplotlib figure instead of "
                        "an overlay at the image's own resolution")
    parser.add_argument("--out", help="output PNG (default: <image stem>_overlay.png in the current folder)")
    args = parser.parse_args(argv)

    from cell_seg.io import read_image, write_image

    image = read_image(args.image)
    shape = image.shape[:2]
    if args.labels:
        labels = _read_labels_file(args.labels, shape)
    else:
        labels = read_csv_labels(args.submission, args.id or Path(args.image).stem, shape, args.column)
    out = Path(args.out or f"{Path(args.image).stem}_overlay.png")
    n = int(np.unique(labels[labels > 0]).size)
    if args.truth:
        truth = _read_labels_file(args.truth, shape)
        if args.figure:
            fig = plot_comparison(image, truth, labels, args.threshold, title=Path(args.image).name, save=out)
            _pyplot().close(fig)
            match = fig.match
        else:
            rgb, match = comparison_overlay(image, truth, labels, args.threshold, stretch=args.stretch)
            write_image(rgb, out)
        print(f"wrote {out}: {_counts_text(match)}")
        return 0
    if args.figure:
        fig = plot_overlay(image, labels, title=f"{Path(args.image).name}: {n} instances", save=out,
                           style=args.style, stretch=args.stretch)
        _pyplot().close(fig)
    elif args.style == "outline":
        write_image(outline_overlay(image, labels, stretch=args.stretch), out)
    else:
        write_image(fill_overlay(image, labels, stretch=args.stretch), out)
    print(f"wrote {out}: {n} instances")
    return 0


def cli():
    run_main(main)


if __name__ == "__main__":
    cli()
