"""Config loading, overrides and the errors that name the bad key."""

import filecmp
from pathlib import Path

import pytest

from cell_seg.config import Config, load_config
from cell_seg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_set_typed_values():
    config = load_config(None, ["train.epochs=5", "model.backbone=efficientnetb3", "data.channels=[foreground]",
                                "data.crop_size=null", "train.learning_rate=1e-4"])
    assert config.train.epochs == 5
    assert config.model.backbone == "efficientnetb3"
    assert config.data.channels == ["foreground"]
    assert config.data.crop_size is None
    assert config.train.learning_rate == pytest.approx(1e-4)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown config key 'train.epoch' (did you mean train.epochs?)"),
        ("model.name=resnet", "config key 'model.name' must be one of"),
        ("train.epochs=abc", "config key 'train.epochs' must be an integer"),
        ("data.channels=[foreground, edges]", "'data.channels' has unknown channel 'edges'"),
        ("train.learning_rate=-1", "'train.learning_rate' must be positive"),
        ("nonsense", "not of the form key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_yaml_file_and_unknown_section_key(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("name: x\ntrain:\n  epochs: 3\n  batchsize: 2\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.batchsize'"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_every_shipped_config_loads():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert isinstance(load_config(path), Config), path


def test_packaged_demo_config_matches_configs_demo():
    assert filecmp.cmp(ROOT / "configs" / "demo.yaml", ROOT / "cell_seg" / "sample_data" / "demo.yaml", shallow=False)


def test_mixed_precision_accepts_float16_bfloat16_and_booleans():
    from cell_seg.config import mixed_precision_policy

    policies = {value: mixed_precision_policy(load_config(None, [f"train.mixed_precision={value}"]).train.mixed_precision)
                for value in ("false", "true", "float16", "bfloat16")}
    assert policies == {"false": None, "true": "mixed_float16", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
    with pytest.raises(ConfigError, match="train.mixed_precision"):
        load_config(None, ["train.mixed_precision=float8"])
