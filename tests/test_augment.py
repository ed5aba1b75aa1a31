"""Augmentation of image and label map together (cell_seg.data.augment)."""

import numpy as np
import pytest

from cell_seg.data.augment import PRESETS, build_augmentation, jitter_stains, scale_stains
from cell_seg.data.synthetic import make_synthetic
from cell_seg.errors import ConfigError, DataError

_, IMAGE, LABELS, _ = make_synthetic(1, shape=(60, 76), seed=4, cells=(12, 20))[0]


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("as_float", [False, True])
def test_label_ids_stay_exact(preset, as_float):
    image = IMAGE.astype(np.float32) / 255 if as_float else IMAGE
    augment = build_augmentation(preset, seed=0)
    before = set(np.unique(LABELS).tolist())
    for call in range(6):
        out_image, out_labels = augment(image, LABELS, seed=call)
        assert out_labels.dtype == np.int32 and out_image.dtype == image.dtype
        assert out_image.shape[:2] == out_labels.shape
        assert set(np.unique(out_labels).tolist()) <= before | {0}
        if as_float:
            assert out_image.min() >= -0.2 and out_image.max() <= 1.2


def test_geometry_moves_image_and_labels_together():
    # image = a function of the label map: after flips, rotations and a crop it must still be
    labels = LABELS
    image = ((labels * 37) % 251).astype(np.uint8)
    spec = [{"name": "HorizontalFlip", "p": 0.5}, {"name": "VerticalFlip", "p": 0.5}, {"name": "RandomRotate90"}]
    augment = build_augmentation(spec, seed=1, crop_size=40)
    for call in range(10):
        out_image, out_labels = augment(image, labels, seed=call)
        assert out_labels.shape == (40, 40)
        np.testing.assert_array_equal(out_image, ((out_labels * 37) % 251).astype(np.uint8))


def test_crop_pads_small_images_and_prefers_cells():
    small_labels = np.zeros((20, 30), np.int32)
    small_labels[5:9, 6:12] = 3
    augment = build_augmentation("none", seed=0, crop_size=32)
    image, labels = augment(np.full((20, 30), 200, np.uint8), small_labels)
    assert image.shape == (32, 32) and labels.shape == (32, 32)
    assert (labels == 3).sum() == 24 and (image == 0).sum() == 32 * 32 - 20 * 30

    sparse = np.zeros((200, 200), np.int32)
    sparse[150:154, 20:24] = 9  # one small cell in a big empty image
    augment = build_augmentation("none", seed=0, crop_size=24)
    hits = sum((augment(np.zeros((200, 200), np.uint8), sparse)[1] == 9).any() for _ in range(20))
    assert hits == 20


def test_seeded_pipelines_repeat():
    one = build_augmentation("strong", seed=3, crop_size=32)
    two = build_augmentation("strong", seed=3, crop_size=32)
    for _ in range(4):
        a, b = one(IMAGE, LABELS), two(IMAGE, LABELS)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # a per-call seed gives the same result whatever ran before
    first = one(IMAGE, LABELS, seed=11)
    one(IMAGE, LABELS)
    np.testing.assert_array_equal(one(IMAGE, LABELS, seed=11)[1], first[1])


def test_flips_are_independent():
    # albumentations' Compose(seed=) seeds every transform alike, making both flips fire together
    corner = np.zeros((4, 4), np.int32)
    corner[0, 0] = 1
    augment = build_augmentation([{"name": "HorizontalFlip", "p": 0.5}, {"name": "VerticalFlip", "p": 0.5}], seed=0)
    positions = [tuple(np.argwhere(augment(corner.astype(np.uint8), corner)[1])[0]) for _ in range(400)]
    counts = {p: positions.count(p) for p in {(0, 0), (0, 3), (3, 0), (3, 3)}}
    assert all(60 < count < 140 for count in counts.values()), counts


def test_config_errors_name_the_transform():
    with pytest.raises(ConfigError, match="NoSuchTransform"):
        build_augmentation([{"name": "NoSuchTransform"}])
    with pytest.raises(ConfigError, match="Affine"):
        build_augmentation([{"name": "Affine", "rotate": "a lot"}])
    with pytest.raises(ConfigError, match="preset"):
        build_augmentation("medium")
    with pytest.raises(ConfigError):
        build_augmentation([{"p": 0.5}])


