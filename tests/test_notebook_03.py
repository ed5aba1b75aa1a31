"""notebooks/03_kaggle_offline_inference.ipynb runs top to bottom on a tiny exported model and demo images.

The notebook reads its paths from environment variables (with Kaggle defaults) in its first code
cell; the kernel inherits them from this process.
"""

import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from cell_seg.config import load_config
from cell_seg.data.synthetic import write_synthetic_coco

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "03_kaggle_offline_inference.ipynb"
TINY = [
    "model.name=unet_plain", "model.filters=4", "model.depth=2",
    "data.crop_size=64", "data.batch_size=2", "data.steps_per_epoch=2", "data.augment=none",
    "train.epochs=1", "train.verbose=0", "eval.tune=false", "data.val_fraction=0.4",
]


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    first = code[0].source
    for variable in ("CELL_SEG_MODEL", "CELL_SEG_WHEEL", "CELL_SEG_TEST_IMAGES", "CELL_SEG_SUBMISSION"):
        assert variable in first  # every path is set in the first code cell


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny model trained on synthetic cells and exported (TF-only SavedModel)."""
    from cell_seg.export import export_model
    from cell_seg.train import run

    root = tmp_path_factory.mktemp("synthetic")
    coco = write_synthetic_coco(root, n_images=5, shape=(96, 112), seed=9, cells=(4, 8))
    out = tmp_path_factory.mktemp("runs") / "tiny"
    run(load_config(None, TINY + [f"data.coco={coco}", f"data.images={root / 'images'}", f"out_dir={out}"]),
        evaluate_after=False)
    return export_model(out, tmp_path_factory.mktemp("export") / "saved_model", check=False)


def test_notebook_runs_and_writes_a_submission(saved_model, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    from cell_seg.sample_data import IMAGES_DIR

    images = tmp_path / "test"
    images.mkdir()
    for path in sorted(IMAGES_DIR.glob("*.png"))[:3]:
        shutil.copy(path, images / path.name)
    submission = tmp_path / "working" / "submission.csv"
    monkeypatch.setenv("CELL_SEG_MODEL", str(saved_model))
    monkeypatch.setenv("CELL_SEG_WHEEL", str(tmp_path / "no-wheel-needed.whl"))  # cell_seg is importable here
    monkeypatch.setenv("CELL_SEG_TEST_IMAGES", str(images))
    monkeypatch.setenv("CELL_SEG_SUBMISSION", str(submission))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()

    frame = pd.read_csv(submission, keep_default_na=False)
    assert list(frame.columns) == ["id", "predicted"]
    assert set(frame["id"]) == {p.stem for p in images.glob("*.png")}
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert any("image/png" in output.get("data", {}) for output in outputs)  # the overlay figure
    text = "".join(output.get("text", "") for output in outputs)
    assert "3 test images" in text
    for package in ("segmentation_models", "albumentations", "pycocotools"):
        assert f"'{package}': False" in text  # nothing in the notebook needed them
