"""Probability maps to instance label maps: thresholds, connected components or watershed.

The network predicts per-pixel probabilities (`H x W x C`, channels named e.g.
`["foreground", "border", "class_astro", ...]`). This module turns them into the project's one
currency, an `int32` instance label map (0 = background, 1..N = instances), plus a side table of
score, area, box and class per instance.

Four modes:

- `components`: connected components of `foreground > fg_threshold`. Touching cells merge.
- `watershed`: seeds are connected components of `(foreground > fg_threshold) & (border <
  border_threshold)`, optionally eroded; they grow over the foreground mask (each pixel to
  the geodesically nearest seed, with OpenCV's marker watershed), so touching cells separated
  by a predicted border come out separate. Without a border channel the seeds are the eroded
  foreground (`seed_erosion`). Foreground components holding no seed become instances of
  their own (`keep_unseeded=True`, the default) or are dropped; watershed lines go to the
  seed they touch, so the foreground is covered exactly (see `_watershed`).
- `distance`: for models with a "distance" channel (per-instance distance to the outline over its
  maximum, `cell_seg.data.targets`): seeds are connected components of `(foreground >
  fg_threshold) & (distance > distance_threshold)`, the cores of the cells, which stay apart
  where cells touch because the distance falls to 0 along every contact. They grow as in the
  watershed mode, but first band by band down the distance map (`distance_levels` bands
  between `distance_threshold` and 0, each flooded from what the previous one reached), so the
  line between touching cells falls in the valley of the distance map, as with a watershed on
  `-distance`, rather than halfway between the cores.
- `centre`: for models with a "centre" channel (one peak per cell, falling along the path inside
  it, `cell_seg.data.targets.centre_map`): seeds are connected components of `(foreground >
  fg_threshold) & (centre > centre_threshold)`, one per cell even where a cell has lobes that the
  distance map gives cores of their own; with a "distance" channel too the seeds also need
  `distance > distance_threshold` (which keeps them off the contacts, where the centre map of two
  cells need not fall) and grow band by band down the distance map as in `distance` mode; without
  one they grow down the centre map.

In the watershed modes, seeds smaller than `min_seed_area` pixels are dropped before growing
(their pixels go to a neighbouring seed, or form an instance of their own when nothing else
reaches them and `keep_unseeded`).

Then, in every mode: hole filling, minimum area, minimum score, optional dilation into the
background, relabelling 1..N. Everything is computed for all instances at once (connected
components, `np.bincount`, OpenCV morphology); nothing loops over instances on full-size arrays.

Only numpy and OpenCV are needed, not even pycocotools (this runs in the offline Kaggle notebook).

Example:
    >>> probs = np.zeros((8, 12, 2), np.float32)
    >>> probs[2:6, 1:11, 0] = 0.9          # one blob of foreground ...
    >>> probs[2:6, 5:7, 1] = 0.9           # ... cut in two by a border line
    >>> labels, instances = to_instances(probs, ["foreground", "border"], mode="watershed", min_area=1)
    >>> len(instances), sorted(np.unique(labels).tolist())
    (2, [0, 1, 2])
    >>> labels, instances = to_instances(probs, ["foreground", "border"], mode="components", min_area=1)
    >>> len(instances), instances[0]["bbox"]
    (1, [1, 2, 10, 4])
"""

import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np

from cell_seg.data import labels as label_ops
from cell_seg.errors import ConfigError, DataError

MODES = ("components", "watershed", "distance", "centre", "auto")
INSTANCE_MODES = MODES[:-1]  # the modes "auto" chooses among (what --mode / --modes accept)
CLASS_MODES = ("image", "instance")
CLASS_PREFIX = "class_"
# Parameters that `per_class` may override.
PER_CLASS_KEYS = (
    "mode", "fg_threshold", "border_threshold", "distance_threshold", "distance_levels", "centre_threshold",
    "seed_erosion", "min_seed_area", "min_area",
    "fill_holes", "dilation", "min_score",
)
_CROSS = ((-1, 0), (1, 0), (0, -1), (0, 1))
_RING = _CROSS + ((-1, -1), (-1, 1), (1, -1), (1, 1))
_MAX_CORNER_PASSES = 64


