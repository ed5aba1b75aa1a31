"""Tiled prediction and the receptive field: the claim of `cell_seg.inference`'s notes, checked on real
Keras networks whose receptive field is known (stacked 3x3 convolutions: one pixel per layer).

With `blend="center"` a tile keeps the pixels up to the middle of its overlaps, so tiles equal
whole-image prediction once the overlap is at least twice the receptive field radius, and not below.
"""

import itertools

import keras
import numpy as np
import pytest

from cell_seg.errors import ConfigError
from cell_seg.inference import Predictor, receptive_field_radius
from cell_seg.preprocess import crop_to, pad_to_multiple

TOL = 1e-5  # tiles against whole image: float rounding only
METADATA = {"channels": ["foreground", "border"], "normalization": {"mode": "scale"}, "in_channels": 1, "stride": 1}


def as_predict_normalized(model, stride=1):
    """`H x W x 1` normalised image -> `H x W x 2` probabilities, padded to the stride as `Predictor.load` does."""
    def predict_normalized(x):
        padded, _ = pad_to_multiple(x, stride)
        return crop_to(model(padded[None], training=False).numpy()[0], x.shape[:2]).astype(np.float32)
    return predict_normalized


def conv3x3(x, name, seed):
    # Weights of either sign (std 0.5) and tanh: no path through the network is switched off, so the
    # receptive field is all there is to see, and a cut context changes the output a lot.
    init = keras.initializers.RandomNormal(0.0, 0.5, seed=seed)
    return keras.layers.Conv2D(8, 3, padding="same", activation="tanh", kernel_initializer=init, name=name)(x)


def head(x):
    init = keras.initializers.RandomNormal(0.0, 0.5, seed=99)
    return keras.layers.Conv2D(2, 1, activation="sigmoid", kernel_initializer=init, name="probabilities")(x)


def stacked_convs(n_convs):
    """`n_convs` 3x3 convolutions and a 1x1 sigmoid head: receptive field radius exactly `n_convs`."""
    inputs = x = keras.Input((None, None, 1))
    for index in range(n_convs):
        x = conv3x3(x, f"conv{index}", seed=index)
    return keras.Model(inputs, head(x))


def tiny_unet():
    """conv, 2x2 max-pool, conv, 2x2 max-pool, conv, x4 upsampling, skip, conv: stride 4."""
    inputs = keras.Input((None, None, 1))
    skip = conv3x3(inputs, "conv0", seed=0)
    x = keras.layers.MaxPooling2D(2)(skip)
    x = keras.layers.MaxPooling2D(2)(conv3x3(x, "conv1", seed=1))
    x = keras.layers.UpSampling2D(4)(conv3x3(x, "conv2", seed=2))
    x = conv3x3(keras.layers.Concatenate()([x, skip]), "conv3", seed=3)
    return keras.Model(inputs, head(x))


def image(shape, seed=0):
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


@pytest.mark.parametrize("n_convs", [1, 4])
def test_measured_radius_of_stacked_3x3_convolutions_is_their_number(n_convs):
    predict = as_predict_normalized(stacked_convs(n_convs))
    assert receptive_field_radius(predict, in_channels=1) == (n_convs, n_convs)


def test_center_tiles_equal_whole_image_from_twice_the_radius_and_not_below():
    predictor = Predictor(METADATA, as_predict_normalized(stacked_convs(4)))
    assert predictor.receptive_field() == (4, 4)
    assert predictor.tile_overlap(32) == 8
    picture = image((75, 90))
    whole = predictor.predict_probs(picture)
    for overlap in (8, 12, "auto"):
        tiled = predictor.predict_probs(picture, tile=32, overlap=overlap)
        np.testing.assert_allclose(tiled, whole, rtol=0, atol=TOL, err_msg=f"overlap {overlap}")
    # One pixel less and the pixels kept at the seams lose the last ring of their context.
    assert np.abs(predictor.predict_probs(picture, tile=32, overlap=7) - whole).max() > 1e-2
    configured = Predictor(METADATA, predictor._predict_normalized, tile=32, overlap="auto")
    np.testing.assert_allclose(configured.predict_probs(picture), whole, rtol=0, atol=TOL)


