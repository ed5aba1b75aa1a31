"""Load a trained model from any of its forms and turn raw images into probabilities and instances.

`Predictor.load(path)` accepts a run directory, a `.keras` file or an exported SavedModel
directory. The SavedModel path needs only TensorFlow, numpy and OpenCV: this module never
imports segmentation-models, albumentations or pycocotools at import time (the offline Kaggle
notebook relies on that).
"""

import json
from pathlib import Path

import numpy as np

from cell_seg.errors import DataError, ModelError
from cell_seg.preprocess import crop_to, normalize_image, pad_to_multiple

METADATA_KEYS = ("channels", "normalization", "in_channels", "stride")


def _read_metadata(path):
    try:
        metadata = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: metadata.json is missing; export the model again with python -m cell_seg.export") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{path}: metadata.json is damaged (not valid JSON)") from None
    missing = [key for key in METADATA_KEYS if key not in metadata]
    if missing:
        raise ModelError(f"{path}: metadata.json lacks {', '.join(missing)}")
    return metadata


def check_image(image, name="image"):
    """Raise DataError unless `image` is a uint8/uint16 (or float) array of rank 2 or 3 with 1, 3 or 4 channels."""
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise DataError(f"unsupported image dtype {image.dtype} (use uint8, uint16 or float)", file=name)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise DataError(f"unsupported image shape {image.shape} (use H x W or H x W x 1/3/4)", file=name)
    return image


class Predictor:
    """Raw image in, probability maps and instances out.

    Example:
        >>> predictor = Predictor.load("runs/demo")              # doctest: +SKIP
        >>> probs = predictor.predict_probs(image)                # H x W x K float32
        >>> labels, instances = predictor.predict_instances(image)
    """

    def __init__(self, call, metadata, postprocess=None, source=None, keras_model=None):
        self._call = call
        self.metadata = metadata
        self.channels = list(metadata["channels"])
        self.class_names = list(metadata.get("class_names", []))
        self.postprocess = postprocess if postprocess is not None else metadata.get("postprocess") or {}
        self.source = source
        self.keras_model = keras_model

    # --- loading ---

    @classmethod
    def load(cls, path):
        """Load from a run directory, a `.keras` file or a SavedModel directory."""
        path = Path(path)
        if not path.exists():
            raise DataError("model not found", file=path)
        if path.is_dir() and (path / "saved_model.pb").is_file():
            return cls._load_saved_model(path)
        if path.is_dir():
            keras_file = path / "model.keras"
            if not keras_file.is_file():
                raise ModelError(f"{path}: neither a run directory (no model.keras) nor a SavedModel (no saved_model.pb)")
            return cls._load_keras(keras_file, path)
        if path.suffix == ".keras":
            run_dir = path.parent if (path.parent / "metadata.json").is_file() else path.parent.parent
            return cls._load_keras(path, run_dir)
        raise ModelError(f"{path}: expected a run directory, a .keras file or a SavedModel directory")

    @classmethod
    def _load_keras(cls, keras_file, run_dir):
        from cell_seg.models import load_model

        metadata = _read_metadata(Path(run_dir) / "metadata.json")
        tuned = Path(run_dir) / "postprocess.json"
        postprocess = json.loads(tuned.read_text()) if tuned.is_file() else None
        model = load_model(keras_file)
        stride = int(metadata["stride"])
        norm = metadata["normalization"]

        def call(image):
            x = normalize_image(image, norm["mode"], norm.get("mean"), norm.get("std"), int(metadata["in_channels"]))
            padded, _ = pad_to_multiple(x, stride)
            y = model(padded[None], training=False)
            return crop_to(np.asarray(y)[0], image.shape[:2]).astype(np.float32)

        return cls(call, metadata, postprocess, source=str(keras_file), keras_model=model)

    @classmethod
    def _load_saved_model(cls, path):
        import tensorflow as tf

        metadata = _read_metadata(path / "assets" / "metadata.json")
        loaded = tf.saved_model.load(str(path))
        if "serve_image" not in loaded.signatures:
            raise ModelError(f"{path}: SavedModel has no serve_image signature; export it with python -m cell_seg.export")
        serve = loaded.signatures["serve_image"]

        def call(image):
            dtype = tf.uint16 if image.dtype == np.uint16 else tf.uint8
            if image.dtype not in (np.uint8, np.uint16):
                raise DataError(f"SavedModel input must be uint8 or uint16, not {image.dtype}")
            image3 = image if image.ndim == 3 else image[..., None]
            out = serve(image=tf.constant(image3, dtype=dtype))
            return out["probabilities"].numpy()

        predictor = cls(call, metadata, metadata.get("postprocess"), source=str(path))
        predictor._saved_model = loaded  # keep the trackable alive
        return predictor

    # --- prediction ---

    def predict_probs(self, image, tta=False):
        """Probability maps H x W x K for one raw image (uint8/uint16, H x W or H x W x C).

        tta=True averages the 8 dihedral transforms (flips and 90-degree rotations).
        """
        image = check_image(image)
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[..., :3]
        if not tta:
            return self._call(image)
        total = None
        for k in range(4):
            for flip in (False, True):
                view = np.rot90(image, k)
                view = view[:, ::-1] if flip else view
                out = self._call(np.ascontiguousarray(view))
                out = out[:, ::-1] if flip else out
                out = np.rot90(out, -k)
                total = out if total is None else total + out
        return (total / 8).astype(np.float32)

    def predict_instances(self, image, mode=None, postprocess=None, tta=False):
        """(label_map, instances) with the model's tuned post-processing unless overridden."""
        from cell_seg.postprocess import PostprocessConfig, to_instances

        settings = dict(self.postprocess)
        settings.update(postprocess or {})
        mode = mode or settings.pop("mode", None) or ("watershed" if "border" in self.channels else "components")
        settings.pop("mode", None)
        probs = self.predict_probs(image, tta=tta)
        return to_instances(probs, self.channels, mode=mode, config=PostprocessConfig.from_dict(settings))
