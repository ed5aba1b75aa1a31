"""Run-length codecs: Kaggle "start length" strings (row- or column-major) and COCO RLE.

Kaggle strings are space-separated `start length` pairs with 1-indexed starts. Sartorius
`train.csv` and HuBMAP number pixels row-major (pixel (r, c) is r*W + c + 1); DSB2018's
`stage1_solution.csv` numbers them column-major (c*H + r + 1). The order is always an explicit
argument: guessing it gives a transposed, silently wrong mask.

Internally a mask travels as a sorted array of flat pixel indices, which is proportional to the
cell's size, not the image's, and converts between orders and formats without Python loops over
runs or pixels. Only numpy and pycocotools are needed.
"""

import numpy as np

from cell_seg.errors import DataError


def _mask_utils():
    # Imported on use: Kaggle-string codecs must work where pycocotools is absent (offline notebooks).
    from pycocotools import mask as mask_utils

    return mask_utils

ORDERS = ("row", "col")


def _numpy_order(order):
    if order == "row":
        return "C"
    if order == "col":
        return "F"
    raise ValueError(f"order must be 'row' or 'col', not {order!r}")


def parse_rle(rle, n_pixels):
    """Parse and validate a Kaggle RLE string.

    Args:
        rle: "start length start length ..." with 1-indexed starts; empty or NaN means no pixel.
        n_pixels: H * W, to check that every run lies inside the image.

    Returns:
        (starts, lengths): int64 arrays, starts 0-indexed.

    Raises:
        DataError: odd count, non-integer values, lengths < 1, starts < 1, runs out of order or
        overlapping, or a run past the end of the image.
    """
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    parts = str(rle).split()
    if len(parts) % 2:
        raise DataError(f"odd number of values ({len(parts)}) in run-length string")
    try:
        values = np.array(parts, dtype=np.int64)
    except (ValueError, OverflowError):
        bad = next((p for p in parts if not p.lstrip("-").isdigit()), None)
        if bad is None:  # all digits: one overflowed int64
            bad = max(parts, key=lambda p: len(p.lstrip("-")))
            raise DataError(f"value {bad!r} too large in run-length string") from None
        raise DataError(f"non-integer value {bad!r} in run-length string") from None
    starts, lengths = values[0::2] - 1, values[1::2]
    if len(starts) == 0:
        return starts, lengths
    if (lengths < 1).any():
        i = int(np.flatnonzero(lengths < 1)[0])
        raise DataError(f"run {i + 1} has length {lengths[i]} (must be at least 1)")
    if (starts < 0).any() or (starts >= n_pixels).any():
        i = int(np.flatnonzero((starts < 0) | (starts >= n_pixels))[0])
        raise DataError(f"run {i + 1} starts at {starts[i] + 1}, outside pixels 1..{n_pixels}")
    ends = starts + lengths
    if (starts[1:] < ends[:-1]).any():
        i = int(np.flatnonzero(starts[1:] < ends[:-1])[0]) + 1
        raise DataError(f"run {i + 1} (start {starts[i] + 1}) overlaps or precedes run {i}")
    if ends[-1] > n_pixels:
        raise DataError(f"last run ends at pixel {ends[-1]}, past the end of the image ({n_pixels} pixels)")
    return starts, lengths


def runs_to_indices(starts, lengths):
    """Expand 0-indexed runs to the flat indices they cover (sorted when runs are)."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    run_offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - run_offsets, lengths) + np.arange(total, dtype=np.int64)


def indices_to_runs(indices):
    """Collapse sorted, unique flat indices into 0-indexed (starts, lengths)."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    run_starts = np.concatenate([[0], breaks])
    run_ends = np.concatenate([breaks, [indices.size]])
    return indices[run_starts], run_ends - run_starts


