"""Training end to end on tiny synthetic data: run dir, resume, strategies, evaluate/predict/export CLIs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cell_seg.config import load_config
from cell_seg.data.synthetic import write_synthetic_coco

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.name=unet_plain", "model.filters=4", "model.depth=2",
    "data.crop_size=64", "data.batch_size=2", "data.steps_per_epoch=2", "data.augment=light",
    "train.epochs=2", "train.verbose=0", "eval.tune=false",
]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    coco = write_synthetic_coco(root, n_images=6, shape=(96, 112), seed=3, cells=(4, 8))
    return coco, root / "images"


@pytest.fixture(scope="module")
def trained_run(synthetic, tmp_path_factory):
    from cell_seg.train import run

    coco, images = synthetic
    out = tmp_path_factory.mktemp("runs") / "tiny"
    config = load_config(None, TINY + [f"data.coco={coco}", f"data.images={images}", f"out_dir={out}"])
    model, history = run(config)
    return out, model, history


def cli(module, *args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def test_run_writes_the_run_directory(trained_run):
    out, model, history = trained_run
    for name in ("config.yaml", "metadata.json", "history.csv", "model.keras", "training_curves.png",
                 "metrics.json", "checkpoints/best.keras", "checkpoints/last.keras"):
        assert (out / name).is_file(), name
    assert (out / "logs").is_dir()
    assert not (out / "backup").exists()  # removed once training completes
    assert len(pd.read_csv(out / "history.csv")) == 2
    assert set(history.history) >= {"loss", "val_loss", "iou_foreground", "val_iou_border"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["summary"]["map"] <= 1.0
    assert set(metrics["modes"]) == {"components", "watershed"}
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["channels"] == ["foreground", "border"]


def test_saved_model_reloads_with_identical_outputs(trained_run):
    from cell_seg.models import load_model

    out, model, _ = trained_run
    x = np.random.default_rng(0).random((1, 64, 96, 3)).astype(np.float32)
    reloaded = load_model(out / "model.keras")
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(reloaded(x)), atol=1e-6)


def test_a_second_run_never_overwrites_the_first(trained_run, synthetic):
    from cell_seg.train import fresh_run_directory

    out, _, _ = trained_run
    config = load_config(None, [f"out_dir={out}"])
    assert fresh_run_directory(config) == out.with_name(out.name + "-2")


class StopAfterBatches:
    """A Keras callback factory that interrupts training in epoch `epoch` after `batches` batches."""

    def __new__(cls, epoch, batches):
        import keras

        class Stop(keras.callbacks.Callback):
            def on_epoch_begin(self, e, logs=None):
                self.current = e

            def on_train_batch_end(self, batch, logs=None):
                if self.current == epoch and batch + 1 >= batches:
                    raise KeyboardInterrupt("simulated kill")

        return Stop()


def test_resume_after_interruption_loses_at_most_one_epoch(synthetic, tmp_path):
    from cell_seg.train import run

    coco, images = synthetic
    out = tmp_path / "killed"
    overrides = TINY + [f"data.coco={coco}", f"data.images={images}", f"out_dir={out}", "train.epochs=3"]
    config = load_config(None, overrides)
    with pytest.raises(KeyboardInterrupt):
        run(config, extra_callbacks=[StopAfterBatches(epoch=1, batches=1)], evaluate_after=False)
    assert (out / "backup").is_dir()
    assert len(pd.read_csv(out / "history.csv")) == 1  # epoch 0 finished, epoch 1 interrupted
    killed = json.loads((out / "train_time.json").read_text())  # the killed session's time is kept
    assert killed["epochs"] == 1 and killed["train_seconds"] > 0

    resumed = load_config(out / "config.yaml")
    resumed.out_dir = str(out)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, history = run(resumed, evaluate_after=False, resume=True)
    # The optimiser's moments and step count come back from backup/ too (Keras skips them, with a
    # warning, when the optimiser is not built before BackupAndRestore loads).
    assert not [w for w in caught if "Skipping variable loading for optimizer" in str(w.message)]
    assert len(history.history["loss"]) == 2  # epochs 1 and 2 only: epoch 0 was not redone
    assert list(pd.read_csv(out / "history.csv")["epoch"]) == [0, 1, 2]
    assert not (out / "backup").exists()
    timing = json.loads((out / "train_time.json").read_text())
    assert timing["epochs"] == 3 and timing["train_seconds"] > killed["train_seconds"]


def test_resume_cli_continues_a_finished_run_with_more_epochs(trained_run, tmp_path):
    import shutil

    out, _, _ = trained_run
    copy = tmp_path / "more"
    shutil.copytree(out, copy)
    first = json.loads((copy / "train_time.json").read_text())
    assert first["epochs"] == 2 and first["train_seconds"] > 0
    result = cli("cell_seg.train", "--resume", copy, "train.epochs=3", "--no-eval")
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(pd.read_csv(copy / "history.csv")["epoch"]) == [0, 1, 2]
    timing = json.loads((copy / "train_time.json").read_text())
    assert timing["epochs"] == 3 and timing["train_seconds"] > first["train_seconds"]  # both sessions counted


def test_mirrored_strategy_on_two_logical_cpus(synthetic, tmp_path):
    coco, images = synthetic
    script = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from cell_seg.config import load_config
from cell_seg.train import make_strategy, run
overrides = {TINY!r} + ["data.coco={coco}", "data.images={images}", "out_dir={tmp_path / 'mirrored'}",
                         "train.strategy=mirrored", "train.epochs=1", "data.val_fraction=0.4"]
strategy = make_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
model, history = run(load_config(None, overrides), evaluate_after=False)
assert len(history.history["loss"]) == 1
print("replicas", strategy.num_replicas_in_sync)
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2" in result.stdout


def test_train_cli_errors_are_one_line(tmp_path):
    result = cli("cell_seg.train", "train.epoch=3")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unknown config key 'train.epoch' (did you mean train.epochs?)"
    result = cli("cell_seg.train", f"data.coco={tmp_path / 'nowhere.json'}", f"out_dir={tmp_path / 'r'}")
    assert result.returncode == 2
    assert "nowhere.json" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_evaluate_cli_tunes_and_writes_postprocess(trained_run, synthetic, tmp_path):
    out, _, _ = trained_run
    coco, images = synthetic
    result = cli("cell_seg.evaluate", "--model", out / "model.keras", "--coco", coco, "--images", images,
                 "--tune", "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    settings = json.loads((tmp_path / "postprocess.json").read_text())
    assert settings["mode"] in ("components", "watershed")
    assert {"fg_threshold", "min_area"} <= set(settings)
    assert "mAP" in result.stdout


def test_evaluate_modes_limits_what_is_scored_and_refuses_a_mode_the_model_cannot_serve(trained_run, synthetic, tmp_path):
    out, _, _ = trained_run
    coco, images = synthetic
    result = cli("cell_seg.evaluate", "--model", out, "--coco", coco, "--images", images, "--modes", "components",
                 "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(json.loads((tmp_path / "metrics.json").read_text())["modes"]) == ["components"]
    result = cli("cell_seg.evaluate", "--model", out, "--coco", coco, "--images", images, "--modes", "distance",
                 "--out", tmp_path / "d")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "mode 'distance'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_evaluate_tta_scores_the_averaged_flips(trained_run, synthetic, tmp_path):
    from cell_seg.data.dataset import CocoDataset
    from cell_seg.evaluate import predict_dataset
    from cell_seg.inference import Predictor

    out, _, _ = trained_run
    coco, images = synthetic
    result = cli("cell_seg.evaluate", "--model", out, "--coco", coco, "--images", images, "--tta", "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["tta"] is True and 0 <= report["summary"]["map"] <= 1
    assert not (tmp_path / "postprocess.json").exists()  # no --tune: nothing to write
    predictor = Predictor.load(out)
    dataset = CocoDataset(json.loads(Path(coco).read_text()), images)
    record = predict_dataset(predictor, dataset, tta=True)[0]
    image = dataset.load_image(dataset.image_ids[0])
    np.testing.assert_allclose(record["probs"], predictor.predict_probs(image, tta=True), atol=1e-3)
    assert np.abs(record["probs"] - predictor.predict_probs(image)).max() > 1e-3  # the flips do change it


@pytest.mark.parametrize("fmt, out_name", [("sartorius", "sub.csv"), ("hubmap", "hub.csv"), ("coco", "res.json"),
                                           ("labels", "labels")])
def test_predict_cli_formats(trained_run, synthetic, tmp_path, fmt, out_name):
    out, _, _ = trained_run
    _, images = synthetic
    target = tmp_path / out_name
    result = cli("cell_seg.predict", "--model", out, "--images", images, "--out", target, "--format", fmt)
    assert result.returncode == 0, result.stderr[-2000:]
    if fmt == "sartorius":
        frame = pd.read_csv(target)
        assert list(frame.columns) == ["id", "predicted"]
        assert set(frame["id"]) == {p.stem for p in images.glob("*.png")}  # every image present
    elif fmt == "hubmap":
        assert list(pd.read_csv(target).columns) == ["id", "height", "width", "prediction_string"]
    elif fmt == "coco":
        assert isinstance(json.loads(target.read_text()), list)
    else:
        assert len(list(target.glob("*_overlay.png"))) == 6 and len(list(target.glob("*.png"))) == 12


def test_predict_defaults_to_label_images_in_predictions(trained_run, synthetic, tmp_path):
    """The README/weights command: only --model and --images."""
    from cell_seg.files import read_image

    out, _, _ = trained_run
    _, images = synthetic
    result = cli("cell_seg.predict", "--model", out, "--images", images, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    written = tmp_path / "predictions"
    stems = sorted(p.stem for p in images.glob("*.png"))
    assert sorted(p.stem for p in written.glob("*.png") if not p.stem.endswith("_overlay")) == stems
    labels = read_image(written / f"{stems[0]}.png")
    assert labels.dtype == np.uint16 and labels.shape == (96, 112)
    assert "wrote predictions: 6 images" in result.stderr


def test_predict_ids_follow_the_csv_and_name_a_missing_row(trained_run, synthetic, tmp_path):
    out, _, _ = trained_run
    _, images = synthetic
    stems = sorted(p.stem for p in images.glob("*.png"))
    wanted = [stems[3], stems[0], stems[3]]
    pd.DataFrame({"id": wanted, "predicted": ""}).to_csv(tmp_path / "sample_submission.csv", index=False)
    target = tmp_path / "submission.csv"
    result = cli("cell_seg.predict", "--model", out, "--images", images, "--ids", tmp_path / "sample_submission.csv",
                 "--format", "sartorius", "--out", target)
    assert result.returncode == 0, result.stderr[-2000:]
    ids = list(dict.fromkeys(pd.read_csv(target)["id"]))
    assert ids == [stems[3], stems[0]]
    pd.DataFrame({"id": [stems[1], "missing_one"]}).to_csv(tmp_path / "bad.csv", index=False)
    target.unlink()
    result = cli("cell_seg.predict", "--model", out, "--images", images, "--ids", tmp_path / "bad.csv",
                 "--format", "sartorius", "--out", target)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "bad.csv, row 3" in result.stderr and "missing_one" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not target.exists()


def test_predict_tiles_large_images(trained_run, synthetic, tmp_path):
    from cell_seg.files import read_image

    out, _, _ = trained_run
    _, images = synthetic
    result = cli("cell_seg.predict", "--model", out, "--images", images, "--out", tmp_path / "tiled",
                 "--tile", 64, "--overlap", 32, "--no-overlays")
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list((tmp_path / "tiled").glob("*.png"))) == 6
    assert read_image(next((tmp_path / "tiled").glob("*.png"))).shape == (96, 112)
    result = cli("cell_seg.predict", "--model", out, "--images", images, "--out", tmp_path / "blended",
                 "--tile", 64, "--overlap", 32, "--blend", "linear", "--no-overlays")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "blended").glob("*.png")) == \
        sorted(p.name for p in (tmp_path / "tiled").glob("*.png"))
    result = cli("cell_seg.predict", "--model", out, "--images", images, "--tile", 50, cwd=tmp_path)
    assert result.returncode == 2 and "stride" in result.stderr and "Traceback" not in result.stderr
    assert "predicting" not in result.stderr  # checked before the progress bar starts
    assert not (tmp_path / "predictions").exists()  # and before the default output folder appears


def test_predict_reports_a_corrupt_image_and_skips_it(trained_run, synthetic, tmp_path):
    import shutil

    out, _, _ = trained_run
    _, images = synthetic
    folder = tmp_path / "imgs"
    shutil.copytree(images, folder)
    (folder / "broken.png").write_bytes(b"not a png")
    result = cli("cell_seg.predict", "--model", out, "--images", folder, "--out", tmp_path / "s.csv", "--format", "sartorius")
    assert result.returncode == 2 and "broken.png" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "s.csv").exists()
    result = cli("cell_seg.predict", "--model", out, "--images", folder, "--out", tmp_path / "s.csv", "--format",
                 "sartorius", "--skip-bad")
    assert result.returncode == 0 and "skipped broken" in result.stderr
    assert "broken" not in set(pd.read_csv(tmp_path / "s.csv")["id"])
