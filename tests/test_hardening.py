"""Issue 17: faults and bad input from a newcomer's trial give one line, exit code 2, nothing half-written.

One test (or a few) per item of the issue, each on a tiny fixture made here; no model is
trained: where a CLI needs one, `Predictor.load` is replaced by a stand-in that labels every
image the same way, since the behaviour under test is the CLI's, not the network's.
"""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import cell_seg.cli.common as cli_common
import cell_seg.cli.convert as convert_cli
import cell_seg.cli.split as split_cli
from cell_seg.data.rle import rle_to_coco
from cell_seg.errors import ConfigError, DataError
from cell_seg.postprocess import PostprocessConfig

ROOT = Path(__file__).resolve().parents[1]
H, W = 6, 8


# --- tiny fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def images(tmp_path):
    """Three 6 x 8 gray images a, b, c."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i, key in enumerate("abc"):
        cv2.imwrite(str(folder / f"{key}.png"), np.full((H, W), 40 * (i + 1), np.uint8))
    return folder


def tiny_coco():
    annotations = [
        {"id": 10 + i, "image_id": i, "category_id": 1, "segmentation": rle_to_coco("10 3", (H, W), order="row"),
         "area": 3, "bbox": [1, 1, 3, 1], "iscrowd": 0}
        for i in (1, 2, 3)
    ]
    return {
        "images": [{"id": i, "file_name": f"{key}.png", "height": H, "width": W} for i, key in zip((1, 2, 3), "abc")],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "cell"}],
    }


@pytest.fixture
def coco_file(tmp_path):
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(tiny_coco()))
    return path


def kaggle_csv(path, rows=True):
    text = "id,annotation,width,height,cell_type\n"
    if rows:
        text += f"a,10 3,{W},{H},astro\nb,1 2,{W},{H},astro\n"
    path.write_text(text)
    return path


class StandInPredictor:
    """Labels a 2 x 2 square in every image; stride 32 like the project's models."""

    stride = 32
    channels = ["foreground"]
    postprocess = PostprocessConfig()
    tta = False
    source = "stand-in"
    keras_model = None

    def predict_instances(self, image, **kwargs):
        labels = np.zeros(image.shape[:2], np.int32)
        labels[1:3, 1:3] = 1
        return labels, [{"id": 1, "score": 0.9, "area": 4, "class": 0}]

    def predict_probs(self, image, tta=False):
        probs = np.zeros(image.shape[:2] + (1,), np.float32)
        probs[1:3, 1:4] = 1.0
        return probs


@pytest.fixture
def stand_in(monkeypatch):
    from cell_seg.inference import Predictor

    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, path, **kwargs: StandInPredictor()))
    return StandInPredictor


