"""Input upscaling (`data.scale`): resizing helpers, training samples, and the predictor's round trip."""

import json

import numpy as np
import pytest

from cell_seg.errors import ModelError
from cell_seg.preprocess import rescale, resize_to, scaled_shape

SHAPE = (48, 64)


def test_label_maps_survive_an_upscale_and_back():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 300, (11, 13)).astype(np.int32) * 70000  # ids beyond 16 bits stay exact
    big = rescale(labels, 2.0, labels=True)
    assert big.shape == (22, 26) and big.dtype == np.int32
    np.testing.assert_array_equal(big[::2, ::2], labels)
    assert set(np.unique(big)) == set(np.unique(labels))  # nearest: no mixed ids
    np.testing.assert_array_equal(resize_to(big, labels.shape, labels=True), labels)
    assert rescale(labels, 1.0, labels=True) is labels


def test_images_and_probabilities_round_trip():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (10, 14)).astype(np.uint8)
    big = rescale(image, 2.0)
    assert big.shape == (20, 28) and big.dtype == np.uint8
    probs = np.repeat(np.repeat(rng.uniform(0, 1, (10, 14, 3)).astype(np.float32), 2, 0), 2, 1)
    small = resize_to(probs, (10, 14))  # area averaging gives 2 x 2 blocks back exactly
    assert small.shape == (10, 14, 3) and small.dtype == np.float32
    np.testing.assert_allclose(small, probs[::2, ::2], atol=1e-6)
    assert resize_to(np.ones((8, 8, 1), np.float32), (4, 4)).shape == (4, 4, 1)
    assert scaled_shape((520, 704), 1.5) == (780, 1056)


def test_probabilities_of_many_channels_resize_as_each_channel_alone():
    """OpenCV's area resize takes at most 4 channels: a 6-channel model (Sartorius) at 1.5x needs them split."""
    probs = np.random.default_rng(2).uniform(0, 1, (30, 45, 6)).astype(np.float32)
    for shape in ((20, 30), (45, 67)):
        out = resize_to(probs, shape)
        assert out.shape == shape + (6,) and out.dtype == np.float32
        for channel in range(6):
            np.testing.assert_allclose(out[..., channel], resize_to(probs[..., channel], shape), atol=1e-5)


# --- predictor --------------------------------------------------------------------------------


def _predictor(override=None, **metadata):
    from cell_seg.inference import Predictor

    seen = []

    def predict_normalized(x):
        # A stand-in model: foreground = the image, no other channel; records the input size.
        seen.append(x.shape[:2])
        return x[..., :1].astype(np.float32)

    meta = {"channels": ["foreground"], "normalization": {"mode": "scale"}, "in_channels": 1, "stride": 1, **metadata}
    return Predictor(meta, predict_normalized, scale=override), seen


def test_predictor_resizes_by_the_metadata_scale_and_returns_the_original_size():
    image = np.zeros(SHAPE, np.uint8)
    image[10:20, 10:30] = 255
    predictor, seen = _predictor()
    assert predictor.scale == 1.0  # old models: no "scale" in the metadata
    predictor, seen = _predictor(scale=2.0)
    assert predictor.scale == 2.0
    probs = predictor.predict_probs(image)
    assert seen == [(96, 128)] and probs.shape == SHAPE + (1,)
    # Bilinear up and area averaging down: exact away from edges, a step softened by a quarter at most.
    difference = np.abs(probs[..., 0] - image / 255.0)
    assert difference.max() < 0.25 and difference[12:18, 12:28].max() < 1e-6 and difference[30:].max() < 1e-6
    labels, instances = predictor.predict_instances(image, postprocess={"min_area": 1})
    assert labels.shape == SHAPE and len(instances) == 1 and instances[0]["area"] == 200
    seen.clear()
    assert predictor.predict_probs(image, tta=True).shape == SHAPE + (1,)
    assert seen == [(96, 128), (96, 128), (128, 96), (128, 96)] * 2  # every flip / rotation at the model's scale
    seen.clear()
    predictor.predict_probs(image, tile=64, overlap=16)  # tiles of the enlarged image
    assert seen and all(max(s) <= 64 for s in seen)
    override, seen = _predictor(override=0.5, scale=2.0)  # an explicit scale wins
    override.predict_probs(image)
    assert seen == [(24, 32)]