def test_config_list_with_nesting():
    spec = [
        {"name": "OneOf", "transforms": [{"name": "Rotate", "limit": [-20, 20]}, {"name": "Transpose"}], "p": 1.0},
        {"name": "GaussNoise", "std_range": [0.01, 0.02], "p": 1.0},
    ]
    augment = build_augmentation(spec, seed=0, crop_size=48)
    assert type(augment.transforms[1]).__name__ == "PadIfNeeded"  # crop after the geometric part
    image, labels = augment(IMAGE, LABELS)
    assert image.shape == (48, 48) and set(np.unique(labels)) <= set(np.unique(LABELS))
    assert augment.transforms[0].transforms[0].mask_interpolation == 0  # INTER_NEAREST injected


@pytest.mark.parametrize("channels", [1, 3])
def test_colour_preset_changes_colour_and_polarity_of_rgb_and_grey_images(channels):
    """Grey conversion and inversion reach every image; hue and channel changes need three channels."""
    rng = np.random.default_rng(0)
    image = np.zeros((60, 76, channels), np.float32)
    inside = LABELS > 0
    image[inside] = [0.9, 0.3, 0.6][:channels] if channels == 3 else 0.9
    augment = build_augmentation("colour", seed=0)
    inverted = grey = 0
    for call in range(60):
        out, labels = augment(image, LABELS, seed=int(rng.integers(1 << 30)))
        assert sorted(out.shape) == sorted(image.shape)  # 90-degree rotations swap height and width
        assert set(np.unique(labels).tolist()) <= set(np.unique(LABELS).tolist())
        inverted += float(np.median(out[labels == 0])) > 0.5  # background turned light
        if channels == 3:
            grey += bool(np.allclose(out[..., 0], out[..., 1], atol=1e-3) and np.allclose(out[..., 1], out[..., 2], atol=1e-3))
    assert 3 <= inverted <= 25
    assert channels == 1 or grey >= 3


def test_scale_stains_round_trips_and_fades():
    rng = np.random.default_rng(0)
    tissue = rng.integers(40, 250, (20, 30, 3)).astype(np.uint8)
    assert np.abs(scale_stains(tissue).astype(int) - tissue).max() <= 1
    faded, darker = scale_stains(tissue, 0.5, 0.5), scale_stains(tissue, 2.0, 2.0)
    assert faded.mean() > tissue.mean() > darker.mean()
    # less haematoxylin: the channel it absorbs least changes least (blue keeps more than red)
    pale = scale_stains(tissue, 0.3, 1.0).astype(float) - tissue
    assert pale[..., 0].mean() > pale[..., 2].mean() > 0
    sixteen = (tissue.astype(np.uint16) * 257)
    assert scale_stains(sixteen, 0.5, 0.5).dtype == np.uint16


def test_jitter_stains_leaves_grey_images_and_stays_in_range():
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 255, (16, 16, 1)).astype(np.uint8), 3, axis=2)
    assert jitter_stains(grey, rng, 2.0) is grey
    tissue = np.dstack([grey[..., 0], grey[..., 0] // 2, grey[..., 0]]).astype(np.uint8)
    assert jitter_stains(tissue, rng, 1.0) is tissue
    as_float = tissue.astype(np.float32) / 255  # only 8- and 16-bit images are jittered
    assert jitter_stains(as_float, rng, 2.0) is as_float
    with pytest.raises(DataError, match="uint8 or uint16"):
        scale_stains(as_float)
    outputs = [jitter_stains(tissue, np.random.default_rng(seed), 2.0) for seed in range(5)]
    assert len({o.tobytes() for o in outputs}) == 5
    low, high = scale_stains(tissue, 2.0, 2.0).astype(int), scale_stains(tissue, 0.5, 0.5).astype(int)
    for out in outputs:  # on average darker than both stains at x2, lighter than both at x1/2
        assert low.mean() < out.mean() < high.mean()
