"""Converters from the common cell-annotation layouts to one COCO JSON dict.

Each `convert_*` function returns `(coco_dict, ConversionStats)`; `python -m cell_seg.convert`
writes the dict atomically and prints the stats as one line. Layouts:

- `convert_kaggle`: Sartorius `train.csv` (`id, annotation, width, height, cell_type, ...`,
  row-major RLE), one category per `cell_type`.
- `convert_csv_rle`: any RLE CSV with configurable columns and pixel order (DSB2018
  `stage1_solution.csv`: `ImageId, EncodedPixels, Height, Width`, column-major).
- `convert_masks`: DSB2018 folders `<root>/<id>/images/<id>.png` + `<root>/<id>/masks/*.png`.
- `convert_labels`: instance label images (16-bit PNG or TIFF, 0 = background).
- `convert_polygons`: HuBMAP `polygons.jsonl`, one category per annotation `type`.

Masks never exist as full images on the RLE paths: run-length strings become sorted flat
indices, then compressed COCO RLE (see `cell_seg.data.rle`). Every image file is decoded once,
so a corrupt file is caught here rather than in the middle of training.

Bad input raises `DataError` naming the file and row; with `skip_bad=True` the row or image is
skipped, counted and listed in `stats.skipped` instead. CSV rows are numbered as lines of the
file (the header is line 1), JSONL rows as lines too.
"""

import json
import os
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from cell_seg.data import rle as rle_codec
from cell_seg.data.coco import CocoBuilder
from cell_seg.data.labels import instance_indices
from cell_seg.errors import DataError
from cell_seg.files import IMAGE_SUFFIXES, list_images, read_csv_table, read_image

KAGGLE_COLUMNS = ("id", "annotation", "width", "height", "cell_type")


# --- shared helpers ---------------------------------------------------------------------------


def image_modality(image):
    """Guess the imaging modality of a DSB2018-style image: a heuristic, for stratifying splits.

    Returns "histology" for colour images (stained tissue), otherwise "fluorescence" when the
    background (the median) is dark and "brightfield" when it is bright.

    Example:
        >>> image_modality(np.zeros((4, 4), np.uint8)), image_modality(np.full((4, 4), 200, np.uint8))
        ('fluorescence', 'brightfield')
    """
    if image.ndim == 3:
        channels = image.astype(np.int32)
        if np.abs(channels - channels[..., :1]).mean() > 2:
            return "histology"
        image = image[..., 0]
    top = 65535 if image.dtype == np.uint16 else 255
    return "fluorescence" if np.median(image) < top / 2 else "brightfield"


def _relative_name(path, folder):
    """`path` relative to `folder` with forward slashes (COCO `file_name`)."""
    return Path(path).relative_to(folder).as_posix()


def _image_shape(path, context=""):
    """(H, W) of an image, decoding it so that corrupt files are caught; errors end with `context`."""
    try:
        return read_image(path).shape[:2]
    except DataError as error:
        raise DataError(error.message + context, file=error.file) from None


def _progress(iterable, progress):
    """A tqdm bar on stderr that erases itself when done or interrupted; use with `with`.

    `progress`: True shows it, False hides it, None shows it only when stderr is a terminal.
    """
    return tqdm(iterable, desc="images", unit="img", leave=False, disable=None if progress is None else not progress)


def _attempt(builder, skip_bad, function, *args, image=False):
    """Return `function(*args)`; on `DataError` re-raise, or with `skip_bad` record it and return None."""
    try:
        return function(*args)
    except DataError as error:
        if not skip_bad:
            raise
        builder.skip(error, image=image)
        return None


