"""Submission files: Kaggle Sartorius CSV, HuBMAP CSV, COCO results JSON, label images.

Every writer takes instance label maps (so predictions never overlap) and writes atomically;
each format has a reader that decodes it back to label maps, used for round-trip tests and to
check a file before uploading it.

- Sartorius: columns `id,predicted`, one row per instance, `predicted` a Kaggle RLE string
  (row-major, 1-indexed starts). An image without any instance keeps one row with an empty
  `predicted`, so every test image appears in the file.
- HuBMAP ("Hacking the Human Vasculature"): columns `id,height,width,prediction_string`; the
  prediction string holds `<class> <score> <mask>` triples joined by spaces, where `<mask>` is
  `base64(zlib.compress(COCO RLE counts))` of the full-size binary mask, as in the
  competition's sample code.
- COCO results: a JSON list of {image_id, category_id, segmentation (RLE, str counts), score}.
- Label images: uint16 PNG when the labels fit (< 65536), else an int32 TIFF (tifffile).

Only numpy, OpenCV, pandas and pycocotools are needed, and pycocotools (through
`cell_seg.data.rle`) only inside the readers and the COCO / HuBMAP writers, which import it when
called: writing a Sartorius CSV works without it.

Example:
    >>> label_map = np.array([[0, 1, 1], [2, 2, 0]], np.int32)
    >>> sartorius_rows("img", label_map)
    [('img', '2 2'), ('img', '4 2')]
    >>> sartorius_rows("empty", np.zeros((2, 3), np.int32))
    [('empty', '')]
"""

import base64
import binascii
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from cell_seg.errors import DataError
from cell_seg.files import atomic_path, read_csv_table, write_json_atomic
from cell_seg.data import labels as label_ops

SARTORIUS_COLUMNS = ("id", "predicted")
HUBMAP_COLUMNS = ("id", "height", "width", "prediction_string")


# --- Sartorius ---------------------------------------------------------------------------------


def sartorius_rows(image_key, label_map):
    """Submission rows (id, rle) of one image: one per instance in id order, or one empty row.

    Example:
        >>> sartorius_rows("a", np.array([[1, 0], [1, 1]], np.int32))
        [('a', '1 1 3 2')]
    """
    rles = label_ops.label_map_to_rle(np.asarray(label_map), order="row")
    if not rles:
        return [(image_key, "")]
    return [(image_key, rles[k]) for k in sorted(rles)]


def write_sartorius_csv(rows, path):
    """Write rows (id, predicted) as a Sartorius submission CSV, atomically.

    Example:
        >>> write_sartorius_csv(sartorius_rows("a", np.ones((2, 2), np.int32)), "submission.csv")  # doctest: +SKIP
    """
    frame = pd.DataFrame(list(rows), columns=list(SARTORIUS_COLUMNS))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def _shape_of(shapes, image_id, path, row):
    if shapes is None:
        raise DataError("no image shape given", file=path, row=row, field="id")
    if isinstance(shapes, dict):
        if image_id not in shapes:
            raise DataError(f"image {image_id!r} has no known shape", file=path, row=row, field="id")
        return tuple(int(v) for v in shapes[image_id])
    return tuple(int(v) for v in shapes)


def read_sartorius_csv(path, shapes, allow_overlap=False, column="predicted", ids=None):
    """Decode a Sartorius CSV (a submission, or the competition's `train.csv`) to label maps.

    The one reader of row-major Kaggle RLE CSVs into label maps (the overlay CLI and the
    benchmarks use it too).

    Args:
        path: the CSV (columns `id` and `column`).
        shapes: {image id: (H, W)}, or one (H, W) for every image.
        allow_overlap: accept instances that overlap (later rows win the pixels); by default an
            overlap raises `DataError` as Kaggle would reject the file. Ground truth overlaps
            by a few pixels: read `train.csv` with `allow_overlap=True`.
        column: the RLE column: "predicted" (submissions), "annotation" (train.csv), or None
            for whichever of the two the file has.
        ids: decode only these image ids (each must have a row); default every image.

    Returns:
        {image id: int32 label map}, instances numbered 1..N in row order.

    Raises:
        DataError naming the file, the CSV line and the field for a missing column, a bad
        run-length string, an unknown image or overlapping instances.

    Example:
        >>> label_maps = read_sartorius_csv("submission.csv", (520, 704))  # doctest: +SKIP
        >>> map_iou(truth, label_maps["0030fd0e6378"])["map"]              # doctest: +SKIP
        >>> truth = read_sartorius_csv("train.csv", (520, 704), True, "annotation", ["0030fd0e6378"])  # doctest: +SKIP
    """
    from cell_seg.data import rle as rle_codec

    frame = read_csv_table(path, ["id"])
    if column is None:
        column = next((c for c in ("predicted", "annotation") if c in frame.columns), "predicted")
    if column not in frame.columns:
        raise DataError(f"missing column (columns are {', '.join(map(str, frame.columns))})", file=path, field=column)
    wanted = None if ids is None else {str(i) for i in ids}
    indices = {}
    first_line = {}
    for row, (image_id, text) in enumerate(zip(frame["id"], frame[column]), start=2):
        if wanted is not None and image_id not in wanted:
            continue
        shape = _shape_of(shapes, image_id, path, row)
        first_line.setdefault(image_id, row)
        arrays = indices.setdefault(image_id, [])
        if not text.strip():
            continue
        try:
            arrays.append(rle_codec.rle_to_indices(text, shape, "row"))
        except DataError as error:
            raise error.located(file=path, row=row, field=column) from None
    for image_id in sorted(wanted - set(indices)) if wanted is not None else []:
        raise DataError(f"no row for image {image_id!r}", file=path, field="id")
    out = {}
    for image_id, arrays in indices.items():
        shape = _shape_of(shapes, image_id, path, first_line[image_id])
        label_map, overlapping = label_ops.paint_instances(arrays, shape, order="row")
        if overlapping and not allow_overlap:
            raise DataError(
                f"instances of image {image_id!r} overlap on {overlapping} pixels",
                file=path,
                row=first_line[image_id],
                field=column,
            )
        out[image_id] = label_map
    return out


