"""Train/validation splits and k folds of a COCO dict: stratified, grouped, seeded.

The unit of assignment is a *group* of images (all images sharing the `group` field, e.g.
Sartorius `sample_id`; an image without the field is a group of its own), so a group never
lands on both sides. Each group is stratified by the most common value of the `stratify`
field among its images (default `image_class`, the cell type). Within each stratum the groups
are shuffled with `seed`, so a split is reproducible from (file, seed, keys) alone.
"""

from collections import Counter, defaultdict

import numpy as np

from cell_seg.data.coco import subset_coco
from cell_seg.errors import DataError

MISSING = "(none)"


def _groups(images, stratify, group):
    """Groups as (stratum, [image ids]) in first-appearance order."""
    for key in (stratify, group):
        if key is not None and images and not any(key in image for image in images):
            raise DataError("no image has this field", field=key)
    members = defaultdict(list)
    for image in images:
        name = ("group", str(image[group])) if group is not None and group in image else ("image", image["id"])
        members[name].append(image)
    result = []
    for group_images in members.values():
        if stratify is None:
            stratum = MISSING
        else:
            counts = Counter(str(image.get(stratify, MISSING)) for image in group_images)
            stratum = min(counts, key=lambda value: (-counts[value], value))
        result.append((stratum, [image["id"] for image in group_images]))
    return result


def _shuffled_strata(groups, seed):
    """stratum -> groups shuffled with one generator, strata visited in sorted order."""
    rng = np.random.default_rng(seed)
    by_stratum = defaultdict(list)
    for stratum, ids in groups:
        by_stratum[stratum].append(ids)
    shuffled = {}
    for stratum in sorted(by_stratum):
        members = by_stratum[stratum]
        shuffled[stratum] = [members[i] for i in rng.permutation(len(members))]
    return shuffled


def split_ids(coco, val_fraction=0.2, seed=0, stratify="image_class", group=None):
    """Image ids of (train, val), see `split_coco`."""
    if not 0 <= val_fraction <= 1:
        raise ValueError(f"val_fraction must be in [0, 1], not {val_fraction}")
    train, val = [], []
    for members in _shuffled_strata(_groups(coco["images"], stratify, group), seed).values():
        total = sum(len(ids) for ids in members)
        target = int(round(val_fraction * total))
        taken = 0
        for ids in members:
            # Take a group when it brings the stratum's val count closer to its target.
            if abs(taken + len(ids) - target) < abs(taken - target):
                val.extend(ids)
                taken += len(ids)
            else:
                train.extend(ids)
    return sorted(train), sorted(val)


def split_coco(coco, val_fraction=0.2, seed=0, stratify="image_class", group=None):
    """Split a COCO dict into (train, val) COCO dicts.

    Args:
        coco: COCO dict (images with int `id`; per-image fields as written by `convert`).
        val_fraction: share of each stratum's images that goes to validation (rounded).
        seed: shuffling seed; the same inputs and seed give the same split.
        stratify: per-image field to balance across sides (None: no stratification).
        group: per-image field whose images stay together (None: every image alone).

    Returns:
        (train_coco, val_coco), keeping image and annotation ids, categories and `info`.

    Raises:
        DataError: `stratify` or `group` names a field no image has.

    Example:
        >>> images = [{"id": i, "image_class": "ab"[i % 2]} for i in range(1, 11)]
        >>> train, val = split_coco({"images": images, "annotations": [], "categories": []}, 0.2, seed=1)
        >>> len(train["images"]), sorted(image["image_class"] for image in val["images"])
        (8, ['a', 'b'])
    """
    train_ids, val_ids = split_ids(coco, val_fraction, seed, stratify, group)
    return subset_coco(coco, train_ids), subset_coco(coco, val_ids)


