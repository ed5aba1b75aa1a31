"""Load a trained model from any of its forms and turn raw images into probabilities and instances.

`Predictor.load(path)` accepts a run directory, a `.keras` file or an exported SavedModel
directory (`python -m cell_seg.export`). The SavedModel path needs only TensorFlow, numpy and
OpenCV: this module never imports segmentation-models, albumentations or pycocotools (the
offline Kaggle notebook, where they are absent, relies on that), and it imports TensorFlow
only when a model is loaded.

Images larger than a tile size can be predicted in overlapping tiles (`tile=`). By default
(`blend="center"`) each tile keeps the pixels up to the middle of its overlaps, so a kept pixel has
at least half the overlap of real image around it: for a fully convolutional model whose receptive
field radius is at most half the overlap the result equals whole-image prediction up to float
rounding, and one pixel less of overlap already changes it (tests/test_tiling.py checks both).
`receptive_field_radius` measures that radius from the model's impulse response (as StarDist
does), `Predictor.tile_overlap(tile)` turns it into an overlap (twice the radius, rounded up to the
stride, at most half the tile) and `overlap="auto"` uses it. The fixed `DEFAULT_OVERLAP` (64) is
exact only for small networks: a trained U-Net-Lite0 reaches about 300 pixels (its 512-pixel
tiles at overlap 64 differ from the whole image by up to 0.5 on a noise image, at 384 by 3e-3),
and an encoder with squeeze-and-excitation (EfficientNet-B0) has no bounded radius at all.
`blend="linear"` instead averages the tiles over their overlaps with weights that fall linearly
towards each tile's inner edges, so no pixel is taken from a single tile right where its context
is cut (see `tile_window`).

Without a tile size, an image whose network input (after the scale) has more than
`AUTO_TILE_PIXELS` pixels is still predicted in `AUTO_TILE` tiles at `overlap="auto"`, which for a
network with a bounded receptive field equals whole-image prediction: memory stays bounded (a
U-Net-Lite0 takes about 5 GB of host memory for a 3072x3072 input whole, which a 1024x1024 image
enlarged 3x by the size rule becomes) while the result does not change.

A model trained on resized images (`data.scale`, stored as "scale" in its metadata) gets every
image resized by that factor first (`cell_seg.preprocess.rescale`); its probabilities are
resized back, so callers always see the original size. Tiling and TTA work on the resized image.
A model with a "target_diameter" (trained with `data.target_diameter`, or given one at export)
picks the factor per image instead, by the size rule: predict at `scale` without TTA, measure the
median diameter `d` of the instances found (`cell_seg.preprocess.median_diameter`), and take
`target / d` (`size_scale`); when that differs from the scale it was measured at by more than
`SIZE_TOLERANCE`, measure once more at it. The last measurement's factor is the one predicted at.

What the model needs to do its best travels with it in its metadata (`cell_seg.metadata`):
the post-processing settings (`Predictor.postprocess`, a `PostprocessConfig`), the scale and
whether to average the 8 flips/rotations (`Predictor.tta`). They are the defaults of every
call; arguments override them for one call.
"""

import math
from pathlib import Path

import numpy as np

from cell_seg.errors import ConfigError, DataError, ModelError, first_line
from cell_seg.metadata import ModelMetadata
from cell_seg.postprocess import PostprocessConfig, to_instances
from cell_seg.preprocess import (crop_to, median_diameter, normalize_image, pad_to_multiple, rescale, resize_to,
                                 size_scale)

IMAGE_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)
DEFAULT_OVERLAP = 64
BLEND_MODES = ("center", "linear")
AUTO_OVERLAP = "auto"  # overlap=AUTO_OVERLAP: Predictor.tile_overlap(tile), from the measured receptive field
AUTO_TILE = 2048  # tile size used when no tile is given and the input is larger than ...
AUTO_TILE_PIXELS = 2560 * 2560  # ... this many pixels (after the scale); see the module notes
SIZE_ESTIMATES = 2  # the size rule measures the objects at most this many times
SIZE_TOLERANCE = 1.1  # ... and stops when the factor it finds is within this ratio of the one it measured at
RECEPTIVE_FIELD_ULPS = 16  # float32 ulps an output must change by to count as influenced