# --- HuBMAP ------------------------------------------------------------------------------------


def encode_hubmap_mask(coco_rle):
    """base64 of the zlib-compressed COCO RLE counts, as in the HuBMAP sample code.

    Example:
        >>> rle = {"size": [2, 2], "counts": "0420"}
        >>> decode_hubmap_mask(encode_hubmap_mask(rle), (2, 2))["counts"]
        '0420'
    """
    counts = coco_rle["counts"]
    counts = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    return base64.b64encode(zlib.compress(counts, zlib.Z_BEST_COMPRESSION)).decode("ascii")


def decode_hubmap_mask(encoded, shape):
    """COCO RLE dict (str counts) of a HuBMAP-encoded mask; DataError when it is not one."""
    try:
        counts = zlib.decompress(base64.b64decode(encoded, validate=True))
    except (binascii.Error, zlib.error, ValueError) as error:
        raise DataError(f"mask is not base64 of zlib-compressed COCO RLE ({error})") from None
    return {"size": [int(shape[0]), int(shape[1])], "counts": counts.decode("ascii")}


def hubmap_prediction_string(label_map, scores=None, class_id=0):
    """The HuBMAP prediction string of one image: `<class> <score> <mask>` per instance.

    Args:
        label_map: `H x W` instance label map.
        scores: per instance: array (score of label k at index k-1) or dict {k: score};
            None gives 1.0.
        class_id: the class written before each score (0 = blood vessel in HuBMAP 2023).

    Example:
        >>> text = hubmap_prediction_string(np.array([[0, 1], [1, 1]], np.int32), [0.75])
        >>> text.split()[:2]
        ['0', '0.75']
        >>> [score for _, score, _ in decode_hubmap_prediction_string(text, (2, 2))]
        [0.75]
    """
    rles = label_ops.label_map_to_coco(np.asarray(label_map))
    ids = sorted(rles)
    label_scores = label_ops.scores_by_label(scores, ids).tolist()
    parts = [f"{class_id} {score!r} {encode_hubmap_mask(rles[k])}" for k, score in zip(ids, label_scores)]
    return " ".join(parts)


def decode_hubmap_prediction_string(text, shape):
    """Decode a HuBMAP prediction string into a list of (class, score, COCO RLE dict).

    Example:
        >>> text = "0 0.5 " + encode_hubmap_mask({"size": [2, 2], "counts": "13"})
        >>> decode_hubmap_prediction_string(text, (2, 2))
        [(0, 0.5, {'size': [2, 2], 'counts': '13'})]
    """
    parts = str(text).split()
    if len(parts) % 3:
        raise DataError(f"{len(parts)} fields in prediction string, expected triples <class> <score> <mask>")
    out = []
    for i in range(0, len(parts), 3):
        try:
            class_id, score = int(parts[i]), float(parts[i + 1])
        except ValueError:
            message = f"instance {i // 3 + 1}: class {parts[i]!r} or score {parts[i + 1]!r} is not a number"
            raise DataError(message) from None
        try:
            rle = decode_hubmap_mask(parts[i + 2], shape)
        except DataError as error:
            raise DataError(f"instance {i // 3 + 1}: {error.message}") from None
        out.append((class_id, score, rle))
    return out


def hubmap_row(image_id, label_map, scores=None, class_id=0):
    """One CSV row (id, height, width, prediction_string) for an image.

    Example:
        >>> hubmap_row("img", np.zeros((3, 4), np.int32))
        ('img', 3, 4, '')
    """
    height, width = np.asarray(label_map).shape[:2]
    return (image_id, int(height), int(width), hubmap_prediction_string(label_map, scores, class_id))