def run_cli(main, argv, capsys):
    """Run a CLI's main through run_main; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        cli_common.run_main(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def assert_one_line_naming(code, err, path):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(path) in lines[0], err
    assert ".tmp" not in lines[0], err


@pytest.fixture
def blocked(tmp_path):
    """A file where a folder is needed: any output under it cannot be written (works as root too)."""
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return path


# --- 1. output that cannot be written: one line naming the user's path, exit 2 -------------------------


def test_convert_and_split_name_an_unwritable_out(tmp_path, images, coco_file, blocked, capsys):
    out = blocked / "coco.json"
    code, _, err = run_cli(convert_cli.main, ["kaggle", "--csv", kaggle_csv(tmp_path / "train.csv"), "--images", images,
                                          "--out", out], capsys)
    assert_one_line_naming(code, err, out)
    assert "is a file, not a folder" in err
    code, _, err = run_cli(split_cli.main, ["--coco", coco_file, "--out", blocked / "split", "--val", "0.5"], capsys)
    assert_one_line_naming(code, err, blocked / "split")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_out_in_proc_names_the_given_path_not_the_temporary_file(tmp_path, images, capsys):
    code, _, err = run_cli(convert_cli.main, ["kaggle", "--csv", kaggle_csv(tmp_path / "train.csv"), "--images", images,
                                          "--out", "/proc/x.json"], capsys)
    assert_one_line_naming(code, err, "/proc/x.json")


def test_a_full_disk_names_the_out_file(tmp_path, images, monkeypatch, capsys):
    from cell_seg import files

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no file name

    monkeypatch.setattr(files.json, "dump", full)
    out = tmp_path / "coco.json"
    code, _, err = run_cli(convert_cli.main, ["kaggle", "--csv", kaggle_csv(tmp_path / "train.csv"), "--images", images,
                                          "--out", out], capsys)
    assert_one_line_naming(code, err, out)
    assert "no space left on device" in err
    assert not out.exists() and not list(tmp_path.glob(".coco.json.*"))  # no partial or hidden file left


@pytest.mark.parametrize("fmt", ["labels", "coco", "sartorius"])
def test_predict_names_an_unwritable_out(images, blocked, stand_in, fmt, capsys):
    from cell_seg.cli import predict

    out = blocked / ("predictions" if fmt == "labels" else "out.file")
    code, _, err = run_cli(predict.main, ["--model", "m", "--images", images, "--out", out, "--format", fmt], capsys)
    assert_one_line_naming(code, err.split("\n", 1)[-1] if "predicting" in err else err, out)


def test_evaluate_export_and_train_name_an_unwritable_out(coco_file, images, blocked, stand_in, capsys):
    from cell_seg.cli import evaluate, export, train

    code, _, err = run_cli(evaluate.main, ["--model", "m", "--coco", coco_file, "--images", images,
                                           "--out", blocked / "eval"], capsys)
    assert_one_line_naming(code, err, blocked / "eval")
    code, _, err = run_cli(export.main, ["--model", "m", "--out", blocked / "exported"], capsys)
    assert_one_line_naming(code, err, blocked / "exported")
    code, _, err = run_cli(train.main, ["--config", ROOT / "configs" / "demo.yaml", "--out", blocked / "run",
                                        "train.epochs=1"], capsys)
    assert_one_line_naming(code, err, blocked / "run")


def test_an_unreadable_input_is_one_line(tmp_path, images, monkeypatch, capsys):
    """PermissionError on an input (simulated: the tests may run as root, who reads everything)."""
    coco = tmp_path / "locked.json"
    coco.write_text("{}")
    real_open = open

    def locked(path, *args, **kwargs):
        if str(path) == str(coco):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", locked)
    code, _, err = run_cli(split_cli.main, ["--coco", coco, "--out", tmp_path / "s"], capsys)
    assert_one_line_naming(code, err, coco)
    assert "permission denied" in err


def test_cli_subprocess_exit_code_and_no_traceback(tmp_path, images, blocked):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "cell_seg.convert", "kaggle", "--csv", kaggle_csv(tmp_path / "train.csv"),
         "--images", images, "--out", blocked / "coco.json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert_one_line_naming(result.returncode, result.stderr, blocked / "coco.json")


# --- 2. multi-file outputs: nothing new in the folder when an image is bad -----------------------------


def test_predict_labels_leaves_nothing_when_an_image_is_bad(tmp_path, images, stand_in, capsys):
    from cell_seg.cli import predict

    (images / "b.png").write_bytes(b"not a png")  # the second of three
    out = tmp_path / "predictions"
    out.mkdir()
    (out / "earlier.png").write_bytes(b"kept")
    code, _, err = run_cli(predict.main, ["--model", "m", "--images", images, "--out", out], capsys)
    assert code == 2 and "b.png" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["earlier.png"]  # a.png's prediction was not left behind
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # nor the staging folder
    code, _, err = run_cli(predict.main, ["--model", "m", "--images", images, "--out", out, "--skip-bad"], capsys)
    assert code == 0 and "skipped b" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_overlay.png", "c.png", "c_overlay.png", "earlier.png"]


def test_split_writes_all_files_or_none(tmp_path, coco_file, monkeypatch, capsys):
    from cell_seg import files

    real_write = files.write_json_atomic
    calls = []

    def fail_on_the_third(obj, path, indent=None):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(obj, path, indent)

    monkeypatch.setattr(files, "write_json_atomic", fail_on_the_third)
    code, _, err = run_cli(split_cli.main, ["--coco", coco_file, "--out", tmp_path / "folds", "--folds", "2"], capsys)
    assert code == 2 and "folds" in err
    assert not (tmp_path / "folds").exists()


# --- 3. empty inputs -----------------------------------------------------------------------------------


def test_header_only_csv_and_empty_jsonl_are_errors_unless_allowed(tmp_path, images, capsys):
    csv = kaggle_csv(tmp_path / "train.csv", rows=False)
    out = tmp_path / "coco.json"
    code, _, err = run_cli(convert_cli.main, ["kaggle", "--csv", csv, "--images", images, "--out", out], capsys)
    assert code == 2 and str(csv) in err and "no image" in err and "--allow-empty" in err
    assert not out.exists()
    jsonl = tmp_path / "polygons.jsonl"
    jsonl.write_text("")
    code, _, err = run_cli(convert_cli.main, ["polygons", "--jsonl", jsonl, "--images", images, "--out", out], capsys)
    assert code == 2 and str(jsonl) in err and not out.exists()
    code, _, err = run_cli(convert_cli.main, ["polygons", "--jsonl", jsonl, "--images", images, "--out", out,
                                          "--allow-empty"], capsys)
    assert code == 0 and "warning" in err and json.loads(out.read_text())["images"] == []


def test_empty_coco_is_an_error_for_split_and_evaluate(tmp_path, images, stand_in, capsys):
    from cell_seg.cli import evaluate

    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    code, _, err = run_cli(split_cli.main, ["--coco", empty, "--out", tmp_path / "s"], capsys)
    assert code == 2 and "no images" in err and str(empty) in err
    code, _, err = run_cli(evaluate.main, ["--model", "m", "--coco", empty, "--images", images], capsys)
    assert code == 2 and "no images" in err and str(empty) in err


# --- 4. one COCO validation for every reader -------------------------------------------------------------


_REMOVE = object()  # as the new value: delete the key

# kind: ((section, index, key or None for the whole entry, new value), (place, field) the error must name)
FAULTS = {
    "unknown image id": (("annotations", 1, "image_id", 99), ("annotation id 12", "image_id")),
    "no segmentation": (("annotations", 1, "segmentation", _REMOVE), ("annotation id 12", "segmentation")),
    "unknown category": (("annotations", 1, "category_id", 7), ("annotation id 12", "category_id")),
    "no file_name": (("images", 2, "file_name", _REMOVE), ("image id 3", "file_name")),
    "null annotation": (("annotations", 1, None, None), ("annotations[1]", "annotations")),
    "no image_id": (("annotations", 1, "image_id", _REMOVE), ("annotation id 12", "image_id")),
}


def _broken(kind):
    """tiny_coco() with the fault `kind`, and the (place, field) its error must name."""
    (section, index, key, value), expected = FAULTS[kind]
    coco = tiny_coco()
    if key is None:
        coco[section][index] = value
    elif value is _REMOVE:
        del coco[section][index][key]
    else:
        coco[section][index][key] = value
    return coco, expected


KINDS = list(FAULTS)


@pytest.mark.parametrize("kind", KINDS)
def test_every_coco_reader_rejects_the_same_faults(tmp_path, images, stand_in, kind, capsys):
    from cell_seg.cli import evaluate
    from cell_seg.config import load_config
    from cell_seg.data.dataset import CocoDataset
    from cell_seg.train import resolve_data

    coco, (where, field) = _broken(kind)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(coco))
    expected = (str(path), where, f"field {field}")

    code, _, err = run_cli(split_cli.main, ["--coco", path, "--out", tmp_path / "s", "--val", "0.5"], capsys)
    assert code == 2 and all(part in err for part in expected), err
    code, _, err = run_cli(evaluate.main, ["--model", "m", "--coco", path, "--images", images], capsys)
    assert code == 2 and all(part in err for part in expected), err
    with pytest.raises(DataError) as raised:
        resolve_data(load_config(None, [f"data.coco={path}", f"data.images={images}"]))
    assert all(part in str(raised.value) for part in expected), raised.value
    with pytest.raises(DataError) as raised:
        CocoDataset(path, images)
    assert all(part in str(raised.value) for part in expected), raised.value
    with pytest.raises(DataError) as raised:  # a dict with its source named
        CocoDataset(coco, images, source=path)
    assert all(part in str(raised.value) for part in expected), raised.value


# --- 5. a split_group key missing on most images --------------------------------------------------------


def test_sparse_split_group_falls_back_with_a_warning_naming_the_config_key(tmp_path, images, capsys):
    from cell_seg.config import load_config
    from cell_seg.train import resolve_data

    coco = tiny_coco()
    coco["images"][0]["sample_id"] = "s1"  # one image of three, as in a copy of train.csv
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    config = load_config(None, [f"data.coco={path}", f"data.images={images}", "data.split_group=sample_id",
                                "data.val_fraction=0.34"])
    train_coco, val_coco, _ = resolve_data(config)
    assert len(train_coco["images"]) + len(val_coco["images"]) == 3
    err = capsys.readouterr().err
    assert "data.split_group" in err and "sample_id" in err and "1 of 3" in err and str(path) in err


def test_split_cli_names_the_option_for_a_missing_group(tmp_path, coco_file, capsys):
    code, _, err = run_cli(split_cli.main, ["--coco", coco_file, "--out", tmp_path / "s", "--group", "plate"], capsys)
    assert code == 2 and "--group" in err and "plate" in err and str(coco_file) in err


# --- 6. noise ---------------------------------------------------------------------------------------------


def _fake_tensorflow(tmp_path):
    """A stand-in `tensorflow` package that logs to file descriptor 2 on import, as TensorFlow's C++ does."""
    package = tmp_path / "fake" / "tensorflow"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import os\nos.write(2, b'E0000 failed call to cuInit\\n')\n")
    return tmp_path / "fake"


