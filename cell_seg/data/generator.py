"""Keras batches read from COCO on the fly: image, augmentation, targets; worker processes; a tf.data wrapper.

`SampleBatches` builds the batches and needs no Keras, so worker processes (`BatchProcessPool`,
in `cell_seg.data.workers`) can build them without importing Keras or a backend;
`SegmentationSequence` is the same class as a `keras.utils.PyDataset` (Keras is imported on first
use of that name). The only module of `cell_seg.data` that imports TensorFlow/Keras, and only then.

Per sample: raw image (`CocoDataset.load_image`) and label map (`CocoDataset.load_labels`) ->
with `close_labels`, instances closed and their holes filled (`cell_seg.data.labels.close_instances`) ->
resized by `scale` when it is not 1, or with `target_diameter` by the factor that brings the
median diameter of its labelled objects to it (`cell_seg.preprocess.size_scale`), image
interpolated, label map nearest (`Predictor` resizes images the same way and returns its
outputs at the original size) -> with `stain_jitter` (training), random haematoxylin and eosin
amounts for stained colour images (`cell_seg.data.augment.jitter_stains`) -> `normalize_image`
("scale", "minmax" or "grey_dark"; for "standard", "scale" first) -> augmentation of image and
label map together (with the random crop in training mode) -> for "standard", `(x - mean) /
std` -> targets from the augmented label map (`build_targets`) -> zero padding at the bottom and
right to a multiple of `pad_multiple`.

Two modes:

- training (`crop_size` an int): every sample is a random crop of that size (zero-padded first
  when the image is smaller), so all batch items have the same size.
- validation (`crop_size=None`): whole images, padded to a multiple of `pad_multiple`; batch
  items of different sizes are padded to the largest in the batch.

Padded pixels are 0 in both `x` and `y` (no sample weights): the model learns "background" there,
which is right for zero images.

Determinism: epoch `e`'s order depends only on `(seed, e)` and sample `i` of epoch `e` is
augmented with a seed derived from `(seed, e, i)`, so a batch is the same whichever worker thread
or process builds it and whatever was read before (`batch_stream` and `to_tf_dataset` read epoch
`sequence.epoch` first, then the next ones). `on_epoch_end` moves to the next epoch. Keras'
`model.fit` calls `on_epoch_end` once before its first epoch too (when it resets its epoch
iterator), so Keras epoch `k` reads epoch `k + 1` of a fresh sequence; to resume a run at Keras
epoch `k` with the same data, call `sequence.set_epoch(k)` before `fit(initial_epoch=k)`.
"""

import dataclasses
import itertools
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cell_seg.data.augment import build_augmentation, jitter_stains
from cell_seg.data.dataset import CocoDataset
from cell_seg.data.labels import close_instances
from cell_seg.data.targets import build_targets, channel_names
from cell_seg.data.workers import ThreadStateNotPickled
from cell_seg.errors import ConfigError, DataError
from cell_seg.preprocess import (check_normalization, is_grey_input, median_diameter, normalize_image, pad_to_multiple,
                                 rescale, size_scale)


#: `DataConfig` fields that shape batches (the others say where data is and how it is split).
BATCH_FIELDS = ("channels", "batch_size", "crop_size", "augment", "stain_jitter", "close_labels", "normalization", "mean", "std",
                "border_width", "scale", "target_diameter", "class_balanced", "class_balance_power", "steps_per_epoch", "workers",
                "use_multiprocessing")


def batch_settings(data=None, overrides=None):
    """`data` (a `DataConfig`, default its defaults) with `overrides` of its batch fields applied.

    Example:
        >>> batch_settings(None, {"crop_size": None}).crop_size is None
        True
        >>> batch_settings(None, {"crop": 128})
        Traceback (most recent call last):
        ...
        cell_seg.errors.ConfigError: unknown batch setting 'crop' (use one of channels, batch_size, crop_size, augment, stain_jitter, close_labels, normalization, mean, std, border_width, scale, target_diameter, class_balanced, class_balance_power, steps_per_epoch, workers, use_multiprocessing)
    """
    from cell_seg.config import DataConfig

    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(BATCH_FIELDS))
    if unknown:
        raise ConfigError(f"unknown batch setting {unknown[0]!r} (use one of {', '.join(BATCH_FIELDS)})")
    if isinstance(overrides.get("channels"), str):
        overrides["channels"] = [overrides["channels"]]
    return dataclasses.replace(data if data is not None else DataConfig(), **overrides)


