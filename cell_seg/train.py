"""Train a segmentation model from a config: `python -m cell_seg.train [--config X.yaml] [key=value ...]`.

With no arguments it trains a small model on the embedded DSB2018 demo data (a few minutes on a
laptop CPU), evaluates it on the validation images and prints where the run went.

Each run writes `runs/<name>/`: `config.yaml` (resolved), `metadata.json` (channels, classes,
normalisation), `checkpoints/best.keras` and `last.keras`, `backup/` (resume state while running),
`history.csv`, `logs/` (TensorBoard), `model.keras` (best epoch), `training_curves.png`, and after
evaluation `metrics.json` and `postprocess.json` (tuned thresholds).
"""

import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from cell_seg.config import save_config
from cell_seg.data.coco import validate_coco
from cell_seg.errors import ConfigError, DataError
from cell_seg.files import make_folder, read_json, write_json_atomic
from cell_seg.metadata import ModelMetadata

# The settings `python -m cell_seg.train` uses with no --config (same as configs/demo.yaml).
DEMO_CONFIG = Path(__file__).resolve().parent / "sample_data" / "demo.yaml"


# --- data -------------------------------------------------------------------------------------


def resolve_data(config):
    """Return (train_coco, val_coco, images_dir) for a config, splitting `data.coco` if needed."""
    data = config.data
    if data.train is not None:
        train_path, val_path = Path(data.train), Path(data.val)
        for key, path in (("data.train", train_path), ("data.val", val_path)):
            if not path.is_file():
                raise DataError(f"dataset file not found (config key {key})", file=path)
        train_coco = validate_coco(read_json(train_path), train_path)
        val_coco = validate_coco(read_json(val_path), val_path)
        images = Path(data.images) if data.images else train_path.parent
    else:
        if data.coco in (None, "demo"):
            from cell_seg.sample_data import COCO_JSON, IMAGES_DIR

            coco_path, default_images = Path(COCO_JSON), Path(IMAGES_DIR)
        else:
            coco_path = Path(data.coco)
            default_images = coco_path.parent
            if not coco_path.is_file():
                raise DataError("dataset file not found (config key data.coco)", file=coco_path)
        coco = validate_coco(read_json(coco_path), coco_path)
        images = Path(data.images) if data.images else default_images
        from cell_seg.data.split import split_coco

        # COCO files from other tools have no image_class: a plain seeded split, as cell_seg.split does.
        stratify = "image_class" if any("image_class" in image for image in coco["images"]) else None
        train_coco, val_coco = split_coco(
            coco, val_fraction=data.val_fraction, seed=data.split_seed, stratify=stratify,
            group=split_group(coco, data.split_group, coco_path),
        )
    if not images.is_dir():
        raise DataError("image folder not found (config key data.images)", file=images)
    if not train_coco.get("images"):
        raise DataError("no training images", file=data.train or data.coco)
    if not val_coco.get("images"):
        raise DataError("no validation images", file=data.val or data.coco)
    if data.max_val_images:
        keep = val_coco["images"][: data.max_val_images]
        ids = {image["id"] for image in keep}
        val_coco = dict(val_coco, images=keep, annotations=[a for a in val_coco["annotations"] if a["image_id"] in ids])
    return train_coco, val_coco, images


def split_group(coco, key, source):
    """The `data.split_group` field to split by, or None (with a warning) when most images lack it.

    A group key set on only a few images (one image of a copy of Sartorius' train.csv has
    `sample_id`) would make every other image a group of its own: the split is then an ordinary
    per-image split, so say so instead of failing or pretending to group.
    """
    if key is None:
        return None
    from cell_seg.data.split import images_with_field

    having, total = images_with_field(coco, key), len(coco["images"])
    if total and 2 * having < total:
        print(f"warning: {source}: only {having} of {total} images have field {key!r} (config key "
              "data.split_group); splitting images individually instead", file=sys.stderr)
        return None
    return key


def make_sequences(config, train_coco, val_coco, images, stride, val_batch_size=None):
    """Training (random crops, augmentation) and validation (whole padded images) PyDatasets."""
    from cell_seg.data.generator import SegmentationSequence

    common = dict(in_channels=config.model.in_channels, pad_multiple=max(stride, 32))
    train = SegmentationSequence(train_coco, images, config.data, shuffle=True, seed=config.train.seed, **common)
    # Validation: whole padded images in file order, as prediction sees them.
    val = SegmentationSequence(val_coco, images, config.data, shuffle=False, seed=0,
                               batch_size=val_batch_size or config.data.val_batch_size, crop_size=None, augment="none",
                               stain_jitter=None, class_balanced=False, steps_per_epoch=None, workers=1,
                               use_multiprocessing=False,
                               **common)
    return train, val


