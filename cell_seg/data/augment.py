"""Augmentation of an image and its instance label map together (albumentations 2).

The label map travels as albumentations' `mask` (int32) and every geometric transform resamples
it with nearest-neighbour interpolation and fills new pixels with 0, so instance ids stay exact:
after augmentation the label values are a subset of those before (plus 0). Targets are built
afterwards from the augmented label map (`cell_seg.data.targets`).

A pipeline is given as a preset name or as a list of transform dicts:

- "none": nothing (a crop only, when `crop_size` is set).
- "light": flips, 90-degree rotations, small brightness/contrast changes.
- "strong": "light" plus `Affine` (zoom 0.75-1.33, rotation, small shift and shear),
  stronger brightness/contrast, gamma, Gaussian blur and Gaussian noise.
- "colour": "strong" plus colour jitter (saturation, hue), channel shuffles, grey conversion
  and inversion, for data mixing fluorescence with brightfield and stained tissue.
- a list such as `[{"name": "HorizontalFlip", "p": 0.5}, {"name": "Affine", "rotate": [-30, 30]}]`:
  `name` is an albumentations class, the other keys its arguments (lists become tuples);
  `{"name": "OneOf", "transforms": [...]}` nests. Unknown names are a `ConfigError`.

Geometric transforms get `mask_interpolation=INTER_NEAREST`, `border_mode=BORDER_CONSTANT`,
`fill=0` and `fill_mask=0` unless the dict says otherwise.

Random crops for training (`crop_size`): the image is zero-padded (centred) when smaller than
the crop, then `CropNonEmptyMaskIfExists` takes a crop around a random cell pixel (a random crop
when there are no cells). The crop is placed after the last geometric transform of the list,
so rotations and zooms see the whole image (no empty corners inside the crop) and pixel-level
transforms only work on the crop.

Stain jitter (`data.stain_jitter`, `jitter_stains`) is not an albumentations transform: it works on
the raw colour image before normalisation (which turns it grey with "grey_dark"), separating the
haematoxylin and eosin of stained tissue by colour deconvolution and changing their amounts.

Images may be uint8 or float32; float images are expected in [0, 1] (pixel-level transforms
assume that range), which is what `cell_seg.preprocess.normalize_image(mode="scale"|"minmax")`
gives.

Seeding: albumentations' own `Compose(seed=...)` seeds every transform with the *same* seed,
which makes e.g. horizontal and vertical flips fire together. Here one shared numpy and one
Python generator drive all transforms instead, seeded from `seed`; a per-call `seed` makes a
call reproducible whatever ran before (used by the generator, so batches do not depend on the
order worker threads run in).
"""

import copy
import inspect
import random
import threading

import cv2
import numpy as np

from cell_seg.data.workers import ThreadStateNotPickled
from cell_seg.errors import ConfigError, DataError
from cell_seg.preprocess import is_stained_colour

_FLIPS = [
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "VerticalFlip", "p": 0.5},
    {"name": "RandomRotate90", "p": 0.5},
]

PRESETS = {
    "none": [],
    "light": _FLIPS + [{"name": "RandomBrightnessContrast", "brightness_limit": 0.1, "contrast_limit": 0.1, "p": 0.5}],
    "strong": _FLIPS
    + [
        {
            "name": "Affine",
            "scale": (0.75, 1.33),
            "rotate": (-45, 45),
            "translate_percent": (-0.05, 0.05),
            "shear": (-5, 5),
            "p": 0.7,
        },
        {"name": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.7},
        {"name": "RandomGamma", "gamma_limit": (80, 120), "p": 0.5},
        {"name": "GaussianBlur", "blur_limit": (3, 5), "p": 0.2},
        {"name": "GaussNoise", "std_range": (0.01, 0.05), "p": 0.3},
    ],
}
# "colour": "strong" plus colour and polarity changes, for data that mixes fluorescence (bright
# nuclei on black), brightfield and stained tissue (dark, purple nuclei on a light background):
# hue/saturation jitter and channel shuffles move stains around, grey conversion removes colour,
# inversion swaps the polarity. Grayscale images (augmented as one channel) only get the last two.
PRESETS["colour"] = PRESETS["strong"] + [
    {"name": "ColorJitter", "brightness": 0.0, "contrast": 0.0, "saturation": 0.3, "hue": 0.1, "p": 0.5},
    {"name": "ChannelShuffle", "p": 0.2},
    {"name": "ToGray", "p": 0.2},
    {"name": "InvertImg", "p": 0.2},
]

