"""Tests of cell_seg.metadata: the model's metadata as one typed object, and the defaults it carries."""

import json

import numpy as np
import pytest

from cell_seg.config import config_from_dict
from cell_seg.errors import DataError, ModelError
from cell_seg.metadata import ModelMetadata
from cell_seg.postprocess import PostprocessConfig

BASE = {"channels": ["foreground", "border"], "normalization": {"mode": "minmax"}, "in_channels": 3, "stride": 32}


def test_round_trip_keeps_unknown_keys_and_fills_defaults(tmp_path):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({**BASE, "made_by": "a newer cell_seg", "postprocess": {"fg_threshold": 0.7}}))
    meta = ModelMetadata.read(path)
    assert meta.postprocess == PostprocessConfig(fg_threshold=0.7) and meta.tta is False and meta.scale == 1.0
    assert meta.normalization == {"mode": "minmax", "mean": None, "std": None}
    meta.write(path)
    written = json.loads(path.read_text())
    assert written["made_by"] == "a newer cell_seg" and written["postprocess"]["fg_threshold"] == 0.7


@pytest.mark.parametrize("change, words", [
    ({"channels": []}, "channels"),
    ({"in_channels": 2}, "in_channels"),
    ({"stride": 0}, "stride"),
    ({"normalization": {"mode": "standard"}}, "mean and std"),
    ({"normalization": {"mode": "zscore"}}, "normalization"),
    ({"tta": "yes"}, "tta"),
    ({"postprocess": {"fg_threshold": 3}}, "fg_threshold"),
    ({"postprocess": {"fg_treshold": 0.3}}, "fg_treshold"),
])
def test_bad_metadata_names_the_file_and_the_field(tmp_path, change, words):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({**BASE, **change}))
    with pytest.raises(ModelError, match=words) as caught:
        ModelMetadata.read(path)
    assert str(path) in str(caught.value)
    path.write_text(json.dumps({key: value for key, value in BASE.items() if key != "stride"}))
    with pytest.raises(ModelError, match="lacks stride"):
        ModelMetadata.read(path)


def test_a_runs_tuned_postprocess_json_takes_the_metadatas_place(tmp_path):
    (tmp_path / "metadata.json").write_text(json.dumps({**BASE, "postprocess": {"mode": "components"}}))
    meta = ModelMetadata.read_run(tmp_path)
    assert meta.postprocess.mode == "components" and not meta.postprocess_tuned
    (tmp_path / "postprocess.json").write_text(json.dumps({"mode": "watershed", "min_area": 40}))
    meta = ModelMetadata.read_run(tmp_path)
    assert meta.postprocess == PostprocessConfig(mode="watershed", min_area=40) and meta.postprocess_tuned
    (tmp_path / "postprocess.json").write_text(json.dumps({"min_aera": 40}))
    with pytest.raises(DataError, match="min_aera") as caught:
        ModelMetadata.read_run(tmp_path)
    assert "postprocess.json" in str(caught.value)


def test_training_metadata_starts_from_the_eval_section():
    config = config_from_dict({"data": {"scale": 2.0, "normalization": "minmax"},
                               "eval": {"mode": "components", "postprocess": {"min_area": 30}}})
    meta = ModelMetadata.for_training(config, ["foreground", "border"], ["cell"], stride=16)
    assert meta.postprocess == PostprocessConfig(mode="components", min_area=30)
    assert meta.stride == 32 and meta.scale == 2.0 and meta.class_names == ["cell"] and not meta.postprocess_tuned
    assert ModelMetadata.from_dict(meta.to_dict()) == meta
    assert ModelMetadata.for_training(config_from_dict({}), ["foreground"], [], 32).postprocess.mode == "auto"


def test_predictor_defaults_come_from_the_metadata_and_calls_override_them():
    from cell_seg.inference import Predictor

    calls = []

    def model(x):
        calls.append(x.shape)
        return np.repeat(x[..., :1], 2, axis=-1) * np.array([1.0, 0.0], np.float32)

    image = np.zeros((20, 30), np.uint8)
    image[5:15, 5:25] = 255
    meta = ModelMetadata.from_dict({**BASE, "normalization": {"mode": "scale"}, "tta": True,
                                    "postprocess": {"mode": "components", "min_area": 500}})
    predictor = Predictor(meta, model)
    assert predictor.tta and predictor.postprocess.min_area == 500
    predictor.predict_probs(image)
    assert len(calls) == 8  # the model's default: the 8 flips/rotations
    calls.clear()
    labels, instances = predictor.predict_instances(image, tta=False)
    assert len(calls) == 1 and instances == []  # 200 pixels < min_area 500
    labels, instances = predictor.predict_instances(image, tta=False, postprocess={"min_area": 10})
    assert [inst["area"] for inst in instances] == [200]
    override = Predictor(meta, model, postprocess=PostprocessConfig(min_area=1), tta=False)
    assert override.postprocess.min_area == 1 and not override.tta


def test_export_metadata_sets_tta_and_keeps_the_runs_facts():
    from cell_seg.export import export_metadata
    from cell_seg.inference import Predictor

    meta = ModelMetadata.from_dict({**BASE, "version": "0.0.9", "config": {"name": "x"}})
    predictor = Predictor(meta, lambda x: x, postprocess={"fg_threshold": 0.6})
    exported = export_metadata(predictor, "runs/x", "float16", tta=True)
    assert exported.tta and exported.weights_dtype == "float16" and exported.trained_with_version == "0.0.9"
    assert exported.postprocess.fg_threshold == 0.6 and exported.config == {"name": "x"}
    assert export_metadata(predictor, "runs/x").tta is False