def write_hubmap_csv(rows, path):
    """Write rows (id, height, width, prediction_string) as a HuBMAP submission CSV, atomically.

    Example:
        >>> write_hubmap_csv([hubmap_row("img", label_map, scores)], "submission.csv")  # doctest: +SKIP
    """
    frame = pd.DataFrame(list(rows), columns=list(HUBMAP_COLUMNS))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def read_hubmap_csv(path):
    """Decode a HuBMAP submission CSV.

    Returns:
        {image id: (label_map int32, scores float64 array indexed by label-1, classes int
        array)}. Instances may overlap in this format; later instances win contested pixels
        (an instance left with no pixel keeps its score and an empty mask).

    Example:
        >>> label_map, scores, classes = read_hubmap_csv("submission.csv")["img"]  # doctest: +SKIP
    """
    from cell_seg.data import rle as rle_codec

    frame = read_csv_table(path, HUBMAP_COLUMNS)
    out = {}
    for row, record in enumerate(frame.itertuples(index=False), start=2):
        try:
            shape = (int(record.height), int(record.width))
        except ValueError:
            raise DataError("height and width must be integers", file=path, row=row, field="height") from None
        try:
            decoded = decode_hubmap_prediction_string(record.prediction_string, shape)
        except DataError as error:
            raise error.located(file=path, row=row, field="prediction_string") from None
        arrays = [rle_codec.coco_to_indices(rle) for _, _, rle in decoded]
        label_map, _ = label_ops.paint_instances(arrays, shape, order="col")
        scores = np.array([score for _, score, _ in decoded], np.float64)
        classes = np.array([class_id for class_id, _, _ in decoded], np.int64)
        out[record.id] = (label_map, scores, classes)
    return out


# --- COCO results ------------------------------------------------------------------------------


def coco_results(image_id, label_map, scores=None, category_ids=1):
    """COCO result dicts of one image's instances, in label order.

    Args:
        image_id: the COCO image id.
        label_map: `H x W` instance label map.
        scores: array (index label-1), dict {label: score}, or None for 1.0.
        category_ids: one category for all, or an array (index label-1) / dict per label.

    Example:
        >>> coco_results(7, np.array([[0, 1], [1, 1]], np.int32), [0.5])[0]["segmentation"]
        {'size': [2, 2], 'counts': '13'}
    """
    rles = label_ops.label_map_to_coco(np.asarray(label_map))
    ids = sorted(rles)
    if isinstance(category_ids, (int, np.integer)):
        categories = [int(category_ids)] * len(ids)
    elif isinstance(category_ids, dict):
        categories = [int(category_ids[k]) for k in ids]
    else:
        categories = [int(np.asarray(category_ids)[k - 1]) for k in ids]
    label_scores = label_ops.scores_by_label(scores, ids).tolist()
    return [
        {"image_id": image_id, "category_id": category, "segmentation": rles[k], "score": score}
        for k, score, category in zip(ids, label_scores, categories)
    ]


def write_coco_results(results, path):
    """Write COCO results (list of dicts) as JSON, atomically.

    Example:
        >>> write_coco_results(coco_results(1, label_map, scores), "results.json")  # doctest: +SKIP
    """
    write_json_atomic(list(results), path)
    return Path(path)


# --- label images ------------------------------------------------------------------------------


def write_label_image(label_map, path):
    """Write a label map as a uint16 PNG, or as an int32 TIFF when labels reach 65536.

    A `.png` path whose labels do not fit in 16 bits is written as `.tif` instead; the path
    actually written is returned.

    Example:
        >>> write_label_image(np.ones((4, 4), np.int32), "out/a.png")  # doctest: +SKIP
        PosixPath('out/a.png')
    """
    label_map = np.asarray(label_map)
    path = Path(path)
    fits_png = label_map.size == 0 or (label_map.min() >= 0 and label_map.max() < 65536)
    if path.suffix.lower() == ".png" and fits_png:
        from cell_seg.files import write_image

        write_image(label_map.astype(np.uint16), path)
        return path
    if path.suffix.lower() not in (".tif", ".tiff"):
        path = path.with_suffix(".tif")
    import tifffile

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, label_map.astype(np.int32), compression="zlib")
    return path


def read_label_image(path):
    """Read a label image written by `write_label_image` as an int32 label map.

    Example:
        >>> label_map = read_label_image(write_label_image(label_map, "out/a.png"))  # doctest: +SKIP
    """
    from cell_seg.files import read_image

    image = read_image(path)
    if image.ndim != 2:
        raise DataError(f"label image must have one channel, found shape {image.shape}", file=path)
    return image.astype(np.int32)
