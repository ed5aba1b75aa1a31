"""Figures: training curves and instance overlays (matplotlib, headless-safe)."""

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, save):
    if save is not None:
        from cell_seg.io import atomic_path

        suffix = Path(save).suffix or ".png"
        with atomic_path(save) as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight", format=suffix.lstrip("."))
    return fig


def plot_history(history, save=None):
    """Loss and metrics per epoch, training against validation, from history.csv or a DataFrame.

    Returns the figure; `save` writes it (PNG) atomically.
    """
    import pandas as pd

    plt = _pyplot()
    frame = pd.read_csv(history) if not isinstance(history, pd.DataFrame) else history
    frame = frame.drop_duplicates("epoch", keep="last") if "epoch" in frame else frame
    names = [c for c in frame.columns if c not in ("epoch", "learning_rate", "lr") and not c.startswith("val_")]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * max(1, len(names)), 3.2), squeeze=False)
    epochs = frame["epoch"] + 1 if "epoch" in frame else np.arange(1, len(frame) + 1)
    for ax, name in zip(axes[0], names):
        ax.plot(epochs, frame[name], marker="o", label="train")
        if f"val_{name}" in frame:
            ax.plot(epochs, frame[f"val_{name}"], marker="o", label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    return _save(fig, save)


def outline_overlay(image, label_map, color=(255, 255, 0)):
    """RGB uint8 copy of `image` with instance outlines drawn (pixels next to another label)."""
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8:
        scale = float(np.percentile(image, 99.8)) or 1.0
        image = np.clip(image.astype(np.float32) / scale * 255, 0, 255).astype(np.uint8)
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3].copy()
    labels = label_map.astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    edges = (cv2.dilate(labels, kernel) != cv2.erode(labels, kernel)) & (label_map > 0)
    rgb[edges] = color
    return rgb


def plot_overlay(image, label_map, title=None, save=None):
    """Image with instance outlines; returns the figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6 * image.shape[0] / image.shape[1]))
    ax.imshow(outline_overlay(image, label_map))
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, save)