def check_image(image, name="image"):
    """Return `image` as an array; DataError unless it is uint8/uint16/float, `H x W` or `H x W x 1/3/4`.

    Example:
        >>> check_image(np.zeros((4, 5), np.uint8)).shape
        (4, 5)
        >>> check_image(np.zeros((4, 5), np.int64))
        Traceback (most recent call last):
        ...
        cell_seg.errors.DataError: image: unsupported image dtype int64 (use uint8, uint16 or float32)
    """
    image = np.asarray(image)
    if image.dtype not in IMAGE_DTYPES:
        raise DataError(f"unsupported image dtype {image.dtype} (use uint8, uint16 or float32)", file=name)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise DataError(f"unsupported image shape {image.shape} (use H x W or H x W x 1, 3 or 4)", file=name)
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise DataError(f"empty image of shape {image.shape}", file=name)
    return image


def tile_spans(length, tile, overlap, stride=1):
    """Split `0..length` into overlapping tiles and the part of each tile that is kept.

    Tiles start at multiples of `stride` (so a strided network sees the same pixel grid as on
    the whole image), are `tile` long (the last one ends at `length`) and overlap by at least
    `overlap`; each keeps the pixels up to the middle of its overlaps with its neighbours.

    Args:
        length: image height or width, a multiple of `stride` (pad first).
        tile: tile length, a multiple of `stride`.
        overlap: least overlap of neighbouring tiles.
        stride: the network's stride.

    Returns:
        list of `(start, stop, keep_start, keep_stop)`: the tile is `[start, stop)`, its kept
        part `[keep_start, keep_stop)`; the kept parts cover `0..length` once.

    Example:
        >>> tile_spans(256, 128, 32, stride=32)
        [(0, 128, 0, 112), (96, 224, 112, 176), (128, 256, 176, 256)]
        >>> tile_spans(100, 128, 32)
        [(0, 100, 0, 100)]
    """
    if tile >= length:
        return [(0, length, 0, length)]
    step = (tile - overlap) // stride * stride
    if step < stride:
        raise ConfigError(f"tile {tile} with overlap {overlap} leaves no step of the model's stride {stride}; "
                          "use a larger tile or a smaller overlap")
    starts = list(range(0, length - tile, step)) + [length - tile]
    spans = []
    for index, start in enumerate(starts):
        keep_start = 0 if index == 0 else spans[-1][3]
        keep_stop = length if index == len(starts) - 1 else (starts[index + 1] + start + tile) // 2
        spans.append((start, start + tile, keep_start, keep_stop))
    return spans


def tile_window(spans, index, blend="linear"):
    """1-D weights of tile `index` of `spans` (from `tile_spans`) when tiles are joined by `blend`.

    "center": 1 on the tile's kept part, 0 elsewhere (the kept parts cover the image once).
    "linear": 1 where the tile is alone, ramping linearly down over its overlap with each
    neighbour, from 1 towards 0 at the tile's edge (never 0 itself); image borders are not inner
    edges and keep weight 1. Neighbouring ramps cross at 0.5, so weights of a pixel never sum to 0.

    Example:
        >>> tile_window([(0, 8, 0, 6), (4, 12, 6, 12)], 0).tolist()
        [1.0, 1.0, 1.0, 1.0, 0.875, 0.625, 0.375, 0.125]
        >>> tile_window([(0, 8, 0, 6), (4, 12, 6, 12)], 1, "center").tolist()
        [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    """
    start, stop, keep_start, keep_stop = spans[index]
    if blend == "center":
        weights = np.zeros(stop - start, np.float32)
        weights[keep_start - start:keep_stop - start] = 1
        return weights
    weights = np.ones(stop - start, np.float32)
    if index > 0:
        ramp = spans[index - 1][1] - start  # overlap with the previous tile
        weights[:ramp] = np.minimum(weights[:ramp], (np.arange(ramp) + 0.5) / ramp)
    if index < len(spans) - 1:
        ramp = stop - spans[index + 1][0]  # overlap with the next tile
        weights[-ramp:] = np.minimum(weights[-ramp:], ((np.arange(ramp) + 0.5) / ramp)[::-1])
    return weights


