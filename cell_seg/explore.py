"""Data-set exploration: per-image and per-instance tables of a COCO set, counts, areas,
intensities and examples per class or image field, and how much the union mask merges touching
cells (figures through `cell_seg.plots`).
"""

import sys
from pathlib import Path

import cv2
import numpy as np

from cell_seg.errors import DataError
from cell_seg.overlays import check_labels, display_image, instance_overlay
from cell_seg.plots import DPI, _figure, _save, _show


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
    label_map = check_labels(None, label_map)
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
