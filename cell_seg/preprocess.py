"""Image normalisation and padding shared by training, evaluation, prediction and export.

Only numpy and OpenCV. The exported SavedModel re-implements `normalize_image` in TensorFlow
and must agree with it to 1e-5, so every step is spelled out here exactly:

1. Alpha dropped: an `H x W x 4` image keeps its first three channels.
2. Cast to float32; `H x W` becomes `H x W x 1`.
3. Channels: 1 channel with `in_channels=3` is repeated three times; 3 channels with
   `in_channels=1` become the luminance `0.299 R + 0.587 G + 0.114 B` (ITU-R BT.601, as
   OpenCV's RGB2GRAY, computed in float32 without rounding).
4. Intensity, by `mode`:
   - "scale": divided by the dtype's maximum, 255 for uint8 and 65535 for uint16; float
     images (and any other dtype) are left unchanged.
   - "minmax": `lo, hi` are the 0.5th and 99.5th percentiles of all values of the image (every
     pixel and channel after step 3, numpy's default "linear" interpolation); the result is
     `clip((x - lo) / (hi - lo), 0, 1)`, and all zeros when `hi == lo`. Independent of dtype,
     so robust for 16-bit microscopy with a narrow used range.
   - "standard": "scale", then `(x - mean) / std` with `mean` and `std` scalars or one value
     per output channel (in the scaled units, e.g. 0.5 for mid-grey).
   - "grey_dark": every image as bright objects on a dark background, the way fluorescence shows
     nuclei. Step 3 is replaced: the luminance (as for `in_channels=1`) is stretched as "minmax",
     then inverted (`1 - x`) when the image is stained colour (the mean over pixels of the largest
     minus the smallest of its 3 channels, divided by the dtype's maximum as in "scale", is above
     `COLOUR_SPREAD`) or its stretched median (numpy's "linear" 50th percentile) is above 0.5;
     the result is repeated to `in_channels`. For data that mixes fluorescence with brightfield
     and stained tissue: dark nuclei on a bright or pink background look like the fluorescence
     the network has seen most.
"""

import numpy as np

from cell_seg.errors import ConfigError, DataError

NORMALIZATION_MODES = ("scale", "minmax", "standard", "grey_dark")
LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)
MINMAX_PERCENTILES = (0.5, 99.5)
#: "grey_dark" inverts colour images whose channels differ by more than this on average (a share of
#: the dtype's maximum: 2.55 for uint8). Grey images stored as RGB differ by 0; the 107 stained
#: DSB2018 training images by 0.046 or more.
COLOUR_SPREAD = 0.01

_DTYPE_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def dtype_scale(dtype):
    """The divisor "scale" uses for `dtype`: 255, 65535, or 1 for float and other types."""
    return _DTYPE_MAX.get(np.dtype(dtype), 1.0)


