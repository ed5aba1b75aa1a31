"""Tests of cell_seg.models and cell_seg.sm_compat: build, train a step, save, reload, encoder weights."""

import dataclasses
import sys

import numpy as np
import pytest

import keras
import tensorflow as tf

from cell_seg.config import ModelConfig
from cell_seg.errors import ModelError
from cell_seg.losses import SegmentationLoss
from cell_seg.train_metrics import build_metrics
from cell_seg.models import (
    BilinearKernel,
    ResizeByFactor,
    build_encoder,
    build_model,
    check_input_size,
    load_model,
    model_stride,
    padded_size,
)
from cell_seg.sm_compat import import_segmentation_models


def make_config(**overrides):
    return dataclasses.replace(ModelConfig(), **overrides)


def tiny_batch(height=64, width=64, batch=2, channels=3, outputs=2, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((batch, height, width, channels), dtype=np.float32)
    targets = np.zeros((batch, height, width, outputs), np.float32)
    targets[:, height // 4: height // 2, width // 4: width // 2, 0] = 1.0
    targets[:, height // 4, width // 4: width // 2, -1] = 1.0
    return images, targets


MODEL_CASES = {
    "unet-efficientnetb0": dict(name="unet", backbone="efficientnetb0"),
    "fpn-efficientnetb0": dict(name="fpn", backbone="efficientnetb0", dropout=0.1),
    "linknet-mobilenetv2": dict(name="linknet", backbone="mobilenetv2", dropout=0.1),
    "fcn": dict(name="fcn", filters=8, depth=3),
    "unet_plain": dict(name="unet_plain", filters=8, depth=3, dropout=0.1),
}


@pytest.fixture
def float32_policy():
    """Restore the float32 policy after a test that changes it."""
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_build_train_save_reload_on_other_size(case, tmp_path):
    config = make_config(**MODEL_CASES[case])
    model = build_model(config, n_outputs=2)
    assert model.input_shape == (None, None, None, 3)
    assert model.output_shape == (None, None, None, 2)

    model.compile(keras.optimizers.Adam(1e-3), SegmentationLoss(dice_weight=1.0),
                  metrics=build_metrics(["foreground", "border"]), run_eagerly=True)
    images, targets = tiny_batch()
    before = [np.array(w) for w in model.trainable_weights]
    logs = model.train_on_batch(images, targets, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert set(logs) >= {"iou_foreground", "dice_border"}
    assert any(not np.array_equal(b, np.array(w)) for b, w in zip(before, model.trainable_weights))

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = load_model(path)
    other, _ = tiny_batch(height=96, width=32, batch=1, seed=1)  # not the training size
    expected = np.asarray(model(other, training=False))
    assert expected.shape == (1, 96, 32, 2)
    assert expected.dtype == np.float32
    assert np.all((expected >= 0) & (expected <= 1))
    np.testing.assert_allclose(np.asarray(loaded(other, training=False)), expected, atol=1e-6)

    # Traceable with unknown height and width (what export needs; FPN's bilinear
    # UpSampling2D fails here, hence ResizeByFactor).
    serve = tf.function(lambda x: loaded(x, training=False),
                        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    np.testing.assert_allclose(serve(other).numpy(), expected, atol=1e-6)


def test_fpn_has_no_bilinear_upsampling():
    model = build_model(make_config(name="fpn", backbone="mobilenetv2"), n_outputs=1)
    assert not [l for l in model.layers
                if isinstance(l, keras.layers.UpSampling2D) and l.interpolation != "nearest"]
    assert isinstance(model.get_layer("final_upsampling"), ResizeByFactor)


def test_graph_mode_fit_of_plain_unet(tmp_path):
    model = build_model(make_config(name="unet_plain", filters=4, depth=2), n_outputs=2)
    model.compile(keras.optimizers.Adam(1e-3), SegmentationLoss(), jit_compile=False,
                  metrics=build_metrics(["foreground", "border"]))
    images, targets = tiny_batch(height=32, width=32)
    history = model.fit(images, targets, epochs=2, batch_size=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_mixed_precision_outputs_float32(float32_policy):
    keras.mixed_precision.set_global_policy("mixed_float16")
    images, targets = tiny_batch(height=32, width=32)
    for config in (make_config(name="fpn", backbone="mobilenetv2"),
                   make_config(name="unet_plain", filters=4, depth=2)):
        model = build_model(config, n_outputs=2)
        assert model.get_layer("logits").compute_dtype == "float16"
        probabilities = model(images, training=False)
        assert probabilities.dtype == "float32"
        loss = SegmentationLoss(dice_weight=1.0, focal_weight=1.0)(targets, probabilities)
        assert np.isfinite(float(loss))


def test_model_stride_and_sizes():
    assert model_stride(make_config(name="unet")) == 32
    assert model_stride(make_config(name="fpn")) == 32
    assert model_stride(make_config(name="fcn", depth=3)) == 8
    assert model_stride(make_config(name="unet_plain", depth=5)) == 32
    assert padded_size(520, 32) == 544 and padded_size(512, 32) == 512
    check_input_size(make_config(name="unet"), 544, 704)
    with pytest.raises(ModelError, match="multiples of 32.*544x704"):
        check_input_size(make_config(name="unet"), 520, 704)


def test_fcn_and_unet_plain_follow_depth():
    for name in ("fcn", "unet_plain"):
        model = build_model(make_config(name=name, filters=4, depth=2), n_outputs=3)
        pools = [l for l in model.layers if isinstance(l, keras.layers.MaxPooling2D)]
        assert len(pools) == 2
        out = model(np.zeros((1, 12, 20, 3), np.float32))
        assert out.shape == (1, 12, 20, 3)
    assert not [l for l in build_model(make_config(name="fcn", depth=2), 1).layers
                if isinstance(l, keras.layers.Dense)]


def test_bilinear_kernel_upsamples_constant_to_constant():
    layer = keras.layers.Conv2DTranspose(2, 4, strides=2, padding="same", use_bias=False,
                                         kernel_initializer=BilinearKernel())
    out = np.asarray(layer(np.full((1, 6, 6, 2), 3.0, np.float32)))
    np.testing.assert_allclose(out[:, 1:-1, 1:-1], 3.0, rtol=1e-6)  # borders see zero padding


def test_resize_by_factor_config_round_trip():
    layer = ResizeByFactor(4, "nearest", name="up")
    clone = ResizeByFactor.from_config(layer.get_config())
    assert (clone.factor, clone.interpolation, clone.name) == (4, "nearest", "up")
    out = clone(np.arange(4, dtype=np.float32).reshape(1, 2, 2, 1))
    assert out.shape == (1, 8, 8, 1)


def test_decoder_filters_and_freeze():
    model = build_model(make_config(decoder_filters=[64, 32, 16, 8, 4], encoder_freeze=True),
                        n_outputs=1)
    assert model.get_layer("decoder_stage4a_conv").filters == 4
    assert not model.get_layer("stem_conv").trainable
    assert model.get_layer("stem_bn").trainable  # segmentation_models keeps BN trainable
    assert model(np.zeros((1, 64, 32, 3), np.float32)).shape == (1, 64, 32, 1)
    with pytest.raises(ModelError, match="5 values"):
        build_model(make_config(decoder_filters=[64, 32]), n_outputs=1)
    with pytest.raises(ModelError, match="not fpn"):
        build_model(make_config(name="fpn", decoder_filters=[64, 32, 16, 8, 4]), n_outputs=1)


def test_unknown_name_and_backbone():
    with pytest.raises(ModelError, match="unknown model.name 'deeplab'.*unet_plain"):
        build_model(make_config(name="deeplab"), n_outputs=1)
    with pytest.raises(ModelError, match="unknown model.backbone 'effnet'.*efficientnetb0"):
        build_model(make_config(backbone="effnet"), n_outputs=1)
    with pytest.raises(ModelError, match="model.dropout"):
        build_model(make_config(name="fcn", dropout=1.5), n_outputs=1)


def _weights_by_path(model):
    return {w.path: np.array(w) for w in model.weights}


@pytest.mark.parametrize("legacy_h5", [False, True])
def test_encoder_weights_from_local_file(tmp_path, legacy_h5):
    encoder = build_encoder("efficientnetb0")
    if legacy_h5:  # the Keras 2 layout of the published *_notop.h5 files
        import h5py
        from keras.src.legacy.saving import legacy_h5_format as legacy

        path = tmp_path / "encoder_notop.h5"
        with h5py.File(path, "w") as handle:
            legacy.save_weights_to_hdf5_group(handle, encoder)
    else:
        path = tmp_path / "encoder.weights.h5"
        encoder.save_weights(path)
    saved = _weights_by_path(encoder)

    model = build_model(make_config(encoder_weights=str(path)), n_outputs=1)
    loaded = _weights_by_path(model)
    assert len(saved) > 300
    for name, value in saved.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)

    fresh = _weights_by_path(build_model(make_config(), n_outputs=1))
    assert not np.array_equal(fresh["stem_conv/kernel"], saved["stem_conv/kernel"])


def test_encoder_weights_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        build_model(make_config(encoder_weights=str(tmp_path / "missing.h5")), n_outputs=1)
    wrong = tmp_path / "encoder.weights.h5"
    build_encoder("mobilenetv2").save_weights(wrong)
    with pytest.raises(ModelError, match="does not fit encoder efficientnetb0"):
        build_model(make_config(encoder_weights=str(wrong)), n_outputs=1)
    text = tmp_path / "weights.txt"
    text.write_text("x")
    with pytest.raises(ModelError, match="not a Keras weights file"):
        build_model(make_config(encoder_weights=str(text)), n_outputs=1)


def test_imagenet_weights_offline_is_one_sentence(monkeypatch):
    calls = []
    url = "https://github.com/Callidior/keras-applications/releases/download/efficientnet/b0_notop.h5"

    def offline_get_file(fname, origin=None, *args, **kwargs):
        calls.append(origin)
        # What keras.utils.get_file raises on a machine without network access.
        raise Exception(f"URL fetch failure on {url}: None -- [Errno -2] Name or service not known")

    import_segmentation_models()
    monkeypatch.setattr(keras.utils, "get_file", offline_get_file)
    with pytest.raises(ModelError) as info:
        build_model(make_config(encoder_weights="imagenet"), n_outputs=1)
    assert calls, "segmentation_models did not try to download"
    message = str(info.value)
    assert "\n" not in message and message.count(". ") == 0
    assert "could not be downloaded" in message and url in message
    assert "model.encoder_weights" in message and "local file" in message


def test_imagenet_needs_three_channels():
    with pytest.raises(ModelError, match="in_channels=3"):
        build_model(make_config(encoder_weights="imagenet", in_channels=1), n_outputs=1)


def test_other_in_channels():
    for config in (make_config(name="unet", backbone="mobilenetv2", in_channels=1),
                   make_config(name="unet_plain", filters=4, depth=2, in_channels=1)):
        model = build_model(config, n_outputs=2)
        assert model(np.zeros((1, 32, 32, 1), np.float32)).shape == (1, 32, 32, 2)


def test_load_model_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "missing.keras")
    with pytest.raises(ModelError, match="is a directory"):
        load_model(tmp_path)
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="not a .keras model"):
        load_model(bad)
    other = tmp_path / "weights.h5"
    other.write_bytes(b"")
    with pytest.raises(ModelError, match=r"reads \.keras files"):
        load_model(other)


def test_sm_import_shim(monkeypatch):
    sm = import_segmentation_models()
    assert sm.framework() == "tf.keras"
    monkeypatch.setitem(sys.modules, "segmentation_models", None)  # makes the import fail
    with pytest.raises(ModelError, match="pip install segmentation-models==1.0.1"):
        import_segmentation_models()