def impulse_extents(predict, size, stride):
    """Per-axis largest reach of an impulse over every phase `(p, q)` of the stride (not only the diagonal)."""
    zero = np.zeros((size, size, 1), np.float32)
    base = predict(zero).astype(np.float64)
    reach = [0, 0]
    for p, q in itertools.product(range(stride), repeat=2):
        row, col = size // 2 + p, size // 2 + q
        impulse = zero.copy()
        impulse[row, col] = 1
        changed = (np.abs(predict(impulse) - base) > 1e-6).any(axis=-1)
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        assert rows[0] > 0 and cols[0] > 0 and rows[-1] < size - 1 and cols[-1] < size - 1
        reach = [max(reach[0], row - rows[0], rows[-1] - row), max(reach[1], col - cols[0], cols[-1] - col)]
    return tuple(int(value) for value in reach)


def test_strided_network_is_measured_over_every_phase_and_tiles_exactly():
    predict = as_predict_normalized(tiny_unet(), stride=4)
    predictor = Predictor({**METADATA, "stride": 4}, predict)
    radius = predictor.receptive_field()
    assert radius == impulse_extents(predict, 64, stride=4)
    overlap = predictor.tile_overlap(64)
    assert overlap % 4 == 0 and overlap >= 2 * max(radius)
    picture = image((150, 181), seed=1)
    whole = predictor.predict_probs(picture)
    np.testing.assert_allclose(predictor.predict_probs(picture, tile=64, overlap=overlap), whole, rtol=0, atol=TOL)
    assert np.abs(predictor.predict_probs(picture, tile=64, overlap=0) - whole).max() > 1e-2


def test_global_pooling_has_no_finite_radius_and_the_overlap_is_capped():
    inputs = keras.Input((None, None, 1))
    # As squeeze-and-excitation: features times their image mean. The bias keeps the zero image's features
    # off 0 (as batch norm's shift does), so the mean's share of one pixel reaches every output.
    x = keras.layers.Conv2D(8, 3, padding="same", activation="tanh", bias_initializer=keras.initializers.Constant(0.5),
                            kernel_initializer=keras.initializers.RandomNormal(0.0, 0.5, seed=0))(inputs)
    x = keras.layers.Multiply()([x, keras.layers.GlobalAveragePooling2D(keepdims=True)(x)])
    predict = as_predict_normalized(keras.Model(inputs, head(conv3x3(x, "conv1", seed=1))))
    # The share shrinks with the probe's area: it reaches the border of small probes, not of large ones.
    assert receptive_field_radius(predict, in_channels=1, max_size=1024) == (np.inf, np.inf)
    predictor = Predictor(METADATA, predict)
    predictor._receptive_field = (np.inf, np.inf)  # as measured above, without the 1024-pixel probes
    assert predictor.tile_overlap() == np.inf
    assert predictor.tile_overlap(64) == 32  # half the tile: tiles still advance by half their size


def test_overlap_must_be_pixels_or_auto():
    predictor = Predictor(METADATA, lambda x: np.repeat(x, 2, axis=-1))
    with pytest.raises(ConfigError, match="auto"):
        predictor.predict_probs(image((40, 40)), tile=32, overlap="measured")


def test_large_inputs_are_tiled_at_the_measured_overlap_without_a_tile_size():
    network = as_predict_normalized(stacked_convs(4))
    shapes = []

    def recording(x):
        shapes.append(x.shape[:2])
        return network(x)

    predictor = Predictor(METADATA, recording)
    whole = predictor.predict_probs(image((75, 90)))
    assert shapes == [(75, 90)]
    predictor.auto_tile, predictor.auto_tile_pixels = 32, 40 * 40
    shapes.clear()
    tiled = predictor.predict_probs(image((75, 90)))
    # Only the network calls of the tiles (the receptive-field probes come first, as square images).
    tiles = [shape for shape in shapes if shape == (32, 32)]
    assert len(tiles) >= 9 and max(max(shape) for shape in shapes[-len(tiles):]) == 32
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=TOL)
    # Within the pixel budget, or with a tile size given, nothing changes.
    shapes.clear()
    predictor.predict_probs(image((30, 50)))
    assert shapes == [(30, 50)]
    shapes.clear()
    predictor.predict_probs(image((75, 90)), tile=64, overlap=16)
    assert all(max(shape) <= 64 for shape in shapes) and len(shapes) == 4
