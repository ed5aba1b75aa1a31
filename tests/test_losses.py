"""Tests of cell_seg.losses: values computed by hand, edge cases, save/load with the training metrics, distribution."""

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import keras
import tensorflow as tf

from cell_seg.config import LossConfig
from cell_seg.errors import ConfigError
from cell_seg.losses import (
    DiceLoss,
    FocalLoss,
    SegmentationLoss,
    WeightedBCE,
    build_loss,
)
from cell_seg.train_metrics import build_metrics


REPO_ROOT = Path(__file__).resolve().parents[1]

# One 2 x 2 map: one positive pixel. Shapes are (batch, height, width, channels).
Y_TRUE = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)[None, :, :, None]
Y_PRED = np.array([[0.8, 0.2], [0.4, 0.1]], np.float32)[None, :, :, None]


def bce(y, p):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def as_float(value):
    return float(np.asarray(value))


# --------------------------------------------------------------------------- weighted BCE

def test_weighted_bce_by_hand():
    expected = bce(1, 0.8) + 3 * np.mean([bce(0, 0.2), bce(0, 0.4), bce(0, 0.1)])
    assert as_float(WeightedBCE()(Y_TRUE, Y_PRED)) == pytest.approx(expected, rel=1e-5)
    expected = 2 * bce(1, 0.8) + 0.5 * np.mean([bce(0, 0.2), bce(0, 0.4), bce(0, 0.1)])
    loss = WeightedBCE(positive_weight=2.0, negative_weight=0.5)
    assert as_float(loss(Y_TRUE, Y_PRED)) == pytest.approx(expected, rel=1e-5)


def test_weighted_bce_channels_and_samples():
    # channel 1 is the complement of channel 0; second sample is channel-swapped.
    y_true = np.concatenate([Y_TRUE, 1 - Y_TRUE], axis=-1)
    y_pred = np.concatenate([Y_PRED, Y_PRED], axis=-1)
    y_true = np.concatenate([y_true, y_true[..., ::-1]], axis=0)
    y_pred = np.concatenate([y_pred, y_pred], axis=0)
    loss = WeightedBCE(channel_weights=[1.0, 2.0])
    per_sample = np.asarray(loss.call(y_true, y_pred))
    assert per_sample.shape == (2,)
    one = WeightedBCE()
    c0 = as_float(one(y_true[:1, ..., :1], y_pred[:1, ..., :1]))
    c1 = as_float(one(y_true[:1, ..., 1:], y_pred[:1, ..., 1:]))
    assert per_sample[0] == pytest.approx(c0 + 2 * c1, rel=1e-5)
    # Keras reduces the per-sample values with their mean.
    assert as_float(loss(y_true, y_pred)) == pytest.approx(per_sample.mean(), rel=1e-6)
    # A zero channel weight removes the channel.
    only_first = WeightedBCE(channel_weights=[1.0, 0.0])
    assert as_float(only_first.call(y_true, y_pred)[0]) == pytest.approx(c0, rel=1e-5)


def test_weighted_bce_no_positive_pixel_is_finite():
    y_true = np.zeros((2, 4, 4, 1), np.float32)
    y_pred = tf.Variable(np.full((2, 4, 4, 1), 0.3, np.float32))
    with tf.GradientTape() as tape:
        value = WeightedBCE()(y_true, y_pred)
    gradient = tape.gradient(value, y_pred).numpy()
    assert as_float(value) == pytest.approx(3 * bce(0, 0.3), rel=1e-5)  # positive term is 0
    assert np.all(np.isfinite(gradient))
    # All positive: the negative term is 0.
    assert as_float(WeightedBCE()(np.ones((1, 2, 2, 1)), np.full((1, 2, 2, 1), 0.6))) == \
        pytest.approx(bce(1, 0.6), rel=1e-5)


def test_weighted_bce_saturated_predictions_are_finite():
    y_true = np.array([[[[1.0], [0.0]]]], np.float32)
    y_pred = np.array([[[[0.0], [1.0]]]], np.float32)  # confidently wrong
    assert np.isfinite(as_float(WeightedBCE()(y_true, y_pred)))


# --------------------------------------------------------------------------- dice and focal

def test_dice_by_hand():
    y_true = np.array([[1, 1], [0, 0]], np.float32)[None, :, :, None]
    y_pred = np.array([[1.0, 0.5], [0.5, 0.0]], np.float32)[None, :, :, None]
    # intersection 1.5, |Y| 2, |P| 2
    assert as_float(DiceLoss(smooth=0.0)(y_true, y_pred)) == pytest.approx(1 - 3 / 4)
    assert as_float(DiceLoss(smooth=1.0)(y_true, y_pred)) == pytest.approx(1 - 4 / 5)


