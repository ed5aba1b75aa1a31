"""SavedModel export: in-graph preprocessing equals cell_seg.preprocess + the Keras model, signatures,
metadata, tiled and TTA prediction, errors and the export CLI.

One tiny U-Net is trained for the module (a few seconds); other normalisations reuse its weights
(or a fresh 1-channel model) with an edited metadata.json.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cell_seg.config import load_config
from cell_seg.data.synthetic import write_synthetic_coco
from cell_seg.errors import ConfigError, DataError, ModelError
from cell_seg.preprocess import normalize_image, pad_to_multiple

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.name=unet_plain", "model.filters=4", "model.depth=2",
    "data.crop_size=64", "data.batch_size=2", "data.steps_per_epoch=2", "data.augment=none",
    "train.epochs=1", "train.verbose=0", "eval.tune=false", "data.val_fraction=0.4",
]
TUNED = {"mode": "watershed", "fg_threshold": 0.4, "border_threshold": 0.6, "min_area": 5}
ATOL = 1e-5  # the required agreement between the SavedModel and Keras on the same image


def cli(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained run (scale normalisation, 3 input channels) with a tuned postprocess.json."""
    from cell_seg.train import run

    root = tmp_path_factory.mktemp("synthetic")
    coco = write_synthetic_coco(root, n_images=5, shape=(96, 112), seed=5, cells=(4, 8))
    out = tmp_path_factory.mktemp("runs") / "tiny"
    run(load_config(None, TINY + [f"data.coco={coco}", f"data.images={root / 'images'}", f"out_dir={out}"]),
        evaluate_after=False)
    (out / "postprocess.json").write_text(json.dumps(TUNED))
    return out


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """The run exported with the CLI, as a user would."""
    out = tmp_path_factory.mktemp("exports") / "tiny"
    result = cli("cell_seg.export", "--model", run_dir, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "exported" in result.stderr
    return out


@pytest.fixture(scope="module")
def saved_predictor(exported):
    from cell_seg.inference import Predictor

    return Predictor.load(exported)


@pytest.fixture(scope="module")
def run_predictor(run_dir):
    from cell_seg.inference import Predictor

    return Predictor.load(run_dir)


def make_variant(run_dir, root, normalization, in_channels=3):
    """A run directory with other normalisation settings (and a fresh model for 1 input channel), exported."""
    from cell_seg.export import export_model
    from cell_seg.models import build_model

    variant = root / "run"
    variant.mkdir(parents=True)
    metadata = json.loads((run_dir / "metadata.json").read_text())
    metadata["normalization"] = normalization
    metadata["in_channels"] = in_channels
    (variant / "metadata.json").write_text(json.dumps(metadata))
    if in_channels == 3:
        shutil.copyfile(run_dir / "model.keras", variant / "model.keras")
    else:
        config = load_config(None, TINY + [f"model.in_channels={in_channels}"])
        build_model(config.model, len(metadata["channels"])).save(variant / "model.keras")
    export_model(variant, root / "saved_model", check=False)
    return variant, root / "saved_model"


VARIANTS = {
    "scale": None,  # the trained run itself
    "minmax": ({"mode": "minmax", "mean": None, "std": None}, 3),
    "standard_rgb": ({"mode": "standard", "mean": [0.3, 0.4, 0.5], "std": [0.2, 0.25, 0.3]}, 3),
    "standard_gray_model": ({"mode": "standard", "mean": 0.4, "std": 0.2}, 1),
    "grey_dark": ({"mode": "grey_dark", "mean": None, "std": None}, 3),
}


@pytest.fixture(scope="module")
def variants(run_dir, exported, tmp_path_factory):
    """name -> (run directory, SavedModel Predictor, Keras model)."""
    from cell_seg.inference import Predictor
    from cell_seg.models import load_model

    out = {}
    for name, spec in VARIANTS.items():
        if spec is None:
            variant, saved = run_dir, exported
        else:
            variant, saved = make_variant(run_dir, tmp_path_factory.mktemp(name), *spec)
        out[name] = (variant, Predictor.load(saved), load_model(variant / "model.keras", compile=False))
    return out


def keras_reference(model, metadata, image):
    """What the Keras model says about a raw image after cell_seg.preprocess (the contract)."""
    norm = metadata["normalization"]
    x = normalize_image(image, norm["mode"], norm.get("mean"), norm.get("std"), metadata["in_channels"])
    padded, _ = pad_to_multiple(x, metadata["stride"])
    return np.asarray(model(padded[None], training=False))[0, : image.shape[0], : image.shape[1]]


def random_image(shape, dtype, low=0, high=None, seed=0):
    """Smooth-ish random image: noise plus a gradient, so normalisation and the model have structure to see."""
    rng = np.random.default_rng(seed)
    high = high if high is not None else np.iinfo(dtype).max
    ramp = np.linspace(0.0, 1.0, shape[1])[None, :] * np.linspace(0.5, 1.0, shape[0])[:, None]
    if len(shape) == 3:
        ramp = ramp[..., None]
    values = 0.5 * ramp + 0.5 * rng.random(shape)
    return (low + values * (high - low)).astype(dtype)


# --- the SavedModel equals Keras after the same preprocessing -----------------------------------

CASES = [
    ("scale", (520, 704), np.uint8),
    ("scale", (333, 517), np.uint8),
    ("scale", (333, 517, 3), np.uint8),
    ("scale", (333, 517, 4), np.uint8),
    ("scale", (333, 517, 1), np.uint16),
    ("scale", (97, 131, 3), np.float32),  # float: normalised in numpy, then serve_normalized
    ("minmax", (333, 517), np.uint16),
    ("minmax", (520, 704, 3), np.uint8),
    ("standard_rgb", (333, 517, 3), np.uint8),
    ("standard_rgb", (333, 517), np.uint16),
    ("standard_gray_model", (333, 517, 3), np.uint8),  # RGB to luminance in the graph
    ("standard_gray_model", (520, 704), np.uint16),
]


@pytest.mark.parametrize("variant, shape, dtype", CASES, ids=lambda v: str(getattr(v, "__name__", v)))
def test_saved_model_equals_keras_on_raw_images(variants, variant, shape, dtype):
    run, saved, model = variants[variant]
    metadata = json.loads((run / "metadata.json").read_text())
    if dtype == np.float32:
        image = random_image(shape, np.uint8).astype(np.float32) / 255
    else:
        low, high = (1000, 5000) if dtype == np.uint16 else (0, None)  # a narrow 16-bit range, as in microscopy
        image = random_image(shape, dtype, low, high)
    probs = saved.predict_probs(image)
    expected = keras_reference(model, metadata, image)
    assert probs.shape == shape[:2] + (2,) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, rtol=0, atol=ATOL)
    assert float(expected.std()) > 1e-4  # the model does not answer a constant: the comparison means something


