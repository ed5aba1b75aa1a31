"""Export a trained model as a TensorFlow SavedModel that takes raw images of any size.

    python -m cell_seg.export --model runs/demo --out exported/demo

`--model` is a run directory or a `.keras` file (with the run's `metadata.json` beside it or one
folder up, as for `checkpoints/best.keras`). The SavedModel has these signatures:

- `serve_image(image)`: one `uint8` image `H x W x C` of any size (C = 1, 3 or 4; give a
  grayscale image a trailing axis) -> `{"probabilities": H x W x K float32}`.
- `serve_image_uint16(image)`: the same for 16-bit images.
- `serve_batch(images)` / `serve_batch_uint16(images)`: `B x H x W x C` images of one size ->
  `{"probabilities": B x H x W x K}` (each image normalised on its own).
- `serve_normalized(images)`: `B x H x W x in_channels` float32 images already normalised as
  `cell_seg.preprocess.normalize_image` does -> `B x H x W x K` (for tiled prediction and
  float images).

Normalisation (`cell_seg.preprocess`, step for step), channel repetition or luminance, padding
to the model's stride and cropping back all happen inside the graph, so the SavedModel needs
TensorFlow alone: `tf.saved_model.load(dir).signatures["serve_image"](image=x)`.
The weights are stored once, as float32 or (`--weights-dtype float16`) float16 for half the size.
`assets/metadata.json` holds the channel and class names, the normalisation, the tuned
post-processing (the run's `postprocess.json` when it was tuned), the training config, the
signatures and the project version; `cell_seg.inference.Predictor.load(dir)` reads it.
A model trained with `data.scale` other than 1 has that "scale" in its metadata: the signatures
take images already resized by it (and answer at that size); `Predictor` does both resizes.
"""

import copy
import shutil
import tempfile
from pathlib import Path

import numpy as np

from cell_seg import __version__
from cell_seg.errors import ModelError
from cell_seg.preprocess import COLOUR_SPREAD, LUMINANCE_WEIGHTS, MINMAX_PERCENTILES

SIGNATURES = {
    "serve_image": "uint8 H x W x C image -> probabilities H x W x K",
    "serve_image_uint16": "uint16 H x W x C image -> probabilities H x W x K",
    "serve_batch": "uint8 B x H x W x C images of one size -> probabilities B x H x W x K",
    "serve_batch_uint16": "uint16 B x H x W x C images of one size -> probabilities B x H x W x K",
    "serve_normalized": "float32 B x H x W x in_channels normalised images -> probabilities B x H x W x K",
}
WEIGHT_DTYPES = ("float32", "float16")
#: Largest variables file of an export (8 MiB): releases stay under 10 MB per file in git.
SHARD_BYTES = 8 * 2**20
#: Largest absolute difference of probabilities the export check accepts between SavedModel and Keras,
#: per stored weight type. float16 weights moved the probabilities of the DSB2018 U-Net-B0 by up to 6e-3
#: and those of the longer-trained U-Net-Lite0 by 3.5e-2 on the check's noise image (4.1e-2 at most, 2e-4
#: on average, on 11 validation images, with the same mAP): the check catches broken exports, not rounding.
CHECK_TOLERANCE = {"float32": 1e-4, "float16": 5e-2}


def _tf_percentiles(values, percentiles):
    """numpy's default ("linear") percentiles of a 1-D float32 tensor, positions computed in float64.

    float64 matters: for a 520 x 704 x 3 image the position `q / 100 * (n - 1)` needs more
    digits than float32 has, and a wrong fraction moves a 16-bit percentile by tens of units.
    """
    import tensorflow as tf

    ordered = tf.sort(values)
    n = tf.size(ordered, out_type=tf.int64)
    positions = tf.constant(percentiles, tf.float64) / 100.0 * tf.cast(n - 1, tf.float64)
    low = tf.cast(tf.floor(positions), tf.int64)
    high = tf.minimum(low + 1, n - 1)
    fraction = positions - tf.cast(low, tf.float64)
    low_value = tf.cast(tf.gather(ordered, low), tf.float64)
    high_value = tf.cast(tf.gather(ordered, high), tf.float64)
    return low_value + (high_value - low_value) * fraction


