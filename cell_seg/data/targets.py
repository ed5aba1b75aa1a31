"""Training targets built from an instance label map: foreground, borders, per-class channels.

Targets are computed after augmentation, from the augmented label map, with a few OpenCV
grey-level morphology calls on the whole map (never one pass per instance).

Channel names (the `channels` list):
- "foreground": 1 on every pixel of an instance.
- "border": 1 on instance pixels that touch a *different instance*: pixels whose 3 x 3
  neighbourhood holds a non-zero label other than their own (both sides of each contact are
  marked; background pixels never are). With `border_width > 0` it also marks a ring inside
  every instance along its whole outline: instance pixels within `border_width` of a pixel with
  another label, background included, where "within" uses the disc-shaped structuring element
  `cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2w + 1, 2w + 1))` (a cross for w = 1).
  Pixels beyond the image edge count as nothing: the edge of the image is not an outline.
- "distance": a soft target in [0, 1]: on every instance pixel, the Euclidean distance to the
  nearest pixel outside the instance, divided by the largest such distance in that instance (1 at
  the instance's innermost pixel(s)). Pixels that touch another instance (those of `contact_pixels`)
  count as outside, so the map is 0 on both sides of every contact: a valley between touching
  cells wider than a one-pixel border, and it grows with the cell, so non-convex cells keep a
  core of their own. Background is 0. As for "border", the image edge is not an outline.
- "centre": a soft target in [0, 1] with one peak per instance, also for non-convex cells: 1 at
  the instance's centre (its innermost pixel, the peak of "distance", in whole pixels of depth;
  the one nearest the centroid among equals), falling to 0 along the
  *geodesic* path inside the instance (steps between 8-neighbours, alternating square and cross
  neighbourhoods, an octagonal approximation of the Euclidean length), divided by the instance's
  longest such path plus one. Where "distance" gives a cell with lobes or processes a core in each
  lobe, "centre" keeps one, as the diffusion from the centre behind Cellpose's flows does; pieces
  of an instance not connected to its centre are 0. Background is 0.
- "classes": expands to one foreground channel per category, named "class_<category name>",
  in category order.
"""

import cv2
import numpy as np

from cell_seg.data.labels import contact_pixels, outline_ring  # noqa: F401  (the border target's parts)
from cell_seg.errors import ConfigError

TARGET_CHANNELS = ("foreground", "border", "distance", "centre", "classes")
# Channels whose targets are soft values in [0, 1] rather than 0/1 (regression targets).
SOFT_CHANNELS = ("distance", "centre")



def _check_channels(channels):
    channels = [channels] if isinstance(channels, str) else list(channels)
    for name in channels:
        if name not in TARGET_CHANNELS:
            raise ConfigError(f"unknown target channel {name!r} (choose from {', '.join(TARGET_CHANNELS)})")
    if len(set(channels)) != len(channels):
        raise ConfigError(f"target channels repeat a name: {channels}")
    return channels


def channel_names(channels, category_names):
    """Names of the output channels, with "classes" expanded.

    Example:
        >>> channel_names(["foreground", "border", "classes"], ["astro", "cort"])
        ['foreground', 'border', 'class_astro', 'class_cort']
    """
    names = []
    for name in _check_channels(channels):
        if name == "classes":
            names.extend(f"class_{c}" for c in category_names)
        else:
            names.append(name)
    return names


def n_target_channels(channels, n_classes):
    """Number of output channels of `build_targets`."""
    return sum(n_classes if name == "classes" else 1 for name in _check_channels(channels))


def border_map(label_map, border_width=0):
    """The "border" target as a boolean map (see the module docstring)."""
    border = contact_pixels(label_map)
    if border_width and border_width > 0:
        border |= outline_ring(label_map, border_width)
    return border


