"""What a trained model carries beside its weights: `ModelMetadata`, read, checked and written here only.

A training run writes `runs/<name>/metadata.json`; an export copies it into
`<export>/assets/metadata.json` with a few facts of its own. Both hold what prediction needs to
turn a raw image into instances the way the model was trained and tuned:

- `channels`, `class_names`: the output channels (e.g. `["foreground", "border"]`) and the
  categories of the training data;
- `normalization` (`{"mode", "mean", "std"}`), `in_channels`, `stride`, `scale`: how an image
  becomes the network's input (`cell_seg.preprocess`);
- `postprocess`: the post-processing settings (`cell_seg.postprocess.PostprocessConfig`); a run's
  tuned `postprocess.json` takes their place (`postprocess_tuned` says which you have);
- `tta`: whether prediction averages the 8 flips/rotations by default;
- `scale_by_kind`: `{kind: scale}` used instead of `scale` for images of that kind
  (`cell_seg.data.convert.image_modality`: fluorescence, brightfield or histology), e.g. small
  fluorescent nuclei enlarged 1.5x by a model trained at 1x;
- `target_diameter`: the size rule instead of one scale (`cell_seg.inference.Predictor`): each
  image is predicted at the factor that brings the median diameter of the objects found in it
  to this many pixels (`data.target_diameter` of a run trained that way, or set at export);
- `config`: the training config (runs); `version` of cell_seg that wrote it; export facts
  (`trained_with_version`, `exported_from`, `signatures`, `output`, `weights_dtype`).

Keys this version does not know are kept and written back, so an older cell_seg can read a
newer file and a newer one an older file.

Example:
    >>> meta = ModelMetadata(channels=["foreground", "border"], normalization={"mode": "minmax"})
    >>> meta.postprocess.mode, meta.scale, meta.tta
    ('auto', 1.0, False)
    >>> ModelMetadata.from_dict(meta.to_dict()) == meta
    True
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from cell_seg.errors import CellSegError, DataError, ModelError
from cell_seg.files import write_json_atomic
from cell_seg.postprocess import PostprocessConfig
from cell_seg.preprocess import NORMALIZATION_MODES, check_normalization

FILENAME = "metadata.json"
TUNED_FILENAME = "postprocess.json"
#: The image kinds `scale_by_kind` may name (what `cell_seg.data.convert.image_modality` returns).
IMAGE_KINDS = ("fluorescence", "brightfield", "histology")
REQUIRED_KEYS = ("channels", "normalization", "in_channels", "stride")
EXPORT_HINT = "export the model again with python -m cell_seg.export"
RUN_HINT = "a .keras file needs the metadata.json its training run wrote beside it"


@dataclass
class ModelMetadata:
    """The metadata of a trained model (see the module docstring for each field)."""

    channels: list
    normalization: dict
    in_channels: int = 3
    stride: int = 32
    scale: float = 1.0
    class_names: list = field(default_factory=list)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    postprocess_tuned: bool = False
    tta: bool = False
    scale_by_kind: dict = field(default_factory=dict)
    target_diameter: Optional[float] = None
    version: Optional[str] = None
    config: Optional[dict] = None
    trained_with_version: Optional[str] = None
    exported_from: Optional[str] = None
    signatures: Optional[dict] = None
    output: Optional[str] = None
    weights_dtype: Optional[str] = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.normalization = {"mode": None, "mean": None, "std": None, **dict(self.normalization or {})}
        if isinstance(self.postprocess, dict):
            self.postprocess = PostprocessConfig.from_dict(self.postprocess)
        elif self.postprocess is None:
            self.postprocess = PostprocessConfig()
        self.validate()

    def validate(self):
        """Raise `ModelError` listing what is wrong (without the file; `read` adds it)."""
        problems = []
        channels = self.channels
        if not (isinstance(channels, list) and channels and all(isinstance(c, str) for c in channels)):
            problems.append("channels must be a non-empty list of names")
        if self.in_channels not in (1, 3) or isinstance(self.in_channels, bool):
            problems.append("in_channels must be 1 or 3")
        elif self.normalization["mode"] not in NORMALIZATION_MODES:
            problems.append(f"normalization.mode must be one of {', '.join(NORMALIZATION_MODES)}, "
                            f"not {self.normalization['mode']!r}")
        else:
            try:
                check_normalization(self.normalization["mode"], self.normalization["mean"], self.normalization["std"],
                                    self.in_channels)
            except CellSegError as error:
                problems.append(str(error))
        if not (isinstance(self.stride, int) and not isinstance(self.stride, bool) and self.stride >= 1):
            problems.append("stride must be a positive integer")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not self.scale > 0:
            problems.append("scale must be a positive number")
        if not isinstance(self.scale_by_kind, dict) or any(
                kind not in IMAGE_KINDS or isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
                for kind, value in self.scale_by_kind.items()):
            problems.append(f"scale_by_kind must map image kinds ({', '.join(IMAGE_KINDS)}) to positive numbers")
        target = self.target_diameter
        if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float)) or not target > 0):
            problems.append("target_diameter must be a positive number (or absent)")
        elif target is not None and self.scale_by_kind:
            problems.append("scale_by_kind and target_diameter exclude each other")
        if not isinstance(self.tta, bool):
            problems.append("tta must be true or false")
        if problems:
            raise ModelError("; ".join(problems))

    # --- conversions ---

    def to_dict(self):
        """The JSON object `metadata.json` holds (unset optional facts left out)."""
        out = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name == "extra":
                continue
            if item.name == "postprocess":
                value = value.to_dict()
            if value is None or (item.name == "scale_by_kind" and not value):
                continue
            out[item.name] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data):
        """Build from a `metadata.json` object; `ModelError` names what is missing or wrong."""
        if not isinstance(data, dict):
            raise ModelError("not a JSON object")
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise ModelError(f"lacks {', '.join(missing)}")
        names = {item.name for item in dataclasses.fields(cls)} - {"extra"}
        known = {key: value for key, value in data.items() if key in names}
        extra = {key: value for key, value in data.items() if key not in names}
        known["class_names"] = list(known.get("class_names") or [])
        if not isinstance(known["normalization"], dict):
            raise ModelError("normalization must be an object with a mode")
        try:
            known["postprocess"] = PostprocessConfig.from_dict(known.get("postprocess") or {})
        except CellSegError as error:
            raise ModelError(f"postprocess: {error}") from None
        return cls(**known, extra=extra)

    @classmethod
    def for_training(cls, config, channels, class_names, stride):
        """What `cell_seg.train` writes for a run of `config` (a `cell_seg.config.Config`).

        The post-processing starts as the config's `eval.mode` and `eval.postprocess`; tuning after
        training writes `postprocess.json` beside it, which then takes its place.
        """
        from cell_seg import __version__

        data, evaluation = config.data, config.eval
        return cls(
            channels=list(channels),
            class_names=list(class_names),
            normalization={"mode": data.normalization, "mean": data.mean, "std": data.std},
            in_channels=config.model.in_channels,
            stride=max(int(stride), 32),
            scale=float(data.scale),
            target_diameter=data.target_diameter,
            postprocess=PostprocessConfig.from_dict({**evaluation.postprocess, "mode": evaluation.mode}),
            version=__version__,
            config=config.to_dict(),
        )

    def replace(self, **changes):
        """A copy with `changes` applied (checked again)."""
        return dataclasses.replace(self, **changes)

    # --- files ---

    @classmethod
    def read(cls, path, hint=EXPORT_HINT):
        """Read and check a `metadata.json` file; `ModelError` naming the file and the problem."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelError(f"{path}: metadata.json is missing; {hint}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelError(f"{path}: metadata.json is damaged (not valid JSON: {error}); {hint}") from None
        try:
            return cls.from_dict(data)
        except ModelError as error:
            raise ModelError(f"{path}: metadata.json is damaged ({error}); {hint}") from None

    @classmethod
    def read_run(cls, run_dir):
        """The metadata of a training run, with its tuned `postprocess.json` when there is one."""
        run_dir = Path(run_dir)
        metadata = cls.read(run_dir / FILENAME, hint=RUN_HINT)
        tuned = run_dir / TUNED_FILENAME
        if tuned.is_file():
            try:
                settings = json.loads(tuned.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise DataError(f"not valid JSON ({getattr(error, 'msg', error)})", file=tuned) from None
            try:
                metadata = metadata.replace(postprocess=PostprocessConfig.from_dict(settings), postprocess_tuned=True)
            except CellSegError as error:
                raise DataError(str(error), file=tuned) from None
        return metadata

    @classmethod
    def of_model(cls, path):
        """The metadata of a run directory, a `.keras` file (its run's) or an exported SavedModel,
        read without loading the model (no TensorFlow)."""
        path = Path(path)
        if not path.exists():
            raise DataError("model not found", file=path)
        if path.is_dir() and (path / "saved_model.pb").is_file():
            return cls.read(path / "assets" / FILENAME)
        if path.suffix == ".keras":
            return cls.read_run(path.parent if (path.parent / FILENAME).is_file() else path.parent.parent)
        return cls.read_run(path)

    def write(self, path):
        """Write atomically as JSON."""
        write_json_atomic(self.to_dict(), path, indent=2)