def test_metadata_scale_is_checked(tmp_path):
    from cell_seg.metadata import ModelMetadata

    meta = {"channels": ["foreground"], "normalization": {"mode": "scale"}, "in_channels": 1, "stride": 32}
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({**meta, "scale": 2}))
    assert ModelMetadata.read(path).scale == 2
    path.write_text(json.dumps({**meta, "scale": 0}))
    with pytest.raises(ModelError, match="scale"):
        ModelMetadata.read(path)


def test_scale_by_kind_resizes_each_kind_of_image_by_its_own_scale(tmp_path):
    """Dark background: fluorescence (1.5 here); bright: brightfield (the model's scale 1); colour: histology."""
    from cell_seg.metadata import ModelMetadata

    predictor, seen = _predictor(scale_by_kind={"fluorescence": 1.5, "histology": 2})
    dark, bright = np.zeros(SHAPE, np.uint8), np.full(SHAPE, 200, np.uint8)
    colour = np.zeros(SHAPE + (3,), np.uint8)
    colour[..., 0] = 180
    for image in (dark, bright, colour):
        assert predictor.predict_probs(image).shape == SHAPE + (1,)
    assert seen == [(72, 96), SHAPE, (96, 128)]
    override, seen = _predictor(override=1.0, scale_by_kind={"fluorescence": 1.5})  # an explicit scale wins
    override.predict_probs(dark)
    assert seen == [SHAPE]
    meta = {"channels": ["foreground"], "normalization": {"mode": "scale"}, "in_channels": 1, "stride": 32}
    assert "scale_by_kind" not in ModelMetadata.from_dict(meta).to_dict()  # old files stay as they were
    for bad in ({"phase": 1.5}, {"fluorescence": 0}, ["fluorescence"]):
        with pytest.raises(ModelError, match="scale_by_kind"):
            ModelMetadata.from_dict({**meta, "scale_by_kind": bad})


def test_export_scale_by_kind_option_is_checked():
    from cell_seg.cli.export import parse_scale_by_kind
    from cell_seg.errors import ConfigError

    assert parse_scale_by_kind(["fluorescence=1.5", "histology=1"]) == {"fluorescence": 1.5, "histology": 1.0}
    for bad in ("fluorescence", "phase=2", "histology=-1", "brightfield=big"):
        with pytest.raises(ConfigError, match="--scale-by-kind"):
            parse_scale_by_kind([bad])


def _squares(side, count=3):
    """An image with `count` bright squares of `side` px on black, and nothing else."""
    image = np.zeros(SHAPE, np.uint8)
    for i in range(count):
        image[4:4 + side, 4 + i * (side + 4):4 + i * (side + 4) + side] = 255
    return image


def test_size_rule_predicts_each_image_where_its_objects_reach_the_target_diameter():
    image = _squares(8)
    diameter = 2 * np.sqrt(64 / np.pi)  # 8 x 8 squares: 9.0 px across as discs of their area
    predictor, seen = _predictor(target_diameter=2 * diameter)
    probs = predictor.predict_probs(image)
    # Measured at the model's scale 1, then at 2 (which finds the same diameter, so it is kept).
    assert seen == [SHAPE, (96, 128)] and probs.shape == SHAPE + (1,)
    labels, instances = predictor.predict_instances(image, postprocess={"min_area": 1})
    assert len(instances) == 3 and labels.shape == SHAPE
    seen.clear()
    predictor.predict_probs(image, tta=True)  # measured without TTA, then the 8 views at the factor found
    assert seen[:2] == [SHAPE, (96, 128)] and len(seen) == 10 and set(seen[2:]) == {(96, 128), (128, 96)}
    seen.clear()
    predictor.predict_probs(np.zeros(SHAPE, np.uint8))  # nothing found: the model's scale
    assert seen == [SHAPE]
    seen.clear()
    predictor.predict_probs(_squares(40, count=1))  # a 45 px object: shrunk to 0.4 (19 x 26) and kept there
    assert seen == [SHAPE, (19, 26)]
    override, seen = _predictor(override=1.0, target_diameter=2 * diameter)  # an explicit scale wins
    override.predict_probs(image)
    assert seen == [SHAPE] and override.target_diameter is None


def test_size_scale_is_clipped_and_falls_back_when_nothing_is_found():
    from cell_seg.preprocess import SIZE_SCALE_RANGE, median_diameter, size_scale

    assert size_scale(10.0, 30.0) == 3.0
    assert size_scale(1.0, 30.0) == SIZE_SCALE_RANGE[1] and size_scale(1000.0, 30.0) == SIZE_SCALE_RANGE[0]
    assert size_scale(median_diameter(np.zeros((5, 5), np.int32)), 30.0, default=1.5) == 1.5
    assert size_scale(0.0, 30.0) == 1.0