def convert_channels(image, in_channels=3):
    """Return `image` as float32 `H x W x in_channels` (steps 1 to 3 of the module docstring).

    Example:
        >>> convert_channels(np.zeros((2, 3), np.uint8)).shape
        (2, 3, 3)
        >>> convert_channels(np.full((1, 1, 3), [10, 20, 30], np.uint8), in_channels=1)[0, 0]
        array([18.15], dtype=float32)
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise DataError(f"expected an H x W, H x W x 1, 3 or 4 image, got shape {image.shape}")
    if image.shape[2] == 4:
        image = image[..., :3]
    image = image.astype(np.float32)
    channels = image.shape[2]
    if in_channels == channels:
        return np.ascontiguousarray(image)
    if channels == 1 and in_channels == 3:
        return np.repeat(image, 3, axis=2)
    if channels == 3 and in_channels == 1:
        weights = np.asarray(LUMINANCE_WEIGHTS, np.float32)
        return (image[..., 0:1] * weights[0] + image[..., 1:2] * weights[1] + image[..., 2:3] * weights[2]).astype(
            np.float32
        )
    raise ConfigError(f"in_channels must be 1 or 3, not {in_channels!r}")


def check_normalization(mode, mean=None, std=None, in_channels=3):
    """Raise `ConfigError` unless `mode`, `mean` and `std` are a usable normalisation for `in_channels`.

    Example:
        >>> check_normalization("standard", mean=0.5, std=None)
        Traceback (most recent call last):
        ...
        cell_seg.errors.ConfigError: normalization 'standard' needs both mean and std
    """
    if mode not in NORMALIZATION_MODES:
        raise ConfigError(f"normalization must be one of {', '.join(NORMALIZATION_MODES)}, not {mode!r}")
    if mode != "standard":
        return
    if mean is None or std is None:
        raise ConfigError("normalization 'standard' needs both mean and std")
    for name, value in (("mean", mean), ("std", std)):
        size = np.asarray(value, np.float32).size
        if size not in (1, in_channels):
            raise ConfigError(f"normalization {name} needs 1 or {in_channels} values, got {size}")
    if (np.asarray(std, np.float32) == 0).any():
        raise ConfigError("normalization std must not be 0")


def normalize_image(image, mode="scale", mean=None, std=None, in_channels=3):
    """Turn a raw image into the float32 `H x W x in_channels` array a model takes.

    See the module docstring for the exact steps (they are mirrored by the SavedModel export).

    Args:
        image: `H x W`, `H x W x 1`, `H x W x 3` or `H x W x 4`; uint8, uint16 or float.
        mode: "scale", "minmax" or "standard".
        mean, std: for "standard" only; scalars or sequences of `in_channels` values.
        in_channels: 1 or 3.

    Returns:
        float32 array `H x W x in_channels`.

    Example:
        >>> normalize_image(np.array([[0, 255]], np.uint8))[0, 1]
        array([1., 1., 1.], dtype=float32)
        >>> normalize_image(np.array([[0, 65535]], np.uint16), in_channels=1)[..., 0]
        array([[0., 1.]], dtype=float32)
        >>> normalize_image(np.array([[0, 255]], np.uint8), "standard", mean=0.5, std=0.5, in_channels=1)[..., 0]
        array([[-1.,  1.]], dtype=float32)
    """
    check_normalization(mode, mean, std, in_channels)
    dtype = np.asarray(image).dtype
    if mode == "grey_dark":
        x = _minmax(convert_channels(image, 1))
        if is_dark_on_light(image, x):
            x = np.float32(1.0) - x
        return np.repeat(x, in_channels, axis=2) if in_channels == 3 else x
    x = convert_channels(image, in_channels)
    if mode == "minmax":
        return _minmax(x)
    scale = dtype_scale(dtype)
    if scale != 1.0:
        x = x / np.float32(scale)
    if mode == "standard":
        x = (x - np.asarray(mean, np.float32).reshape(-1)) / np.asarray(std, np.float32).reshape(-1)
    return x.astype(np.float32, copy=False)


def is_grey_input(image, mode):
    """Whether every channel `normalize_image` returns for `image` is a copy of one grey channel.

    Example:
        >>> is_grey_input(np.zeros((2, 2), np.uint8), "scale"), is_grey_input(np.zeros((2, 2, 3)), "minmax")
        (True, False)
    """
    image = np.asarray(image)
    return mode == "grey_dark" or image.ndim == 2 or image.shape[2] == 1


def _minmax(x):
    """`x` stretched between its 0.5th and 99.5th percentiles and clipped to [0, 1]; zeros if constant."""
    lo, hi = np.percentile(x, MINMAX_PERCENTILES)
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0).astype(np.float32)


def is_dark_on_light(image, stretched):
    """Whether "grey_dark" inverts `image`: stained colour, or a bright median of its `stretched` luminance.

    Example:
        >>> grey = np.array([[10, 200, 200, 200]], np.uint8)
        >>> is_dark_on_light(grey, _minmax(convert_channels(grey, 1)))
        True
    """
    return is_stained_colour(image) or bool(np.percentile(stretched, 50) > 0.5)


def is_stained_colour(image):
    """Whether `image` is colour (stained tissue): its 3 channels differ by more than `COLOUR_SPREAD`
    on average, a share of the dtype's maximum (grey images stored as RGB differ by 0).

    Example:
        >>> is_stained_colour(np.full((2, 2, 3), [120, 60, 160], np.uint8)), is_stained_colour(np.zeros((2, 2), np.uint8))
        (True, False)
    """
    raw = np.asarray(image)
    if raw.ndim != 3 or raw.shape[2] < 3:
        return False
    rgb = raw[..., :3].astype(np.float32)
    return float((rgb.max(axis=2) - rgb.min(axis=2)).mean()) / dtype_scale(raw.dtype) > COLOUR_SPREAD


def pad_to_multiple(array, multiple=32, value=0):
    """Pad the bottom and right of an `H x W [x C]` array so H and W are multiples of `multiple`.

    Returns:
        (padded array, (pad_h, pad_w)): the rows and columns added.

    Example:
        >>> padded, pads = pad_to_multiple(np.ones((30, 33)), 32)
        >>> padded.shape, pads
        ((32, 64), (2, 31))
    """
    array = np.asarray(array)
    if multiple is None or multiple <= 1:
        return array, (0, 0)
    height, width = array.shape[:2]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return array, (0, 0)
    pad = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode="constant", constant_values=value), (pad_h, pad_w)


def crop_to(array, shape):
    """Keep the top-left `shape[:2]` of an array: undoes `pad_to_multiple`.

    Example:
        >>> crop_to(np.zeros((32, 64, 2)), (30, 33)).shape
        (30, 33, 2)
    """
    return np.asarray(array)[: int(shape[0]), : int(shape[1])]


def scaled_shape(shape, scale):
    """`(H, W)` of an image of shape `shape` resized by `scale` (rounded, at least 1).

    Example:
        >>> scaled_shape((520, 704), 2.0), scaled_shape((5, 7), 0.5)
        ((1040, 1408), (2, 4))
    """
    return max(1, int(round(shape[0] * scale))), max(1, int(round(shape[1] * scale)))


def resize_to(array, shape, labels=False):
    """Resize an `H x W [x C]` array to `shape[:2]`, keeping its dtype and channel axis.

    Images are interpolated bilinearly when enlarged and by pixel-area averaging when shrunk (no
    aliasing); label maps (`labels=True`) take the nearest pixel, so ids are never mixed.

    Example:
        >>> resize_to(np.array([[1, 2], [3, 4]], np.int32), (4, 4), labels=True)[1:3, 1:3]
        array([[1, 2],
               [3, 4]], dtype=int32)
        >>> resize_to(np.ones((4, 6, 1), np.float32), (2, 3)).shape
        (2, 3, 1)
    """
    import cv2

    array = np.asarray(array)
    height, width = int(shape[0]), int(shape[1])
    if array.shape[:2] == (height, width):
        return array
    if labels:
        interpolation = cv2.INTER_NEAREST
    elif height < array.shape[0] and width < array.shape[1]:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_LINEAR
    source = array.astype(np.float32) if array.dtype == np.bool_ else array
    if source.ndim == 3 and source.shape[2] > 4:  # OpenCV's area resize takes at most 4 channels at a time
        return np.concatenate([resize_to(source[..., i:i + 4], shape, labels) for i in range(0, source.shape[2], 4)],
                              axis=2).astype(array.dtype, copy=False)
    out = cv2.resize(np.ascontiguousarray(source), (width, height), interpolation=interpolation)
    if array.ndim == 3 and out.ndim == 2:  # OpenCV drops a single channel axis
        out = out[..., None]
    return out.astype(array.dtype, copy=False)


def rescale(array, scale, labels=False):
    """Resize an `H x W [x C]` array by `scale` (see `resize_to`); the array itself when scale is 1.

    Example:
        >>> rescale(np.zeros((520, 704), np.uint8), 2.0).shape
        (1040, 1408)
    """
    array = np.asarray(array)
    if float(scale) == 1.0:
        return array
    return resize_to(array, scaled_shape(array.shape, scale), labels=labels)


#: The least and largest factor `size_scale` resizes an image by.
SIZE_SCALE_RANGE = (0.25, 4.0)


def median_diameter(label_map):
    """Median equivalent diameter (px) of the instances of a label map; nan when it has none.

    The diameter of an instance is that of the disc of its area, `2 sqrt(area / pi)`.

    Example:
        >>> labels = np.zeros((20, 20), np.int32); labels[:4, :4] = 1; labels[10:, 10:] = 2
        >>> round(median_diameter(labels), 2)
        8.59
    """
    counts = np.bincount(np.asarray(label_map).ravel())[1:]
    counts = counts[counts > 0]
    return float(2 * np.sqrt(np.median(counts) / np.pi)) if counts.size else float("nan")


def size_scale(diameter, target, default=1.0):
    """The factor that brings objects of `diameter` px to `target` px, within `SIZE_SCALE_RANGE`.

    `default` when the diameter is unknown (nan, zero: an image without objects).

    Example:
        >>> size_scale(14.0, 28.0), size_scale(200.0, 28.0), size_scale(float("nan"), 28.0, default=1.5)
        (2.0, 0.25, 1.5)
    """
    if not np.isfinite(diameter) or diameter <= 0:
        return float(default)
    low, high = SIZE_SCALE_RANGE
    return float(np.clip(float(target) / float(diameter), low, high))