def make_preprocess(metadata):
    """A TF function: raw image `H x W x C` (uint8/uint16) -> float32 `H x W x in_channels`.

    Mirrors `cell_seg.preprocess.normalize_image` (see its module docstring for the steps); the
    dtype's scale is fixed when the function is traced for a signature.
    """
    import tensorflow as tf

    norm = metadata.normalization
    mode = norm["mode"]
    in_channels = metadata.in_channels
    if mode == "standard":
        mean = np.asarray(norm["mean"], np.float32).reshape(-1)
        std = np.asarray(norm["std"], np.float32).reshape(-1)
    weights = [np.float32(w) for w in LUMINANCE_WEIGHTS]

    def minmax(x):
        bounds = _tf_percentiles(tf.reshape(x, [-1]), MINMAX_PERCENTILES)
        low, high = tf.cast(bounds[0], tf.float32), tf.cast(bounds[1] - bounds[0], tf.float32)
        spread = bounds[1] > bounds[0]
        scaled = tf.clip_by_value((x - low) / tf.where(spread, high, 1.0), 0.0, 1.0)
        return tf.where(spread, scaled, tf.zeros_like(x))  # all zeros for a constant image, as numpy

    def grey(x):
        # As numpy, in this order: R * w0 + G * w1 + B * w2, all float32; a 1-channel image as it is.
        return tf.cond(tf.equal(tf.shape(x)[-1], 3),
                       lambda: x[..., 0:1] * weights[0] + x[..., 1:2] * weights[1] + x[..., 2:3] * weights[2],
                       lambda: x)

    def grey_dark(x, scale):
        colour = tf.equal(tf.shape(x)[-1], 3)
        stretched = minmax(tf.ensure_shape(grey(x), [None, None, 1]))
        spread = tf.reduce_mean(tf.reduce_max(x, axis=-1) - tf.reduce_min(x, axis=-1)) / scale
        median = _tf_percentiles(tf.reshape(stretched, [-1]), [50.0])[0]
        invert = tf.logical_or(tf.logical_and(colour, spread > COLOUR_SPREAD), median > 0.5)
        out = tf.where(invert, 1.0 - stretched, stretched)
        return tf.tile(out, [1, 1, in_channels]) if in_channels == 3 else out

    def preprocess(image):
        scale = 65535.0 if image.dtype == tf.uint16 else 255.0
        channels = tf.shape(image)[-1]
        tf.debugging.assert_equal(
            tf.reduce_any(tf.equal(channels, [1, 3, 4])), True,
            message="image must be H x W x C with C = 1, 3 or 4")
        x = tf.cast(image[..., :3], tf.float32)  # step 1 (alpha dropped) and 2
        if mode == "grey_dark":
            return grey_dark(x, scale)
        if in_channels == 3:
            x = tf.cond(tf.equal(tf.shape(x)[-1], 1), lambda: tf.tile(x, [1, 1, 3]), lambda: x)
        else:
            x = grey(x)
        x = tf.ensure_shape(x, [None, None, in_channels])
        if mode == "minmax":
            return minmax(x)
        x = x / scale
        if mode == "standard":
            x = (x - mean) / std
        return x

    return preprocess


def stored_variables(variables, weights_dtype):
    """TF copies of Keras `variables`, floating-point ones stored as `weights_dtype`.

    float16 values are kept as their int16 bits (sharded checkpoints cannot restore half);
    integer states such as seeds are kept as they are. `restored_value` undoes this.
    """
    import tensorflow as tf

    out = []
    for variable in variables:
        value = np.asarray(variable.numpy())
        if np.issubdtype(value.dtype, np.floating):
            with np.errstate(over="ignore"):
                value = value.astype(weights_dtype)
            if not np.isfinite(value).all():
                raise ModelError(f"weight {variable.path} does not fit in {weights_dtype}; export with float32")
            if weights_dtype == "float16":
                value = value.view(np.int16)
        out.append(tf.Variable(value, trainable=False, name=variable.path.replace("/", "__")))
    return out


def restored_value(stored, dtype, weights_dtype):
    """The value of a `stored_variables` variable as the Keras variable's `dtype` (a TF op)."""
    import tensorflow as tf

    value = stored
    if weights_dtype == "float16" and dtype.startswith("float"):
        value = tf.bitcast(value, tf.float16)
    return tf.cast(value, dtype)