_COMPOSE_NAMES = ("OneOf", "SomeOf", "Sequential", "OneOrOther", "SelectiveChannelTransform")
_GEOMETRIC_DEFAULTS = {
    "mask_interpolation": cv2.INTER_NEAREST,
    "border_mode": cv2.BORDER_CONSTANT,
    "fill": 0,
    "fill_mask": 0,
}


#: Optical-density colours of haematoxylin, eosin and DAB (rows; Ruifrok and Johnston 2001), unit length.
STAIN_VECTORS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
STAIN_VECTORS = (STAIN_VECTORS / np.linalg.norm(STAIN_VECTORS, axis=1, keepdims=True)).astype(np.float32)
_UNMIX = np.linalg.inv(STAIN_VECTORS).astype(np.float32)


def scale_stains(image, haematoxylin=1.0, eosin=1.0):
    """`image` (RGB, uint8 or uint16; alpha dropped) with its haematoxylin and eosin amounts multiplied.

    Colour deconvolution: the optical density `-log((I + 1) / (max + 1))` of each pixel is split into
    amounts of the three `STAIN_VECTORS`; the first two are scaled and the pixel is composed again.
    Factors of 1 give the image back (to rounding); below 1 the stain fades, above it darkens.

    Example:
        >>> purple = np.full((1, 1, 3), [120, 60, 160], np.uint8)
        >>> scale_stains(purple)[0, 0], scale_stains(purple, 0.5, 0.5)[0, 0]
        (array([120,  60, 160], dtype=uint8), array([172, 120, 193], dtype=uint8))
    """
    raw = np.asarray(image)
    if raw.dtype not in (np.uint8, np.uint16):
        raise DataError(f"stain scaling needs a uint8 or uint16 RGB image, got {raw.dtype}")
    top = 65535.0 if raw.dtype == np.uint16 else 255.0
    density = -np.log((raw[..., :3].astype(np.float32) + 1) / np.float32(top + 1))
    amounts = density @ _UNMIX
    amounts[..., 0] *= np.float32(haematoxylin)
    amounts[..., 1] *= np.float32(eosin)
    composed = (top + 1) * np.exp(-(amounts @ STAIN_VECTORS)) - 1
    return np.clip(composed + 0.5, 0, top).astype(raw.dtype)


def jitter_stains(image, rng, max_factor):
    """`scale_stains` with haematoxylin and eosin factors drawn independently and log-uniformly between
    `1 / max_factor` and `max_factor` from `rng` (a numpy Generator); `image` unchanged unless it is
    stained colour (`cell_seg.preprocess.is_stained_colour`) of 8 or 16 bits and `max_factor` > 1."""
    integer = np.asarray(image).dtype in (np.uint8, np.uint16)
    if not max_factor or max_factor <= 1 or not integer or not is_stained_colour(image):
        return image
    haematoxylin, eosin = np.exp(rng.uniform(-np.log(max_factor), np.log(max_factor), 2))
    return scale_stains(image, haematoxylin, eosin)


def _albumentations():
    try:
        import albumentations
    except ImportError as error:  # pragma: no cover - albumentations is a dependency
        raise ConfigError("augmentation needs albumentations: pip install 'albumentations>=2.0.8,<2.1'") from error
    return albumentations


def _as_tuples(value):
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    return value


def _build_transform(spec, where):
    """One albumentations transform from a {"name": ..., **kwargs} dict."""
    A = _albumentations()
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"{where}: each augmentation must be a dict with a 'name', got {spec!r}")
    name = spec["name"]
    cls = getattr(A, str(name), None)
    if not (inspect.isclass(cls) and issubclass(cls, (A.BasicTransform, A.BaseCompose))):
        raise ConfigError(f"{where}: unknown augmentation {name!r} (not an albumentations transform)")
    kwargs = {k: _as_tuples(v) for k, v in spec.items() if k != "name"}
    if issubclass(cls, A.BaseCompose):
        children = spec.get("transforms")
        if not isinstance(children, list):
            raise ConfigError(f"{where}: {name} needs a 'transforms' list")
        kwargs["transforms"] = [_build_transform(child, f"{where}.{name}[{i}]") for i, child in enumerate(children)]
    else:
        accepted = inspect.signature(cls.__init__).parameters
        for key, value in _GEOMETRIC_DEFAULTS.items():
            if key in accepted and key not in kwargs:
                kwargs[key] = value
    try:
        return cls(**kwargs)
    except Exception as error:  # albumentations raises pydantic ValidationError, TypeError, ValueError
        message = str(error).strip().splitlines()
        raise ConfigError(f"{where}: bad arguments for {name}: {message[-1] if message else error}") from None


