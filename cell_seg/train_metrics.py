"""Training metrics for multi-channel sigmoid segmentation: per-channel IoU and dice over an epoch.

Keras metrics that ``model.compile`` reports while training (``iou_foreground``,
``dice_border``, ...); the competition scores of instances live in :mod:`cell_seg.metrics`.
Each class has ``get_config`` and is registered under the package ``cell_seg``
(``cell_seg>ChannelIoU``, ``cell_seg>ChannelDice``: the names they had in ``cell_seg.losses``,
so ``.keras`` checkpoints written before they moved here still load) in any process that
has imported this module (:func:`cell_seg.models.load_model` does that for you).

This module imports Keras (and so TensorFlow) when imported: only the training,
prediction and export code should import it.
"""

import keras
from keras import ops

_PACKAGE = "cell_seg"


class _ChannelOverlap(keras.metrics.Metric):
    """Accumulates |Y & P|, |Y| and |P| of one thresholded channel over an epoch."""

    def __init__(self, channel=0, threshold=0.5, name=None, dtype=None):
        super().__init__(name=name or f"{self._prefix}_{channel}", dtype=dtype)
        self.channel = int(channel)
        self.threshold = float(threshold)
        # aggregation="sum": replicas of a tf.distribute strategy add their counts.
        self.intersection = self.add_variable(
            shape=(), initializer="zeros", name="intersection", aggregation="sum")
        self.true_sum = self.add_variable(
            shape=(), initializer="zeros", name="true_sum", aggregation="sum")
        self.pred_sum = self.add_variable(
            shape=(), initializer="zeros", name="pred_sum", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add the pixel counts of a batch (``sample_weight``: one weight per sample or pixel)."""
        # float32 first: predictions are float16 under mixed precision.
        y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        truth = ops.cast(y_true[..., self.channel] > 0.5, "float32")
        pred = ops.cast(y_pred[..., self.channel] > self.threshold, "float32")
        weight = 1.0
        if sample_weight is not None:
            weight = ops.cast(sample_weight, "float32")
            while len(weight.shape) < len(truth.shape):
                weight = ops.expand_dims(weight, -1)
        self.intersection.assign_add(ops.sum(truth * pred * weight))
        self.true_sum.assign_add(ops.sum(truth * weight))
        self.pred_sum.assign_add(ops.sum(pred * weight))

    def reset_state(self):
        # ops.zeros(shape), not ops.zeros_like(variable): a KerasVariable is no array on JAX.
        for variable in self.variables:
            variable.assign(ops.zeros(variable.shape, dtype=variable.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(channel=self.channel, threshold=self.threshold)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelIoU(_ChannelOverlap):
    """Intersection over union of one channel thresholded at ``threshold``, over the epoch.

    Pixels are positive when ``y_pred > threshold`` and ``y_true > 0.5``. With no positive
    pixel in either truth or prediction over the whole epoch the IoU is 1.

    Args:
        channel: index of the output channel.
        threshold: probability threshold.
        name: metric name shown in logs (default ``iou_<channel>``).

    Example:
        >>> import numpy as np
        >>> metric = ChannelIoU(0)
        >>> metric.update_state(np.array([[[[1.0], [1.0]]]]), np.array([[[[0.9], [0.1]]]]))
        >>> float(metric.result())
        0.5
    """

    _prefix = "iou"

    def result(self):
        union = self.true_sum + self.pred_sum - self.intersection
        return ops.where(union > 0, ops.divide_no_nan(self.intersection, union), 1.0)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelDice(_ChannelOverlap):
    """Dice coefficient ``2 |Y & P| / (|Y| + |P|)`` of one thresholded channel, over the epoch.

    Same arguments and conventions as :class:`ChannelIoU` (1 when both are empty).

    Example:
        >>> import numpy as np
        >>> metric = ChannelDice(0)
        >>> metric.update_state(np.array([[[[1.0], [1.0]]]]), np.array([[[[0.9], [0.1]]]]))
        >>> round(float(metric.result()), 4)
        0.6667
    """

    _prefix = "dice"

    def result(self):
        total = self.true_sum + self.pred_sum
        return ops.where(total > 0, ops.divide_no_nan(2.0 * self.intersection, total), 1.0)


def build_metrics(channel_names, threshold=0.5):
    """IoU and dice metrics for every output channel, named after the channel.

    Args:
        channel_names: one name per output channel, e.g. ``["foreground", "border"]``.
        threshold: probability threshold of every metric.

    Returns:
        ``[ChannelIoU(0, name="iou_<name0>"), ChannelDice(0, name="dice_<name0>"), ...]``.

    Example:
        >>> [m.name for m in build_metrics(["foreground", "border"])]
        ['iou_foreground', 'dice_foreground', 'iou_border', 'dice_border']
    """
    metrics = []
    for channel, channel_name in enumerate(channel_names):
        metrics.append(ChannelIoU(channel, threshold, name=f"iou_{channel_name}"))
        metrics.append(ChannelDice(channel, threshold, name=f"dice_{channel_name}"))
    return metrics


#: The custom objects of this module, keyed by their registered names.
CUSTOM_OBJECTS = {keras.saving.get_registered_name(cls): cls for cls in (ChannelIoU, ChannelDice)}