def format_runs(starts, lengths):
    """Format 0-indexed runs as a Kaggle string with 1-indexed starts."""
    if len(starts) == 0:
        return ""
    pairs = np.empty(2 * len(starts), np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = lengths
    return " ".join(map(str, pairs.tolist()))


def reorder_indices(indices, shape, from_order, to_order):
    """Convert flat indices between row- and column-major numbering; returns them sorted."""
    if from_order == to_order:
        return np.asarray(indices, np.int64)
    height, width = shape
    indices = np.asarray(indices, np.int64)
    if from_order == "row":
        rows, cols = np.divmod(indices, width)
        out = cols * height + rows
    else:
        cols, rows = np.divmod(indices, height)
        out = rows * width + cols
    out.sort()
    return out


def rle_to_indices(rle, shape, order="row"):
    """Decode a Kaggle RLE string to sorted flat indices in the same `order`."""
    _numpy_order(order)
    starts, lengths = parse_rle(rle, int(shape[0]) * int(shape[1]))
    return runs_to_indices(starts, lengths)


def decode_rle(rle, shape, order="row"):
    """Decode a Kaggle RLE string to a `uint8` mask of `shape` (H, W), 1 inside.

    Example:
        >>> decode_rle("2 3", (2, 3), order="row")
        array([[0, 1, 1],
               [1, 0, 0]], dtype=uint8)
        >>> decode_rle("2 3", (2, 3), order="col")
        array([[0, 1, 0],
               [1, 1, 0]], dtype=uint8)
    """
    numpy_order = _numpy_order(order)
    height, width = int(shape[0]), int(shape[1])
    if height < 0 or width < 0:
        raise DataError(f"image size {height} x {width} is negative")
    flat = np.zeros(height * width, np.uint8)
    flat[rle_to_indices(rle, (height, width), order)] = 1
    return flat.reshape((height, width), order=numpy_order)


def encode_rle(mask, order="row"):
    """Encode a 2-D mask (non-zero = inside) as a Kaggle RLE string.

    Example:
        >>> encode_rle(np.array([[0, 1, 1], [1, 0, 0]]), order="row")
        '2 3'
    """
    flat = np.asarray(mask).ravel(order=_numpy_order(order))
    return format_runs(*indices_to_runs(np.flatnonzero(flat)))


# --- COCO RLE ---------------------------------------------------------------------------------


def indices_to_coco(col_indices, shape):
    """Compressed COCO RLE (`{"size": [H, W], "counts": str}`) from sorted column-major indices."""
    height, width = int(shape[0]), int(shape[1])
    starts, lengths = indices_to_runs(col_indices)
    counts = np.empty(2 * len(starts) + 1, np.int64)
    previous_ends = np.concatenate([[0], starts[:-1] + lengths[:-1]]) if len(starts) else np.zeros(0, np.int64)
    counts[0:-1:2] = starts - previous_ends
    counts[1::2] = lengths
    counts[-1] = height * width - (starts[-1] + lengths[-1] if len(starts) else 0)
    if counts[-1] == 0 and len(counts) > 1:
        counts = counts[:-1]  # pycocotools ends on the last run, with no empty background run
    rle = _mask_utils().frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def decode_count_groups(chars):
    """Signed values of the character groups of COCO compressed counts (before delta decoding).

    Args:
        chars: int64 array of the characters minus 48; every group must be complete.

    Returns:
        (values, group_starts): one value per group and the index of each group's first char.
    """
    group_end = (chars & 0x20) == 0
    group_starts = np.flatnonzero(np.concatenate([[True], group_end[:-1]]))
    group_of_char = np.cumsum(np.concatenate([[0], group_end[:-1].astype(np.int64)]))
    position = np.arange(chars.size) - group_starts[group_of_char]
    values = np.add.reduceat((chars & 0x1F) << (5 * position), group_starts)
    group_length = np.diff(np.concatenate([group_starts, [chars.size]]))
    negative = (chars[group_end] & 0x10) != 0
    return values - np.where(negative, np.left_shift(1, 5 * group_length), 0), group_starts


def coco_counts(rle):
    """Uncompressed counts (alternating background/foreground run lengths) of a COCO RLE.

    Accepts compressed (`counts` str/bytes) or uncompressed (`counts` list) RLE. The compressed
    string is decoded with numpy, following pycocotools' `rleFrString`: 5 data bits per
    character, a continuation bit, sign extension, and deltas from the count two places back.
    """
    counts = rle["counts"]
    if isinstance(counts, list):
        return np.asarray(counts, np.int64)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    chars = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, np.int64)
    if (chars < 0).any() or (chars > 63).any():
        raise DataError("COCO RLE counts string has characters outside the encoding")
    if (chars[-1] & 0x20) != 0:
        raise DataError("COCO RLE counts string is truncated")
    values, _ = decode_count_groups(chars)
    out = values.copy()
    out[1::2] = np.cumsum(values[1::2])
    if values.size > 2:
        out[2::2] = np.cumsum(values[2::2])
    return out


def coco_to_indices(rle):
    """Sorted column-major flat indices of a COCO RLE's foreground."""
    counts = coco_counts(rle)
    ends = np.cumsum(counts)
    starts = ends - counts
    return runs_to_indices(starts[1::2], counts[1::2])


def coco_to_rle(rle, order="row"):
    """Kaggle RLE string (in `order`) of a COCO RLE, without decoding a full mask."""
    height, width = rle["size"]
    indices = reorder_indices(coco_to_indices(rle), (height, width), "col", order)
    return format_runs(*indices_to_runs(indices))


def rle_to_coco(rle, shape, order="row"):
    """Compressed COCO RLE of a Kaggle RLE string, without decoding a full mask."""
    indices = reorder_indices(rle_to_indices(rle, shape, order), shape, order, "col")
    return indices_to_coco(indices, shape)


def polygons_to_coco(polygons, shape):
    """Compressed COCO RLE of COCO polygons (list of flat [x0, y0, x1, y1, ...] lists)."""
    height, width = int(shape[0]), int(shape[1])
    mask_utils = _mask_utils()
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def segmentation_to_coco(segmentation, shape):
    """Compressed COCO RLE of any COCO `segmentation` (polygons, RLE, uncompressed RLE)."""
    if isinstance(segmentation, list):
        return polygons_to_coco(segmentation, shape)
    if isinstance(segmentation.get("counts"), list):
        height, width = segmentation["size"]
        rle = _mask_utils().frPyObjects(segmentation, height, width)
        return {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    return segmentation


def coco_area_bbox(rle):
    """(area, [x, y, w, h]) of a COCO RLE, as pycocotools computes them."""
    encoded = dict(rle)
    if isinstance(encoded["counts"], str):
        encoded["counts"] = encoded["counts"].encode("ascii")
    mask_utils = _mask_utils()
    return int(mask_utils.area(encoded)), [float(v) for v in mask_utils.toBbox(encoded)]
