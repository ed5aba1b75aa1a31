"""A run split into float16 weight pieces (as the GPU kit returns it) and rebuilt into a run directory."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from cell_seg.data.synthetic import write_synthetic_coco
from cell_seg.errors import DataError
from cell_seg.files import read_json
from cell_seg.weight_pieces import read_weight_pieces, rebuild_run, save_weight_pieces


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory of a tiny (untrained) unet_plain: config.yaml, metadata.json, history.csv, model."""
    import keras

    from cell_seg.config import load_config, save_config
    from cell_seg.models import build_model

    root = tmp_path_factory.mktemp("pieces")
    coco = write_synthetic_coco(root / "data", n_images=2, shape=(64, 80), seed=1, cells=(3, 5))
    config = load_config(None, ["model.name=unet_plain", "model.filters=4", "model.depth=2",
                                f"data.coco={coco}", f"data.images={root / 'data' / 'images'}"])
    run_dir = root / "run"
    run_dir.mkdir()
    save_config(config, run_dir / "config.yaml")
    metadata = {"channels": ["foreground", "border"], "normalization": {"mode": "scale"}, "in_channels": 3,
                "stride": 32, "class_names": ["cell"], "config": config.to_dict()}
    (run_dir / "metadata.json").write_text(json.dumps(metadata))
    (run_dir / "history.csv").write_text("epoch,loss\n0,1.0\n")
    keras.utils.set_random_seed(0)
    model = build_model(config.model, 2)
    # Move the BatchNorm statistics off their initial values, so that their transfer is tested.
    for variable in model.non_trainable_weights:
        if "moving_variance" in variable.path:
            variable.assign(np.full(variable.shape, 0.37, "float32"))
    return SimpleNamespace(root=root, run_dir=run_dir, model=model, coco=coco, images=root / "data" / "images")


def test_pieces_hold_float16_weights_under_the_size_limit(tiny_run, tmp_path):
    manifest = save_weight_pieces(tiny_run.model, tmp_path, run_dir=tiny_run.run_dir, max_piece_bytes=4096,
                                  extra={"epoch": 3})
    assert len(manifest["pieces"]) > 1
    assert all((tmp_path / p["name"]).stat().st_size <= 4096 for p in manifest["pieces"])
    assert set(manifest["files"]) == {"config.yaml", "metadata.json", "history.csv"}
    stored = {v["stored"] for v in manifest["variables"] if "kernel" in v["path"]}
    assert stored == {"float16"}
    assert any(v["stored"] == "float32" for v in manifest["variables"] if "moving_variance" in v["path"])
    _, arrays = read_weight_pieces(tmp_path)
    for variable, array in zip(tiny_run.model.weights, arrays):
        np.testing.assert_allclose(array.astype("float32"), np.asarray(variable.numpy()), rtol=1e-3, atol=1e-4)


def test_a_second_snapshot_goes_to_the_other_slot_and_a_damaged_piece_is_refused(tiny_run, tmp_path):
    first = save_weight_pieces(tiny_run.model, tmp_path, max_piece_bytes=4096)
    second = save_weight_pieces(tiny_run.model, tmp_path, max_piece_bytes=4096)
    assert {first["slot"], second["slot"]} == {"a", "b"}
    piece = tmp_path / second["pieces"][0]["name"]
    piece.write_bytes(b"x" + piece.read_bytes()[1:])
    with pytest.raises(DataError, match="SHA-256"):
        read_weight_pieces(tmp_path)


@pytest.mark.slow
def test_rebuilt_run_predicts_evaluates_and_exports(tiny_run, tmp_path):
    from cell_seg.evaluate import evaluate_run
    from cell_seg.export import export_model
    from cell_seg.inference import Predictor

    pieces = tmp_path / "pieces"
    save_weight_pieces(tiny_run.model, pieces, run_dir=tiny_run.run_dir, max_piece_bytes=8192)
    run = rebuild_run(pieces, tmp_path / "rebuilt")
    assert (run / "model.keras").is_file() and (run / "history.csv").is_file()
    image = np.random.default_rng(0).integers(0, 255, (64, 96), dtype=np.uint8)  # no padding
    expected = np.asarray(tiny_run.model(image[None, ..., None].repeat(3, -1) / np.float32(255), training=False))[0]
    probs = Predictor.load(run).predict_probs(image)
    np.testing.assert_allclose(probs, expected, atol=2e-2)  # float16 kernels
    evaluate_run(run, coco=read_json(tiny_run.coco), images=tiny_run.images, tune=True)
    assert (run / "postprocess.json").is_file() and (run / "metrics.json").is_file()
    exported = export_model(run, tmp_path / "exported")
    np.testing.assert_allclose(Predictor.load(exported).predict_probs(image), probs, atol=1e-4)
    with pytest.raises(DataError, match="already holds a run"):
        rebuild_run(pieces, run)
