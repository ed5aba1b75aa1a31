"""Offline (Kaggle) inference: a SavedModel predicts and writes a submission where segmentation-models,
albumentations and pycocotools cannot be imported, and the package builds as a pure-Python wheel
that installs without an index.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cell_seg.config import load_config
from cell_seg.data.synthetic import write_synthetic_coco

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.name=unet_plain", "model.filters=4", "model.depth=2",
    "data.crop_size=64", "data.batch_size=2", "data.steps_per_epoch=2", "data.augment=none",
    "train.epochs=1", "train.verbose=0", "eval.tune=false", "data.val_fraction=0.4",
]
# What a fresh Kaggle kernel with only our wheel added lacks (and what segmentation-models pulls in).
BLOCKED = ("segmentation_models", "albumentations", "pycocotools", "efficientnet", "classification_models",
           "image_classifiers")

BLOCKER = """
import importlib.abc
import sys

BLOCKED = {blocked!r}


class Offline(importlib.abc.MetaPathFinder):
    \"\"\"Make the training-only packages unimportable, as in a fresh offline environment.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not installed (blocked by the offline test)")
        return None


sys.meta_path.insert(0, Offline())
"""


def env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run directory, SavedModel directory, image folder) of one tiny trained and exported model."""
    from cell_seg.export import export_model
    from cell_seg.train import run

    root = tmp_path_factory.mktemp("synthetic")
    coco = write_synthetic_coco(root, n_images=5, shape=(96, 112), seed=7, cells=(4, 8))
    out = tmp_path_factory.mktemp("runs") / "tiny"
    run(load_config(None, TINY + [f"data.coco={coco}", f"data.images={root / 'images'}", f"out_dir={out}"]),
        evaluate_after=False)
    saved = export_model(out, tmp_path_factory.mktemp("export") / "saved_model", check=False)
    return out, saved, root / "images"


def test_saved_model_predicts_without_training_packages(trained, tmp_path):
    from cell_seg.inference import Predictor
    from cell_seg.files import list_images, read_image
    from cell_seg.submission import read_sartorius_csv

    run_dir, saved, images = trained
    first = sorted(list_images(images).values())[0]
    script = BLOCKER.format(blocked=BLOCKED) + textwrap.dedent(f"""
        import json
        import runpy

        import numpy as np
        import tensorflow as tf

        for name in {BLOCKED!r}:
            try:
                __import__(name)
            except ImportError:
                pass
            else:
                raise SystemExit(f"the blocker let {{name}} through")

        # TensorFlow alone reads the SavedModel.
        loaded = tf.saved_model.load({str(saved)!r})
        raw = loaded.signatures["serve_image"](image=tf.zeros([37, 53, 1], tf.uint8))["probabilities"]
        assert raw.shape == (37, 53, 2), raw.shape

        from cell_seg.inference import Predictor
        from cell_seg.files import list_images, read_image
        from cell_seg.predict import predict_folder

        predictor = Predictor.load({str(saved)!r})
        image = read_image({str(first)!r})
        np.save({str(tmp_path / "probs.npy")!r}, predictor.predict_probs(image))
        np.save({str(tmp_path / "tiled.npy")!r}, predictor.predict_probs(image, tile=32, overlap=0, tta=True))
        n_images, n_instances, skipped = predict_folder(
            predictor, list_images({str(images)!r}), {str(tmp_path / "api.csv")!r}, "sartorius")

        # The command line too, in this same offline process.
        import sys
        sys.argv = ["cell_seg.predict", "--model", {str(saved)!r}, "--images", {str(images)!r},
                    "--out", {str(tmp_path / "cli.csv")!r}, "--format", "sartorius"]
        try:
            runpy.run_module("cell_seg.predict", run_name="__main__")
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        print(json.dumps({{
            "images": n_images,
            "loaded": sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r}),
            "cell_seg": sorted(m for m in sys.modules if m.startswith("cell_seg")),
        }}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    assert "cell_seg.models" not in report["cell_seg"] and "cell_seg.data.augment" not in report["cell_seg"]
    assert report["images"] == 5

    # Same numbers as the Keras model of the run, in this (unrestricted) process.
    keras = Predictor.load(run_dir)
    image = read_image(first)
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), keras.predict_probs(image), rtol=0, atol=1e-5)
    assert np.load(tmp_path / "tiled.npy").shape == image.shape[:2] + (2,)
    api, cli = pd.read_csv(tmp_path / "api.csv"), pd.read_csv(tmp_path / "cli.csv")
    assert list(api.columns) == ["id", "predicted"] and api.equals(cli)
    assert set(api["id"]) == set(list_images(images))
    label_maps = read_sartorius_csv(tmp_path / "api.csv", image.shape[:2])  # decodes, and no overlaps
    assert set(label_maps) == set(api["id"])


def test_wheel_is_pure_python_and_installs_offline(tmp_path):
    """pip wheel on a copy of the sources (the working tree stays clean), then pip install --no-index --no-deps."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "cell_seg", source / "cell_seg", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    result = subprocess.run(pip + ["wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w", str(dist), "."],
                            cwd=source, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1 and wheels[0].name.endswith("-py3-none-any.whl"), wheels

    names = set(zipfile.ZipFile(wheels[0]).namelist())
    sample_images = {f"cell_seg/sample_data/images/{p.name}" for p in (ROOT / "cell_seg/sample_data/images").glob("*.png")}
    assert sample_images and sample_images <= names
    assert {"cell_seg/inference.py", "cell_seg/export.py", "cell_seg/predict.py", "cell_seg/sample_data/demo.yaml",
            "cell_seg/sample_data/dsb2018_sample.json"} <= names
    assert not any(name.startswith("tests/") or name.endswith(".pyc") for name in names)

    target = tmp_path / "site"
    result = subprocess.run(pip + ["install", "--no-index", "--no-deps", "--target", str(target), str(wheels[0])],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    check = (f"import sys; sys.path.insert(0, {str(target)!r}); import cell_seg, cell_seg.inference; "
             "from cell_seg.sample_data import IMAGES_DIR; "
             "print(cell_seg.__file__); print(len(list(IMAGES_DIR.glob('*.png'))))")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env=dict(os.environ, PYTHONPATH=""))
    assert result.returncode == 0, result.stderr[-2000:]
    location, count = result.stdout.split()
    assert Path(location).is_relative_to(target) and int(count) == len(sample_images)