@pytest.mark.parametrize("user_level", [None, "0"])
def test_tensorflow_start_up_log_is_silenced_unless_the_user_set_a_level(tmp_path, user_level):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(_fake_tensorflow(tmp_path)), str(ROOT)])
    if user_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = user_level
    code = ("import os, sys\nfrom cell_seg.cli.common import run_main\n"
            "def main(argv):\n    import tensorflow\n    print(os.environ['TF_CPP_MIN_LOG_LEVEL'])\n"
            "run_main(main)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    if user_level is None:
        assert result.stdout.strip() == "3" and result.stderr == ""
    else:
        assert result.stdout.strip() == "0" and "cuInit" in result.stderr


def test_keras_progress_is_one_line_per_epoch_off_a_terminal():
    import io

    from cell_seg.train import keras_verbosity

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert keras_verbosity(1, io.StringIO()) == 2
    assert keras_verbosity(1, Terminal()) == 1
    assert keras_verbosity(0, io.StringIO()) == 0 and keras_verbosity(2, Terminal()) == 2


# --- 7. demo scores with context ---------------------------------------------------------------------------


def test_validation_line_gives_the_image_count_and_a_tie_is_said(tmp_path, capsys):
    from cell_seg.evaluate import describe_best_mode, print_report
    from cell_seg.cli.train import print_validation

    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"summary": {"map": 0.18}, "images": 4}))
    print_validation(metrics)
    out = capsys.readouterr().out
    assert "validation (4 images): map 0.180" in out and "only 4 validation images" in out
    mode = {"map": 0.1804, "ap_iou_0.6": 0.1, "foreground_iou": 0.5}
    report = {"best_mode": "components", "modes": {"components": mode, "watershed": dict(mode, map=0.1801)}}
    assert "a tie with watershed at mAP 0.180" in describe_best_mode(report)
    print_report(report)
    assert "best mode: components (a tie with watershed" in capsys.readouterr().err
    report["modes"]["watershed"]["map"] = 0.25
    report["best_mode"] = "watershed"
    assert describe_best_mode(report) == "watershed"


