"""Export a trained model as a TensorFlow SavedModel that takes raw images of any size.

    python -m cell_seg.export --model runs/demo --out exported/demo

Signatures:
- `serve_image(image)`: one `uint8` image `H x W x C` (C = 1, 3 or 4; add a trailing axis to a
  grayscale image) -> `{"probabilities": H x W x K float32}`.
- `serve_image_uint16(image)`: the same for 16-bit images.
- `serve_batch(images)`: `B x H x W x C` uint8 images of one size -> `B x H x W x K`.
Normalisation, channel repetition, padding to the model's stride and cropping back all happen
inside the graph, so the SavedModel needs TensorFlow alone. `assets/metadata.json` holds the
channel and class names, the normalisation, the tuned post-processing and the training config.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from cell_seg import __version__
from cell_seg.cli import run_main
from cell_seg.errors import ModelError

LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5


def _tf_percentile(values, q):
    """numpy's default ('linear') percentile of a 1-D float tensor."""
    import tensorflow as tf

    ordered = tf.sort(values)
    n = tf.cast(tf.size(ordered), tf.float32)
    position = q / 100.0 * (n - 1.0)
    low = tf.cast(tf.floor(position), tf.int32)
    high = tf.cast(tf.math.ceil(position), tf.int32)
    low_value, high_value = tf.gather(ordered, low), tf.gather(ordered, high)
    return low_value + (high_value - low_value) * (position - tf.cast(low, tf.float32))


def make_preprocess(metadata):
    """A TF function raw image (H x W x C, uint8/uint16) -> float32 H x W x in_channels, as cell_seg.preprocess does."""
    import tensorflow as tf

    norm = metadata["normalization"]
    mode = norm["mode"]
    in_channels = int(metadata["in_channels"])
    mean, std = norm.get("mean"), norm.get("std")

    def preprocess(image):
        scale = 65535.0 if image.dtype == tf.uint16 else 255.0
        x = tf.cast(image, tf.float32)
        channels = tf.shape(x)[-1]
        x = tf.cond(tf.equal(channels, 4), lambda: x[..., :3], lambda: x)
        if in_channels == 3:
            x = tf.cond(tf.equal(tf.shape(x)[-1], 1), lambda: tf.repeat(x, 3, axis=-1), lambda: x)
        else:
            weights = tf.constant([0.299, 0.587, 0.114], tf.float32)
            x = tf.cond(tf.equal(tf.shape(x)[-1], 3),
                        lambda: tf.reduce_sum(x * weights, axis=-1, keepdims=True), lambda: x)
        if mode == "minmax":
            flat = tf.reshape(x, [-1])
            low = _tf_percentile(flat, LOW_PERCENTILE)
            high = _tf_percentile(flat, HIGH_PERCENTILE)
            # As numpy: all zeros for a constant image.
            x = tf.where(high > low, tf.clip_by_value((x - low) / tf.maximum(high - low, 1e-12), 0.0, 1.0), tf.zeros_like(x))
        else:
            x = x / scale
            if mode == "standard":
                x = (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
        return x

    return preprocess


def build_archive(model, metadata):
    """A keras ExportArchive with the serving endpoints described in the module docstring."""
    import keras
    import tensorflow as tf

    preprocess = make_preprocess(metadata)
    stride = int(metadata["stride"])

    def padded_call(batch):
        height, width = tf.shape(batch)[1], tf.shape(batch)[2]
        pad_h = (stride - height % stride) % stride
        pad_w = (stride - width % stride) % stride
        padded = tf.pad(batch, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        out = model(padded, training=False)
        return tf.cast(out[:, :height, :width, :], tf.float32)

    def serve_one(image):
        return {"probabilities": padded_call(preprocess(image)[None])[0]}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve_image", serve_one, input_signature=[tf.TensorSpec([None, None, None], tf.uint8, name="image")])
    archive.add_endpoint(
        "serve_image_uint16", serve_one, input_signature=[tf.TensorSpec([None, None, None], tf.uint16, name="image")]
    )

    def serve_batch(images):
        return {"probabilities": padded_call(tf.map_fn(preprocess, images, fn_output_signature=tf.float32))}

    archive.add_endpoint(
        "serve_batch", serve_batch, input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, name="images")]
    )
    return archive


def export_model(model_path, out_dir):
    """Write the SavedModel of a run directory or .keras file to `out_dir` (atomically: temp dir + rename)."""
    from cell_seg.inference import Predictor

    predictor = Predictor.load(model_path)
    if predictor.keras_model is None:
        raise ModelError(f"{model_path}: already a SavedModel; export needs a run directory or a .keras file")
    metadata = dict(predictor.metadata)
    metadata["postprocess"] = predictor.postprocess
    metadata["version"] = __version__
    metadata["signatures"] = ["serve_image", "serve_image_uint16", "serve_batch"]
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        archive = build_archive(predictor.keras_model, metadata)
        archive.write_out(str(staging), verbose=False)
        (staging / "assets").mkdir(exist_ok=True)
        (staging / "assets" / "metadata.json").write_text(json.dumps(metadata, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m cell_seg.export",
        description="Export a run directory or .keras file as a SavedModel (raw image in, probabilities out).",
    )
    parser.add_argument("--model", required=True, help="run directory or .keras file")
    parser.add_argument("--out", required=True, help="output SavedModel directory (replaced atomically)")
    args = parser.parse_args(argv)
    out = export_model(args.model, args.out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    print(f"exported {args.model} to {out} ({size:.1f} MB)", file=sys.stderr)
    return 0


def cli():
    run_main(main)


if __name__ == "__main__":
    cli()
