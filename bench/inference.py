"""Benchmark: per-image latency of the exported SavedModel end to end against the bare Keras model call.

Model: U-Net-EfficientNet-B0 (segmentation_models, random weights: weights do not change the
cost), 2 output channels (foreground, border), exported with `cell_seg.export`. Image: a real
520 x 704 Sartorius image when ../shared/data exists (the shsy5y image whose ground truth has
the most cells near --cells), else a synthetic one.

Figures (median of --repeat runs, run alternately so all see the same load on a shared machine):

- baseline: the bare Keras call `model(x, training=False)` on the already normalised and padded
  1 x 544 x 704 x 3 input (and the same model wrapped in `tf.function`, for reference);
- SavedModel probabilities: `Predictor.predict_probs(raw uint8 image)` (in-graph normalisation,
  padding, model, cropping; plus the numpy/TensorFlow conversions);
- post-processing (watershed with the default settings) and Sartorius RLE rows. Their cost grows
  with the number of instances, and an untrained model's output has no realistic instances, so
  they are timed on a probability map made from the image's ground truth (foreground = blurred
  union of the cells, border = blurred outlines; synthetic ellipses without the data);
- end to end = SavedModel probabilities + post-processing + RLE, and the overhead over the
  baseline in percent (target: < 15 %). The end to end on the untrained model's own output is
  printed too.

Usage:
    python -m bench.inference [--data ../shared/data] [--repeat 10] [--cells 300]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from bench.common import DEFAULT_DATA, model_like_probabilities, sartorius_ground_truth, synthetic_sample  # noqa: E402
from cell_seg.files import read_image  # noqa: E402

CHANNELS = ["foreground", "border"]


def real_sample(data_root, target_cells):
    """(image id, raw uint8 image, ground-truth label map) of the shsy5y image with about `target_cells` cells."""
    info, label_map = sartorius_ground_truth(data_root, target_cells=target_cells)
    image = read_image(Path(data_root) / "sartorius" / "train" / info["file_name"])
    return Path(info["file_name"]).stem, image, label_map


def export_untrained(folder):
    """Build U-Net-EfficientNet-B0 (random weights), write a run directory, export it; returns (run, SavedModel)."""
    from cell_seg.config import load_config
    from cell_seg.export import export_model
    from cell_seg.metadata import ModelMetadata
    from cell_seg.models import build_model

    config = load_config(None, ["model.name=unet", "model.backbone=efficientnetb0", "model.encoder_weights=null",
                                "data.normalization=scale"])
    run = Path(folder) / "run"
    run.mkdir(parents=True)
    build_model(config.model, len(CHANNELS)).save(run / "model.keras")
    ModelMetadata.for_training(config, CHANNELS, ["cell"], stride=32).write(run / "metadata.json")
    return run, export_model(run, Path(folder) / "saved_model")


def alternate(functions, repeat):
    """Median milliseconds of each function, run in turn `repeat` times after one warm-up each."""
    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    for _ in range(repeat):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: float(np.median(values)) for name, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="shared data root")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per figure (median reported)")
    parser.add_argument("--cells", type=int, default=300, help="pick the shsy5y image with about this many cells")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from cell_seg.inference import Predictor
    from cell_seg.postprocess import PostprocessConfig, to_instances
    from cell_seg.preprocess import normalize_image, pad_to_multiple
    from cell_seg.submission import sartorius_rows

    if (Path(args.data) / "sartorius" / "coco_reference.json").is_file():
        name, image, label_map = real_sample(args.data, args.cells)
        source = f"Sartorius shsy5y image {name}"
    else:
        print(f"{args.data}/sartorius not found: using a synthetic image and label map instead")
        name = "synthetic"
        image, label_map = synthetic_sample(args.cells)
        source = "synthetic image"
    print(f"input: {source}, {image.shape[0]}x{image.shape[1]} {image.dtype}, ground truth {int(label_map.max())} cells")
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, GPUs: {len(tf.config.list_physical_devices('GPU'))}")

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        run, saved = export_untrained(folder)
        print(f"built and exported U-Net-EfficientNet-B0 (untrained) in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        predictor = Predictor.load(saved)
        print(f"SavedModel loaded in {time.perf_counter() - started:.2f} s")
        model = Predictor.load(run).keras_model
        x = pad_to_multiple(normalize_image(image, "scale"), 32)[0][None]
        compiled = tf.function(lambda batch: model(batch, training=False))
        settings = PostprocessConfig(mode="watershed")
        probs_truth = model_like_probabilities(label_map)[..., :len(CHANNELS)]
        labels_truth = to_instances(probs_truth, CHANNELS, mode="watershed", config=settings)[0]
        labels_model = predictor.predict_instances(image, mode="watershed")[0]
        np.testing.assert_allclose(predictor.predict_probs(image), np.asarray(model(x, training=False))[0, :image.shape[0]],
                                   atol=1e-4)

        def end_to_end_untrained():
            labels, _ = predictor.predict_instances(image, mode="watershed")
            sartorius_rows(name, labels)

        times = alternate({
            "keras": lambda: np.asarray(model(x, training=False)),
            "keras_tf_function": lambda: compiled(x).numpy(),
            "saved_probs": lambda: predictor.predict_probs(image),
            "postprocess": lambda: to_instances(probs_truth, CHANNELS, mode="watershed", config=settings),
            "rle": lambda: sartorius_rows(name, labels_truth),
            "end_to_end_untrained": end_to_end_untrained,
        }, args.repeat)

    base = times["keras"]
    end_to_end = times["saved_probs"] + times["postprocess"] + times["rle"]
    rows = [
        ("Keras model(x) on normalised, padded input [baseline]", times["keras"]),
        ("  same model in tf.function (reference)", times["keras_tf_function"]),
        ("SavedModel probabilities (raw image in)", times["saved_probs"]),
        (f"post-processing, watershed ({int(labels_truth.max())} instances)", times["postprocess"]),
        (f"Sartorius RLE rows ({int(labels_truth.max())} instances)", times["rle"]),
        ("SavedModel end to end (probabilities + post-processing + RLE)", end_to_end),
        (f"  end to end on the untrained output ({int(labels_model.max())} instances)", times["end_to_end_untrained"]),
    ]
    print(f"\n{'per image, 520x704, median of ' + str(args.repeat):66s} {'ms':>9s} {'vs baseline':>12s}")
    for label, ms in rows:
        print(f"{label:66s} {ms:9.1f} {ms / base:11.2f}x")
    overhead = 100 * (end_to_end - base) / base
    graph_only = 100 * (times["saved_probs"] - base) / base
    print(f"\noverhead of the SavedModel end to end over the bare Keras call: {overhead:+.1f} % (target < 15 %)")
    print(f"  of which in-graph preprocessing and conversions: {graph_only:+.1f} %, post-processing + RLE: "
          f"{100 * (times['postprocess'] + times['rle']) / base:+.1f} %")
    graph = times["keras_tf_function"]
    print(f"against the same Keras model in tf.function (graph, like the SavedModel): "
          f"{100 * (end_to_end - graph) / graph:+.1f} % end to end, {100 * (times['saved_probs'] - graph) / graph:+.1f} % "
          "for the probabilities alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
