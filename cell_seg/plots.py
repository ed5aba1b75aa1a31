"""Figures (matplotlib, headless-safe): instances, truth against prediction, probabilities,
score tables, training curves and per-class scores.

Every `plot_*` function returns the matplotlib figure and takes `save=None`: a path there writes
the figure as a PNG atomically (`cell_seg.files.atomic_path`), at `dpi` dots per inch of the figure's
size (no tight bounding box, so a figure of 6 x 4 inches at dpi 100 is a 600 x 400 PNG). Without a
display matplotlib switches to the Agg backend; in Jupyter the inline backend is kept. matplotlib
is imported when a figure is drawn, not before.
"""

import os
import sys
from pathlib import Path

import numpy as np

from cell_seg.errors import DataError
from cell_seg.metrics import DEFAULT_THRESHOLDS
from cell_seg.overlays import (
    MATCH_COLORS,
    MATCH_LABELS,
    check_labels,
    comparison_overlay,
    display_image,
    instance_overlay,
    outline_overlay,
)

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
        from cell_seg.files import atomic_path

        suffix = Path(save).suffix or ".png"
        with atomic_path(save) as tmp:
            fig.savefig(tmp, dpi=dpi, format=suffix.lstrip("."))
    return fig


def _image_size(image, width=6.0, max_height=8.0):
    """Figure size (inches) for showing an image `width` inches wide."""
    height, image_width = np.asarray(image).shape[:2]
    return width, min(max_height, width * height / max(image_width, 1))


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
    true_labels = check_labels(image, true_labels, "true_labels")
    pred_labels = check_labels(image, pred_labels, "pred_labels")
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

    true_labels = check_labels(image, true_labels, "true_labels")
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
        pred_labels = check_labels(image, pred_labels, name)
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
    from cell_seg.files import read_json

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