def _is_geometric(transform):
    A = _albumentations()
    if isinstance(transform, A.BaseCompose):
        return any(_is_geometric(t) for t in transform.transforms)
    return not isinstance(transform, A.ImageOnlyTransform)


def _crop_transforms(crop_size):
    A = _albumentations()
    height, width = (crop_size, crop_size) if np.isscalar(crop_size) else crop_size
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise ConfigError(f"crop_size must be positive, got {crop_size!r}")
    return [
        A.PadIfNeeded(
            min_height=height, min_width=width, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1.0
        ),
        A.CropNonEmptyMaskIfExists(height=height, width=width, p=1.0),
    ]


def resolve_spec(spec):
    """The list of transform dicts of a preset name, list, or None ("none")."""
    if spec is None:
        return []
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ConfigError(f"unknown augmentation preset {spec!r} (choose from {', '.join(PRESETS)} or give a list)")
        return copy.deepcopy(PRESETS[spec])
    if isinstance(spec, (list, tuple)):
        return list(spec)
    raise ConfigError(f"augmentation must be a preset name or a list of transforms, got {type(spec).__name__}")


class Augmentation(ThreadStateNotPickled):
    """Callable `(image, label_map, seed=None) -> (image, label_map)` around an albumentations Compose.

    Build it with `build_augmentation`. Thread-safe: each thread uses its own copy of the
    pipeline when calls are seeded.
    """

    _THREAD_STATE = {"_local": threading.local}

    def __init__(self, transforms, seed=None):
        A = _albumentations()
        self.transforms = transforms
        self.seed = seed
        self.compose = A.Compose(transforms, mask_interpolation=cv2.INTER_NEAREST) if transforms else None
        if self.compose is not None:
            self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        self._local = threading.local()

    def __bool__(self):
        return self.compose is not None

    def __call__(self, image, label_map, seed=None):
        """Augment an image (uint8, or float32 in [0, 1]) and its label map together.

        Args:
            image: `H x W` or `H x W x C`.
            label_map: int `H x W` instance labels.
            seed: makes this call reproducible on its own (else the pipeline's running state).

        Returns:
            (image, label_map int32), possibly of the crop size.
        """
        if self.compose is None:
            return image, label_map
        label_map = np.asarray(label_map, np.int32)
        if seed is None:
            compose = self.compose
        else:
            compose = getattr(self._local, "compose", None)
            if compose is None:
                compose = self._local.compose = copy.deepcopy(self.compose)
            compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        out = compose(image=image, mask=label_map)
        return out["image"], np.asarray(out["mask"], np.int32)


def build_augmentation(spec, seed=None, crop_size=None):
    """Build the image + label map augmentation of a preset name or list of transform dicts.

    Args:
        spec: "none", "light", "strong", None, or a list of {"name": ..., **kwargs} dicts.
        seed: seeds the pipeline (None: fresh entropy).
        crop_size: int or (height, width): random crop of that size, preferring cells (see module).

    Returns:
        `Augmentation`, a callable `(image, label_map, seed=None) -> (image, label_map)`.

    Raises:
        ConfigError: unknown preset or transform name, or bad transform arguments.

    Example:
        >>> augment = build_augmentation("light", seed=0, crop_size=32)
        >>> image, label_map = augment(np.zeros((40, 50), np.uint8), np.ones((40, 50), np.int32))
        >>> image.shape, label_map.shape, label_map.dtype
        ((32, 32), (32, 32), dtype('int32'))
    """
    specs = resolve_spec(spec)
    transforms = [_build_transform(item, f"augmentation[{i}]") for i, item in enumerate(specs)]
    if crop_size is not None:
        last_geometric = max((i for i, t in enumerate(transforms) if _is_geometric(t)), default=-1)
        transforms[last_geometric + 1 : last_geometric + 1] = _crop_transforms(crop_size)
    return Augmentation(transforms, seed=seed)