def test_dice_empty_target_and_prediction_is_zero_loss():
    empty = np.zeros((1, 3, 3, 1), np.float32)
    for smooth in (0.0, 1.0):
        assert as_float(DiceLoss(smooth=smooth)(empty, empty)) == pytest.approx(0.0)
    y_pred = tf.Variable(empty)
    with tf.GradientTape() as tape:
        value = DiceLoss(smooth=0.0)(empty, y_pred)
    assert np.all(np.isfinite(tape.gradient(value, y_pred).numpy()))


def test_focal_by_hand():
    alpha, gamma = 0.25, 2.0
    expected = np.mean([
        -alpha * (1 - 0.8) ** gamma * np.log(0.8),
        -(1 - alpha) * 0.2 ** gamma * np.log(0.8),
        -(1 - alpha) * 0.4 ** gamma * np.log(0.6),
        -(1 - alpha) * 0.1 ** gamma * np.log(0.9),
    ])
    assert as_float(FocalLoss()(Y_TRUE, Y_PRED)) == pytest.approx(expected, rel=1e-5)
    # gamma 0, alpha 0.5: half the plain mean BCE
    plain = np.mean(bce(Y_TRUE, Y_PRED))
    assert as_float(FocalLoss(gamma=0.0, alpha=0.5)(Y_TRUE, Y_PRED)) == pytest.approx(plain / 2, rel=1e-5)


def test_combined_loss_is_weighted_sum():
    loss = SegmentationLoss(bce_weight=0.5, dice_weight=2.0, focal_weight=3.0, negative_weight=1.0)
    expected = (0.5 * as_float(WeightedBCE(negative_weight=1.0)(Y_TRUE, Y_PRED))
                + 2.0 * as_float(DiceLoss()(Y_TRUE, Y_PRED))
                + 3.0 * as_float(FocalLoss()(Y_TRUE, Y_PRED)))
    assert as_float(loss(Y_TRUE, Y_PRED)) == pytest.approx(expected, rel=1e-5)
    dice_only = SegmentationLoss(bce_weight=0.0, dice_weight=1.0)
    assert as_float(dice_only(Y_TRUE, Y_PRED)) == pytest.approx(as_float(DiceLoss()(Y_TRUE, Y_PRED)))


def test_losses_accept_float16_predictions():
    for loss in (WeightedBCE(), DiceLoss(), FocalLoss(), SegmentationLoss(dice_weight=1, focal_weight=1)):
        value = loss(Y_TRUE, Y_PRED.astype(np.float16))
        assert value.dtype == "float32"
        assert as_float(value) == pytest.approx(as_float(loss(Y_TRUE, Y_PRED)), rel=1e-3)


def test_weighted_bce_is_lowest_at_a_soft_target():
    # A "distance"-like soft target: the gradient of the class-weighted BCE is 0 where p = t.
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 1, (2, 6, 6, 1)).astype("float32")
    target[:, :2] = 0.0  # some background
    pred = tf.Variable(target)
    with tf.GradientTape() as tape:
        value = WeightedBCE(positive_weight=1.0, negative_weight=3.0)(target, pred)
    assert np.abs(tape.gradient(value, pred).numpy()).max() < 1e-5
    with tf.GradientTape() as tape:
        value = WeightedBCE()(target, pred * 0.9)  # any other prediction has a non-zero gradient
    assert np.abs(tape.gradient(value, pred).numpy()).max() > 1e-3


def test_soft_channels_are_left_out_of_dice_and_focal():
    rng = np.random.default_rng(1)
    y_true = np.concatenate([Y_TRUE, rng.uniform(0, 1, Y_TRUE.shape[:3] + (1,))], axis=-1).astype("float32")
    y_pred = np.concatenate([Y_PRED, rng.uniform(0.1, 0.9, Y_PRED.shape[:3] + (1,))], axis=-1).astype("float32")
    loss = SegmentationLoss(bce_weight=1.0, dice_weight=2.0, focal_weight=3.0, soft_channels=[1])
    expected = (as_float(WeightedBCE()(y_true, y_pred))  # BCE sees all three channels
                + 2.0 * as_float(DiceLoss()(Y_TRUE, Y_PRED))
                + 3.0 * as_float(FocalLoss()(Y_TRUE, Y_PRED)))
    assert as_float(loss(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)
    built = build_loss(LossConfig(dice_weight=1.0), n_channels=3, soft_channels=[2])
    assert built.get_config()["soft_channels"] == [2]
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(built))
    assert clone.get_config() == built.get_config()