def test_readme_says_what_the_demo_shows_and_cannot():
    readme = (ROOT / "README.md").read_text()
    assert "What the demo shows" in readme and "4 validation images" in readme


# --- 8. interruptions and resume ---------------------------------------------------------------------------


def _finished_run(run_dir, epochs=2, metrics=True, backup=False):
    from cell_seg.config import load_config, save_config

    run_dir.mkdir(parents=True)
    config = load_config(None, [f"train.epochs={epochs}", f"out_dir={run_dir}"])
    save_config(config, run_dir / "config.yaml")
    (run_dir / "history.csv").write_text("epoch,loss\n" + "".join(f"{e},0.5\n" for e in range(epochs)))
    (run_dir / "model.keras").write_bytes(b"")
    if metrics:
        (run_dir / "metrics.json").write_text(json.dumps({"summary": {"map": 0.3}, "images": 4}))
    if backup:
        (run_dir / "backup").mkdir()
    return run_dir


def test_resume_on_a_finished_run_leaves_its_metrics(tmp_path, monkeypatch, capsys):
    from cell_seg.cli import train

    run_dir = _finished_run(tmp_path / "run")
    before = (run_dir / "metrics.json").read_text()
    monkeypatch.setattr(train, "run", lambda *a, **k: pytest.fail("a finished run must not be retrained"))
    code, out, err = run_cli(train.main, ["--resume", run_dir], capsys)
    assert code == 0 and "nothing to resume" in err and "metrics.json left as it is" in err
    assert "train.epochs=12" in err and "validation (4 images)" in out
    assert (run_dir / "metrics.json").read_text() == before