def distance_map(label_map):
    """The "distance" target: per-instance distance to the outline over its maximum (see the module docstring).

    One `cv2.distanceTransform` over the whole map and one `np.maximum.at` over the instance pixels.

    Example:
        >>> square = np.pad(np.ones((5, 5), np.int32), 1)
        >>> (distance_map(square)[1:-1, 1:-1] * 3).round(2)
        array([[1., 1., 1., 1., 1.],
               [1., 2., 2., 2., 1.],
               [1., 2., 3., 2., 1.],
               [1., 2., 2., 2., 1.],
               [1., 1., 1., 1., 1.]], dtype=float32)
    """
    label_map = np.asarray(label_map)
    distance = _instance_depth(label_map)
    flat = label_map.ravel()
    pixels = np.flatnonzero(flat > 0)
    if pixels.size == 0:
        return np.zeros(label_map.shape, np.float32)
    pixel_labels = flat[pixels].astype(np.intp)
    values = distance.ravel()[pixels]
    highest = _instance_max(pixel_labels, values)
    scale = np.divide(1.0, highest, out=np.zeros_like(highest), where=highest > 0)
    out = np.zeros(label_map.size, np.float32)
    out[pixels] = values * scale[pixel_labels]
    return out.reshape(label_map.shape)


def _instance_max(labels, values):
    """Largest of `values` per label (index = label, 0 where a label has no pixel)."""
    highest = np.zeros(int(labels.max()) + 1, np.float32)
    np.maximum.at(highest, labels, values)
    return highest


def _instance_depth(label_map):
    """Per-pixel distance to the nearest pixel outside the instance (contacts count as outside)."""
    inside = (label_map > 0) & ~contact_pixels(label_map)
    # distanceTransform measures to the nearest zero pixel (5 x 5 mask: within about 2 % of the exact
    # Euclidean distance, 8x faster than the exact one); beyond the image edge counts as far.
    return cv2.distanceTransform(inside.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)