def _timed(function):
    """Decorator: store the wall time of a converter in `stats.seconds`."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        coco, stats = function(*args, **kwargs)
        stats.seconds = time.perf_counter() - start
        return coco, stats

    wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = function.__name__, function.__doc__, function
    return wrapper


# --- RLE tables (Kaggle train.csv, generic RLE CSV) -------------------------------------------


class _RleTable:
    """The columns of a one-row-per-instance RLE CSV as arrays, and how to read one row."""

    def __init__(self, table, csv, id_col, rle_col, order, height_col, width_col, class_col, category, extra_cols):
        import pandas as pd

        rle_codec._numpy_order(order)  # ValueError on a bad order, before any work
        self.csv, self.order, self.category = Path(csv), order, category
        self.id_col, self.rle_col, self.class_col = id_col, rle_col, class_col
        self.ids = table[id_col].to_numpy()
        self.rles = table[rle_col].to_numpy()
        self.classes = table[class_col].to_numpy() if class_col else None
        self.sizes = []  # (column name, values as float with NaN where not an integer, image axis)
        for column, axis in ((height_col, 0), (width_col, 1)):
            if column is not None:
                values = pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64, na_value=np.nan, copy=True)
                values[(values != np.round(values)) | ~np.isfinite(values)] = np.nan  # 8.5, inf: not sizes
                self.sizes.append((column, values, axis))
        self.extras = {column: table[column].to_numpy() for column in extra_cols}
        self.groups = table.groupby(id_col, sort=True).indices  # id -> row positions in file order
        blank = np.flatnonzero(self.ids == "")
        if len(blank):
            raise DataError("empty image id", file=self.csv, row=self.line(blank[0]), field=id_col)

    def line(self, row):
        """Line number of a row position (the header is line 1)."""
        return int(row) + 2

    def categories(self):
        return {self.category} if self.classes is None else {name for name in self.classes if name}

    def instance(self, row, path, shape):
        """(category, COCO RLE, column-major indices) of one row; `DataError` naming the row."""
        line = self.line(row)
        for column, values, axis in self.sizes:
            if np.isnan(values[row]):
                raise DataError("not an integer", file=self.csv, row=line, field=column)
            if int(values[row]) != shape[axis]:
                raise DataError(
                    f"{int(values[row])} does not match the image {path} ({shape[0]} x {shape[1]} pixels)",
                    file=self.csv, row=line, field=column,
                )
        name = self.category if self.classes is None else self.classes[row]
        if not name:
            raise DataError("empty class", file=self.csv, row=line, field=self.class_col)
        try:
            indices = rle_codec.rle_to_indices(self.rles[row], shape, self.order)
        except DataError as error:
            raise error.located(file=self.csv, row=line, field=self.rle_col) from None
        indices = rle_codec.reorder_indices(indices, shape, self.order, "col")
        return name, rle_codec.indices_to_coco(indices, shape), indices

    def image_fields(self, rows, instances):
        """(image_class, extra fields) of an image: its most common class, first filled extras."""
        names = Counter(name for name, _, _ in instances)
        if names:
            image_class = names.most_common(1)[0][0]
        else:
            image_class = self.category if self.classes is None else next((c for c in self.classes[rows] if c), None)
        extra = {}
        for column, values in self.extras.items():
            filled = [value for value in values[rows] if value != ""]
            extra[column] = filled[0] if filled else None
        return image_class, extra


def _image_folders(images):
    """(root that `file_name` is relative to, {id: path}) for one image folder or several.

    With several folders `file_name` is relative to their common parent folder; an id found
    in two folders is an error.
    """
    folders = [Path(images)] if isinstance(images, (str, Path)) else [Path(folder) for folder in images]
    if not folders:
        raise DataError("no image folder given")
    image_paths = {}
    for folder in folders:
        for key, path in list_images(folder).items():
            if key in image_paths:
                raise DataError(f"image id {key!r} is also in {image_paths[key]}", file=path)
            image_paths[key] = path
    if len(folders) == 1:
        return folders[0], image_paths
    return Path(os.path.commonpath([folder.resolve() for folder in folders])), {
        key: path.resolve() for key, path in image_paths.items()}


def _convert_rle_table(table, images, skip_bad, progress, info, modality=False):
    """Shared body of `convert_kaggle` and `convert_csv_rle`; `modality` adds each image's kind."""
    images, image_paths = _image_folders(images)
    builder = CocoBuilder(table.categories(), info=info)

    def locate(key, line):
        path = image_paths.get(key)
        if path is None:
            raise DataError(f"no image file for id {key!r} in {images}", file=table.csv, row=line, field=table.id_col)
        context = f" (image of id {key!r}, {table.csv.name} row {line})"
        if not modality:
            return path, _image_shape(path, context=context), {}
        try:
            image = read_image(path)
        except DataError as error:
            raise DataError(error.message + context, file=error.file) from None
        return path, image.shape[:2], {"modality": image_modality(image)}

    with _progress(sorted(table.groups), progress) as bar:
        for key in bar:
            rows = table.groups[key]
            located = _attempt(builder, skip_bad, locate, key, table.line(rows[0]), image=True)
            if located is None:
                continue
            path, shape, kind = located
            instances = [_attempt(builder, skip_bad, table.instance, row, path, shape) for row in rows]
            instances = [instance for instance in instances if instance is not None]
            image_class, extra = table.image_fields(rows, instances)
            builder.add_image(
                key, _relative_name(path, images), shape[0], shape[1], image_class=image_class,
                instances=instances, **extra, **kind,
            )
    return builder.build()