def test_resume_says_what_it_does(tmp_path, capsys):
    from cell_seg.config import load_config
    from cell_seg.cli.train import resume_plan

    interrupted = _finished_run(tmp_path / "interrupted", backup=True, metrics=False)
    assert resume_plan(load_config(None, ["train.epochs=5"]), interrupted)
    assert "from its backup/" in capsys.readouterr().err
    finished = _finished_run(tmp_path / "finished")
    assert resume_plan(load_config(None, ["train.epochs=4"]), finished)
    assert "replaces metrics.json" in capsys.readouterr().err
    unevaluated = _finished_run(tmp_path / "unevaluated", metrics=False)
    assert resume_plan(load_config(None, ["train.epochs=2"]), unevaluated)
    assert "was not evaluated: evaluating it" in capsys.readouterr().err


def test_ctrl_c_prints_how_to_resume(tmp_path, monkeypatch, capsys):
    from cell_seg.cli import train

    run_dir = tmp_path / "runs" / "demo"

    def interrupted_run(config, **kwargs):
        config.out_dir = str(run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text("name: demo\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run", interrupted_run)
    code, _, err = run_cli(train.main, [], capsys)
    assert code == 130 and f"python -m cell_seg.train --resume {run_dir}" in err


# --- 9. small ones --------------------------------------------------------------------------------------


def test_json_error_has_no_doubled_word(tmp_path):
    from cell_seg.files import read_json

    path = tmp_path / "bad.json"
    path.write_text('{"a": "unterminated')
    with pytest.raises(DataError) as raised:
        read_json(path)
    assert "at at" not in str(raised.value) and "line 1, column 7" in str(raised.value)


def test_a_keras_file_that_is_not_a_zip_is_named(tmp_path):
    from cell_seg.errors import ModelError
    from cell_seg.models import load_model

    path = tmp_path / "model.keras"
    path.write_text("not a zip")
    with pytest.raises(ModelError, match="not a .keras model .*zip"):
        load_model(path)


def test_tile_is_checked_before_any_work(tmp_path, images, stand_in, monkeypatch, capsys):
    from cell_seg.cli import predict

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(predict, "predict_folder", lambda *a, **k: pytest.fail("work started before --tile was checked"))
    code, _, err = run_cli(predict.main, ["--model", "m", "--images", images, "--tile", 50], capsys)
    assert code == 2 and "--tile 50" in err and "stride 32" in err and "(e.g. 64)" in err
    assert not (tmp_path / "predictions").exists()
    with pytest.raises(ConfigError, match="--overlap"):
        predict.check_tiling(64, 64, 32)


def test_predictions_folder_is_git_ignored():
    assert "/predictions/" in (ROOT / ".gitignore").read_text().splitlines()


def test_help_config_shows_what_a_bare_train_uses(capsys):
    from cell_seg.cli import train

    assert train.main(["--help-config"]) == 0
    out = capsys.readouterr().out
    assert "model.backbone = 'efficientnet_lite0'  # default 'efficientnetb0'" in out and "train.epochs = 12  # default 20" in out
    assert train.main(["--help-config", "train.epochs=3"]) == 0
    assert "train.epochs = 3  # default 20" in capsys.readouterr().out


def test_overrides_may_follow_options():
    from cell_seg.cli.train import parse_args

    args = parse_args(["train.epochs=3", "--no-eval", "model.filters=8", "--out", "runs/x", "train.seed=1"])
    assert args.overrides == ["train.epochs=3", "model.filters=8", "train.seed=1"]
    assert args.no_eval and args.out == "runs/x"


def test_notebooks_give_cell_seg_model_one_meaning():
    train_nb = (ROOT / "notebooks" / "02_train.ipynb").read_text()
    offline_nb = (ROOT / "notebooks" / "03_kaggle_offline_inference.ipynb").read_text()
    assert '\\"CELL_SEG_MODEL\\"' not in train_nb and "CELL_SEG_ARCHITECTURE" in train_nb
    assert '\\"CELL_SEG_MODEL\\"' in offline_nb  # a model path, as --model everywhere