def kfold_ids(coco, k, seed=0, stratify="image_class", group=None):
    """Validation image ids of each of `k` folds, see `kfold_coco`."""
    if int(k) < 2:
        raise ValueError(f"k must be at least 2, not {k}")
    k = int(k)
    folds = [[] for _ in range(k)]
    fold_sizes = np.zeros(k, np.int64)
    for members in _shuffled_strata(_groups(coco["images"], stratify, group), seed).values():
        stratum_sizes = np.zeros(k, np.int64)
        # Largest groups first (stable sort keeps the shuffled order among equals), each to the
        # fold with fewest images of this stratum, then fewest images overall.
        for ids in sorted(members, key=len, reverse=True):
            fold = min(range(k), key=lambda f: (stratum_sizes[f], fold_sizes[f], f))
            folds[fold].extend(ids)
            stratum_sizes[fold] += len(ids)
            fold_sizes[fold] += len(ids)
    return [sorted(ids) for ids in folds]


def kfold_coco(coco, k=5, seed=0, stratify="image_class", group=None):
    """K folds of a COCO dict: each image is in exactly one fold's validation side.

    Arguments as in `split_coco`. Returns a list of `k` (train_coco, val_coco) pairs.

    Example:
        >>> images = [{"id": i, "image_class": "ab"[i % 2]} for i in range(1, 7)]
        >>> folds = kfold_coco({"images": images, "annotations": [], "categories": []}, k=3)
        >>> sorted(image["id"] for _, val in folds for image in val["images"])
        [1, 2, 3, 4, 5, 6]
    """
    all_ids = [image["id"] for image in coco["images"]]
    result = []
    for val_ids in kfold_ids(coco, k, seed, stratify, group):
        held_out = set(val_ids)
        result.append((subset_coco(coco, [i for i in all_ids if i not in held_out]), subset_coco(coco, val_ids)))
    return result


def images_with_field(coco, key):
    """How many images have the per-image field `key` (set and not null).

    Example:
        >>> images_with_field({"images": [{"sample_id": "a"}, {"sample_id": None}, {}]}, "sample_id")
        1
    """
    return sum(1 for image in coco["images"] if image.get(key) is not None)


def class_counts(coco, key="image_class"):
    """Images per value of a per-image field, sorted by value.

    Example:
        >>> class_counts({"images": [{"image_class": "b"}, {"image_class": "a"}, {"image_class": "b"}]})
        {'a': 1, 'b': 2}
    """
    counts = Counter(str(image.get(key, MISSING)) for image in coco["images"])
    return dict(sorted(counts.items()))


def source_groups(images, brightness, max_group=40):
    """Group keys that approximate each image's source (experiment), for splits that hold out sources.

    Images of one kind (`modality`) and size usually come from one experiment; such a set is
    cut, in order of mean brightness, into bands of at most `max_group` images (and at most a
    fifth of the set, so that even a small kind can give one band to validation). A split
    grouped by these keys puts whole bands on one side, so the validation part holds images
    whose source the training saw less, as a hidden test set does.

    Args:
        images: COCO image dicts with `width`, `height` and optionally `modality`.
        brightness: one number per image (e.g. its mean intensity), same order.
        max_group: largest band.

    Returns:
        One key per image, e.g. "fluorescence-256x256-3".

    Example:
        >>> images = [{"width": 8, "height": 8, "modality": "fluorescence"}] * 10
        >>> source_groups(images, list(range(10)), max_group=4)[:4]
        ['fluorescence-8x8-0', 'fluorescence-8x8-0', 'fluorescence-8x8-1', 'fluorescence-8x8-1']
    """
    if len(images) != len(brightness):
        raise ValueError("one brightness value per image is needed")
    sources = defaultdict(list)
    for index, image in enumerate(images):
        sources[f"{image.get('modality', MISSING)}-{image['width']}x{image['height']}"].append(index)
    keys = [None] * len(images)
    for source, members in sources.items():
        size = max(1, min(int(max_group), -(-len(members) // 5)))
        ordered = sorted(members, key=lambda index: (float(brightness[index]), index))
        for position, index in enumerate(ordered):
            keys[index] = f"{source}-{position // size}"
    return keys