@_timed
def convert_kaggle(csv, images, skip_bad=False, progress=False):
    """Convert a Sartorius-style `train.csv` to COCO.

    Columns `id, annotation, width, height, cell_type` are required (row-major RLE, 1-indexed);
    further columns (`plate_time, sample_date, sample_id, elapsed_timedelta`) are kept as
    per-image fields when filled. Every id needs an image `<images>/<id>.*` whose size matches
    the row's width and height. Categories are the cell types (ids in name order); each image's
    `image_class` is its cell type.

    Args:
        csv: path of `train.csv`.
        images: folder of the images (`file_name` is relative to it).
        skip_bad: skip bad rows and images (counted in the stats) instead of raising `DataError`.
        progress: tqdm progress bar on stderr: True, False, or None (only on a terminal).

    Returns:
        (coco dict, ConversionStats)

    Example:
        >>> coco, stats = convert_kaggle("train.csv", "train")          # doctest: +SKIP
        >>> stats.summary("wrote coco.json")                            # doctest: +SKIP
        'wrote coco.json: 440 images, 35228 instances (astro 8835, cort 9499, shsy5y 16894), ...'
    """
    frame = read_csv_table(csv, KAGGLE_COLUMNS)
    extra_cols = [c for c in frame.columns if c not in KAGGLE_COLUMNS]
    table = _RleTable(frame, csv, "id", "annotation", "row", "height", "width", "cell_type", None, extra_cols)
    info = {"description": f"converted from {Path(csv).name} (Kaggle Sartorius layout)", "converter": "kaggle"}
    return _convert_rle_table(table, images, skip_bad, progress, info)


@_timed
def convert_csv_rle(
    csv,
    images,
    order,
    id_col="ImageId",
    rle_col="EncodedPixels",
    height_col=None,
    width_col=None,
    class_col=None,
    category="cell",
    extra_cols=(),
    skip_bad=False,
    progress=False,
):
    """Convert any run-length CSV (one row per instance) to COCO.

    Args:
        csv: the CSV file.
        images: folder of the images (`<images>/<id>.*` or DSB layout `<images>/<id>/images/<id>.png`),
            or a list of such folders (`file_name` is then relative to their common parent).
        order: "row" (pixel (r, c) is r*W + c + 1) or "col" (c*H + r + 1, DSB2018 solution files).
        id_col, rle_col: columns of the image id and the RLE string.
        height_col, width_col: optional size columns, checked against the image.
        class_col: optional column of class names; otherwise every instance is `category`.
        category: the single category name when `class_col` is None.
        extra_cols: columns kept as per-image fields (first filled value of the image's rows).
        skip_bad, progress: as in `convert_kaggle`.

    A row with an empty RLE string adds no instance (an image listed with no object stays, empty).
    Each image also gets `modality` (see `image_modality`), as `convert_masks` gives it, so that
    on DSB2018 both converters write the same COCO instances and image fields.

    Example:
        >>> coco, stats = convert_csv_rle("stage1_solution.csv", "stage1_test", order="col",
        ...     height_col="Height", width_col="Width", category="nucleus")   # doctest: +SKIP
    """
    extra_cols = list(extra_cols)
    frame = read_csv_table(csv, [id_col, rle_col, height_col, width_col, class_col, *extra_cols])
    table = _RleTable(frame, csv, id_col, rle_col, order, height_col, width_col, class_col, category, extra_cols)
    info = {"description": f"converted from {Path(csv).name} ({order}-major RLE)", "converter": "csv-rle"}
    return _convert_rle_table(table, images, skip_bad, progress, info, modality=True)