def build_module(model, metadata, weights_dtype="float32"):
    """A `tf.Module` holding the model's weights once and the signatures of the module docstring.

    The weights are copied into the module's own variables, stored as `weights_dtype`
    ("float32", or "float16" for half the size), and the Keras model runs on them through
    `stateless_call` (cast back to float32 first, so the arithmetic is float32 either way). The
    Keras model itself is not tracked, so the SavedModel holds each weight once (Keras'
    `model.export` stores them twice: 83 MB instead of 44 MB for U-Net-EfficientNet-B0).

    Args:
        model: the Keras model (input `B x H x W x in_channels` with H, W multiples of the stride).
        metadata: the model's `cell_seg.metadata.ModelMetadata` (normalisation, in_channels, stride).
        weights_dtype: "float32" or "float16".

    Returns:
        (module, {signature name: tf.function}).
    """
    import tensorflow as tf

    if weights_dtype not in WEIGHT_DTYPES:
        raise ModelError(f"weights dtype {weights_dtype!r}: choose one of {', '.join(WEIGHT_DTYPES)}")
    stride = metadata.stride
    module = tf.Module()
    module.trainable = stored_variables(model.trainable_variables, weights_dtype)
    module.non_trainable = stored_variables(model.non_trainable_variables, weights_dtype)
    dtypes = [v.dtype for v in model.trainable_variables], [v.dtype for v in model.non_trainable_variables]

    def padded_call(batch):
        """Pad to the stride with zeros (after normalisation, as `pad_to_multiple`), predict, crop."""
        height, width = tf.shape(batch)[1], tf.shape(batch)[2]
        pad_h, pad_w = (-height) % stride, (-width) % stride
        padded = tf.pad(batch, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        trainable = [restored_value(v, dtype, weights_dtype) for v, dtype in zip(module.trainable, dtypes[0])]
        non_trainable = [restored_value(v, dtype, weights_dtype) for v, dtype in zip(module.non_trainable, dtypes[1])]
        out, _ = model.stateless_call(trainable, non_trainable, padded, training=False)
        return tf.cast(out[:, :height, :width, :], tf.float32)

    signatures = make_signatures(padded_call, make_preprocess(metadata), metadata.in_channels)
    for name, function in signatures.items():
        setattr(module, name, function)  # also callable as loaded.serve_image(image)
    return module, signatures


def make_signatures(padded_call, preprocess, in_channels):
    """The `tf.function`s of the module docstring's signatures around `padded_call` (normalised batch ->
    probabilities) and `preprocess` (raw image -> normalised image)."""
    import tensorflow as tf

    def serve_one(image):
        return {"probabilities": padded_call(preprocess(image)[None])[0]}

    def serve_batch(images):
        normalized = tf.map_fn(preprocess, images, fn_output_signature=tf.TensorSpec([None, None, in_channels], tf.float32))
        return {"probabilities": padded_call(normalized)}

    def serve_normalized(images):
        return {"probabilities": padded_call(images)}

    signatures = {}
    for dtype, suffix in ((tf.uint8, ""), (tf.uint16, "_uint16")):
        signatures[f"serve_image{suffix}"] = tf.function(
            serve_one, input_signature=[tf.TensorSpec([None, None, None], dtype, name="image")])
        signatures[f"serve_batch{suffix}"] = tf.function(
            serve_batch, input_signature=[tf.TensorSpec([None, None, None, None], dtype, name="images")])
    signatures["serve_normalized"] = tf.function(
        serve_normalized, input_signature=[tf.TensorSpec([None, None, None, in_channels], tf.float32, name="images")])
    return signatures


def export_metadata(predictor, model_path, weights_dtype="float32", tta=None, scale_by_kind=None, scale=None,
                    target_diameter=None):
    """The `ModelMetadata` of an export: the run's, with its post-processing, signatures and export facts.

    `tta` (True/False) makes averaging the 8 flips/rotations the export's default for prediction
    (None: keep the run's); `scale_by_kind` ({kind: scale}, {} for none) sets the per-kind scales
    (None: keep the run's); `scale` sets the scale every other image is predicted at (None: the
    run's training scale); `target_diameter` turns on the size rule with that target (px; 0 turns it
    off, None keeps the run's).
    """
    metadata = predictor.metadata
    return metadata.replace(
        scale=metadata.scale if scale is None else float(scale),
        postprocess=predictor.postprocess,
        postprocess_tuned=bool(predictor.postprocess_tuned),
        tta=metadata.tta if tta is None else bool(tta),
        scale_by_kind=metadata.scale_by_kind if scale_by_kind is None else dict(scale_by_kind),
        target_diameter=(metadata.target_diameter if target_diameter is None
                         else float(target_diameter) if target_diameter else None),
        version=__version__,
        trained_with_version=metadata.version,
        exported_from=str(model_path),
        signatures=dict(SIGNATURES),
        output="probabilities",
        weights_dtype=weights_dtype,
    )


def _check_destination(out_dir, model_path):
    """Refuse to replace anything but an earlier export (or an empty folder) at `out_dir`."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ModelError(f"{out_dir}: exists and is not a directory; choose another --out")
    if out_dir.resolve() == Path(model_path).resolve() or Path(model_path).resolve().is_relative_to(out_dir.resolve()):
        raise ModelError(f"{out_dir}: --out must not be the model's own directory")
    if any(out_dir.iterdir()) and not (out_dir / "saved_model.pb").is_file():
        raise ModelError(f"{out_dir}: exists and is not an earlier export (no saved_model.pb); "
                         "refusing to replace it, choose another --out")


def check_export(predictor, export_dir, shape=(67, 93), weights_dtype="float32"):
    """Compare the SavedModel with the Keras model on a random odd-sized image; ModelError when they differ.

    Returns the largest absolute difference of the probabilities.
    """
    from cell_seg.inference import Predictor

    exported = Predictor.load(export_dir)
    channels = (3,) if predictor.in_channels == 3 else ()
    image = np.random.default_rng(0).integers(0, 256, size=shape + channels, dtype=np.uint8)
    # The same resize on both sides (no per-kind scale or size rule): this compares the networks.
    source = copy.copy(predictor)
    for side in (exported, source):
        side.scale_by_kind, side.target_diameter, side.scale = {}, None, predictor.scale
    difference = float(np.abs(exported.predict_probs(image, tta=False) - source.predict_probs(image, tta=False)).max())
    tolerance = CHECK_TOLERANCE[weights_dtype]
    if not difference <= tolerance:
        raise ModelError(f"{export_dir}: exported model differs from the Keras model by {difference:.2e} "
                         f"(more than {tolerance} for {weights_dtype} weights); please report this")
    return difference


def export_model(model_path, out_dir, check=True, weights_dtype="float32", tta=None, scale_by_kind=None, scale=None,
                 target_diameter=None):
    """Write the SavedModel of a run directory or `.keras` file to `out_dir`.

    The export is written to a temporary folder beside `out_dir` and renamed into place, so
    `out_dir` never holds half an export; an earlier export there is replaced.

    Args:
        model_path: run directory or `.keras` file.
        out_dir: destination folder (created; must be absent, empty or an earlier export).
        check: load the export back and compare it with the Keras model on one image.
        weights_dtype: "float32", or "float16" to halve the size (probabilities move by a few 1e-3).
        tta: True to make prediction average the 8 flips/rotations by default (metadata "tta").
        scale_by_kind: {image kind: scale} for prediction (metadata "scale_by_kind"), e.g.
            {"fluorescence": 1.5}; None keeps the run's.
        scale: the scale images are predicted at (metadata "scale"), e.g. 1.5 for a model trained at
            1 that does better on enlarged images; None keeps the training scale.
        target_diameter: the size rule's target (px, metadata "target_diameter"): each image is
            predicted at the factor that brings the median diameter of the objects found at
            `scale` to it; 0 turns the rule off, None keeps the run's.

    Returns:
        `out_dir` as a Path.

    Example:
        >>> export_model("runs/demo", "exported/demo")  # doctest: +SKIP
        PosixPath('exported/demo')
    """
    from cell_seg.inference import Predictor
    from cell_seg.files import make_folder

    out_dir = Path(out_dir)
    _check_destination(out_dir, model_path)
    # The staging folder first: an --out that cannot be written fails before the model loads.
    try:
        make_folder(out_dir.parent)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as error:  # name the folder the user gave, not the hidden staging folder
        raise type(error)(error.errno, error.strerror, str(out_dir)) from None
    try:
        predictor = Predictor.load(model_path)  # a missing model is reported before Keras loads
        import keras

        if keras.backend.backend() != "tensorflow":  # a SavedModel is TensorFlow's format
            raise ModelError(f"export needs Keras' tensorflow backend, not {keras.backend.backend()}: run it "
                             "without KERAS_BACKEND (or KERAS_BACKEND=tensorflow) where TensorFlow is installed; "
                             "a run trained on another backend loads there as it is")
        if predictor.keras_model is None:
            raise ModelError(f"{model_path}: already a SavedModel; export needs a run directory or a .keras file")
        metadata = export_metadata(predictor, model_path, weights_dtype, tta, scale_by_kind, scale, target_diameter)
        import tensorflow as tf

        module, signatures = build_module(predictor.keras_model, metadata, weights_dtype)
        # Variables in shards of at most SHARD_BYTES, so a release fits git hosts' file limits.
        sharding = tf.train.experimental.MaxShardSizePolicy(max_shard_size=SHARD_BYTES)
        try:
            tf.saved_model.save(module, str(staging), signatures=signatures,
                                options=tf.saved_model.SaveOptions(experimental_sharding_callback=sharding))
        except tf.errors.OpError as error:  # disk full, permissions: TensorFlow's own error types
            reason = (error.message or type(error).__name__).strip().splitlines()[0]
            raise ModelError(f"{out_dir}: cannot write the SavedModel ({reason})") from None
        (staging / "assets").mkdir(exist_ok=True)
        metadata.write(staging / "assets" / "metadata.json")
        if check:
            check_export(predictor, staging, weights_dtype=weights_dtype)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir


if __name__ == "__main__":  # the command line lives in cell_seg.cli.export
    from cell_seg.cli.export import cli

    cli()