def test_metadata_target_diameter_is_checked():
    from cell_seg.metadata import ModelMetadata

    meta = {"channels": ["foreground"], "normalization": {"mode": "scale"}, "in_channels": 1, "stride": 32}
    assert "target_diameter" not in ModelMetadata.from_dict(meta).to_dict()  # old files stay as they were
    assert ModelMetadata.from_dict({**meta, "target_diameter": 28}).target_diameter == 28
    for bad in (0, -3, "28", True):
        with pytest.raises(ModelError, match="target_diameter must be a positive number"):
            ModelMetadata.from_dict({**meta, "target_diameter": bad})
    with pytest.raises(ModelError, match="exclude each other"):
        ModelMetadata.from_dict({**meta, "target_diameter": 28, "scale_by_kind": {"fluorescence": 1.5}})


# --- training samples ------------------------------------------------------------------------


def test_training_samples_are_enlarged_with_nearest_labels(tmp_path):
    from cell_seg.data.generator import SegmentationSequence
    from cell_seg.data.synthetic import write_synthetic_coco
    from cell_seg.data.targets import build_targets

    write_synthetic_coco(tmp_path, n_images=2, shape=SHAPE, seed=0, cells=(3, 6))
    common = dict(channels=["foreground", "distance"], crop_size=None, augment="none", shuffle=False, in_channels=1)
    plain = SegmentationSequence(tmp_path / "coco.json", tmp_path / "images", **common)
    scaled = SegmentationSequence(tmp_path / "coco.json", tmp_path / "images", scale=2.0, **common)
    image_id = plain.dataset.image_ids[0]
    x, y = scaled.load_sample(image_id, pad=False)
    assert x.shape == (96, 128, 1) and y.shape == (96, 128, 2)
    label_map, classes = plain.dataset.load_labels(image_id)
    big_labels = rescale(label_map, 2.0, labels=True)
    np.testing.assert_array_equal(y, build_targets(big_labels, classes, ["foreground", "distance"], 1))
    x_plain, _ = plain.load_sample(image_id, pad=False)
    np.testing.assert_allclose(x[::2, ::2], x_plain, atol=0.5)  # roughly the same picture, twice the size


def test_config_scale_reaches_the_sequences_and_the_run_metadata(tmp_path):
    from cell_seg.config import load_config
    from cell_seg.data.synthetic import write_synthetic_coco
    from cell_seg.files import read_json
    from cell_seg.train import make_sequences, soft_channel_indices

    write_synthetic_coco(tmp_path, n_images=4, shape=SHAPE, seed=0, cells=(3, 6))
    coco = read_json(tmp_path / "coco.json")
    config = load_config(None, ["data.scale=2", "data.channels=[foreground, border, distance]"])
    train, val = make_sequences(config, coco, coco, tmp_path / "images", stride=32)
    assert train.scale == val.scale == 2.0
    assert soft_channel_indices(train.channel_names) == [2]


def test_training_samples_are_resized_to_the_target_diameter(tmp_path):
    from cell_seg.config import load_config
    from cell_seg.data.generator import SegmentationSequence
    from cell_seg.data.synthetic import write_synthetic_coco
    from cell_seg.errors import ConfigError
    from cell_seg.preprocess import median_diameter

    write_synthetic_coco(tmp_path, n_images=2, shape=SHAPE, seed=0, cells=(3, 6))
    common = dict(channels=["foreground"], crop_size=None, augment="none", shuffle=False, in_channels=1)
    plain = SegmentationSequence(tmp_path / "coco.json", tmp_path / "images", **common)
    image_id = plain.dataset.image_ids[0]
    label_map, _ = plain.dataset.load_labels(image_id)
    diameter = median_diameter(label_map)
    sized = SegmentationSequence(tmp_path / "coco.json", tmp_path / "images", target_diameter=2 * diameter, **common)
    x, y = sized.load_sample(image_id, pad=False)
    assert sized.sample_scale(image_id, label_map) == pytest.approx(2.0)
    assert x.shape == (96, 128, 1) and y.shape == (96, 128, 1)
    config = load_config(None, ["data.target_diameter=28"])
    assert config.data.target_diameter == 28.0
    with pytest.raises(ConfigError, match="exclude each other"):
        load_config(None, ["data.target_diameter=28", "data.scale=2"])
    with pytest.raises(ConfigError, match="data.target_diameter"):
        load_config(None, ["data.target_diameter=1"])