def soft_channel_indices(channels):
    """Positions of the soft-target channels (e.g. "distance") among the output channel names."""
    from cell_seg.data.targets import SOFT_CHANNELS

    return [i for i, name in enumerate(channels) if name in SOFT_CHANNELS]


# --- hardware ---------------------------------------------------------------------------------


def set_seeds(seed):
    """Seed Python, numpy and TensorFlow (and Keras' global generator)."""
    import keras

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


class _NoStrategy:
    """What the JAX and PyTorch backends use instead of a tf.distribute strategy: one device, no scope."""

    num_replicas_in_sync = 1

    def scope(self):
        import contextlib

        return contextlib.nullcontext()


def is_tensorflow_backend():
    """True when Keras runs on TensorFlow (the default); False on jax or torch."""
    import keras

    return keras.backend.backend() == "tensorflow"


def make_strategy(name):
    """A tf.distribute strategy: auto = Mirrored when more than one GPU is visible.

    On the jax and torch backends only "auto" and "default" are accepted, and training runs on
    Keras' default device (the first GPU when there is one).
    """
    if not is_tensorflow_backend():
        if name in ("auto", "default"):
            return _NoStrategy()
        import keras

        raise ConfigError(f"config key 'train.strategy' {name!r} needs the tensorflow backend "
                          f"(KERAS_BACKEND is {keras.backend.backend()}); use auto or default")
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("config key 'train.strategy' is multiworker but TF_CONFIG is not set")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"config key 'train.strategy' has unknown value {name!r}")


# --- model, optimiser, callbacks --------------------------------------------------------------


def make_optimizer(train):
    import keras

    if train.optimizer == "adam":
        return keras.optimizers.Adam(train.learning_rate)
    if train.optimizer == "adamw":
        return keras.optimizers.AdamW(train.learning_rate, weight_decay=train.weight_decay)
    return keras.optimizers.SGD(train.learning_rate, momentum=0.9, nesterov=True)


def cosine_schedule(train):
    """Epoch -> learning rate: linear warm-up, then cosine decay to min_learning_rate."""

    def schedule(epoch, lr=None):
        if epoch < train.warmup_epochs:
            return train.learning_rate * (epoch + 1) / train.warmup_epochs
        span = max(1, train.epochs - train.warmup_epochs)
        progress = min(1.0, (epoch - train.warmup_epochs) / span)
        return train.min_learning_rate + 0.5 * (train.learning_rate - train.min_learning_rate) * (1 + math.cos(math.pi * progress))

    return schedule


def make_callbacks(config, run_dir):
    import keras

    train = config.train
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    mode = "max" if any(word in train.monitor for word in ("iou", "dice", "map")) else "min"
    callbacks = [
        # BackupAndRestore first: on resume it restores weights, optimiser and epoch before others run.
        keras.callbacks.BackupAndRestore(
            str(run_dir / "backup"), save_freq=train.backup_every_batches or "epoch", delete_checkpoint=True
        ),
        keras.callbacks.ModelCheckpoint(str(checkpoints / "best.keras"), monitor=train.monitor, mode=mode, save_best_only=True),
        keras.callbacks.ModelCheckpoint(str(checkpoints / "last.keras")),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TerminateOnNaN(),
    ]
    if is_tensorflow_backend():  # Keras' TensorBoard callback writes its logs with TensorFlow
        callbacks.insert(4, keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False, profile_batch=0))
    if train.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=train.monitor, mode=mode, factor=train.plateau_factor, patience=train.plateau_patience,
                min_lr=train.min_learning_rate, verbose=train.verbose,
            )
        )
    elif train.schedule == "cosine":
        callbacks.append(keras.callbacks.LearningRateScheduler(cosine_schedule(train)))
    callbacks.append(train_time_callback(run_dir / "train_time.json", train.epochs))
    if train.time_budget_minutes:
        callbacks.append(time_budget_callback(train.time_budget_minutes))
    if train.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=train.monitor, mode=mode, patience=train.early_stopping_patience)
        )
    return callbacks