# --------------------------------------------------------------------------- build_loss

def test_build_loss_from_config():
    loss = build_loss(LossConfig(), n_channels=2)
    assert isinstance(loss, SegmentationLoss)
    assert as_float(loss(Y_TRUE, Y_PRED)) == pytest.approx(as_float(WeightedBCE()(Y_TRUE, Y_PRED)))
    config = dataclasses.replace(LossConfig(), dice_weight=0.5, channel_weights=[1.0, 0.5],
                                 focal_gamma=1.0)
    built = build_loss(config, n_channels=2).get_config()
    assert built["dice_weight"] == 0.5 and built["channel_weights"] == [1.0, 0.5]
    assert built["focal_gamma"] == 1.0


@pytest.mark.parametrize("overrides, key", [
    (dict(channel_weights=[1.0]), "loss.channel_weights"),
    (dict(channel_weights=[1.0, -1.0]), "loss.channel_weights"),
    (dict(dice_weight=-1.0), "loss.dice_weight"),
    (dict(focal_alpha=2.0), "loss.focal_alpha"),
    (dict(bce_weight=0.0), "at least one"),
])
def test_build_loss_rejects_bad_config(overrides, key):
    with pytest.raises(ConfigError, match=key):
        build_loss(dataclasses.replace(LossConfig(), **overrides), n_channels=2)


def test_loss_config_round_trip():
    for loss in (WeightedBCE(2.0, 1.0, [1.0, 3.0]), DiceLoss(0.5), FocalLoss(1.5, 0.4),
                 SegmentationLoss(dice_weight=1.0, channel_weights=[1.0, 2.0])):
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
        assert type(clone) is type(loss) and clone.get_config() == loss.get_config()


# --------------------------------------------------------------------------- with a model

def tiny_model():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(2, 1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def tiny_data(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((4, 16, 16, 3), dtype=np.float32)
    targets = np.zeros((4, 16, 16, 2), np.float32)
    targets[:, 4:10, 4:10, 0] = 1
    targets[:, 4, 4:10, 1] = 1
    targets[3] = 0  # one sample with no positive pixel
    return images, targets


def compile_tiny(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=SegmentationLoss(dice_weight=1.0, focal_weight=1.0, channel_weights=[1.0, 2.0]),
        metrics=build_metrics(["foreground", "border"]),
        jit_compile=False,
    )


def test_saved_checkpoint_reloads_with_loss_and_metrics(tmp_path):
    from cell_seg.models import load_model

    images, targets = tiny_data()
    model = tiny_model()
    compile_tiny(model)
    model.fit(images, targets, batch_size=2, epochs=1, verbose=0)  # graph mode
    path = tmp_path / "tiny.keras"
    model.save(path)
    expected = model.evaluate(images, targets, batch_size=2, verbose=0, return_dict=True)
    assert np.isfinite(expected["loss"])

    # In a process that has imported cell_seg.losses and cell_seg.train_metrics, plain Keras needs no custom objects.
    for loaded in (keras.saving.load_model(path), load_model(path)):
        assert loaded.loss.get_config() == model.loss.get_config()
        other = np.random.default_rng(1).random((1, 24, 8, 3), dtype=np.float32)
        np.testing.assert_allclose(np.asarray(loaded(other)), np.asarray(model(other)), atol=1e-6)
        got = loaded.evaluate(images, targets, batch_size=2, verbose=0, return_dict=True)
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key] == pytest.approx(expected[key], rel=1e-5), key


def test_fresh_process_needs_cell_seg_imported(tmp_path):
    """Documents the rule: import cell_seg.losses and cell_seg.train_metrics (or use cell_seg.models.load_model) first."""
    model = tiny_model()
    compile_tiny(model)
    path = tmp_path / "tiny.keras"
    model.save(path)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        import keras
        try:
            keras.saving.load_model({str(path)!r})
            print("plain: loaded")
        except TypeError as exc:  # "Could not locate class 'SegmentationLoss'"
            print("plain: failed", "SegmentationLoss" in str(exc))
        from cell_seg.models import load_model
        model = load_model({str(path)!r})
        print("cell_seg:", type(model.loss).__name__)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "plain: failed True" in result.stdout
    assert "cell_seg: SegmentationLoss" in result.stdout


def test_fit_under_mirrored_strategy():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    images, targets = tiny_data()
    with strategy.scope():
        model = tiny_model()
        compile_tiny(model)
    history = model.fit(images, targets, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert 0.0 <= history.history["iou_foreground"][0] <= 1.0