def centre_map(label_map, max_steps=1024):
    """The "centre" target: 1 at each instance's innermost pixel, falling linearly with the geodesic
    distance inside the instance (see the module docstring).

    All instances grow together, one ring per step, by a grey dilation and erosion of the map of
    labels reached so far (a pixel is reached when a neighbour of its own label is): about
    `longest geodesic radius` steps of two OpenCV calls over the map.

    Example:
        >>> bar = np.pad(np.ones((1, 5), np.int32), 1)          # a 1 x 5 cell, centre in the middle
        >>> (centre_map(bar)[1, 1:-1] * 3).round(2)
        array([1., 2., 3., 2., 1.], dtype=float32)
        >>> ring = np.pad(np.ones((3, 7), np.int32), 1)
        >>> ring[2, 2:7] = 0                                     # a U shape: one peak, at its deepest pixel
        >>> int((centre_map(ring) == 1).sum())
        1
    """
    label_map = np.asarray(label_map)
    out = np.zeros(label_map.shape, np.float32)
    flat = label_map.ravel()
    pixels = np.flatnonzero(flat > 0)
    if pixels.size == 0:
        return out
    labels = flat[pixels].astype(np.intp)
    if labels.max() >= 2**24:  # the morphology below works on labels as float32: renumber 1..N first
        labels = np.unique(labels, return_inverse=True)[1].astype(np.intp) + 1
        label_map = np.zeros(label_map.shape, np.int32)
        label_map.ravel()[pixels] = labels
    depth = _instance_depth(label_map).ravel()[pixels]
    # The centre of an instance: its deepest pixel (whole pixels of depth, so that along a ridge of
    # equal depth the one nearest the instance's centroid wins): the last of its pixels sorted by
    # label, then depth, then closeness to the centroid.
    rows, cols = np.divmod(pixels, label_map.shape[1])
    counts = np.bincount(labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_row = np.bincount(labels, rows) / counts
        mean_col = np.bincount(labels, cols) / counts
    closeness = -((rows - mean_row[labels]) ** 2 + (cols - mean_col[labels]) ** 2)
    order = np.lexsort((closeness, np.floor(depth), labels))
    is_last = np.r_[labels[order][1:] != labels[order][:-1], True]
    centres = pixels[order][is_last]
    # Labels as float32 (exact below 2**24) for OpenCV's grey morphology; unreached pixels hold 0 in
    # `high` and a value above every label in `low`, so a dilation of `high` or an erosion of `low`
    # equals a pixel's own label exactly when a reached neighbour has it (either finds it unless two
    # other labels are reached around the pixel on both sides).
    as_float = label_map.astype(np.float32)
    high = np.zeros_like(as_float)
    low = np.full_like(as_float, float(labels.max()) + 1)
    high.flat[centres] = as_float.flat[centres]
    low.flat[centres] = as_float.flat[centres]
    todo = label_map > 0
    todo.flat[centres] = False
    steps = np.zeros(label_map.shape, np.float32)
    square = np.ones((3, 3), np.uint8)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    for step in range(1, max_steps + 1):
        kernel = square if step % 2 else cross
        new = todo & ((cv2.dilate(high, kernel) == as_float) | (cv2.erode(low, kernel) == as_float))
        if not new.any():
            break
        steps[new] = step
        np.copyto(high, as_float, where=new)
        np.copyto(low, as_float, where=new)
        todo &= ~new
    geodesic = steps.ravel()[pixels]
    values = 1.0 - geodesic / (_instance_max(labels, geodesic)[labels] + 1.0)
    values[todo.ravel()[pixels]] = 0.0  # pieces cut off from their centre
    out.ravel()[pixels] = values
    return out


def build_targets(label_map, instance_classes, channels, n_classes, border_width=0):
    """Stack the requested target channels for one label map.

    Args:
        label_map: int `H x W`, 0 = background, k = instance k.
        instance_classes: int array, `[k]` = 0-based category of instance k, `[0]` = -1; needed
            for "classes" only (may be None otherwise).
        channels: list of names from `TARGET_CHANNELS`.
        n_classes: number of categories ("classes" makes this many channels).
        border_width: ring width for "border" (0: contacts between instances only).

    Returns:
        float32 `H x W x C`, values 0 or 1 ("distance", "centre": in [0, 1]), channels in the order of
        `channel_names`.

    Example:
        >>> label_map = np.array([[1, 1, 2, 2], [0, 0, 0, 0]], np.int32)
        >>> targets = build_targets(label_map, np.array([-1, 0, 1]), ["foreground", "border", "classes"], 2)
        >>> targets.shape
        (2, 4, 4)
        >>> targets[0, :, 1]
        array([0., 1., 1., 0.], dtype=float32)
        >>> targets[0, :, 3]
        array([0., 0., 1., 1.], dtype=float32)
    """
    channels = _check_channels(channels)
    label_map = np.asarray(label_map)
    height, width = label_map.shape[:2]
    out = np.zeros((height, width, n_target_channels(channels, n_classes)), np.float32)
    position = 0
    for name in channels:
        if name == "foreground":
            out[..., position] = label_map > 0
            position += 1
        elif name == "border":
            out[..., position] = border_map(label_map, border_width)
            position += 1
        elif name == "distance":
            out[..., position] = distance_map(label_map)
            position += 1
        elif name == "centre":
            out[..., position] = centre_map(label_map)
            position += 1
        else:
            if instance_classes is None:
                raise ConfigError("target channel 'classes' needs the instance classes")
            instance_classes = np.asarray(instance_classes)
            if label_map.size and label_map.max() >= len(instance_classes):
                raise ValueError(
                    f"label {int(label_map.max())} has no class (instance_classes has {len(instance_classes)} entries)"
                )
            class_map = instance_classes[label_map]
            class_map[label_map == 0] = -1
            for c in range(n_classes):
                out[..., position + c] = class_map == c
            position += n_classes
    return out
