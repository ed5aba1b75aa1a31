"""Losses for multi-channel sigmoid segmentation (foreground, border, classes).

The training metrics (per-channel IoU and dice) live in :mod:`cell_seg.train_metrics`.

Every class here is a Keras object with ``get_config``, registered under the package
``cell_seg``, so a ``.keras`` checkpoint compiled with them reloads in any process that
has imported this module (:func:`cell_seg.models.load_model` does that for you).

Conventions shared by all losses:

* ``y_true`` and ``y_pred`` are ``(batch, height, width, channels)``; ``y_pred`` holds
  probabilities (the models end in a sigmoid). Both are cast to float32 first, so the
  losses work under mixed precision.
* Each term is computed per sample and per channel, then summed over channels with
  ``channel_weights`` (default all 1). ``call`` returns one value per sample and lets
  Keras do the batch reduction, which is what ``tf.distribute`` strategies need.
* Soft targets (the "distance" channel, values in [0, 1]): the class-weighted BCE handles
  them as they are: a pixel's loss is its BCE times a weight that does not depend on the
  prediction, so each pixel's loss is still lowest at ``p = t``. Dice and focal terms are not
  (their optimum for a soft target is not ``p = t``), so :class:`SegmentationLoss` leaves the
  channels listed in ``soft_channels`` out of them.

This module imports Keras (and so TensorFlow) when imported: only the training,
prediction and export code should import it.
"""

import keras
from keras import ops

from cell_seg.errors import ConfigError

#: Probabilities are clipped to ``[EPSILON, 1 - EPSILON]`` before taking logarithms.
EPSILON = 1e-7

_PACKAGE = "cell_seg"


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _as_float32(y_true, y_pred):
    """Cast targets and predictions to float32 (predictions may be float16 under mixed precision)."""
    return ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")


def _spatial_axes(tensor):
    """The axes between batch and channel: (1, 2) for images."""
    return tuple(range(1, len(tensor.shape) - 1))


def _weighted_channel_sum(per_channel, channel_weights):
    """Sum a ``(batch, channels)`` tensor over channels, with optional per-channel weights."""
    if channel_weights is not None:
        weights = ops.convert_to_tensor(channel_weights, dtype="float32")
        per_channel = per_channel * weights
    return ops.sum(per_channel, axis=-1)


