"""Train a packed config on the GPU machine under Keras' JAX backend; float16 weight pieces go to --out as it goes.

Run by `bench/gpu_kit/device_run.sh` (which installs the pack's wheels first). Steps:

1. unpack the data to `--work` (COCO JSON; WebP back to the PNGs the pipeline reads), in
   spawned processes;
2. optionally time the data path alone (`--data-seconds`): crops per second from
   `BatchProcessPool` with the training's worker processes;
3. optionally time training steps of models on synthetic batches (`--step-bench`);
4. train the pack's `config.yaml` with `cell_seg.train.run` (time budget `--minutes`, batches
   from `--workers` spawned processes, no evaluation), writing `cell_seg.weight_pieces`
   snapshots into `--out` after each epoch while no validation score exists yet and then at each
   better score, and the best model once training ends.

Every figure is printed on one line starting with `kit:` and stored in the manifest's `extra`.
It also runs on a CPU machine, from the repository root
(`KERAS_BACKEND=jax python -m bench.gpu_kit.device_train ...`).
"""

import argparse
import gzip
import json
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def report(figures, **values):
    """Print one `kit:` line and remember the values."""
    figures.update(values)
    print("kit: " + json.dumps(values), flush=True)


def decode_image(job):
    """WebP (or copy) from the pack -> the image file the COCO `file_name` names."""
    import cv2

    cv2.setNumThreads(1)
    source, target, mode = job
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "copy":
        shutil.copyfile(source, target)
        return
    image = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise RuntimeError(f"{source}: cannot decode")
    if mode == "gray" and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if not cv2.imwrite(str(target.with_suffix(".png")), image):
        raise RuntimeError(f"{target}: cannot write")


def unpack(pack, work, processes):
    """Write train.json, val.json and images/ under `work`; return (train, val, images) paths."""
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name in ("train", "val"):
        coco = json.loads(gzip.decompress((pack / "data" / f"{name}.json.gz").read_bytes()))
        for image in coco["images"]:  # lossy images come back as PNG
            image["file_name"] = str(Path(image["file_name"]).with_suffix(".png"))
        (data / f"{name}.json").write_text(json.dumps(coco))
    entries = json.loads((pack / "data" / "images.json").read_text())
    jobs = []
    for file_name, entry in entries.items():
        stored = (pack / "data" / "images" / file_name).with_name(entry["stored"])
        jobs.append((stored, data / "images" / file_name, entry["mode"]))
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        list(pool.map(decode_image, jobs, chunksize=8))
    return data / "train.json", data / "val.json", data / "images"


def data_bench(config, train_coco, images, seconds, figures):
    """Crops per second from the training's worker processes, the model not running."""
    from cell_seg.data.generator import batch_stream
    from cell_seg.data.workers import BatchProcessPool
    from cell_seg.files import read_json
    from cell_seg.models import model_stride
    from cell_seg.train import make_sequences

    train_seq, _ = make_sequences(config, read_json(train_coco), read_json(train_coco), images,
                                  model_stride(config.model))
    with BatchProcessPool(train_seq, processes=config.data.workers) as pool:
        stream = batch_stream(train_seq, pool)
        for _ in range(2 * pool.processes):
            next(stream)
        start, batches = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            next(stream)
            batches += 1
        elapsed = time.perf_counter() - start
    report(figures, data_crops_per_second=round(batches * config.data.batch_size / elapsed, 1),
           data_processes=config.data.workers, data_batch=config.data.batch_size, crop=config.data.crop_size)


def step_bench(specs, batch, size, policy, figures, steps=20):
    """Median seconds of a training step of each `name:backbone` model on synthetic batches."""
    import keras
    import numpy as np

    from cell_seg.config import ModelConfig
    from cell_seg.losses import SegmentationLoss
    from cell_seg.train_metrics import build_metrics
    from cell_seg.models import build_model

    keras.mixed_precision.set_global_policy(policy)
    rng = np.random.default_rng(0)
    images = rng.random((batch, size, size, 3), dtype=np.float32)
    targets = (rng.random((batch, size, size, 2)) > 0.7).astype(np.float32)
    for spec in specs:
        name, _, backbone = spec.partition(":")
        config = ModelConfig(name=name, backbone=backbone or "efficientnetb0", encoder_weights=None)
        model = build_model(config, 2)
        model.compile(keras.optimizers.Adam(1e-3), SegmentationLoss(dice_weight=1.0),
                      metrics=build_metrics(["foreground", "border"]))
        start = time.perf_counter()
        model.train_on_batch(images, targets)
        first = time.perf_counter() - start
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            model.train_on_batch(images, targets)  # returns host floats: the step has finished
            times.append(time.perf_counter() - start)
        step = statistics.median(times)
        report(figures, model=spec, policy=policy, batch=batch, size=size, step_seconds=round(step, 4),
               first_step_seconds=round(first, 1), crops_per_second=round(batch / step, 1))
    keras.mixed_precision.set_global_policy("float32")