@pytest.mark.parametrize("kind", ["dark_grey", "bright_grey_16bit", "stained_colour", "grey_as_rgb"])
def test_grey_dark_inverts_in_the_graph_as_numpy_does(variants, kind):
    from cell_seg.preprocess import is_dark_on_light

    run, saved, model = variants["grey_dark"]
    metadata = json.loads((run / "metadata.json").read_text())
    # Skewed dark: the median is well below the middle.
    dark = (random_image((97, 131), np.uint8).astype(np.uint16) ** 2 // 255).astype(np.uint8)
    image = {
        "dark_grey": dark,
        "bright_grey_16bit": (65535 - dark.astype(np.uint16) * 200).astype(np.uint16),
        "stained_colour": np.dstack([dark, dark // 2, dark]).astype(np.uint8),
        "grey_as_rgb": np.dstack([dark] * 3),
    }[kind]
    inverted = is_dark_on_light(image, normalize_image(image, "minmax", in_channels=1))
    assert inverted == (kind in ("bright_grey_16bit", "stained_colour"))
    expected = keras_reference(model, metadata, image)
    np.testing.assert_allclose(saved.predict_probs(image), expected, rtol=0, atol=ATOL)
    assert float(expected.std()) > 1e-4


def test_minmax_of_a_constant_image_is_all_zeros_in_the_graph_too(variants):
    run, saved, model = variants["minmax"]
    image = np.full((45, 67), 1234, np.uint16)
    metadata = json.loads((run / "metadata.json").read_text())
    np.testing.assert_allclose(saved.predict_probs(image), keras_reference(model, metadata, image),
                               rtol=0, atol=ATOL)


def test_raw_signatures_need_only_tensorflow(variants):
    """tf.saved_model.load alone: serve_image, serve_batch (per-image minmax) and serve_normalized agree."""
    import tensorflow as tf

    loaded = tf.saved_model.load(variants["minmax"][1].source)
    assert {"serve_image", "serve_image_uint16", "serve_batch", "serve_batch_uint16", "serve_normalized"} <= set(
        loaded.signatures)
    images = np.stack([random_image((61, 90, 3), np.uint16, 0, 3000, seed=1),
                       random_image((61, 90, 3), np.uint16, 20000, 60000, seed=2)])
    batch = loaded.signatures["serve_batch_uint16"](images=tf.constant(images))["probabilities"].numpy()
    assert batch.shape == (2, 61, 90, 2)
    for image, probs in zip(images, batch):
        single = loaded.signatures["serve_image_uint16"](image=tf.constant(image))["probabilities"].numpy()
        np.testing.assert_allclose(probs, single, rtol=0, atol=ATOL)
    run, _, model = variants["minmax"]
    metadata = json.loads((run / "metadata.json").read_text())
    np.testing.assert_allclose(batch[1], keras_reference(model, metadata, images[1]), rtol=0, atol=ATOL)
    uint8 = (images // 256).astype(np.uint8)
    out = loaded.signatures["serve_batch"](images=tf.constant(uint8))["probabilities"].numpy()
    np.testing.assert_allclose(out[0], keras_reference(model, metadata, uint8[0]), rtol=0, atol=ATOL)
    x = normalize_image(uint8[0], "minmax")
    out = loaded.signatures["serve_normalized"](images=tf.constant(x[None]))["probabilities"].numpy()
    np.testing.assert_allclose(out[0], keras_reference(model, metadata, uint8[0]), rtol=0, atol=ATOL)


def test_metadata_holds_what_inference_needs(exported, run_dir):
    from cell_seg import __version__
    from cell_seg.inference import Predictor
    from cell_seg.postprocess import PostprocessConfig

    metadata = json.loads((exported / "assets" / "metadata.json").read_text())
    run_metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["channels"] == ["foreground", "border"]
    assert metadata["class_names"] == run_metadata["class_names"] and metadata["class_names"]
    assert metadata["normalization"] == {"mode": "scale", "mean": None, "std": None}
    assert {k: metadata["postprocess"][k] for k in TUNED} == TUNED and metadata["postprocess_tuned"] is True
    assert metadata["tta"] is False
    assert metadata["config"]["model"]["name"] == "unet_plain"
    assert metadata["version"] == __version__
    assert set(metadata["signatures"]) >= {"serve_image", "serve_image_uint16", "serve_batch"}
    predictor = Predictor.load(exported)
    assert predictor.keras_model is None and predictor.postprocess == PostprocessConfig.from_dict(TUNED)
    assert predictor.postprocess_tuned and predictor.channels == ["foreground", "border"]


def test_instances_from_saved_model_and_run_agree(saved_predictor, run_predictor):
    image = random_image((150, 210), np.uint8, seed=3)
    settings = {"fg_threshold": 0.3, "min_area": 0}
    saved = saved_predictor.predict_instances(image, postprocess=settings)[0]
    keras = run_predictor.predict_instances(image, postprocess=settings)[0]
    assert saved.dtype == np.int32 and saved.shape == image.shape
    assert np.mean(saved == keras) > 0.999


# --- tiles and test-time augmentation -----------------------------------------------------------


def test_tile_spans_cover_the_image_once_with_the_overlap():
    from cell_seg.inference import tile_spans

    for length, tile, overlap in ((544, 128, 64), (704, 256, 64), (352, 128, 32), (96, 128, 64), (160, 128, 64)):
        spans = tile_spans(length, tile, overlap, stride=32)
        covered = np.zeros(length, int)
        for start, stop, keep_start, keep_stop in spans:
            assert start % 32 == 0 and stop - start == min(tile, length) and stop <= length
            assert start <= keep_start < keep_stop <= stop
            covered[keep_start:keep_stop] += 1
        assert (covered == 1).all()
        for (s0, e0, _, k0), (s1, e1, k1, _) in zip(spans, spans[1:]):
            assert e0 - s1 >= overlap  # neighbours overlap enough ...
            assert e0 - k0 >= overlap // 2 and k1 - s1 >= overlap // 2  # ... and each drops half of it
    with pytest.raises(ConfigError, match="stride"):
        tile_spans(544, 64, 48, stride=32)


def test_tiled_prediction_equals_whole_image_prediction(exported, saved_predictor, run_predictor):
    """unet_plain depth 2 sees about 20 pixels to each side: tiles keeping 32-pixel margins match exactly
    (measured: identical on this CPU; we allow float rounding, 1e-5). Too little overlap does not."""
    from cell_seg.inference import Predictor

    image = random_image((333, 517, 3), np.uint8, seed=4)
    for predictor in (saved_predictor, run_predictor):
        whole = predictor.predict_probs(image)
        tiled = predictor.predict_probs(image, tile=128, overlap=64)
        np.testing.assert_allclose(tiled, whole, rtol=0, atol=ATOL)
    assert np.abs(predictor.predict_probs(image, tile=128, overlap=0) - whole).max() > 1e-3
    configured = Predictor.load(exported, tile=128, overlap=64)  # the tile size set once, at loading
    np.testing.assert_allclose(configured.predict_probs(image), whole, rtol=0, atol=ATOL)
    with pytest.raises(ConfigError, match="multiple"):
        predictor.predict_probs(image, tile=100)


def test_linear_tile_windows_ramp_over_the_overlaps_only():
    from cell_seg.inference import tile_spans, tile_window

    for length, tile, overlap in ((544, 128, 64), (704, 256, 64), (160, 128, 64), (96, 128, 64)):
        spans = tile_spans(length, tile, overlap, stride=32)
        total = np.zeros(length, np.float32)
        alone = np.zeros(length, int)
        for index, (start, stop, _, _) in enumerate(spans):
            window = tile_window(spans, index)
            assert window.shape == (stop - start,) and (window > 0).all() and (window <= 1).all()
            total[start:stop] += window
            alone[start:stop] += 1
        assert (total > 0.99).all()  # crossing ramps: no pixel is weighted by ~0 alone
        assert (total[alone == 1] == 1).all()  # image borders and single-tile pixels keep weight 1
    first, second = tile_window(spans := tile_spans(256, 128, 64, stride=32), 0), tile_window(spans, 1)
    assert first[0] == 1 and first[-1] < 0.01 and second[0] < 0.01  # ramps fall towards inner edges


def test_linear_blend_normalises_the_weights():
    """A per-pixel model gives the same output in any tiling: checks that the weights are divided out."""
    from cell_seg.inference import Predictor

    metadata = {"channels": ["foreground", "border"], "normalization": {"mode": "scale"}, "in_channels": 3,
                "stride": 32}
    pointwise = lambda x: np.concatenate([x[..., :1] ** 2, 1 - x[..., 1:2]], axis=-1).astype(np.float32)  # noqa: E731
    predictor = Predictor(metadata, pointwise)
    image = random_image((333, 517, 3), np.uint8, seed=5)
    whole = predictor.predict_probs(image)
    for blend in ("center", "linear"):
        tiled = predictor.predict_probs(image, tile=128, overlap=64, blend=blend)
        np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="blend"):
        predictor.predict_probs(image, tile=128, blend="gaussian")


def test_linear_blend_stays_close_to_whole_image_prediction(saved_predictor):
    image = random_image((333, 517, 3), np.uint8, seed=4)
    whole = saved_predictor.predict_probs(image)
    linear = saved_predictor.predict_probs(image, tile=128, overlap=64, blend="linear")
    cut = saved_predictor.predict_probs(image, tile=128, overlap=0)
    assert np.abs(linear - whole).mean() < np.abs(cut - whole).mean()
    assert np.abs(linear - whole).max() < 0.05


def test_tta_commutes_with_flips_and_matches_keras(saved_predictor, run_predictor):
    image = random_image((75, 102), np.uint8, seed=6)
    saved, keras = saved_predictor, run_predictor
    tta = saved.predict_probs(image, tta=True)
    np.testing.assert_allclose(tta, keras.predict_probs(image, tta=True), rtol=0, atol=ATOL)
    # The mean over the 8 dihedral views does not depend on which view we start from.
    np.testing.assert_allclose(saved.predict_probs(image[::-1].copy(), tta=True), tta[::-1], rtol=0, atol=ATOL)
    np.testing.assert_allclose(saved.predict_probs(np.rot90(image).copy(), tta=True), np.rot90(tta), rtol=0, atol=ATOL)
    assert np.abs(tta - saved.predict_probs(image)).max() > 1e-4  # and it is not the plain prediction


# --- errors -------------------------------------------------------------------------------------


@pytest.fixture
def export_copy(exported, tmp_path):
    copy = tmp_path / "export"
    shutil.copytree(exported, copy)
    return copy


@pytest.mark.parametrize("content, message", [
    (None, "metadata.json is missing"),
    ("{not json", "metadata.json is damaged"),
    ("[1, 2]", "not a JSON object"),
    ('{"channels": ["foreground"]}', "lacks normalization, in_channels, stride"),
    ('{"channels": ["foreground"], "normalization": {"mode": "zscore"}, "in_channels": 3, "stride": 32}',
     "normalization.mode"),
])
def test_missing_or_damaged_metadata_is_a_model_error(export_copy, content, message):
    from cell_seg.inference import Predictor

    path = export_copy / "assets" / "metadata.json"
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    with pytest.raises(ModelError, match=message) as info:
        Predictor.load(export_copy)
    assert "metadata.json" in str(info.value) and "\n" not in str(info.value)


def test_other_folders_are_model_errors(export_copy, tmp_path):
    from cell_seg.inference import Predictor

    with pytest.raises(ModelError, match="neither a run directory"):
        Predictor.load(tmp_path / "export" / "variables")
    with pytest.raises(DataError, match="model not found"):
        Predictor.load(tmp_path / "nowhere")
    (export_copy / "saved_model.pb").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot load SavedModel"):
        Predictor.load(export_copy)


@pytest.mark.parametrize("image, message", [
    (np.zeros((20, 30), np.int32), "dtype int32"),
    (np.zeros((20, 30), bool), "dtype bool"),
    (np.zeros((20, 30), np.float16), "dtype float16"),
    (np.zeros(30, np.uint8), "shape"),
    (np.zeros((2, 20, 30, 3), np.uint8), "shape"),
    (np.zeros((20, 30, 2), np.uint8), "shape"),
    (np.zeros((0, 30), np.uint8), "empty"),
])
def test_unexpected_images_are_data_errors(saved_predictor, image, message):
    with pytest.raises(DataError, match=message):
        saved_predictor.predict_probs(image)


def test_export_cli_errors_are_one_line(run_dir, tmp_path):
    result = cli("cell_seg.export", "--model", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "model not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("do not delete")
    result = cli("cell_seg.export", "--model", run_dir, "--out", keep)
    assert result.returncode == 2 and "refusing to replace" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and (keep / "notes.txt").is_file()
    lonely = tmp_path / "lonely.keras"
    shutil.copyfile(run_dir / "model.keras", lonely)
    result = cli("cell_seg.export", "--model", lonely, "--out", tmp_path / "out")
    assert result.returncode == 2 and "metadata.json is missing" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    assert cli("cell_seg.export", "--help").returncode == 0


def test_export_from_a_checkpoint_replaces_an_earlier_export(run_dir, export_copy, monkeypatch):
    from cell_seg import export
    from cell_seg.inference import Predictor

    # A failure half-way leaves the earlier export untouched and no temporary folder behind.
    monkeypatch.setattr(export, "build_module", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        export.export_model(run_dir / "checkpoints" / "last.keras", export_copy)
    monkeypatch.undo()
    assert (export_copy / "saved_model.pb").read_bytes()
    assert sorted(p.name for p in export_copy.parent.iterdir()) == ["export"]

    export.export_model(run_dir / "checkpoints" / "last.keras", export_copy)  # with the built-in check
    metadata = json.loads((export_copy / "assets" / "metadata.json").read_text())
    assert metadata["exported_from"].endswith("last.keras")
    assert {k: metadata["postprocess"][k] for k in TUNED} == TUNED
    image = random_image((40, 50), np.uint8)
    last = Predictor.load(run_dir / "checkpoints" / "last.keras").predict_probs(image)
    np.testing.assert_allclose(Predictor.load(export_copy).predict_probs(image), last, rtol=0, atol=ATOL)


def variables_bytes(export_dir):
    return sum(p.stat().st_size for p in (Path(export_dir) / "variables").iterdir())


def test_weights_are_stored_once_and_float16_halves_them(run_dir, exported, tmp_path):
    """float32: the variables hold each weight once (Keras' model.export held them twice);
    float16: half that, and the probabilities stay within float16 rounding of the Keras model."""
    from cell_seg.export import CHECK_TOLERANCE
    from cell_seg.inference import Predictor

    keras_model = Predictor.load(run_dir).keras_model
    weight_bytes = sum(int(np.prod(v.shape)) * 4 for v in keras_model.weights)
    assert weight_bytes < variables_bytes(exported) < 1.2 * weight_bytes + 20_000

    half = tmp_path / "half"
    result = cli("cell_seg.export", "--model", run_dir, "--out", half, "--weights-dtype", "float16")
    assert result.returncode == 0, result.stderr[-3000:]
    assert variables_bytes(exported) - variables_bytes(half) > 0.45 * weight_bytes  # 2 of 4 bytes per weight saved
    assert json.loads((half / "assets" / "metadata.json").read_text())["weights_dtype"] == "float16"
    image = random_image((90, 130, 3), np.uint8, seed=7)
    full = Predictor.load(run_dir).predict_probs(image)
    probs = Predictor.load(half).predict_probs(image)
    difference = np.abs(probs - full).max()
    assert 0 < difference < CHECK_TOLERANCE["float16"]  # float16 rounding is visible, and small


def test_float16_export_keeps_integer_states_of_dropout_layers(tmp_path):
    """Dropout layers (as in EfficientNet) carry an integer seed state: it must not be cast to float16."""
    import keras
    import tensorflow as tf

    from cell_seg.export import build_module
    from cell_seg.metadata import ModelMetadata

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Conv2D(2, 1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    assert any(not v.dtype.startswith("float") for v in model.non_trainable_variables)  # the seed state
    metadata = ModelMetadata(channels=["foreground", "border"], normalization={"mode": "scale"}, stride=1)
    module, signatures = build_module(model, metadata, "float16")
    tf.saved_model.save(module, str(tmp_path / "m"), signatures=signatures)
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    x = np.random.default_rng(0).random((1, 20, 30, 3), dtype=np.float32)
    out = loaded.signatures["serve_normalized"](images=tf.constant(x))["probabilities"].numpy()
    np.testing.assert_allclose(out, model(x, training=False).numpy(), rtol=0, atol=5e-3)


# --- model.init_weights: training starts from an earlier run or export (cell_seg.warm_start) ---


def _fresh_model(run_dir):
    from cell_seg.models import build_model

    config = load_config(run_dir / "config.yaml")
    return build_model(config.model, len(json.loads((run_dir / "metadata.json").read_text())["channels"]))


def _weights(model):
    return [np.asarray(v.numpy()) for v in model.trainable_variables + model.non_trainable_variables]


@pytest.mark.parametrize("source", ["run", "keras_file", "export", "export_float16"])
def test_init_weights_copies_a_run_or_an_export_into_a_new_model(run_dir, exported, tmp_path, source):
    from cell_seg.export import export_model
    from cell_seg.models import load_model
    from cell_seg.warm_start import initialise_weights

    path = {"run": run_dir, "keras_file": run_dir / "model.keras", "export": exported}.get(source)
    if source == "export_float16":
        path = export_model(run_dir, tmp_path / "f16", weights_dtype="float16")
    expected = _weights(load_model(run_dir / "model.keras", compile=False))
    model = _fresh_model(run_dir)
    assert max(np.abs(a - b).max() for a, b in zip(_weights(model), expected)) > 1e-2  # a new model differs
    channels = json.loads((run_dir / "metadata.json").read_text())["channels"]
    initialise_weights(model, path, channels)
    tolerance = 2e-3 if source == "export_float16" else 0.0  # float16 keeps about 3 decimal digits
    for got, want in zip(_weights(model), expected):
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=1e-6 if tolerance else 0)


def test_init_weights_refuses_other_channels_or_another_network(run_dir, exported, tmp_path):
    from cell_seg.models import build_model
    from cell_seg.warm_start import initialise_weights

    channels = json.loads((run_dir / "metadata.json").read_text())["channels"]
    with pytest.raises(ConfigError, match=r"model.init_weights.*predicts channels"):
        initialise_weights(_fresh_model(run_dir), exported, channels[:1] + ["distance"])  # one dropped
    with pytest.raises(ConfigError, match=r"model.init_weights.*predicts channels"):
        initialise_weights(_fresh_model(run_dir), exported, channels[::-1])  # reordered
    wider = build_model(load_config(run_dir / "config.yaml", ["model.filters=8"]).model, len(channels))
    with pytest.raises(ConfigError, match=r"model.init_weights.*not the same network"):
        initialise_weights(wider, exported, channels)
    for bad in (tmp_path / "missing", tmp_path):
        with pytest.raises(ConfigError, match="model.init_weights"):
            initialise_weights(_fresh_model(run_dir), bad, channels)


def test_init_weights_adds_output_channels_and_keeps_the_shared_ones(run_dir):
    """A config that adds a target ("centre") to a trained model: every weight is copied, the output
    layer's columns by channel name, and the new channel keeps its fresh initialisation."""
    from cell_seg.models import build_model, load_model
    from cell_seg.warm_start import initialise_weights

    channels = json.loads((run_dir / "metadata.json").read_text())["channels"]
    wanted = channels[:1] + ["centre"] + channels[1:]
    model = build_model(load_config(run_dir / "config.yaml").model, len(wanted))
    fresh = _weights(model)
    assert initialise_weights(model, run_dir, wanted) == ["centre"]
    source = _weights(load_model(run_dir / "model.keras", compile=False))
    widened = 0
    for got, want, before in zip(_weights(model), source, fresh):
        if got.shape == want.shape:
            np.testing.assert_array_equal(got, want)
            continue
        widened += 1
        for here, name in enumerate(wanted):
            expected = before[..., here] if name == "centre" else want[..., channels.index(name)]
            np.testing.assert_array_equal(got[..., here], expected)
    assert widened == 2  # the output convolution's kernel and bias


def test_training_from_init_weights_starts_where_the_source_ended(run_dir, exported, tmp_path):
    """With a learning rate of 1e-12 the new run's trainable weights are the exported ones (batch-norm
    statistics move in training whatever the rate): the weights went through `run`."""
    from cell_seg.models import load_model
    from cell_seg.train import run

    config = load_config(run_dir / "config.yaml", [f"model.init_weights={exported}", "train.learning_rate=1e-12",
                                                   f"out_dir={tmp_path / 'again'}"])
    run(config, evaluate_after=False)
    again, source = (load_model(path, compile=False) for path in (tmp_path / "again" / "model.keras", run_dir / "model.keras"))
    for got, want in zip(again.trainable_variables, source.trainable_variables):
        got, want = np.asarray(got.numpy()), np.asarray(want.numpy())
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-8)


def test_export_scale_options_reach_the_loaded_model(run_dir, tmp_path):
    from cell_seg.export import export_model
    from cell_seg.inference import Predictor

    out = export_model(run_dir, tmp_path / "by_kind", scale_by_kind={"fluorescence": 1.5})  # its check passes too
    predictor = Predictor.load(out)
    assert predictor.scale_by_kind == {"fluorescence": 1.5} and predictor.scale == 1.0
    assert Predictor.load(export_model(run_dir, tmp_path / "at_1.5", scale=1.5)).scale == 1.5
    assert predictor.image_scale(np.zeros((40, 40), np.uint8)) == 1.5
    assert predictor.image_scale(np.full((40, 40), 220, np.uint8)) == 1.0
    result = cli("cell_seg.export", "--model", run_dir, "--out", tmp_path / "bad", "--scale-by-kind", "phase=2")
    assert result.returncode == 2 and "--scale-by-kind 'phase=2'" in result.stderr and "Traceback" not in result.stderr
    sized = Predictor.load(export_model(run_dir, tmp_path / "sized", target_diameter=20))  # the check runs without the rule
    assert sized.target_diameter == 20 and sized.predict_probs(np.zeros((40, 40), np.uint8)).shape[:2] == (40, 40)
    result = cli("cell_seg.export", "--model", run_dir, "--out", tmp_path / "bad", "--target-diameter", "-1")
    assert result.returncode == 2 and "--target-diameter -1" in result.stderr and "Traceback" not in result.stderr