def train_time_callback(path, planned_epochs):
    """A callback that keeps `path` (train_time.json) current after every epoch: the training
    seconds of every session of the run (an interrupted session counts up to its last epoch)."""
    import keras

    class TrainTime(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.started = time.time()
            self.earlier = float(read_json(path).get("train_seconds", 0.0)) if path.is_file() else 0.0

        def on_epoch_end(self, epoch, logs=None):
            write_json_atomic({"train_seconds": self.earlier + time.time() - self.started, "epochs": epoch + 1,
                               "planned_epochs": planned_epochs}, path)

    return TrainTime()


def time_budget_callback(minutes):
    """A callback that stops training at the first step after `minutes` of wall time (budgeted benchmarks).

    Keras ends the epoch at that step, so the last epoch may be partial; its checkpoints and
    history are written as for a full one.
    """
    import keras

    class TimeBudget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.deadline = time.time() + 60 * minutes

        def on_train_batch_end(self, batch, logs=None):
            if time.time() > self.deadline and not self.model.stop_training:
                print(f"time budget of {minutes} min reached: training stops after this step "
                      "(the epoch is cut short)", file=sys.stderr)
                self.model.stop_training = True

    return TimeBudget()


def keras_verbosity(verbose, stream=None):
    """Keras' `verbose` for fit: the progress bar (1) only on a terminal, else one line per epoch (2).

    Written to a file or a pipe, the bar is one huge line of control codes per epoch.

    Example:
        >>> import io
        >>> keras_verbosity(1, io.StringIO()), keras_verbosity(0, io.StringIO())
        (2, 0)
    """
    stream = sys.stdout if stream is None else stream  # where Keras writes its progress
    if verbose == 1 and not (hasattr(stream, "isatty") and stream.isatty()):
        return 2
    return verbose


def completed_epochs(run_dir):
    """Epochs recorded in history.csv (after a finished or interrupted run)."""
    path = run_dir / "history.csv"
    if not path.is_file():
        return 0
    import pandas as pd

    try:
        history = pd.read_csv(path)
    except Exception:
        return 0
    return int(history["epoch"].max()) + 1 if len(history) else 0


# --- run --------------------------------------------------------------------------------------


def run_directory(config):
    return Path(config.out_dir) if config.out_dir else Path("runs") / config.name


def fresh_run_directory(config):
    """runs/<name>, or runs/<name>-2, -3, ... when that already holds a run (never overwrite a run)."""
    base = run_directory(config)
    candidate, n = base, 1
    while (candidate / "config.yaml").exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def run(config, extra_callbacks=(), evaluate_after=True, resume=False):
    """Train the run described by `config`; returns (model, history).

    A fresh run never overwrites an earlier one: it goes to `runs/<name>-2` and so on. With
    `resume=True` it continues the run in `config.out_dir`: if `backup/` exists (the run was
    interrupted) the interrupted epoch restarts from the last backup; if the run had finished and
    `train.epochs` was raised, training continues from `checkpoints/last.keras`.
    """
    # Data first: a bad path fails in a second, before TensorFlow loads or a run directory appears.
    train_coco, val_coco, images = resolve_data(config)
    if not resume:
        config.out_dir = str(fresh_run_directory(config))
    run_dir = run_directory(config)
    make_folder(run_dir)  # an --out that cannot be written fails here, before TensorFlow loads

    import keras

    from cell_seg.config import mixed_precision_policy
    from cell_seg.models import model_stride

    set_seeds(config.train.seed)
    policy = mixed_precision_policy(config.train.mixed_precision)
    keras.mixed_precision.set_global_policy(policy or "float32")  # also undoes an earlier run's policy

    strategy = make_strategy(config.train.strategy)
    replicas = strategy.num_replicas_in_sync
    if config.data.batch_size % replicas:
        raise ConfigError(f"config key 'data.batch_size' ({config.data.batch_size}) must be a multiple of the {replicas} replicas")
    stride = model_stride(config.model)
    train_seq, val_seq = make_sequences(config, train_coco, val_coco, images, stride, val_batch_size=max(config.data.val_batch_size, replicas))
    if len(val_coco["images"]) < replicas:
        raise ConfigError(f"{len(val_coco['images'])} validation image(s) cannot be shared by {replicas} replicas; "
                          "raise data.val_fraction")
    # Every replica needs at least one image: with several, drop a last partial validation batch.
    validation_steps = len(val_seq) if replicas == 1 else max(1, len(val_coco["images"]) // val_seq.batch_size)
    channels = list(train_seq.channel_names)
    save_config(config, run_dir / "config.yaml")
    class_names = [c["name"] for c in sorted(train_coco.get("categories", []), key=lambda c: c["id"])]
    ModelMetadata.for_training(config, channels, class_names, stride).write(run_dir / "metadata.json")

    model, initial_epoch = compiled_model(config, channels, run_dir, strategy, resume)
    callbacks = make_callbacks(config, run_dir) + list(extra_callbacks)
    train_seq.set_epoch(initial_epoch)
    pool = None
    if config.data.use_multiprocessing and config.data.workers > 1:
        from cell_seg.data.workers import BatchProcessPool

        # Spawned processes (safe after the backend started its threads) build the training batches.
        pool = BatchProcessPool(train_seq, processes=config.data.workers)
    train_data, val_data = fit_inputs(train_seq, val_seq, pool)
    try:
        history = model.fit(
            train_data,
            steps_per_epoch=len(train_seq),
            validation_data=val_data,
            validation_steps=validation_steps,
            validation_freq=config.train.validation_freq,
            shuffle=False,  # the sequences shuffle, seeded per epoch
            epochs=config.train.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=keras_verbosity(config.train.verbose),
        )
    finally:
        if pool is not None:
            pool.close()

    model = save_final_model(run_dir, model)
    if evaluate_after:
        from cell_seg.evaluate import evaluate_run

        source = config.data.val or (None if config.data.coco in (None, "demo") else config.data.coco)
        evaluate_run(run_dir, coco=val_coco, images=images, tune=config.eval.tune, source=source)
    return model, history


def compiled_model(config, channels, run_dir, strategy, resume):
    """(compiled model, first epoch to train): a new model, or `checkpoints/last.keras` of a run resumed
    after it finished (an interrupted run restores `backup/` in `fit` instead)."""
    from cell_seg.losses import build_loss
    from cell_seg.models import build_model, load_model
    from cell_seg.train_metrics import build_metrics

    last = run_dir / "checkpoints" / "last.keras"
    initial_epoch = 0
    with strategy.scope():
        if resume and last.is_file() and not (run_dir / "backup").exists():
            model = load_model(last)
            initial_epoch = completed_epochs(run_dir)
            print(f"continuing {run_dir} from {last} at epoch {initial_epoch}", file=sys.stderr)
        else:
            model = build_model(config.model, len(channels))
            if config.model.init_weights and not (run_dir / "backup").exists():  # a backup restores its own
                from cell_seg.warm_start import initialise_weights

                added = initialise_weights(model, config.model.init_weights, channels)
                new_note = f" (new output channels {', '.join(added)} start untrained)" if added else ""
                print(f"weights from {config.model.init_weights}{new_note}", file=sys.stderr)
        model.compile(
            optimizer=make_optimizer(config.train),
            loss=build_loss(config.loss, len(channels), soft_channels=soft_channel_indices(channels)),
            metrics=build_metrics(channels),
            jit_compile=config.train.xla,
        )
        if resume and (run_dir / "backup").exists():
            # BackupAndRestore loads backup/ before the first step; an optimiser not built yet would
            # skip its saved moments and step count (Keras warns) and Adam would restart cold.
            model.optimizer.build(model.trainable_variables)
    return model, initial_epoch


def fit_inputs(train_seq, val_seq, pool=None):
    """What `model.fit` reads on this backend: (training data, validation data)."""
    if is_tensorflow_backend():
        # Our own tf.data wrappers: Keras' PyDataset adapter fixes the batch shape from the first
        # batch on TensorFlow, which breaks validation on whole images of different sizes.
        from cell_seg.data.generator import to_tf_dataset

        return to_tf_dataset(train_seq, pool=pool).repeat(), to_tf_dataset(val_seq).repeat()
    # JAX / PyTorch: the same batches, in the same order, from a generator; validation from the
    # PyDataset (jax.jit compiles once per batch shape).
    from cell_seg.data.generator import batch_stream

    return batch_stream(train_seq, pool), val_seq


def save_final_model(run_dir, model):
    """Write `model.keras` (the best checkpoint when there is one) and the training curves; returns that model."""
    from cell_seg.models import load_model

    best = run_dir / "checkpoints" / "best.keras"
    if best.is_file():
        model = load_model(best)
        shutil.copyfile(best, run_dir / "model.keras")
    else:
        model.save(run_dir / "model.keras")
    try:
        from cell_seg.plots import plot_history

        import matplotlib.pyplot as plt

        plt.close(plot_history(run_dir / "history.csv", save=run_dir / "training_curves.png"))
    except Exception as error:  # a plot must never lose a finished training
        print(f"warning: training curves not drawn ({error})", file=sys.stderr)
    return model


if __name__ == "__main__":  # the command line lives in cell_seg.cli.train
    from cell_seg.cli.train import cli

    cli()
