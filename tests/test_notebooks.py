"""Notebooks 01 (explore) and 02 (train) run top to bottom on the demo data with tiny settings, and
every notebook is stored without outputs."""

import json
import os
from pathlib import Path

import pytest

from cell_seg.data.synthetic import write_synthetic_kaggle

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def execute(name, monkeypatch, **settings):
    """Run a notebook in a fresh python3 kernel (cwd: notebooks/) with `CELL_SEG_<KEY>` settings;
    returns the executed notebook. A failing cell raises nbclient's CellExecutionError."""
    import nbclient
    import nbformat

    for key, value in settings.items():
        monkeypatch.setenv(f"CELL_SEG_{key.upper()}", str(value))
    # The kernel imports the working tree, installed or not; TensorFlow stays quiet.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    return notebook


def text_of(notebook):
    """All printed text and plain-text results of the executed notebook."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output["text"])
            elif "text/plain" in output.get("data", {}):
                parts.append(output["data"]["text/plain"])
    return "\n".join(parts)


def n_images(notebook):
    return sum("image/png" in o.get("data", {}) for cell in notebook.cells for o in cell.get("outputs", []))


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path):
    notebook = json.loads(path.read_text())
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"cell {index} has outputs"
            assert cell.get("execution_count") is None, f"cell {index} has an execution count"


def test_notebook_01_explores_the_demo_data(monkeypatch, tmp_path):
    notebook = execute("01_explore_data.ipynb", monkeypatch, kaggle_dir=tmp_path / "absent", n_examples=2)
    text = text_of(notebook)
    assert "exploring the embedded DSB2018 demo sample" in text
    assert "20 images, 796 instances" in text
    assert "grouping by 'modality'" in text
    assert "components-only ceiling: mAP" in text
    assert "Thresh" in text and "AP" in text
    assert n_images(notebook) >= 4  # overview, examples, merge scatter, comparison


def test_notebook_01_converts_kaggle_data_when_given(monkeypatch, tmp_path):
    write_synthetic_kaggle(tmp_path / "kaggle", n_images=3, shape=(64, 80), seed=1, cells=(4, 8))
    coco_out = tmp_path / "out" / "sartorius.json"
    notebook = execute("01_explore_data.ipynb", monkeypatch, kaggle_dir=tmp_path / "kaggle", coco_out=coco_out,
                       n_examples=2)
    assert f"wrote {coco_out}: 3 images" in text_of(notebook)
    assert len(json.loads(coco_out.read_text())["images"]) == 3
    assert "grouping by 'class'" in text_of(notebook)


@pytest.mark.slow
def test_notebook_02_trains_evaluates_and_compares(monkeypatch, tmp_path):
    run_dir = tmp_path / "run"
    notebook = execute(
        "02_train.ipynb", monkeypatch, epochs=1, steps=2, architecture="unet_plain", run_dir=run_dir, n_show=2,
        overrides="model.filters=4 model.depth=2 data.crop_size=64 data.batch_size=2 data.max_val_images=2",
    )
    for name in ("config.yaml", "model.keras", "history.csv", "metrics.json", "postprocess.json"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["images"] == 2 and set(metrics["modes"]) == {"components", "watershed"}
    text = text_of(notebook)
    assert "1 epochs x 2 steps" in text
    assert text.count("Thresh") == 2  # one score table per image shown
    assert n_images(notebook) >= 4  # curves, class scores, two comparisons
