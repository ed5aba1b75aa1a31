"""Image normalisation, padding and cropping (cell_seg.preprocess)."""

import cv2
import numpy as np
import pytest

from cell_seg.errors import ConfigError, DataError
from cell_seg.preprocess import convert_channels, crop_to, normalize_image, pad_to_multiple


def test_scale_by_dtype():
    out = normalize_image(np.array([[0, 51, 255]], np.uint8), in_channels=1)
    np.testing.assert_array_equal(out[..., 0], np.array([[0.0, 0.2, 1.0]], np.float32))
    out = normalize_image(np.array([[0, 65535]], np.uint16), in_channels=1)
    assert out.dtype == np.float32 and out[..., 0].tolist() == [[0.0, 1.0]]
    floats = np.array([[-0.5, 2.0]], np.float64)
    np.testing.assert_array_equal(normalize_image(floats, in_channels=1)[..., 0], floats.astype(np.float32))


def test_channel_conversions():
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    rgb = normalize_image(gray, in_channels=3)
    assert rgb.shape == (2, 3, 3)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    assert normalize_image(gray[..., None], in_channels=3).shape == (2, 3, 3)

    colour = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    luminance = convert_channels(colour, in_channels=1)[..., 0]
    np.testing.assert_allclose(luminance, cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY), atol=0.5)

    rgba = np.dstack([colour, np.full((5, 7), 7, np.uint8)])
    np.testing.assert_array_equal(normalize_image(rgba), normalize_image(colour))
    with pytest.raises(DataError):
        normalize_image(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ConfigError):
        normalize_image(gray, in_channels=2)


def test_minmax_uses_robust_percentiles():
    image = np.arange(1000, dtype=np.uint16).reshape(20, 50) * 10
    lo, hi = np.percentile(image.astype(np.float32), [0.5, 99.5])
    out = normalize_image(image, "minmax", in_channels=1)[..., 0]
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out[10, 0], (image[10, 0] - lo) / (hi - lo), rtol=1e-6)
    assert (out[0, :4] == 0).all() and (out[-1, -4:] == 1).all()  # the extreme 0.5 % are clipped
    assert not normalize_image(np.full((4, 4), 9, np.uint16), "minmax").any()


def test_grey_dark_shows_every_kind_as_bright_objects_on_dark():
    rng = np.random.default_rng(0)
    dark = (rng.random((40, 50)) ** 3 * 255).astype(np.uint8)  # fluorescence: mostly dark
    stretched = normalize_image(dark, "minmax", in_channels=1)
    out = normalize_image(dark, "grey_dark")
    assert out.shape == (40, 50, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[..., 0], stretched[..., 0])  # not inverted
    np.testing.assert_array_equal(out[..., 0], out[..., 2])

    bright = (255 - dark).astype(np.uint8)  # brightfield: dark objects on a bright background
    np.testing.assert_allclose(normalize_image(bright, "grey_dark", in_channels=1), stretched, atol=1e-6)

    # Stained colour is inverted even where its median is dark (dense tissue).
    stained = np.dstack([dark, (dark * 0.5).astype(np.uint8), dark]).astype(np.uint8)
    luminance = normalize_image(stained, "minmax", in_channels=1)
    assert np.median(luminance) < 0.5
    np.testing.assert_allclose(normalize_image(stained, "grey_dark", in_channels=1), 1 - luminance, atol=1e-6)
    # Grey stored as RGB is not colour; 16-bit works the same as 8-bit.
    np.testing.assert_allclose(normalize_image(np.dstack([dark] * 3), "grey_dark"), out, atol=1e-5)
    wide = dark.astype(np.uint16) * 257
    np.testing.assert_allclose(normalize_image(wide, "grey_dark"), out, atol=1e-6)
    assert not normalize_image(np.full((4, 4, 3), 9, np.uint8), "grey_dark").any()


def test_standard_per_channel():
    image = np.full((2, 2, 3), 255, np.uint8)
    out = normalize_image(image, "standard", mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 2.0])
    np.testing.assert_allclose(out[0, 0], [1.0, 3.0, 0.5])
    with pytest.raises(ConfigError):
        normalize_image(image, "standard", mean=0.5)
    with pytest.raises(ConfigError, match="normalization"):
        normalize_image(image, "zscore")


def test_pad_and_crop_round_trip():
    array = np.arange(30 * 33 * 2, dtype=np.float32).reshape(30, 33, 2) + 1
    padded, (pad_h, pad_w) = pad_to_multiple(array, 32)
    assert padded.shape == (32, 64, 2) and (pad_h, pad_w) == (2, 31)
    assert not padded[30:].any() and not padded[:, 33:].any()
    np.testing.assert_array_equal(crop_to(padded, array.shape), array)
    same, pads = pad_to_multiple(np.zeros((64, 32)), 32)
    assert same.shape == (64, 32) and pads == (0, 0)
    filled, _ = pad_to_multiple(np.zeros((1, 1), np.int32), 4, value=-1)
    assert filled.sum() == -15