def receptive_field_radius(predict_normalized, in_channels, stride=1, size=128, max_size=1024,
                           tolerance=RECEPTIVE_FIELD_ULPS):
    """How far one input pixel changes the model's output, per axis: `(rows, cols)` in pixels, measured.

    The impulse response (as StarDist measures its receptive field): the output for a zero image is
    compared with the output for the same image with one pixel set to 1 in every channel (normalised
    inputs lie in [0, 1]); the radius is the largest distance from that pixel to an output pixel that
    changed by more than `tolerance` float32 ulps of the outputs' magnitude. A threshold rather than 0:
    batch norm in inference mode adds constants everywhere, and a difference at the level of float32
    rounding is not an influence. The probe starts at `size` pixels (at least 4 strides) and doubles
    while the response reaches its border, up to `max_size`. A strided network is not shift invariant
    below its stride, and the farthest reach is not always at a phase one would guess (a tiny U-Net
    with two 2x2 poolings reaches 9 pixels from phases 0 and 3 of its stride 4, 11 from phases 1 and 2),
    so once the probe is large enough the impulse is moved along the diagonal through every phase
    `0 .. stride - 1` and the largest radius counts: `stride + 1` network calls on that probe. A global
    operation (squeeze-and-excitation's mean) moves every output by a share of one pixel that shrinks
    with the image, so its response reaches the border of small probes and falls below the tolerance
    in large ones; a response that does so has no radius (`math.inf`).

    Being empirical, this sees what the weights do from a zero image: a saturated sigmoid or ReLUs that
    stay off can hide an influence a natural image would show, and an influence below the tolerance
    counts as none (it is at most rounding-sized in tiled outputs).

    Args:
        predict_normalized: function float32 `H x W x in_channels` -> float32 `H x W x K`.
        in_channels: input channels of the model.
        stride: the network's stride (probe sizes are multiples of it).
        size, max_size: first and largest probe side in pixels.
        tolerance: float32 ulps (of max(1, largest output magnitude)) a change must exceed.

    Returns:
        `(rows, cols)`: ints, or `math.inf` on an axis where the response reached the border of the
        largest probe or shrank as the probe grew (global operations such as squeeze-and-excitation:
        no finite overlap makes tiles exact).

    Example:
        >>> def box3(x):  # a 3 x 3 mean: each input pixel reaches 1 pixel to each side
        ...     padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
        ...     return sum(padded[i:i + x.shape[0], j:j + x.shape[1]] for i in range(3) for j in range(3)) / 9
        >>> receptive_field_radius(box3, in_channels=1, stride=4)
        (1, 1)
    """
    stride = int(stride)
    size = max(int(size), 4 * stride)
    size = -(-size // (2 * stride)) * 2 * stride
    offsets = (0,)  # the stride grid alone while the probe grows, then every phase
    cut_reach = [0, 0]  # per axis, the reach of a response cut by a smaller probe's border
    while True:
        radius, reached = _impulse_response(predict_normalized, in_channels, size, stride, offsets, tolerance)
        # A response that reached a smaller probe's border but falls short in this larger one thins
        # out with the image size (a global mean spreads one pixel over all): no radius bounds it.
        unbounded = [hit or value + stride < cut for value, hit, cut in zip(radius, reached, cut_reach)]
        if any(reached) and size * 2 <= max_size:
            cut_reach = [max(cut, value) if hit else cut for value, hit, cut in zip(radius, reached, cut_reach)]
            size *= 2
        elif any(unbounded) or len(offsets) == stride:
            return tuple(math.inf if endless else value for value, endless in zip(radius, unbounded))
        else:
            offsets = tuple(range(stride))


def _impulse_response(predict_normalized, in_channels, size, stride, offsets, tolerance):
    """`(radius, reached_border)`, each `[rows, cols]`, of impulses `offsets` past the centre of a `size` probe."""
    zero = np.zeros((size, size, in_channels), np.float32)
    base = np.asarray(predict_normalized(zero), np.float64).reshape(size, size, -1)
    centre = size // 2 // stride * stride
    eps = float(np.finfo(np.float32).eps)
    radius, reached = [0, 0], [False, False]
    for offset in offsets:
        position = centre + offset
        impulse = zero.copy()
        impulse[position, position] = 1
        out = np.asarray(predict_normalized(impulse), np.float64).reshape(size, size, -1)
        scale = max(1.0, float(np.abs(base).max()), float(np.abs(out).max()))
        changed = (np.abs(out - base) > tolerance * eps * scale).any(axis=-1)
        for axis in (0, 1):
            hits = np.flatnonzero(changed.any(axis=1 - axis))
            if hits.size:
                radius[axis] = max(radius[axis], position - int(hits[0]), int(hits[-1]) - position)
                reached[axis] = reached[axis] or bool(hits[0] == 0 or hits[-1] == size - 1)
    return radius, reached


class Predictor:
    """Raw image in, probability maps and instances out, for a run directory, `.keras` file or SavedModel.

    Args:
        metadata: the model's `cell_seg.metadata.ModelMetadata` (or its dict): channels,
            normalisation, in_channels, stride, scale, post-processing, TTA.
        predict_normalized: function float32 `H x W x in_channels` normalised image (any size) ->
            float32 `H x W x K` probabilities.
        predict_raw: optional function raw uint8/uint16 `H x W x C` image -> probabilities (the
            SavedModel's in-graph preprocessing); without it images are normalised with
            `cell_seg.preprocess.normalize_image` and passed to `predict_normalized`.
        postprocess: a `PostprocessConfig` to use instead of the metadata's (a dict: overrides of
            single settings).
        tile, overlap: predict images larger than `tile` in both or either dimension in tiles
            of `tile` pixels overlapping by `overlap` (None: whole images; `overlap="auto"`: the
            overlap `tile_overlap(tile)` derives from the measured receptive field).
        blend: how tiles are joined: "center" (each keeps its centre) or "linear" (weighted
            average over the overlaps).
        scale: resize images by this before the network (default: the metadata's "scale", 1.0
            for models trained without one, or per image as its "scale_by_kind" or
            "target_diameter" say); outputs are returned at the original size. A scale given here
            applies to every image.
        tta: average the 8 flips/rotations by default (default: the metadata's "tta").

    Example:
        >>> predictor = Predictor.load("exported/demo")                     # doctest: +SKIP
        >>> probs = predictor.predict_probs(image)                           # doctest: +SKIP
        >>> probs.shape, probs.dtype                                         # doctest: +SKIP
        ((520, 704, 2), dtype('float32'))
        >>> probs = predictor.predict_probs(image, tile=512, overlap=64)     # doctest: +SKIP
        >>> labels, instances = predictor.predict_instances(image)           # doctest: +SKIP
        >>> predictor.postprocess.mode, predictor.tta                        # doctest: +SKIP
        ('watershed', False)
    """

    def __init__(self, metadata, predict_normalized, predict_raw=None, postprocess=None, source=None,
                 keras_model=None, tile=None, overlap=DEFAULT_OVERLAP, blend="center", scale=None, tta=None):
        if not isinstance(metadata, ModelMetadata):
            metadata = ModelMetadata.from_dict(metadata)
        self.metadata = metadata
        self.channels = list(metadata.channels)
        self.class_names = list(metadata.class_names)
        self.normalization = dict(metadata.normalization)
        self.in_channels = int(metadata.in_channels)
        self.stride = int(metadata.stride)
        self.scale = float(metadata.scale if scale is None else scale)
        # Per image kind (metadata "scale_by_kind"); a scale given here applies to every image.
        self.scale_by_kind = {k: float(v) for k, v in metadata.scale_by_kind.items()} if scale is None else {}
        # The size rule (metadata "target_diameter"): a scale per image from the objects found in it.
        target = metadata.target_diameter
        self.target_diameter = float(target) if target is not None and scale is None else None
        self.postprocess = resolve_postprocess(metadata.postprocess, postprocess)
        self.postprocess_tuned = metadata.postprocess_tuned
        self.tta = bool(metadata.tta if tta is None else tta)
        self.source = source
        self.keras_model = keras_model
        self.tile, self.overlap, self.blend = tile, overlap, blend
        self.auto_tile, self.auto_tile_pixels = AUTO_TILE, AUTO_TILE_PIXELS
        self._predict_normalized = predict_normalized
        self._predict_raw = predict_raw
        self._receptive_field = None  # measured on first use (receptive_field)

    # --- loading ---

    @classmethod
    def load(cls, path, tile=None, overlap=DEFAULT_OVERLAP, blend="center"):
        """Load from a run directory, a `.keras` file or a SavedModel directory.

        `tile`, `overlap` and `blend` set the default tiling of `predict_probs` (None: whole images).
        Raises DataError when `path` does not exist, ModelError when it is not a usable model.
        """
        path = Path(path)
        if not path.exists():
            raise DataError("model not found", file=path)
        if path.is_dir() and (path / "saved_model.pb").is_file():
            predictor = cls._load_saved_model(path)
        elif path.is_dir():
            keras_file = path / "model.keras"
            if not keras_file.is_file():
                raise ModelError(f"{path}: neither a run directory (no model.keras) nor a SavedModel (no saved_model.pb)")
            predictor = cls._load_keras(keras_file, path)
        elif path.suffix == ".keras":
            run_dir = path.parent if (path.parent / "metadata.json").is_file() else path.parent.parent
            predictor = cls._load_keras(path, run_dir)
        else:
            raise ModelError(f"{path}: expected a run directory, a .keras file or a SavedModel directory")
        predictor.tile, predictor.overlap, predictor.blend = tile, overlap, blend
        return predictor

    @classmethod
    def _load_keras(cls, keras_file, run_dir):
        metadata = ModelMetadata.read_run(run_dir)
        import keras

        from cell_seg.models import load_model

        model = load_model(keras_file, compile=False)
        stride = metadata.stride
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # A graph with unknown height and width: traced once, about 2x faster than the eager call on
            # CPU (bench/inference.py), and the same computation as the exported SavedModel.
            graph = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True,
                                input_signature=[tf.TensorSpec([None, None, None, metadata.in_channels],
                                                               tf.float32)])

            def run_batch(batch):
                return graph(batch).numpy()
        else:
            # JAX / PyTorch: Keras compiles its predict step once per input shape.
            def run_batch(batch):
                return np.asarray(model.predict_on_batch(batch))

        def predict_normalized(x):
            padded, _ = pad_to_multiple(x, stride)
            return crop_to(run_batch(padded[None])[0], x.shape[:2]).astype(np.float32)

        return cls(metadata, predict_normalized, source=str(keras_file), keras_model=model)

    @classmethod
    def _load_saved_model(cls, path):
        hint = "export the model again with python -m cell_seg.export"
        metadata = ModelMetadata.read(path / "assets" / "metadata.json", hint=hint)
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as error:  # TensorFlow raises several types for unreadable SavedModels
            raise ModelError(f"{path}: cannot load SavedModel ({first_line(error)})") from None
        signatures = loaded.signatures
        missing = [name for name in ("serve_image", "serve_normalized") if name not in signatures]
        if missing:
            raise ModelError(f"{path}: SavedModel has no {', '.join(missing)} signature; {hint}")
        serve = {np.dtype(np.uint8): signatures["serve_image"]}
        if "serve_image_uint16" in signatures:
            serve[np.dtype(np.uint16)] = signatures["serve_image_uint16"]
        serve_normalized = signatures["serve_normalized"]

        def predict_raw(image):
            image3 = image if image.ndim == 3 else image[..., None]
            return serve[image.dtype](image=tf.constant(image3))["probabilities"].numpy()

        def predict_normalized(x):
            return serve_normalized(images=tf.constant(x[None], tf.float32))["probabilities"].numpy()[0]

        predictor = cls(metadata, predict_normalized, predict_raw, source=str(path))
        predictor._raw_dtypes = tuple(serve)
        predictor._saved_model = loaded  # keeps the restored functions alive
        return predictor

    # --- prediction ---

    def normalize(self, image):
        """The model input for a raw image: float32 `H x W x in_channels` (cell_seg.preprocess.normalize_image)."""
        norm = self.normalization
        return normalize_image(image, norm["mode"], norm.get("mean"), norm.get("std"), self.in_channels)

    def receptive_field(self):
        """The network's receptive field radius `(rows, cols)`, in pixels of its input, measured once.

        `receptive_field_radius` on `predict_normalized` (probes of up to 1024 pixels: a few network
        calls). In network-input pixels, i.e. after `scale`, the pixels tiles are cut in.
        """
        if getattr(self, "_receptive_field", None) is None:
            self._receptive_field = receptive_field_radius(self._predict_normalized, self.in_channels, self.stride)
        return self._receptive_field

    def tile_overlap(self, tile=None):
        """The least tile overlap with which `blend="center"` tiles equal whole-image prediction.

        Twice the measured radius (`receptive_field`, the larger axis), rounded up to the stride: a
        tile keeps the pixels up to the middle of its overlaps, so each kept pixel has half the overlap
        of real image on the cut side. With `tile`, capped at half the tile (rounded down to the stride)
        so that tiles still advance by half their size or more; a capped overlap, or a radius without a
        measured bound (`math.inf`, returned as is when no `tile` caps it), gives tiles close to but
        not equal to whole-image prediction: use larger tiles.
        """
        radius = max(self.receptive_field())
        needed = math.inf if math.isinf(radius) else -(-2 * radius // self.stride) * self.stride
        if tile is None:
            return needed
        return int(min(needed, int(tile) // 2 // self.stride * self.stride))

    def _whole(self, image):
        """Probabilities of one checked image without tiling."""
        if self._predict_raw is not None and image.dtype in getattr(self, "_raw_dtypes", ()):
            return self._predict_raw(image)
        return self._predict_normalized(self.normalize(image))

    def _tiled(self, image, tile, overlap, blend="center"):
        """Probabilities of one checked image from overlapping tiles joined as `blend` says."""
        if tile % self.stride:
            raise ConfigError(f"tile size {tile} must be a multiple of the model's stride {self.stride}")
        if not 0 <= overlap < tile:
            raise ConfigError(f"tile overlap must be in [0, {tile}), not {overlap}")
        if blend not in BLEND_MODES:
            raise ConfigError(f"tile blend must be one of {', '.join(BLEND_MODES)}, not {blend!r}")
        x = self.normalize(image)  # the whole image: minmax percentiles must not change per tile
        padded, _ = pad_to_multiple(x, self.stride)
        rows = tile_spans(padded.shape[0], tile, overlap, self.stride)
        cols = tile_spans(padded.shape[1], tile, overlap, self.stride)
        # Each tile adds its probabilities times its window; dividing by the summed windows joins them
        # ("center" windows are 0/1 and cover every pixel once, so that is an exact copy).
        out, weight = None, np.zeros(padded.shape[:2], np.float32)
        for i, (r0, r1, _, _) in enumerate(rows):
            row_window = tile_window(rows, i, blend)
            for j, (c0, c1, _, _) in enumerate(cols):
                probs = self._predict_normalized(np.ascontiguousarray(padded[r0:r1, c0:c1]))
                if out is None:
                    out = np.zeros(padded.shape[:2] + probs.shape[2:], np.float32)
                window = np.outer(row_window, tile_window(cols, j, blend))
                out[r0:r1, c0:c1] += probs * window[..., None]
                weight[r0:r1, c0:c1] += window
        out /= weight[..., None]
        return crop_to(out, image.shape[:2])

    def predict_probs(self, image, tta=None, tile=None, overlap=None, blend=None):
        """Probability maps `H x W x K` (float32) for one raw image.

        Args:
            image: `H x W` or `H x W x 1/3/4`, uint8, uint16 or float (float is normalised as is).
            tta: average the 8 dihedral transforms (flips and 90-degree rotations); 8x slower.
                Default: the predictor's `tta` (the model's metadata).
            tile: predict in tiles of this size (a multiple of the stride) when the image is
                larger in either dimension; default the predictor's `tile` (None: whole image).
            overlap: least overlap of neighbouring tiles (default the predictor's, 64); "auto":
                `tile_overlap(tile)`, from the measured receptive field.
            blend: "center" or "linear" (default the predictor's, "center"); see the module notes.

        Raises:
            DataError: unsupported dtype or shape.
        """
        image = check_image(image)
        tta = self.tta if tta is None else tta
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[..., :3]
        probs = None
        if self.target_diameter is not None:
            scale, probs = self.size_rule(image, tile, overlap, blend)
        else:
            scale = self.image_scale(image)
        if probs is None or tta:
            probs = self._predict_at(image, scale, tta, tile, overlap, blend)
        return probs

    def _predict_at(self, image, scale, tta, tile, overlap, blend):
        """Probabilities of a checked image resized by `scale`, returned at its own size."""
        if scale == 1.0:
            return self._predict_checked(image, tta, tile, overlap, blend)
        # The model saw images resized by `scale` in training (or works better on this kind or size of
        # image resized): resize, predict, resize back.
        probs = self._predict_checked(rescale(image, scale), tta, tile, overlap, blend)
        return resize_to(probs, image.shape[:2])

    def image_scale(self, image):
        """The scale `image` is predicted at without the size rule: its kind's (`scale_by_kind`) or `scale`."""
        if not self.scale_by_kind:
            return self.scale
        from cell_seg.data.convert import image_modality

        return self.scale_by_kind.get(image_modality(np.asarray(image)), self.scale)

    def size_rule(self, image, tile=None, overlap=None, blend=None):
        """(scale, probabilities at it without TTA or None) of a checked image by the size rule.

        Predicts at `scale`, measures the median diameter of the instances `self.postprocess` finds
        and takes the factor that brings it to `target_diameter` (`size_scale`; `scale` when nothing
        is found). A factor more than `SIZE_TOLERANCE` away from the one measured at is measured
        again, up to `SIZE_ESTIMATES` times; the probabilities come back when the final factor is
        one that was measured at (saving a prediction when no TTA follows).
        """
        scale = self.scale
        for _ in range(SIZE_ESTIMATES):
            probs = self._predict_at(image, scale, False, tile, overlap, blend)
            labels, _ = to_instances(probs, self.channels, config=self.postprocess)
            found = size_scale(median_diameter(labels), self.target_diameter, default=scale)
            if max(found, scale) / min(found, scale) <= SIZE_TOLERANCE:
                return scale, probs
            scale = found
        return scale, None

    def _predict_checked(self, image, tta, tile, overlap, blend):
        """`predict_probs` of a checked image at the model's scale."""
        tile = self.tile if tile is None else tile
        overlap = self.overlap if overlap is None else overlap
        blend = self.blend if blend is None else blend
        if tile is None and image.shape[0] * image.shape[1] > self.auto_tile_pixels:
            tile, overlap, blend = self.auto_tile, AUTO_OVERLAP, "center"  # bounded memory, same result
        if tile is not None and max(image.shape[:2]) > tile:
            if isinstance(overlap, str):
                if overlap != AUTO_OVERLAP:
                    raise ConfigError(f"tile overlap must be a number of pixels or {AUTO_OVERLAP!r}, not {overlap!r}")
                overlap = self.tile_overlap(int(tile))
            predict = lambda view: self._tiled(view, int(tile), int(overlap), blend)  # noqa: E731
        else:
            predict = self._whole
        if not tta:
            return predict(image)
        total = None
        for k in range(4):
            for flip in (False, True):
                view = np.rot90(image, k)
                view = view[:, ::-1] if flip else view
                out = predict(np.ascontiguousarray(view))
                out = out[:, ::-1] if flip else out
                out = np.rot90(out, -k)
                total = out if total is None else total + out
        return (total / 8).astype(np.float32)

    def predict_instances(self, image, mode=None, postprocess=None, tta=None, tile=None, overlap=None, blend=None):
        """(label_map, instances) of one raw image, post-processed with `self.postprocess`.

        `postprocess` (a `PostprocessConfig`, or a dict of single settings) and `mode` override it
        for this call; `tta` overrides `self.tta`.
        """
        config = resolve_postprocess(self.postprocess, postprocess)
        if mode is not None:
            config = config.with_mode(mode)
        probs = self.predict_probs(image, tta=tta, tile=tile, overlap=overlap, blend=blend)
        return to_instances(probs, self.channels, config=config)


def resolve_postprocess(base, override=None):
    """`base` (a `PostprocessConfig`) with `override` applied: a whole config, a dict of settings, or None.

    Example:
        >>> resolve_postprocess(PostprocessConfig(min_area=5), {"fg_threshold": 0.7}).min_area
        5
    """
    if override is None:
        return base
    if isinstance(override, PostprocessConfig):
        return override
    return base.replace(**override)