class SampleBatches(ThreadStateNotPickled):
    """Batches `(x float32 B x H x W x in_channels, y float32 B x H x W x C)` from a COCO data set.

    Plain Python (no Keras): `SegmentationSequence` is this class as a `keras.utils.PyDataset`.

    Args:
        coco: COCO JSON path, loaded dict, or a `CocoDataset`.
        images_dir: folder of the images (ignored when `coco` is a `CocoDataset`).
        data: a `cell_seg.config.DataConfig` (default: its defaults); its fields that shape
            batches are used: channels, batch_size, crop_size (None: whole padded images),
            augment, stain_jitter (`cell_seg.data.augment.jitter_stains` on stained colour images, before
            normalisation), close_labels (`cell_seg.data.labels.close_instances` on the label maps of
            every image, or of the image classes a dict names, before anything else), normalization, mean, std, border_width, scale, target_diameter, class_balanced
            (draw each image with a probability proportional to the number of images of its class to
            the power -class_balance_power: 1 draws every class equally often, 0.5 each class in
            proportion to the square root of its count), steps_per_epoch (default one pass),
            workers and use_multiprocessing (threads or processes building batches, see
            `batch_stream`).
        in_channels: 1 or 3 network input channels (the model's, `cell_seg.preprocess`).
        pad_multiple: H and W of every sample are padded to a multiple of this.
        shuffle: new random order every epoch (else file order).
        seed: seeds order and augmentation (None: random, fixed for this object).
        image_ids: restrict to these image ids (default all, in file order).
        max_queue_size: batches prepared ahead (`keras.utils.PyDataset`).
        cache_size: label maps kept in the data set's LRU cache.
        **settings: `data` fields to override, e.g. `crop_size=None, augment="none"`.

    Example:
        >>> train = SegmentationSequence("train.json", "images", crop_size=256, augment="strong")  # doctest: +SKIP
        >>> x, y = train[0]                                                                    # doctest: +SKIP
        >>> x.shape, y.shape, train.channel_names                                              # doctest: +SKIP
        ((4, 256, 256, 3), (4, 256, 256, 2), ['foreground', 'border'])
    """

    _THREAD_STATE = {"_lock": threading.Lock}

    def __init__(self, coco, images_dir=None, data=None, *, in_channels=3, pad_multiple=32, shuffle=True, seed=0,
                 image_ids=None, max_queue_size=10, cache_size=0, **settings):
        data = batch_settings(data, settings)
        channels, batch_size, crop_size = data.channels, data.batch_size, data.crop_size
        normalization, mean, std, scale = data.normalization, data.mean, data.std, data.scale
        workers, steps_per_epoch = data.workers, data.steps_per_epoch
        self.workers = int(workers)
        self.use_multiprocessing = bool(data.use_multiprocessing)
        self.max_queue_size = int(max_queue_size)
        if isinstance(coco, CocoDataset):
            self.dataset = coco
        else:
            if images_dir is None:
                raise ConfigError("images_dir is needed to read a COCO file")
            self.dataset = CocoDataset(coco, images_dir, cache_size=cache_size)
        self.image_ids = list(self.dataset.image_ids if image_ids is None else image_ids)
        for image_id in self.image_ids:
            self.dataset.image_info(image_id)  # DataError for unknown ids
        if not self.image_ids:
            raise DataError("no images to read", file=self.dataset.source)
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be at least 1, not {batch_size!r}")
        if steps_per_epoch is not None and int(steps_per_epoch) < 1:
            raise ConfigError(f"steps_per_epoch must be at least 1, not {steps_per_epoch!r}")
        if in_channels not in (1, 3):
            raise ConfigError(f"in_channels must be 1 or 3, not {in_channels!r}")
        check_normalization(normalization, mean, std, in_channels)

        self.channels = [channels] if isinstance(channels, str) else list(channels)
        self.category_names = list(self.dataset.category_names)
        self.n_classes = len(self.category_names)
        self.channel_names = channel_names(self.channels, self.category_names)
        self.batch_size = int(batch_size)
        self.crop_size = crop_size
        self.pad_multiple = pad_multiple
        self.normalization = normalization
        self.mean, self.std = mean, std
        self.in_channels = in_channels
        self.border_width = data.border_width
        if not float(scale) > 0:
            raise ConfigError(f"scale must be positive, not {scale!r}")
        self.scale = float(scale)
        self.target_diameter = None if data.target_diameter is None else float(data.target_diameter)
        if self.target_diameter is not None and (self.scale != 1.0 or not self.target_diameter > 0):
            raise ConfigError(f"target_diameter must be a positive number of pixels with scale 1, not "
                              f"{self.target_diameter!r} with scale {self.scale!r}")
        self._sample_scales = {}  # image id -> size_scale of its labels (with target_diameter)
        self.shuffle = shuffle
        self.class_balanced = data.class_balanced
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        self.seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else int(seed)
        self.augmentation = build_augmentation(data.augment, seed=self.seed, crop_size=crop_size)
        self.stain_jitter = None if data.stain_jitter is None else float(data.stain_jitter)
        self.close_labels = data.close_labels
        self.epoch = 0
        self._orders = {}
        self._lock = threading.Lock()
        classes = [self.dataset.image_class(i) for i in self.image_ids]
        self.image_classes = classes
        _, inverse, counts = np.unique(np.array([str(c) for c in classes]), return_inverse=True, return_counts=True)
        power = float(data.class_balance_power)
        if not 0 <= power <= 1:
            raise ConfigError(f"class_balance_power must be between 0 and 1, not {power!r}")
        weights = counts[inverse].astype(np.float64) ** -power
        self._balanced_p = weights / weights.sum()

    def plain(self):
        """This object's batches as a plain `SampleBatches` (pickles without Keras; for worker processes)."""
        state = {key: value for key, value in self.__getstate__().items()
                 if key not in ("_workers", "_use_multiprocessing", "_max_queue_size")}
        state.update(workers=self.workers, use_multiprocessing=self.use_multiprocessing,
                     max_queue_size=self.max_queue_size)
        plain = SampleBatches.__new__(SampleBatches)
        plain.__setstate__(state)
        return plain

    # --- order -----------------------------------------------------------------------------

    def __len__(self):
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        return math.ceil(len(self.image_ids) / self.batch_size)

    def _samples_per_epoch(self):
        if self.steps_per_epoch is None and not self.class_balanced:
            return len(self.image_ids)
        return len(self) * self.batch_size

    def epoch_order(self, epoch=None):
        """Positions (into `image_ids`) of the samples of an epoch, in batch order."""
        epoch = self.epoch if epoch is None else int(epoch)
        with self._lock:
            order = self._orders.get(epoch)
            if order is None:
                order = self._orders[epoch] = self._make_order(epoch)
                for old in [e for e in self._orders if e < epoch - 2]:
                    del self._orders[old]
        return order

    def _make_order(self, epoch):
        n_images, n_samples = len(self.image_ids), self._samples_per_epoch()
        rng = np.random.default_rng([self.seed, epoch])
        if self.class_balanced:
            return rng.choice(n_images, size=n_samples, replace=True, p=self._balanced_p)
        if self.shuffle:
            permutations = [rng.permutation(n_images) for _ in range(math.ceil(n_samples / n_images))]
            return np.concatenate(permutations)[:n_samples]
        return (np.arange(n_samples) + epoch * n_samples) % n_images  # cycle on through the file order

    def epoch_image_ids(self, epoch=None):
        """Image ids of the samples of an epoch, in batch order."""
        return [self.image_ids[i] for i in self.epoch_order(epoch)]

    def on_epoch_end(self):
        """Move to the next epoch (new order and new augmentations)."""
        self.epoch += 1

    def set_epoch(self, epoch):
        """Jump to an epoch (e.g. when resuming training)."""
        self.epoch = int(epoch)

    # --- samples and batches ---------------------------------------------------------------

    def load_sample(self, image_id, seed=None, pad=True):
        """One `(x H x W x in_channels, y H x W x C)` sample, float32, padded to `pad_multiple` if `pad`."""
        image = self.dataset.load_image(image_id)
        label_map, classes = self.dataset.load_labels(image_id)
        if image.shape[:2] != label_map.shape:
            raise DataError(
                f"image is {image.shape[0]}x{image.shape[1]} but its annotations are "
                f"{label_map.shape[0]}x{label_map.shape[1]}",
                file=self.dataset.image_path(image_id),
            )
        closing = self.closing(image_id)
        if closing:
            label_map = close_instances(label_map, closing)
        scale = self.sample_scale(image_id, label_map)
        if scale != 1.0:
            image, label_map = rescale(image, scale), rescale(label_map, scale, labels=True)
        if self.stain_jitter:
            rng = np.random.default_rng(None if seed is None else [seed, 1])
            image = jitter_stains(image, rng, self.stain_jitter)
        mode = "scale" if self.normalization == "standard" else self.normalization
        x = normalize_image(image, mode, in_channels=self.in_channels)
        # A grayscale image repeated to 3 channels is augmented as one channel: a third of the
        # work, and the channels stay identical, as they are at prediction time.
        repeated = x.shape[2] == 3 and is_grey_input(image, mode)
        if repeated:
            x = x[..., :1]
        x, label_map = self.augmentation(x, label_map, seed=seed)
        if x.ndim == 2:
            x = x[..., None]
        if repeated:
            x = np.repeat(x, 3, axis=2)
        x = x.astype(np.float32, copy=False)
        if self.normalization == "standard":
            x = (x - np.asarray(self.mean, np.float32).reshape(-1)) / np.asarray(self.std, np.float32).reshape(-1)
        y = build_targets(label_map, classes, self.channels, self.n_classes, self.border_width)
        if pad:
            x, _ = pad_to_multiple(x, self.pad_multiple)
            y, _ = pad_to_multiple(y, self.pad_multiple)
        return x, y

    def closing(self, image_id):
        """The disc size (px) `close_labels` closes this image's instances with (0: none)."""
        if isinstance(self.close_labels, dict):
            return int(self.close_labels.get(self.dataset.image_class(image_id)) or 0)
        return int(self.close_labels or 0)

    def sample_scale(self, image_id, label_map):
        """The factor an image is resized by: `scale`, or with `target_diameter` its size rule factor."""
        if self.target_diameter is None:
            return self.scale
        scale = self._sample_scales.get(image_id)
        if scale is None:
            scale = self._sample_scales[image_id] = size_scale(median_diameter(label_map), self.target_diameter)
        return scale

    def get_batch(self, index, epoch=None):
        """Batch `index` of `epoch` (default: the current epoch)."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range (0..{len(self) - 1})")
        epoch = self.epoch if epoch is None else int(epoch)
        order = self.epoch_order(epoch)
        positions = range(index * self.batch_size, min((index + 1) * self.batch_size, len(order)))
        samples = []
        for position in positions:
            sample_seed = int(np.random.SeedSequence([self.seed, epoch, position]).generate_state(1)[0])
            samples.append(self.load_sample(self.image_ids[order[position]], seed=sample_seed, pad=False))
        return (
            stack_padded([s[0] for s in samples], self.pad_multiple),
            stack_padded([s[1] for s in samples], self.pad_multiple),
        )

    def __getitem__(self, index):
        return self.get_batch(index, self.epoch)


_SEQUENCE_CLASS_LOCK = threading.Lock()


def _make_sequence_class():
    """`SampleBatches` as a `keras.utils.PyDataset` (imports Keras)."""
    import keras

    class SegmentationSequence(SampleBatches, keras.utils.PyDataset):
        __doc__ = SampleBatches.__doc__.replace(
            "Plain Python (no Keras): `SegmentationSequence` is this class as a `keras.utils.PyDataset`.",
            "A `keras.utils.PyDataset`; its batches can also be built without Keras by `plain()`.")

        def __init__(self, coco, images_dir=None, data=None, **kwargs):
            keras.utils.PyDataset.__init__(self)
            SampleBatches.__init__(self, coco, images_dir, data, **kwargs)  # sets workers & co. as well

    SegmentationSequence.__module__ = __name__
    SegmentationSequence.__qualname__ = "SegmentationSequence"  # pickles as a module attribute
    return SegmentationSequence


def __getattr__(name):
    """`SegmentationSequence` is made on first use, so that importing this module imports no Keras."""
    if name == "SegmentationSequence":
        with _SEQUENCE_CLASS_LOCK:
            if "SegmentationSequence" not in globals():
                globals()["SegmentationSequence"] = _make_sequence_class()
        return globals()["SegmentationSequence"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def batch_stream(sequence, pool=None, epoch=None):
    """Every batch of `sequence`, epoch after epoch from `epoch` (default `sequence.epoch`), forever.

    Batches are built by `pool` (a `cell_seg.data.workers.BatchProcessPool` of this sequence) when
    given, else by `sequence.workers` threads, in order and ahead of use. Pass it to `model.fit`
    with `steps_per_epoch=len(sequence)`: Keras epoch `k` then reads epoch `epoch + k`.

    Example:
        >>> stream = batch_stream(SegmentationSequence("train.json", "images"))  # doctest: +SKIP
        >>> model.fit(stream, steps_per_epoch=len(sequence), epochs=10)          # doctest: +SKIP
    """
    start = sequence.epoch if epoch is None else int(epoch)
    if pool is not None:
        yield from pool.stream(start)
        return
    threads = max(1, int(sequence.workers))
    if threads == 1:
        for current in itertools.count(start):
            for index in range(len(sequence)):
                yield sequence.get_batch(index, current)
        return
    with ThreadPoolExecutor(threads) as executor:
        tasks = ((current, index) for current in itertools.count(start) for index in range(len(sequence)))
        pending = [executor.submit(sequence.get_batch, index, current)
                   for current, index in itertools.islice(tasks, 2 * threads)]
        while True:
            batch = pending.pop(0).result()
            current, index = next(tasks)
            pending.append(executor.submit(sequence.get_batch, index, current))
            yield batch


def stack_padded(arrays, multiple=1):
    """Stack `H x W x C` arrays into float32 `B x H' x W' x C`, zero-padding each at the bottom/right.

    `H'` and `W'` are the largest height and width, rounded up to a multiple of `multiple`.

    Example:
        >>> stack_padded([np.ones((2, 3, 1)), np.ones((4, 2, 1))]).shape
        (2, 4, 3, 1)
        >>> stack_padded([np.ones((2, 3, 1)), np.ones((4, 2, 1))], multiple=8).shape
        (2, 8, 8, 1)
    """
    multiple = max(int(multiple or 1), 1)
    height = -(-max(a.shape[0] for a in arrays) // multiple) * multiple
    width = -(-max(a.shape[1] for a in arrays) // multiple) * multiple
    out = np.zeros((len(arrays), height, width) + arrays[0].shape[2:], np.float32)
    for i, array in enumerate(arrays):
        out[i, : array.shape[0], : array.shape[1]] = array
    return out


def to_tf_dataset(sequence, prefetch=2, parallel_calls=None, pool=None):
    """A `tf.data.Dataset` of a sequence's batches, for `model.fit`.

    Each pass over the dataset (each Keras epoch) is the sequence's next epoch, starting at
    `sequence.epoch`. Batches are built by `parallel_calls` threads (default: the sequence's
    `workers`), or by the processes of `pool` (a `cell_seg.data.workers.BatchProcessPool`; default
    calls: its processes), in order, and `prefetch` batches are prepared ahead.

    Returns:
        Dataset of `(x, y)` with shapes `(None, None, None, in_channels)` and `(None, None, None, C)`.

    Example:
        >>> dataset = to_tf_dataset(SegmentationSequence("train.json", "images"))  # doctest: +SKIP
        >>> model.fit(dataset, epochs=10)                                         # doctest: +SKIP
    """
    import tensorflow as tf

    epochs = itertools.count(sequence.epoch)
    n_channels = len(sequence.channel_names)

    def batch_positions():
        epoch = next(epochs)
        for index in range(len(sequence)):
            yield epoch, index

    def load(epoch, index):
        if pool is not None:
            return pool.get_batch(int(index), int(epoch))
        return sequence.get_batch(int(index), int(epoch))

    def load_tensors(epoch, index):
        x, y = tf.numpy_function(load, [epoch, index], (tf.float32, tf.float32), stateful=False)
        x.set_shape((None, None, None, sequence.in_channels))
        y.set_shape((None, None, None, n_channels))
        return x, y

    positions = tf.data.Dataset.from_generator(
        batch_positions,
        output_signature=(tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.int64)),
    )
    default_calls = pool.processes if pool is not None else max(1, int(sequence.workers))
    calls = parallel_calls if parallel_calls is not None else default_calls
    dataset = positions.map(load_tensors, num_parallel_calls=calls, deterministic=True)
    return dataset.prefetch(prefetch) if prefetch else dataset