def snapshot_callback(out, run_dir, monitor, figures):
    """A callback writing weight pieces after each epoch until a score exists, then at each better score."""
    import keras

    from cell_seg.weight_pieces import save_weight_pieces

    mode = "max" if any(word in monitor for word in ("iou", "dice", "map")) else "min"

    class Snapshots(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best, self.batch_times, self.started = None, [], 0.0

        def on_train_batch_begin(self, batch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.batch_times.append(time.perf_counter() - self.started)

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            better = value is not None and (self.best is None or (value < self.best if mode == "min" else value > self.best))
            if better:
                self.best = float(value)
            if better or self.best is None:
                steady = self.batch_times[3:] or self.batch_times
                extra = dict(figures, epoch=epoch + 1, monitor=monitor, value=self.best, final=False,
                             train_step_seconds=round(statistics.median(steady), 4))
                save_weight_pieces(self.model, out, run_dir=run_dir, extra=extra)
                print(f"kit: snapshot after epoch {epoch + 1} ({monitor} {value})", flush=True)

    return Snapshots()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", default=str(REPO / "bench" / "gpu_kit" / "pack"), help="the packed folder")
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_out"), help="where the weight pieces go ($OUT)")
    parser.add_argument("--work", default="/tmp/cell_seg_kit", help="scratch folder for data and the run")
    parser.add_argument("--minutes", type=float, required=True, help="training time budget")
    parser.add_argument("--workers", type=int, default=None, help="batch-building processes (default cores - 2)")
    parser.add_argument("--data-seconds", type=float, default=0, help="time the data path alone first")
    parser.add_argument("--step-bench", default="", help="comma-separated name:backbone models to time first")
    parser.add_argument("--step-batch", type=int, default=32)
    parser.add_argument("--step-size", type=int, default=256)
    parser.add_argument("--step-policy", default="float32", help="float32 | mixed_bfloat16 | mixed_float16")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)

    pack, work, out = Path(args.pack), Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    workers = args.workers or max(1, cores - 2)
    figures = {}
    start = time.perf_counter()
    train_coco, val_coco, images = unpack(pack, work, cores)
    report(figures, unpack_seconds=round(time.perf_counter() - start, 1), cores=cores)
    if (pack / "cache").is_dir():
        os.environ["CELL_SEG_CACHE"] = str((pack / "cache").resolve())
    summary = json.loads((pack / "pack.json").read_text())
    machine = [item.replace("@PACK@", str(pack.resolve())) for item in summary.get("machine_overrides", [])]

    import keras

    from cell_seg.config import load_config
    from cell_seg.train import run

    report(figures, backend=keras.backend.backend(), devices=[str(d) for d in _devices()])
    run_dir = work / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    overrides = machine + [
        f"data.train={train_coco}", f"data.val={val_coco}", f"data.images={images}", f"out_dir={run_dir}",
        f"data.workers={workers}", "data.use_multiprocessing=true", f"train.time_budget_minutes={args.minutes}",
        "train.verbose=2",
    ] + args.overrides
    config = load_config(pack / "config.yaml", overrides)
    if args.data_seconds:
        data_bench(config, train_coco, images, args.data_seconds, figures)
    if args.step_bench:
        step_bench([s for s in args.step_bench.split(",") if s], args.step_batch, args.step_size,
                   args.step_policy, figures)
    callback = snapshot_callback(out, run_dir, config.train.monitor, figures)
    started = time.perf_counter()
    model, history = run(config, extra_callbacks=[callback], evaluate_after=False)
    steady = callback.batch_times[3:] or callback.batch_times
    report(figures, train_seconds=round(time.perf_counter() - started, 1), epochs=len(history.history.get("loss", [])),
           train_step_seconds=round(statistics.median(steady), 4), batch=config.data.batch_size,
           train_crops_per_second=round(config.data.batch_size / statistics.median(steady), 1))
    from cell_seg.weight_pieces import save_weight_pieces

    save_weight_pieces(model, out, run_dir=run_dir, extra=dict(figures, final=True, monitor=config.train.monitor,
                                                               value=callback.best))
    print(f"kit: final weights in {out}", flush=True)
    return 0


def _devices():
    try:
        import jax

        return jax.devices()
    except ImportError:
        return []


if __name__ == "__main__":
    sys.exit(main())