# --- DSB2018 mask folders ---------------------------------------------------------------------


def _dsb_image(folder):
    """Path and pixels of a DSB2018 sample folder's image, `<folder>/images/<folder name>.*`."""
    candidates = sorted((folder / "images").glob(f"{folder.name}.*"))
    candidates = [path for path in candidates if path.suffix.lower() in IMAGE_SUFFIXES]
    if not candidates:
        raise DataError("image file not found", file=folder / "images" / f"{folder.name}.png")
    return candidates[0], read_image(candidates[0])


def _mask_instance(path, image_path, shape, category):
    """(category, COCO RLE, column-major indices) of one mask PNG (any non-zero colour; alpha ignored)."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DataError("cannot decode mask image (corrupt or unsupported format)", file=path)
    if mask.ndim == 3:
        mask = mask[..., :3].max(axis=2) if mask.shape[2] >= 3 else mask[..., 0]
    if mask.shape != tuple(shape):
        raise DataError(
            f"mask is {mask.shape[0]} x {mask.shape[1]} pixels but image {image_path} is {shape[0]} x {shape[1]}",
            file=path,
        )
    indices = np.flatnonzero(mask.ravel(order="F"))
    return category, rle_codec.indices_to_coco(indices, shape), indices


@_timed
def convert_masks(root, skip_bad=False, progress=False, ids=None, category="nucleus"):
    """Convert DSB2018 mask folders to COCO: one instance per mask PNG.

    Layout: `<root>/<id>/images/<id>.png` and `<root>/<id>/masks/*.png` (0/255, possibly RGBA;
    any non-zero colour is foreground). Instances follow sorted mask file names; empty mask PNGs
    are dropped and counted (`stats.empty_masks`); a sample without a `masks` folder is an empty
    image. Each image also gets `modality` (see `image_modality`).

    Args:
        root: the folder holding one sub-folder per image (e.g. `stage1_train`).
        skip_bad: skip unreadable masks and images (counted) instead of raising `DataError`.
        progress: tqdm progress bar on stderr: True, False, or None (only on a terminal).
        ids: convert only these image ids (default: every sub-folder).
        category: the category (and `image_class`) of every instance.

    Returns:
        (coco dict, ConversionStats); `file_name` is `<id>/images/<id>.png`, relative to `root`.

    Example:
        >>> coco, stats = convert_masks("stage1_train")                  # doctest: +SKIP
        >>> stats.images, stats.instances                               # doctest: +SKIP
        (332, 14312)
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("mask root folder not found", file=root)
    folders = [path for path in sorted(root.iterdir()) if path.is_dir() and not path.name.startswith(".")]
    if ids is not None:
        missing = sorted(set(ids) - {folder.name for folder in folders})
        if missing:
            raise DataError(f"no sample folder for id {missing[0]!r}", file=root / missing[0])
        folders = [folder for folder in folders if folder.name in set(ids)]
    info = {"description": f"converted from DSB2018 mask folders {root.name}", "converter": "masks"}
    builder = CocoBuilder([category], info=info)
    builder.stats.row_unit = "mask files"
    with _progress(folders, progress) as bar:
        for folder in bar:
            located = _attempt(builder, skip_bad, _dsb_image, folder, image=True)
            if located is None:
                continue
            image_path, image = located
            shape = image.shape[:2]
            masks = sorted((folder / "masks").glob("*")) if (folder / "masks").is_dir() else []
            masks = [path for path in masks if path.suffix.lower() in IMAGE_SUFFIXES]
            instances = [
                _attempt(builder, skip_bad, _mask_instance, path, image_path, shape, category) for path in masks
            ]
            builder.add_image(
                folder.name, _relative_name(image_path, root), shape[0], shape[1], image_class=category,
                instances=[instance for instance in instances if instance is not None], modality=image_modality(image),
            )
    return builder.build()