def _check_channel_weights(channel_weights):
    """Return channel weights as a list of floats (or None), rejecting negative values."""
    if channel_weights is None:
        return None
    weights = [float(w) for w in channel_weights]
    if any(w < 0 for w in weights):
        raise ConfigError(f"loss.channel_weights must be >= 0, got {weights}")
    return weights


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package=_PACKAGE)
class WeightedBCE(keras.losses.Loss):
    """Class-balanced binary cross-entropy: positive and negative pixels averaged separately.

    Per sample and channel, the BCE of the positive pixels is averaged over the positive
    pixels and the BCE of the negative pixels over the negative pixels; the two means are
    added with ``positive_weight`` and ``negative_weight``. A channel with no positive
    pixel contributes ``negative_weight * mean negative BCE`` (its positive term is 0,
    not NaN). Soft targets in [0, 1] weight a pixel's share of each term.

    Args:
        positive_weight: weight of the mean BCE over positive pixels.
        negative_weight: weight of the mean BCE over negative pixels.
        channel_weights: one weight per channel (default all 1); channels are summed.

    Example:
        >>> import numpy as np
        >>> y_true = np.array([[[[1.0], [0.0]], [[0.0], [0.0]]]])   # 1 x 2 x 2 x 1
        >>> y_pred = np.array([[[[0.8], [0.2]], [[0.4], [0.1]]]])
        >>> loss = WeightedBCE(positive_weight=1.0, negative_weight=3.0)
        >>> expected = -np.log(0.8) + 3 * np.mean(-np.log([0.8, 0.6, 0.9]))
        >>> bool(np.isclose(float(loss(y_true, y_pred)), expected, rtol=1e-5))
        True
    """

    def __init__(self, positive_weight=1.0, negative_weight=3.0, channel_weights=None,
                 name="weighted_bce", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.positive_weight = float(positive_weight)
        self.negative_weight = float(negative_weight)
        self.channel_weights = _check_channel_weights(channel_weights)

    def call(self, y_true, y_pred):
        """Return the loss of each sample, shape ``(batch,)``."""
        y_true, y_pred = _as_float32(y_true, y_pred)
        axes = _spatial_axes(y_pred)
        probs = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
        bce = -(y_true * ops.log(probs) + (1.0 - y_true) * ops.log(1.0 - probs))
        positive = ops.divide_no_nan(ops.sum(bce * y_true, axis=axes), ops.sum(y_true, axis=axes))
        negative = ops.divide_no_nan(
            ops.sum(bce * (1.0 - y_true), axis=axes), ops.sum(1.0 - y_true, axis=axes)
        )
        per_channel = self.positive_weight * positive + self.negative_weight * negative
        return _weighted_channel_sum(per_channel, self.channel_weights)

    def get_config(self):
        config = super().get_config()
        config.update(
            positive_weight=self.positive_weight,
            negative_weight=self.negative_weight,
            channel_weights=self.channel_weights,
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiceLoss(keras.losses.Loss):
    """Soft dice loss ``1 - (2 |Y.P| + s) / (|Y| + |P| + s)`` per sample and channel.

    Args:
        smooth: the smoothing term ``s``; it makes an empty target with an empty
            prediction a loss of 0 and keeps gradients finite.
        channel_weights: one weight per channel (default all 1); channels are summed.

    Example:
        >>> import numpy as np
        >>> y_true = np.array([[[[1.0], [1.0]], [[0.0], [0.0]]]])
        >>> y_pred = np.array([[[[1.0], [0.0]], [[0.0], [0.0]]]])
        >>> round(float(DiceLoss(smooth=0.0)(y_true, y_pred)), 4)   # 1 - 2 * 1 / (2 + 1)
        0.3333
    """

    def __init__(self, smooth=1.0, channel_weights=None, name="dice_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.smooth = float(smooth)
        self.channel_weights = _check_channel_weights(channel_weights)

    def call(self, y_true, y_pred):
        """Return the loss of each sample, shape ``(batch,)``."""
        y_true, y_pred = _as_float32(y_true, y_pred)
        axes = _spatial_axes(y_pred)
        intersection = ops.sum(y_true * y_pred, axis=axes)
        total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
        # An empty target with an empty prediction is a perfect dice (0/0 when smooth=0);
        # divide_no_nan keeps the gradient of the branch ops.where drops finite.
        denominator = total + self.smooth
        dice = ops.where(
            denominator > 0, ops.divide_no_nan(2.0 * intersection + self.smooth, denominator), 1.0
        )
        return _weighted_channel_sum(1.0 - dice, self.channel_weights)

    def get_config(self):
        config = super().get_config()
        config.update(smooth=self.smooth, channel_weights=self.channel_weights)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FocalLoss(keras.losses.Loss):
    """Binary focal loss ``-alpha_t (1 - p_t)^gamma log(p_t)``, averaged over pixels.

    Args:
        gamma: focusing parameter (0 gives alpha-weighted BCE).
        alpha: weight of positive pixels; negative pixels get ``1 - alpha``.
        channel_weights: one weight per channel (default all 1); channels are summed.

    Example:
        >>> import numpy as np
        >>> y_true = np.array([[[[1.0]]]])
        >>> y_pred = np.array([[[[0.9]]]])
        >>> expected = -0.25 * (1 - 0.9) ** 2 * np.log(0.9)
        >>> bool(np.isclose(float(FocalLoss()(y_true, y_pred)), expected, rtol=1e-5))
        True
    """

    def __init__(self, gamma=2.0, alpha=0.25, channel_weights=None, name="focal_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.channel_weights = _check_channel_weights(channel_weights)

    def call(self, y_true, y_pred):
        """Return the loss of each sample, shape ``(batch,)``."""
        y_true, y_pred = _as_float32(y_true, y_pred)
        axes = _spatial_axes(y_pred)
        probs = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
        p_t = y_true * probs + (1.0 - y_true) * (1.0 - probs)
        alpha_t = y_true * self.alpha + (1.0 - y_true) * (1.0 - self.alpha)
        focal = -alpha_t * ops.power(1.0 - p_t, self.gamma) * ops.log(p_t)
        return _weighted_channel_sum(ops.mean(focal, axis=axes), self.channel_weights)

    def get_config(self):
        config = super().get_config()
        config.update(gamma=self.gamma, alpha=self.alpha, channel_weights=self.channel_weights)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SegmentationLoss(keras.losses.Loss):
    """``bce_weight * WeightedBCE + dice_weight * DiceLoss + focal_weight * FocalLoss``.

    Terms with weight 0 are not computed. Arguments are those of the three losses, plus
    ``soft_channels``: indices of channels with soft targets in [0, 1] (e.g. "distance"),
    which only the BCE term sees (dice and focal get 0 for them).

    Example:
        >>> import numpy as np
        >>> y_true = np.zeros((2, 4, 4, 2), "float32"); y_true[:, 1:3, 1:3, 0] = 1
        >>> y_pred = np.full((2, 4, 4, 2), 0.5, "float32")
        >>> loss = SegmentationLoss(bce_weight=1.0, dice_weight=1.0)
        >>> both = float(loss(y_true, y_pred))
        >>> parts = float(WeightedBCE()(y_true, y_pred)) + float(DiceLoss()(y_true, y_pred))
        >>> bool(np.isclose(both, parts))
        True
    """

    def __init__(self, bce_weight=1.0, dice_weight=0.0, focal_weight=0.0,
                 positive_weight=1.0, negative_weight=3.0, channel_weights=None,
                 focal_gamma=2.0, focal_alpha=0.25, dice_smooth=1.0, soft_channels=None,
                 name="segmentation_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.focal_weight = float(focal_weight)
        self.positive_weight = float(positive_weight)
        self.negative_weight = float(negative_weight)
        self.channel_weights = _check_channel_weights(channel_weights)
        self.focal_gamma = float(focal_gamma)
        self.focal_alpha = float(focal_alpha)
        self.dice_smooth = float(dice_smooth)
        self.soft_channels = sorted({int(c) for c in soft_channels or ()})
        self._terms = []
        if self.bce_weight:
            self._terms.append((self.bce_weight, WeightedBCE(
                self.positive_weight, self.negative_weight, self.channel_weights)))
        if self.dice_weight:
            self._terms.append((self.dice_weight, DiceLoss(self.dice_smooth, self.channel_weights)))
        if self.focal_weight:
            self._terms.append((self.focal_weight, FocalLoss(
                self.focal_gamma, self.focal_alpha, self.channel_weights)))
        if not self._terms:
            raise ConfigError(
                "loss: at least one of bce_weight, dice_weight, focal_weight must be > 0"
            )

    def call(self, y_true, y_pred):
        """Return the loss of each sample, shape ``(batch,)``."""
        total = None
        hard = None
        if self.soft_channels and any(not isinstance(t, WeightedBCE) for _, t in self._terms):
            n_channels = int(y_pred.shape[-1])
            keep = [0.0 if c in self.soft_channels else 1.0 for c in range(n_channels)]
            keep = ops.convert_to_tensor(keep, dtype="float32")
            # Zero target and zero prediction: dice is 1 (loss 0) and focal 0, constant, so
            # soft channels neither add to nor steer these terms.
            hard = (ops.cast(y_true, "float32") * keep, ops.cast(y_pred, "float32") * keep)
        for weight, term in self._terms:
            if hard is not None and not isinstance(term, WeightedBCE):
                value = weight * term.call(*hard)
            else:
                value = weight * term.call(y_true, y_pred)
            total = value if total is None else total + value
        return total

    def get_config(self):
        config = super().get_config()
        config.update(
            bce_weight=self.bce_weight,
            dice_weight=self.dice_weight,
            focal_weight=self.focal_weight,
            positive_weight=self.positive_weight,
            negative_weight=self.negative_weight,
            channel_weights=self.channel_weights,
            focal_gamma=self.focal_gamma,
            focal_alpha=self.focal_alpha,
            dice_smooth=self.dice_smooth,
            soft_channels=self.soft_channels,
        )
        return config


def build_loss(loss_config, n_channels, soft_channels=None):
    """Build the combined loss described by a ``LossConfig`` for ``n_channels`` outputs.

    Args:
        loss_config: object with attributes ``bce_weight, dice_weight, focal_weight,
            positive_weight, negative_weight, channel_weights, focal_gamma, focal_alpha``
            (and optionally ``dice_smooth``), e.g. ``cell_seg.config.LossConfig``.
        n_channels: number of model outputs; ``channel_weights`` must have this length.
        soft_channels: indices of soft-target channels (see :class:`SegmentationLoss`).

    Returns:
        A :class:`SegmentationLoss`.

    Raises:
        ConfigError: a negative weight, no term with a positive weight, or
            ``channel_weights`` of the wrong length; the message names the key.

    Example:
        >>> from types import SimpleNamespace
        >>> cfg = SimpleNamespace(bce_weight=1.0, dice_weight=0.5, focal_weight=0.0,
        ...     positive_weight=1.0, negative_weight=3.0, channel_weights=[1.0, 2.0],
        ...     focal_gamma=2.0, focal_alpha=0.25)
        >>> build_loss(cfg, n_channels=2).get_config()["channel_weights"]
        [1.0, 2.0]
    """
    for key in ("bce_weight", "dice_weight", "focal_weight", "positive_weight", "negative_weight"):
        if float(getattr(loss_config, key)) < 0:
            raise ConfigError(f"loss.{key} must be >= 0, got {getattr(loss_config, key)}")
    if not 0.0 <= float(loss_config.focal_alpha) <= 1.0:
        raise ConfigError(f"loss.focal_alpha must be in [0, 1], got {loss_config.focal_alpha}")
    channel_weights = loss_config.channel_weights
    if channel_weights is not None and len(channel_weights) != n_channels:
        raise ConfigError(
            f"loss.channel_weights has {len(channel_weights)} values but the model has "
            f"{n_channels} output channels"
        )
    return SegmentationLoss(
        bce_weight=loss_config.bce_weight,
        dice_weight=loss_config.dice_weight,
        focal_weight=loss_config.focal_weight,
        positive_weight=loss_config.positive_weight,
        negative_weight=loss_config.negative_weight,
        channel_weights=channel_weights,
        focal_gamma=loss_config.focal_gamma,
        focal_alpha=loss_config.focal_alpha,
        dice_smooth=getattr(loss_config, "dice_smooth", 1.0),
        soft_channels=soft_channels,
    )


#: The custom objects of this module, keyed by their registered names.
CUSTOM_OBJECTS = {
    keras.saving.get_registered_name(cls): cls
    for cls in (WeightedBCE, DiceLoss, FocalLoss, SegmentationLoss)
}
