"""Tests of cell_seg.train_metrics: per-channel IoU and dice by hand, configs, registered names, JAX."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import keras

from cell_seg.train_metrics import CUSTOM_OBJECTS, ChannelDice, ChannelIoU, build_metrics

REPO_ROOT = Path(__file__).resolve().parents[1]


def as_float(value):
    return float(np.asarray(value))


def test_channel_iou_and_dice_accumulate_over_batches():
    iou, dice = ChannelIoU(1), ChannelDice(1)
    truth = np.zeros((1, 2, 2, 2), np.float32)
    truth[0, 0, :, 1] = 1  # two positives in channel 1
    pred = np.zeros((1, 2, 2, 2), np.float32)
    pred[0, 0, 0, 1] = 0.9   # hit
    pred[0, 1, 1, 1] = 0.7   # false positive
    pred[0, 0, 1, 1] = 0.5   # not above the threshold
    pred[..., 0] = 1.0       # channel 0 ignored
    for metric in (iou, dice):
        metric.update_state(truth, pred)
    assert as_float(iou.result()) == pytest.approx(1 / 3)        # I=1, U=3
    assert as_float(dice.result()) == pytest.approx(2 / 4)       # 2I / (2 + 2)
    perfect = truth.copy()
    for metric in (iou, dice):
        metric.update_state(truth, perfect)                       # I=2, |Y|=2, |P|=2
    assert as_float(iou.result()) == pytest.approx(3 / 5)        # I=3, U=5
    assert as_float(dice.result()) == pytest.approx(6 / 8)
    iou.reset_state()
    assert as_float(iou.result()) == 1.0                          # nothing seen: empty vs empty


def test_metric_threshold_and_sample_weight():
    truth = np.ones((2, 1, 2, 1), np.float32)
    pred = np.array([[[[0.6], [0.2]]], [[[0.6], [0.6]]]], np.float32)
    assert as_float(ChannelIoU(0, threshold=0.5)(truth, pred)) == pytest.approx(3 / 4)
    assert as_float(ChannelIoU(0, threshold=0.1)(truth, pred)) == pytest.approx(1.0)
    weighted = ChannelIoU(0)
    weighted.update_state(truth, pred, sample_weight=np.array([1.0, 0.0]))
    assert as_float(weighted.result()) == pytest.approx(1 / 2)


def test_build_metrics_names_and_config():
    metrics = build_metrics(["foreground", "border"], threshold=0.4)
    assert [m.name for m in metrics] == ["iou_foreground", "dice_foreground", "iou_border", "dice_border"]
    assert [m.channel for m in metrics] == [0, 0, 1, 1]
    config = metrics[2].get_config()
    assert config["channel"] == 1 and config["threshold"] == 0.4
    clone = ChannelIoU.from_config(config)
    assert (clone.name, clone.channel, clone.threshold) == ("iou_border", 1, 0.4)


def test_metrics_accept_float16_predictions():
    truth = np.ones((2, 1, 2, 1), np.float32)
    pred = np.array([[[[0.6], [0.2]]], [[[0.6], [0.6]]]], np.float32)
    for metric in (ChannelIoU, ChannelDice):
        assert as_float(metric(0)(truth, pred.astype(np.float16))) == pytest.approx(as_float(metric(0)(truth, pred)))


def test_registered_names_are_those_of_earlier_checkpoints():
    # .keras files written when the metrics lived in cell_seg.losses name them "cell_seg>ChannelIoU"
    # (and record module "cell_seg.losses"): the registered name is what finds the class.
    assert sorted(CUSTOM_OBJECTS) == ["cell_seg>ChannelDice", "cell_seg>ChannelIoU"]
    config = keras.saving.serialize_keras_object(ChannelIoU(1, 0.4, name="iou_border"))
    assert config["registered_name"] == "cell_seg>ChannelIoU"
    config["module"] = "cell_seg.losses"
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is ChannelIoU and (clone.name, clone.channel, clone.threshold) == ("iou_border", 1, 0.4)


def test_reset_state_on_jax():
    """reset_state assigns ops.zeros(shape): ops.zeros_like(variable) fails on JAX, where a variable is no array."""
    pytest.importorskip("jax")
    script = textwrap.dedent("""
        import numpy as np
        import keras
        assert keras.backend.backend() == "jax", keras.backend.backend()
        from cell_seg.train_metrics import ChannelIoU
        metric = ChannelIoU(0)
        metric.update_state(np.ones((1, 2, 2, 1), "float32"), np.zeros((1, 2, 2, 1), "float32"))
        before = float(metric.result())
        metric.reset_state()
        print(before, float(metric.result()))
    """)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["0.0", "1.0"]  # nothing seen after the reset: empty vs empty