@dataclass
class PostprocessConfig:
    """Post-processing parameters; stored as `postprocess.json` next to a model.

    Attributes:
        mode: "components", "watershed", "distance", "centre", or "auto" (centre when a `centre`
            channel exists, else distance when a `distance` channel exists, else watershed when a
            `border` channel exists, else components).
        fg_threshold: a pixel is foreground when its foreground probability is > this.
        border_threshold: watershed seeds are foreground pixels with border probability < this.
        distance_threshold: distance-mode seeds are foreground pixels with distance > this.
        distance_levels: distance mode: the seeds grow over the foreground in this many bands
            of distance between `distance_threshold` and 0 before the rest (0: in one go); the
            same in centre mode (down the centre map without a distance channel).
        centre_threshold: centre-mode seeds are foreground pixels with centre > this (and
            distance > `distance_threshold` when the model has a distance channel).
        seed_erosion: erode seeds by this many pixels (elliptic kernel) before growing them.
        min_seed_area: drop seeds (connected components) smaller than this before growing them.
        min_area: instances with fewer pixels (after hole filling, before dilation) are removed.
        fill_holes: fill background regions enclosed by a single instance.
        dilation: grow instances by this many pixels into the background only (never overlapping).
        min_score: remove instances whose score (mean foreground probability) is < this.
        class_mode: "image" (one class per image: the class with the largest summed probability
            inside the foreground at the base `fg_threshold`; its per-class parameters then
            apply to the whole image) or
            "instance" (class per instance by summed probability inside it; only `min_area` and
            `min_score` can then differ per class, the other parameters are the base ones).
        connectivity: 4 or 8, pixel connectivity of components and seeds.
        keep_unseeded: in watershed mode, keep foreground components without any seed as
            instances of their own (else they are dropped).
        per_class: {class name: {parameter: value}} overrides (keys from `PER_CLASS_KEYS`); with
            `class_mode` "image" this includes the mode, so each cell type can have its own.

    Example:
        >>> cfg = PostprocessConfig(min_area=20, per_class={"astro": {"min_area": 60}})
        >>> cfg.for_class("astro").min_area, cfg.for_class("cort").min_area
        (60, 20)
        >>> PostprocessConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    mode: str = "auto"
    fg_threshold: float = 0.5
    border_threshold: float = 0.5
    distance_threshold: float = 0.5
    distance_levels: int = 3
    centre_threshold: float = 0.6
    seed_erosion: int = 0
    min_seed_area: int = 0
    min_area: int = 10
    fill_holes: bool = True
    dilation: int = 0
    min_score: float = 0.0
    class_mode: str = "image"
    connectivity: int = 8
    keep_unseeded: bool = True
    per_class: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Raise `ConfigError` naming the first bad parameter."""
        if self.mode not in MODES:
            raise ConfigError(f"postprocess.mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if self.class_mode not in CLASS_MODES:
            raise ConfigError(f"postprocess.class_mode: {self.class_mode!r} is not one of {', '.join(CLASS_MODES)}")
        if self.connectivity not in (4, 8):
            raise ConfigError(f"postprocess.connectivity: must be 4 or 8, not {self.connectivity!r}")
        _check_values(self.__dict__, "postprocess")
        if not isinstance(self.per_class, dict):
            raise ConfigError("postprocess.per_class: must be a mapping {class name: {parameter: value}}")
        for name, overrides in self.per_class.items():
            if not isinstance(overrides, dict):
                raise ConfigError(f"postprocess.per_class.{name}: must be a mapping of parameters")
            unknown = sorted(set(overrides) - set(PER_CLASS_KEYS))
            if unknown:
                raise ConfigError(
                    f"postprocess.per_class.{name}.{unknown[0]}: not a per-class parameter "
                    f"(allowed: {', '.join(PER_CLASS_KEYS)})"
                )
            _check_values(overrides, f"postprocess.per_class.{name}")

    def for_class(self, name):
        """The config with `per_class[name]` applied (itself when there is no override)."""
        overrides = self.per_class.get(name) if name is not None else None
        if overrides is None and name is not None and name.startswith(CLASS_PREFIX):
            overrides = self.per_class.get(name[len(CLASS_PREFIX):])
        return dataclasses.replace(self, **overrides) if overrides else self

    def with_mode(self, mode):
        """The config with `mode` for every class: per-class modes dropped, their other settings kept.

        Example:
            >>> cfg = PostprocessConfig(mode="distance", per_class={"a": {"mode": "watershed", "min_area": 5}})
            >>> cfg.with_mode("components").per_class
            {'a': {'min_area': 5}}
        """
        per_class = {name: {k: v for k, v in overrides.items() if k != "mode"} for name, overrides in self.per_class.items()}
        return self.replace(mode=mode, per_class=per_class)

    def replace(self, **params):
        """A copy with `params` changed; unknown names raise `ConfigError`."""
        unknown = sorted(set(params) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"postprocess.{unknown[0]}: unknown parameter")
        return dataclasses.replace(self, **params)

    def to_dict(self):
        """JSON-serialisable dict (what `postprocess.json` stores)."""
        out = dataclasses.asdict(self)
        out["per_class"] = {str(k): dict(v) for k, v in self.per_class.items()}
        return out

    @classmethod
    def from_dict(cls, data):
        """Build from a dict such as `to_dict()` wrote; unknown keys raise `ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError("postprocess: expected a mapping of parameters")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"postprocess.{unknown[0]}: unknown parameter")
        return cls(**data)


def _check_values(values, where):
    if "mode" in values and values["mode"] not in MODES:
        raise ConfigError(f"{where}.mode: {values['mode']!r} is not one of {', '.join(MODES)}")
    for key in ("fg_threshold", "border_threshold", "distance_threshold", "centre_threshold", "min_score"):
        if key in values:
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{where}.{key}: must be a number in [0, 1], not {value!r}")
    for key in ("seed_erosion", "min_seed_area", "min_area", "dilation", "distance_levels"):
        if key in values:
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ConfigError(f"{where}.{key}: must be a non-negative integer, not {value!r}")
    for key in ("fill_holes", "keep_unseeded"):
        if key in values and not isinstance(values[key], (bool, np.bool_)):
            raise ConfigError(f"{where}.{key}: must be true or false, not {values[key]!r}")


# --- public API --------------------------------------------------------------------------------


def to_instances(probs, channels, mode=None, config=None, image_class=None, **params):
    """Turn probability maps into an instance label map and a table of instances.

    Args:
        probs: `H x W x C` float array in [0, 1] (an `H x W` array is one foreground channel).
        channels: names of the C channels; "foreground" is required, "border" is used by the
            watershed, "distance" by the distance mode, "class_<name>" channels give classes.
            Other channels are ignored.
        mode: "components", "watershed" or "distance" for every image; default `config.mode`
            ("auto": distance when a distance channel exists, else watershed when a border channel
            exists), or the image class's own mode when `per_class` gives one.
        config: a `PostprocessConfig` (default: the defaults).
        image_class: the image's class when known from outside (e.g. the cell type of a
            validation image, or a model without class channels): its `per_class` parameters
            apply and every instance reports it; class channels are then not consulted.
        **params: overrides of `config` fields (fg_threshold=0.4, min_area=30, ...).

    Returns:
        (label_map, instances): `int32 H x W` label map, ids 1..N, no overlaps (a label map
        cannot overlap); instances: list of dicts {"id", "score", "area", "bbox" [x, y, w, h],
        "class"} in id order; "class" is the class name without the `class_` prefix, or None
        when there are no class channels. Score = mean foreground probability over the
        instance's pixels before dilation.

    Example:
        >>> probs = np.zeros((5, 5, 1), np.float32); probs[1:4, 1:4] = 0.8
        >>> label_map, instances = to_instances(probs, ["foreground"], min_area=1)
        >>> instances[0]["area"], round(instances[0]["score"], 2), instances[0]["class"]
        (9, 0.8, None)
    """
    cfg = config if config is not None else PostprocessConfig()
    if params:
        cfg = cfg.replace(**params)
    probs = _as_probs(probs, channels)
    channels = list(channels)
    if "foreground" not in channels:
        raise DataError(f"no 'foreground' channel among {channels}", field="channels")
    if mode is not None:
        cfg = cfg.with_mode(mode)
    foreground = probs[..., channels.index("foreground")]
    class_idx = [i for i, name in enumerate(channels) if name.startswith(CLASS_PREFIX)]
    class_names = [channels[i][len(CLASS_PREFIX):] for i in class_idx]
    if image_class is not None:
        class_idx, class_names = [], []
        cfg = cfg.for_class(image_class)
    elif class_idx and cfg.class_mode == "image":
        image_class = _image_class(probs, channels, cfg)
        cfg = cfg.for_class(image_class)
    label_map = _segment(probs, channels, resolve_mode(cfg.mode, channels), cfg)
    if cfg.fill_holes:
        label_map = fill_label_holes(label_map)
    instance_classes = None
    if class_idx and cfg.class_mode == "instance":
        instance_classes = (probs[..., class_idx], class_names)
    return _filter_and_describe(label_map, foreground, cfg, image_class, instance_classes)


def _image_class(probs, channels, cfg):
    """The class `class_mode` "image" gives an image: the class channel with the largest summed
    probability over the foreground (> `cfg.fg_threshold`); None without class channels."""
    class_idx = [i for i, name in enumerate(channels) if name.startswith(CLASS_PREFIX)]
    if not class_idx:
        return None
    fg_mask = probs[..., channels.index("foreground")] > cfg.fg_threshold
    sums = [float(probs[..., i][fg_mask].sum()) for i in class_idx]
    return channels[class_idx[int(np.argmax(sums))]][len(CLASS_PREFIX):]


def _segment(probs, channels, mode, cfg):
    """The label map of a resolved `mode` ("components", "distance" or "watershed") before hole
    filling and filtering (ids may have gaps)."""
    foreground = probs[..., channels.index("foreground")]
    if mode == "components":
        return _components(foreground > cfg.fg_threshold, cfg.connectivity)
    if mode == "distance":
        return _distance_watershed(foreground, probs[..., channels.index("distance")], cfg)
    if mode == "centre":
        distance = probs[..., channels.index("distance")] if "distance" in channels else None
        return _centre_watershed(foreground, probs[..., channels.index("centre")], distance, cfg)
    border = probs[..., channels.index("border")] if "border" in channels else None
    return _watershed(foreground, border, cfg)


def _filter_and_describe(label_map, foreground, cfg, image_class=None, instance_classes=None):
    """Drop instances under the minimum area or score, renumber 1..N, dilate; (label map, instances).

    Area, score (mean `foreground` inside) and class of every instance are computed at once over
    the labelled pixels. `instance_classes`: (`H x W x K` class probabilities, K names) to give each
    instance the class of largest summed probability (with its per-class minimum area and score);
    else every instance reports `image_class`.
    """
    flat = label_map.ravel()
    pixels = np.flatnonzero(flat > 0)
    pixel_labels = flat[pixels]
    n_labels = int(pixel_labels.max()) + 1 if pixels.size else 1
    areas = np.bincount(pixel_labels, minlength=n_labels)
    sums = np.bincount(pixel_labels, weights=foreground.ravel()[pixels], minlength=n_labels)
    scores = sums / np.maximum(areas, 1)
    min_area = np.full(n_labels, cfg.min_area, np.int64)
    min_score = np.full(n_labels, cfg.min_score, np.float64)
    instance_class = None
    if instance_classes is not None:
        class_probs, class_names = instance_classes
        class_sums = np.stack([np.bincount(pixel_labels, weights=class_probs[..., k].ravel()[pixels], minlength=n_labels)
                               for k in range(len(class_names))], axis=1)
        instance_class = class_sums.argmax(axis=1)
        for k, name in enumerate(class_names):
            class_cfg = cfg.for_class(name)
            min_area[instance_class == k] = class_cfg.min_area
            min_score[instance_class == k] = class_cfg.min_score
    keep = (areas > 0) & (areas >= min_area) & (scores >= min_score)
    keep[0] = False
    n_kept = int(keep.sum())
    if n_kept != n_labels - 1:  # something removed, or gaps in the ids: renumber 1..N
        lookup = np.zeros(n_labels, np.int32)
        lookup[keep] = np.arange(1, n_kept + 1, dtype=np.int32)
        new_labels = lookup.take(pixel_labels)
        label_map = np.zeros_like(label_map)
        label_map.ravel()[pixels] = new_labels
        inside = new_labels > 0
        pixels, pixel_labels = pixels[inside], new_labels[inside]
    kept_scores = scores[keep]
    if cfg.dilation:
        label_map = dilate_labels(label_map, cfg.dilation)
        flat = label_map.ravel()
        pixels = np.flatnonzero(flat > 0)
        pixel_labels = flat[pixels]

    areas, boxes = label_ops.pixel_stats(pixels, pixel_labels, label_map.shape, n_kept)
    if instance_class is None:
        names = [image_class] * n_kept
    else:
        names = [instance_classes[1][int(c)] for c in instance_class[keep]]
    instances = [
        {"id": k + 1, "score": float(kept_scores[k]), "area": int(areas[k]), "bbox": boxes[k], "class": names[k]}
        for k in range(n_kept)
    ]
    return label_map, instances


def resolve_mode(mode, channels):
    """The mode to run for `mode` on a model with these output channels: "auto" becomes `auto_mode`;
    a mode the channels cannot serve raises. The one place the "auto" rule is applied.

    Example:
        >>> resolve_mode("auto", ["foreground", "border"]), resolve_mode("components", ["foreground"])
        ('watershed', 'components')
    """
    if mode not in MODES:
        raise ConfigError(f"postprocess.mode: {mode!r} is not one of {', '.join(MODES)}")
    if mode == "auto":
        return auto_mode(channels)
    for name in ("distance", "centre"):
        if mode == name and name not in channels:
            raise DataError(f"mode '{name}' needs a '{name}' channel, not among {list(channels)}", field="channels")
    return mode


def auto_mode(channels):
    """The mode "auto" stands for: centre with a centre channel, else distance with a distance
    channel, else watershed with a border channel, else components.

    Example:
        >>> auto_mode(["foreground", "border"]), auto_mode(["foreground", "border", "distance"])
        ('watershed', 'distance')
        >>> auto_mode(["foreground", "distance", "centre"])
        'centre'
    """
    channels = list(channels)
    if "centre" in channels:
        return "centre"
    if "distance" in channels:
        return "distance"
    return "watershed" if "border" in channels else "components"


def fill_label_holes(label_map):
    """Fill background regions enclosed by exactly one instance with that instance's label.

    A hole is a 4-connected background region that does not touch the image frame. Regions
    bordered by two or more instances (gaps between touching cells) stay background, as when
    each instance's holes are filled on its own. Work beyond one connected-components pass is
    proportional to the number of hole pixels.

    Example:
        >>> ring = np.array([[1, 1, 1, 0], [1, 0, 1, 0], [1, 1, 1, 0]], np.int32)
        >>> int(fill_label_holes(ring)[1, 1])
        1
    """
    height, width = label_map.shape
    # Background reachable from outside the image (through a one-pixel frame) is not a hole.
    outside = cv2.copyMakeBorder((label_map == 0).view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=1)
    cv2.floodFill(outside, None, (0, 0), 2, flags=4)
    holes = outside[1:-1, 1:-1] == 1
    if not holes.any():
        return label_map
    n_holes, hole_map = cv2.connectedComponents(holes.view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    hole_pixels = np.flatnonzero(holes.ravel())
    hole_ids = hole_map.ravel()[hole_pixels]
    flat = label_map.ravel()
    # Holes never touch the frame, so the 4 neighbours of a hole pixel are inside the image.
    # A neighbour with label 0 lies in the same 4-connected hole; the others enclose it.
    neighbours = np.concatenate([flat[hole_pixels + step] for step in (-width, width, -1, 1)])
    owners = np.tile(hole_ids, 4)
    enclosing = neighbours > 0
    base = int(label_map.max()) + 1
    pairs = np.unique(owners[enclosing].astype(np.int64) * base + neighbours[enclosing])
    pair_hole, pair_label = np.divmod(pairs, base)
    n_enclosing = np.bincount(pair_hole, minlength=n_holes)
    fill = np.zeros(n_holes, label_map.dtype)
    single = n_enclosing[pair_hole] == 1
    fill[pair_hole[single]] = pair_label[single]
    out = np.array(label_map, copy=True, order="C")
    out.ravel()[hole_pixels] = fill[hole_ids]
    return out


def dilate_labels(label_map, pixels):
    """Grow every instance by `pixels` (one 3x3 cross step per pixel) into background only.

    Pixels already labelled never change, so instances cannot come to overlap; a background
    pixel reached by two instances in the same step goes to the larger id.

    Example:
        >>> dilate_labels(np.array([[0, 0, 0], [0, 2, 0], [0, 0, 0]], np.int32), 1)
        array([[0, 2, 0],
               [2, 2, 2],
               [0, 2, 0]], dtype=int32)
    """
    if pixels <= 0:
        return label_map
    # float32 holds integer labels exactly up to 2**24; OpenCV does not dilate int32.
    grown = label_map.astype(np.float32)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    for _ in range(int(pixels)):
        grown = np.where(grown > 0, grown, cv2.dilate(grown, cross))
    return grown.astype(np.int32)


# --- segmentation cores ------------------------------------------------------------------------


def _neighbour_max(label_map, pixels, steps):
    """Largest label among the neighbours `steps` of flat `pixels` (clipped at the frame)."""
    height, width = label_map.shape
    rows, cols = np.divmod(pixels, width)
    return np.max(
        [label_map[np.clip(rows + dr, 0, height - 1), np.clip(cols + dc, 0, width - 1)] for dr, dc in steps], axis=0
    )


def _neighbour_uphill(label_map, uphill, pixels, steps):
    """Label of the labelled neighbour (`steps`) of each flat pixel with the highest `uphill` value
    (0 when no neighbour is labelled)."""
    height, width = label_map.shape
    rows, cols = np.divmod(pixels, width)
    labels, heights = [], []
    for dr, dc in steps:
        r, c = np.clip(rows + dr, 0, height - 1), np.clip(cols + dc, 0, width - 1)
        label = label_map[r, c]
        labels.append(label)
        heights.append(np.where(label > 0, uphill[r, c], -np.inf))
    best = np.argmax(heights, axis=0)
    return np.take_along_axis(np.array(labels), best[None], axis=0)[0]


def _as_probs(probs, channels):
    probs = np.asarray(probs)
    if probs.ndim == 2:
        probs = probs[..., None]
    if probs.ndim != 3:
        raise DataError(f"probabilities must be H x W x C, got shape {probs.shape}", field="probs")
    if probs.shape[2] != len(channels):
        raise DataError(
            f"probabilities have {probs.shape[2]} channels but {len(channels)} names were given ({list(channels)})",
            field="channels",
        )
    if probs.dtype != np.float32:
        probs = probs.astype(np.float32)
    return probs


def _components(mask, connectivity):
    _, label_map = cv2.connectedComponents(mask.view(np.uint8), connectivity=connectivity, ltype=cv2.CV_32S)
    return label_map


def _flood(markers, region_u8, background_id):
    """Grow `markers` (int32, 0 = unlabelled) over the 0/1 `region_u8` by geodesic distance.

    Returns the int32 label map: the markers' ids inside the region, -1 on watershed lines
    between them, 0 elsewhere (see `_watershed` for the relief and the moat).
    """
    outside_moat = cv2.dilate(region_u8, np.ones((3, 3), np.uint8)) ^ 1  # 1 beyond the moat
    # Region 0, the moat 128, beyond it 255 (uint8 bit arithmetic).
    relief = (region_u8 ^ 1) << 7 | outside_moat * 255
    # Pad by one pixel: cv2.watershed marks the outermost frame as -1.
    relief = cv2.copyMakeBorder(relief, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=255)
    padded = cv2.copyMakeBorder(markers, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=background_id)
    np.copyto(padded[1:-1, 1:-1], background_id, where=outside_moat.view(bool))
    label_map = np.ascontiguousarray(cv2.watershed(cv2.merge([relief, relief, relief]), padded)[1:-1, 1:-1])
    label_map *= region_u8
    np.copyto(label_map, 0, where=label_map == background_id)
    return label_map


def _distance_watershed(foreground, distance, cfg):
    """The distance mode's segmentation core: cores above `distance_threshold` grown over the
    foreground in `distance_levels` bands of distance, then over the rest (see `_watershed`)."""
    levels = _bands(distance, cfg.distance_threshold, cfg.distance_levels)
    return _watershed(foreground, None, cfg, seeds=distance > cfg.distance_threshold, levels=levels, uphill=distance)


def _bands(relief, threshold, n_levels):
    """`n_levels` nested masks `relief > threshold * k / (n_levels + 1)`, k from n_levels down to 1."""
    return [relief > threshold * k / (n_levels + 1) for k in range(n_levels, 0, -1)]


def _centre_watershed(foreground, centre, distance, cfg):
    """The centre mode's segmentation core: one seed per cell from the centre map (cut by the
    distance map when there is one), grown as in the distance mode down the distance map (or
    down the centre map without one)."""
    seeds = centre > cfg.centre_threshold
    if distance is None:
        relief, threshold = centre, cfg.centre_threshold
    else:
        seeds &= distance > cfg.distance_threshold
        relief, threshold = distance, cfg.distance_threshold
    return _watershed(foreground, None, cfg, seeds=seeds, levels=_bands(relief, threshold, cfg.distance_levels),
                      uphill=relief)


def _watershed(foreground, border, cfg, seeds=None, levels=None, uphill=None):
    """Marker watershed over the foreground mask; returns an int32 label map (ids may have gaps).

    Seeds: connected components of foreground & (border < border_threshold) (or foreground &
    `seeds` when that boolean map is given), eroded by `seed_erosion`, without those smaller
    than `min_seed_area`. A foreground component that contains no seed becomes a seed as a whole
    when `keep_unseeded` (else it is dropped), so every foreground component has a seed.

    `levels`: optional boolean maps, nested and growing (e.g. distance > 0.15, > 0.1, > 0.05):
    the seeds first grow over the first (with the foreground and what is already labelled), then
    the result over the next, and only then over the whole foreground. Growing band by band down
    a distance map puts the line between two cells in the valley between them, as a watershed
    on `-distance` would, instead of halfway between their seeds. With `uphill` (the distance
    map) a watershed-line pixel goes to the labelled 8-neighbour with the highest `uphill`
    value, the cell it would drain into, rather than to a seed or the largest id.

    The seeds grow over the foreground by geodesic distance: `cv2.watershed` floods in order
    of the step between neighbouring pixel values, and the image is flat (0) on the foreground,
    so the flooding is breadth-first (4-connected) and each foreground pixel goes to the seed
    that reaches it in the fewest steps; the border probability only decides where seeds are.
    (On exact borders this beats flooding over the border probability itself, because OpenCV
    ranks steps, not heights, and a plateau of border goes to whichever seed enters it first.)
    A one-pixel moat of value 128 surrounds the foreground and a background marker (255)
    lies beyond: every step inside the foreground is cheaper than a step into or out of the
    moat, so each seed claims all the foreground of its component that it can reach before
    anything leaks through the moat, and the background (most of the image) is never flooded.

    Watershed lines (-1) between instances go to the seed they touch (8-neighbours; the
    largest id if several), else to their largest 8-neighbour label. The flooding is
    4-connected, so with 8-connectivity foreground attached only through corners is then
    grown into from labelled neighbours (up to 64 pixel rings). Foreground pixels still
    unlabelled (pieces cut off from every seed, rare) become instances of their own when
    `keep_unseeded`, else background.
    """
    height, width = foreground.shape
    fg_mask = foreground > cfg.fg_threshold
    if not fg_mask.any():
        return np.zeros((height, width), np.int32)
    if seeds is not None:
        seeds = (fg_mask & seeds).view(np.uint8)
    else:
        seeds = fg_mask.view(np.uint8) if border is None else (fg_mask & (border < cfg.border_threshold)).view(np.uint8)
    n_seeds, markers = _seed_markers(seeds, cfg)
    n_seeds, markers, fg_mask = _seed_unseeded(fg_mask, seeds, n_seeds, markers, cfg)
    if n_seeds <= 1:
        return np.zeros((height, width), np.int32)

    background_id = n_seeds
    for level in levels or ():
        # Lines between cells at this level (-1) become unlabelled and are flooded again below.
        region = (fg_mask & level) | (markers > 0)
        markers = np.maximum(_flood(markers, region.view(np.uint8), background_id), 0)
    label_map = _flood(markers, fg_mask.view(np.uint8), background_id)
    _assign_lines(label_map, markers, uphill)
    _fill_corners(label_map, fg_mask, cfg)
    return label_map


def _seed_markers(seeds, cfg):
    """(number of seeds + 1, int32 marker map) of a uint8 seed mask: eroded by `seed_erosion`,
    components smaller than `min_seed_area` dropped, ids 1..n."""
    if cfg.seed_erosion:
        size = 2 * int(cfg.seed_erosion) + 1
        seeds = cv2.erode(seeds, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    if cfg.min_seed_area <= 1:
        return cv2.connectedComponents(seeds, connectivity=cfg.connectivity, ltype=cv2.CV_32S)
    n_seeds, markers, stats, _ = cv2.connectedComponentsWithStats(seeds, connectivity=cfg.connectivity,
                                                                  ltype=cv2.CV_32S)
    big = stats[:, cv2.CC_STAT_AREA] >= cfg.min_seed_area
    big[0] = False
    lookup = np.zeros(n_seeds, np.int32)
    lookup[big] = np.arange(1, int(big.sum()) + 1, dtype=np.int32)
    return int(big.sum()) + 1, lookup.take(markers)


def _seed_unseeded(fg_mask, seeds, n_seeds, markers, cfg):
    """Foreground components holding no seed: a seed of their own each (`keep_unseeded`), or taken out
    of the foreground. Returns (n_seeds, markers, fg_mask)."""
    n_fg, fg_components = cv2.connectedComponents(fg_mask.view(np.uint8), connectivity=cfg.connectivity,
                                                  ltype=cv2.CV_32S)
    seeded = np.zeros(n_fg, bool)
    seeded[fg_components.ravel()[np.flatnonzero(markers.ravel() > 0)]] = True
    seeded[0] = True
    if seeded.all():
        return n_seeds, markers, fg_mask
    unseeded_pixels = np.flatnonzero((~seeded).take(fg_components).ravel())
    if cfg.keep_unseeded:
        new_ids = np.cumsum(~seeded) + (n_seeds - 1)
        markers.ravel()[unseeded_pixels] = new_ids[fg_components.ravel()[unseeded_pixels]]
        return int(new_ids[-1]) + 1, markers, fg_mask
    fg_mask = fg_mask.copy()
    fg_mask.ravel()[unseeded_pixels] = False
    return n_seeds, markers, fg_mask


def _assign_lines(label_map, seed_map, uphill=None):
    """Give watershed-line pixels (-1) of `label_map` a label, in place: with `uphill`, the labelled
    8-neighbour with the highest `uphill` value; else the seed they touch (on a two-pixel border band
    each side touches its own cell's seed), else their largest 8-neighbour label."""
    flat = label_map.ravel()
    line_pixels = np.flatnonzero(flat < 0)
    if not line_pixels.size:
        return
    flat[line_pixels] = 0
    if uphill is not None:
        flat[line_pixels] = _neighbour_uphill(label_map, uphill, line_pixels, _RING)
        return
    from_seed = _neighbour_max(seed_map, line_pixels, _RING)
    flat[line_pixels] = np.where(from_seed > 0, from_seed, _neighbour_max(label_map, line_pixels, _RING))


def _fill_corners(label_map, fg_mask, cfg):
    """Label the foreground the 4-connected flooding left out, in place.

    With 8-connectivity, foreground joined to its cell only through corners is still unlabelled:
    labels grow into it one ring per pass (few pixels, at most `_MAX_CORNER_PASSES`). What is
    still unlabelled then (pieces cut off from every seed) becomes instances of its own when
    `keep_unseeded`.
    """
    height, width = label_map.shape
    flat = label_map.ravel()
    lost_pixels = np.flatnonzero((fg_mask & (label_map == 0)).ravel())
    steps = _RING if cfg.connectivity == 8 else _CROSS
    for _ in range(_MAX_CORNER_PASSES):
        if lost_pixels.size == 0:
            break
        values = _neighbour_max(label_map, lost_pixels, steps)
        found = values > 0
        if not found.any():
            break
        flat[lost_pixels[found]] = values[found]
        lost_pixels = lost_pixels[~found]
    if cfg.keep_unseeded and lost_pixels.size:
        lost = np.zeros(flat.size, np.uint8)
        lost[lost_pixels] = 1
        _, lost_labels = cv2.connectedComponents(lost.reshape(height, width), connectivity=cfg.connectivity,
                                                 ltype=cv2.CV_32S)
        flat[lost_pixels] = lost_labels.ravel()[lost_pixels] + int(label_map.max())