# --- instance label images --------------------------------------------------------------------


def _read_label_map(path, image_path, shape):
    """Integer label map of a label image; `DataError` for colour, fractional, negative or wrong size."""
    labels = read_image(path)
    if labels.ndim == 3:
        if (labels != labels[..., :1]).any():
            raise DataError("label image has colour channels; expected one channel of instance ids", file=path)
        labels = labels[..., 0]
    if labels.shape != tuple(shape):
        raise DataError(
            f"label image is {labels.shape[0]} x {labels.shape[1]} pixels "
            f"but image {image_path} is {shape[0]} x {shape[1]}",
            file=path,
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.array_equal(labels, np.round(labels)):
            raise DataError("label image holds non-integer values", file=path)
        labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError("label image holds negative values", file=path)
    return labels


@_timed
def convert_labels(images, labels, pattern=None, skip_bad=False, progress=False, category="cell"):
    """Convert instance label images (0 = background, k = instance k) to COCO.

    Args:
        images: folder of the images.
        labels: folder of the label images (16-bit PNG, TIFF, ...).
        pattern: label file name for an image id, e.g. "{id}_masks.png" or "{id}.tif"; by
            default the label file with the same stem as the image (any image suffix).
        skip_bad: skip images whose label file is missing or bad (counted) instead of raising.
        progress: tqdm progress bar on stderr: True, False, or None (only on a terminal).
        category: the category (and `image_class`) of every instance.

    Instances follow ascending label values; label values need not be consecutive.

    Example:
        >>> coco, stats = convert_labels("imgs", "masks", pattern="{id}_masks.png")  # doctest: +SKIP
    """
    images, labels = Path(images), Path(labels)
    image_paths = list_images(images)
    if not labels.is_dir():
        raise DataError("label folder not found", file=labels)
    label_paths = None if pattern else list_images(labels)

    def read(key, image_path):
        label_path = labels / pattern.format(id=key) if pattern else label_paths.get(key, labels / f"{key}.png")
        if not label_path.is_file():
            raise DataError(f"label image not found for image {image_path}", file=label_path)
        shape = _image_shape(image_path)
        return shape, _read_label_map(label_path, image_path, shape)

    info = {"description": f"converted from label images {labels.name}", "converter": "labels"}
    builder = CocoBuilder([category], info=info)
    builder.stats.row_unit = None
    with _progress(image_paths.items(), progress) as bar:
        for key, image_path in bar:
            located = _attempt(builder, skip_bad, read, key, image_path, image=True)
            if located is None:
                continue
            shape, label_map = located
            _, arrays = instance_indices(label_map, order="col")
            instances = [(category, rle_codec.indices_to_coco(a, shape), a) for a in arrays]
            builder.add_image(
                key, _relative_name(image_path, images), shape[0], shape[1], image_class=category, instances=instances
            )
    return builder.build()


# --- HuBMAP polygons --------------------------------------------------------------------------


def polygon_indices(rings, shape):
    """Sorted column-major indices of the pixels `cv2.fillPoly` fills for `rings` of (x, y) points.

    Rings are filled together, so inner rings cut holes. Only the polygon's bounding box is
    rasterised; parts outside the image are clipped.

    Example:
        >>> polygon_indices([np.array([[1, 0], [2, 0], [2, 1], [1, 1]])], (3, 3)).tolist()
        [3, 4, 6, 7]
    """
    height, width = int(shape[0]), int(shape[1])
    points = [np.round(ring).astype(np.int32) for ring in rings]
    corners = np.concatenate(points)
    x0, y0 = np.maximum(corners.min(axis=0), 0)
    x1, y1 = np.minimum(corners.max(axis=0), [width - 1, height - 1])
    if x1 < x0 or y1 < y0:
        return np.zeros(0, np.int64)
    canvas = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    cv2.fillPoly(canvas, [p - np.array([x0, y0], np.int32) for p in points], 1)
    cols, rows = np.nonzero(canvas.T)  # column-major order, already sorted
    return (cols.astype(np.int64) + x0) * height + rows + y0


def _parse_polygon_line(text, jsonl, line):
    try:  # lines are read with surrogateescape so one bad line is named, not the whole file
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise DataError(f"not UTF-8 text (column {error.start + 1}); a binary or mis-encoded line",
                        file=jsonl, row=line) from None
    return _parse_polygon_json(text, jsonl, line)


def _parse_polygon_json(text, jsonl, line):
    """(id, annotations list) of one JSONL line, checked for shape."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"not valid JSON ({error.msg})", file=jsonl, row=line) from None
    if not isinstance(record, dict):
        raise DataError("expected a JSON object", file=jsonl, row=line)
    key = record.get("id")
    if not isinstance(key, (str, int)) or key == "":
        raise DataError("missing image id", file=jsonl, row=line, field="id")
    annotations = record.get("annotations", [])
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise DataError("expected a list of objects", file=jsonl, row=line, field="annotations")
    return str(key), annotations


def _polygon_instance(annotation, index, shape, jsonl, line):
    """(type, COCO RLE, column-major indices) of one HuBMAP annotation."""
    name = annotation.get("type")
    if not isinstance(name, str) or not name:
        raise DataError("missing or empty type", file=jsonl, row=line, field=f"annotations[{index}].type")
    field = f"annotations[{index}].coordinates"
    coordinates = annotation.get("coordinates")
    if not isinstance(coordinates, list) or not coordinates:
        raise DataError("expected a list of [x, y] points", file=jsonl, row=line, field=field)
    nested = isinstance(coordinates[0], list) and coordinates[0] and isinstance(coordinates[0][0], list)
    rings = []
    for ring in coordinates if nested else [coordinates]:
        try:
            points = np.asarray(ring, dtype=np.float64)
        except (TypeError, ValueError):
            points = None
        if points is None or points.ndim != 2 or points.shape[1] != 2 or not np.isfinite(points).all():
            raise DataError("points must be [x, y] number pairs", file=jsonl, row=line, field=field)
        if len(points) < 3:
            raise DataError(f"polygon has {len(points)} points (at least 3 needed)", file=jsonl, row=line, field=field)
        rings.append(points)
    low, high = np.concatenate(rings).min(axis=0), np.concatenate(rings).max(axis=0)
    if (high < 0).any() or low[0] > shape[1] - 1 or low[1] > shape[0] - 1:
        raise DataError(
            f"polygon lies outside the image ({shape[1]} x {shape[0]} pixels)", file=jsonl, row=line, field=field
        )
    indices = polygon_indices(rings, shape)
    return name, rle_codec.indices_to_coco(indices, shape), indices


@_timed
def convert_polygons(jsonl, images, skip_bad=False, progress=False):
    """Convert HuBMAP-style `polygons.jsonl` to COCO.

    Each line: `{"id": ..., "annotations": [{"type": ..., "coordinates": [[x, y], ...]}, ...]}`;
    coordinates may be nested one level deeper (`[[[x, y], ...]]`, as in the HuBMAP file), with
    further rings cut out as holes. Polygons are rasterised with `cv2.fillPoly` on integer-rounded
    points (outline included); categories are the `type` values and each image's `image_class`
    is its most common type.

    Args:
        jsonl: the JSON-lines file.
        images: folder of the images (`<images>/<id>.tif`, ...).
        skip_bad: skip bad polygons (counted as rows), bad lines and images instead of raising.
        progress: tqdm progress bar on stderr: True, False, or None (only on a terminal).

    Example:
        >>> coco, stats = convert_polygons("polygons.jsonl", "train")   # doctest: +SKIP
    """
    jsonl, images = Path(jsonl), Path(images)
    if not jsonl.is_file():
        raise DataError("polygon file not found", file=jsonl)
    image_paths = list_images(images)
    builder = CocoBuilder([], info={"description": f"converted from {jsonl.name} (polygons)", "converter": "polygons"})
    builder.stats.row_unit = "polygons"
    records, seen = [], {}
    with open(jsonl, encoding="utf-8", errors="surrogateescape") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            record = _attempt(builder, skip_bad, _parse_polygon_line, text, jsonl, line, image=True)
            if record is None:
                continue
            if record[0] in seen:
                message = f"image id {record[0]!r} already on line {seen[record[0]]}"
                raise DataError(message, file=jsonl, row=line, field="id")
            seen[record[0]] = line
            records.append((line, *record))
    for _, _, annotations in records:  # every category, even if its polygons are skipped later
        for annotation in annotations:
            if isinstance(annotation.get("type"), str) and annotation["type"]:
                builder.add_category(annotation["type"])

    def locate(key, line):
        path = image_paths.get(key)
        if path is None:
            raise DataError(f"no image file for id {key!r} in {images}", file=jsonl, row=line, field="id")
        return path, _image_shape(path, context=f" (image of id {key!r}, {jsonl.name} line {line})")

    with _progress(sorted(records, key=lambda record: record[1]), progress) as bar:
        for line, key, annotations in bar:
            located = _attempt(builder, skip_bad, locate, key, line, image=True)
            if located is None:
                continue
            path, shape = located
            instances = [
                _attempt(builder, skip_bad, _polygon_instance, annotation, index, shape, jsonl, line)
                for index, annotation in enumerate(annotations)
            ]
            instances = [instance for instance in instances if instance is not None]
            names = Counter(name for name, _, _ in instances)
            builder.add_image(
                key, _relative_name(path, images), shape[0], shape[1],
                image_class=names.most_common(1)[0][0] if names else None, instances=instances,
            )
    return builder.build()


# --- cross-checking two conversions ------------------------------------------------------------


def instance_differences(first, second, keys=None):
    """Where two COCO dicts of the same images disagree: instances (as COCO RLE), sizes, modality.

    Instances are compared per image as multisets of (category name, RLE counts, area, bbox), so
    the order in which two converters list them does not matter; `file_name` is not compared
    (it depends on the folder layout).

    Args:
        first, second: COCO dicts with `key` per image (as this package writes them).
        keys: image keys to compare (default: those present in both).

    Returns:
        A list of `(key, what)` pairs, empty when the two agree on every compared image.

    Example:
        >>> coco = {"images": [{"id": 1, "key": "a", "height": 2, "width": 2}], "annotations": [],
        ...         "categories": []}
        >>> instance_differences(coco, coco)
        []
    """

    def index(coco):
        names = {c["id"]: c["name"] for c in coco["categories"]}
        images = {image["id"]: image for image in coco["images"]}
        instances = {image["key"]: [] for image in coco["images"]}
        for a in coco["annotations"]:
            instances[images[a["image_id"]]["key"]].append(
                (names.get(a["category_id"]), a["segmentation"]["counts"], a["area"], tuple(a["bbox"])))
        return {image["key"]: image for image in coco["images"]}, {k: sorted(v) for k, v in instances.items()}

    (images_a, instances_a), (images_b, instances_b) = index(first), index(second)
    keys = sorted(set(images_a) & set(images_b)) if keys is None else list(keys)
    differences = []
    for key in keys:
        if key not in images_a or key not in images_b:
            differences.append((key, "missing in one of them"))
            continue
        a, b = images_a[key], images_b[key]
        if (a["height"], a["width"]) != (b["height"], b["width"]):
            differences.append((key, "image size"))
        if a.get("modality") != b.get("modality"):
            differences.append((key, "modality"))
        if len(instances_a[key]) != len(instances_b[key]):
            differences.append((key, f"{len(instances_a[key])} instances against {len(instances_b[key])}"))
        elif instances_a[key] != instances_b[key]:
            differences.append((key, "instance masks"))
    return differences
