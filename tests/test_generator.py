"""Keras batches from COCO (cell_seg.data.generator), on tiny synthetic images."""

from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import pytest

from cell_seg.data.dataset import CocoDataset
from cell_seg.data.generator import SegmentationSequence, stack_padded, to_tf_dataset
from cell_seg.data.synthetic import SYNTHETIC_CATEGORIES, make_synthetic, write_synthetic_coco
from cell_seg.data.targets import build_targets
from cell_seg.errors import ConfigError
from cell_seg.files import read_json, write_image

SHAPE = (48, 64)


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    write_synthetic_coco(folder, n_images=6, shape=SHAPE, seed=0, cells=(3, 8))
    return folder


def _sequence(coco_dir, **kwargs):
    return SegmentationSequence(coco_dir / "coco.json", coco_dir / "images", **kwargs)


def test_training_batches_shapes_and_types(coco_dir):
    sequence = _sequence(
        coco_dir, channels=["foreground", "border", "classes"], batch_size=4, crop_size=32, augment="strong"
    )
    assert len(sequence) == 2
    assert sequence.channel_names == ["foreground", "border"] + [f"class_{c}" for c in SYNTHETIC_CATEGORIES]
    x, y = sequence[0]
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert x.shape == (4, 32, 32, 3) and y.shape == (4, 32, 32, 5)
    assert 0 <= x.min() and x.max() <= 1.5
    assert set(np.unique(y)) <= {0.0, 1.0}
    np.testing.assert_array_equal(y[..., 2:].sum(-1), y[..., 0])  # each cell pixel in exactly one class
    np.testing.assert_array_equal(x[..., 0], x[..., 2])  # a gray image stays gray through augmentation
    x_last, _ = sequence[1]
    assert x_last.shape[0] == 2  # 6 images, batches of 4
    with pytest.raises(IndexError):
        sequence[2]


def test_validation_mode_pads_whole_images(coco_dir):
    sequence = _sequence(coco_dir, crop_size=None, augment="none", shuffle=False, batch_size=3, in_channels=1)
    x, y = sequence[0]
    assert x.shape == (3, 64, 64, 1) and y.shape == (3, 64, 64, 2)
    assert not x[:, 48:].any() and not y[:, 48:].any()  # padding rows are zero
    dataset = sequence.dataset
    first = dataset.image_ids[0]
    label_map, classes = dataset.load_labels(first)
    np.testing.assert_array_equal(y[0, :48], build_targets(label_map, classes, ["foreground", "border"], 3))
    np.testing.assert_allclose(x[0, :48, :, 0], dataset.load_image(first) / 255.0, atol=1e-6)


def test_batch_of_different_sizes_is_padded_to_the_largest(tmp_path):
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cell"}]}
    from cell_seg.data.labels import label_map_to_coco

    for image_id, shape in ((1, (40, 50)), (2, (70, 33))):
        _, image, label_map, _ = make_synthetic(1, shape=shape, seed=image_id, cells=(2, 4))[0]
        write_image(image, tmp_path / f"{image_id}.png")
        coco["images"].append({"id": image_id, "file_name": f"{image_id}.png", "height": shape[0], "width": shape[1]})
        for rle in label_map_to_coco(label_map).values():
            coco["annotations"].append(
                {"id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": 1, "segmentation": rle}
            )
    sequence = SegmentationSequence(coco, tmp_path, crop_size=None, augment="none", shuffle=False, batch_size=2)
    x, y = sequence[0]
    assert x.shape == (2, 96, 64, 3) and y.shape == (2, 96, 64, 2)
    assert not x[0, 40:].any() and not x[1, :, 33:].any()
    assert stack_padded([np.ones((2, 3, 1)), np.ones((4, 2, 1))]).shape == (2, 4, 3, 1)


def test_same_seed_same_batches(coco_dir):
    kwargs = dict(batch_size=2, crop_size=32, augment="strong", border_width=1, seed=5)
    one, two = _sequence(coco_dir, **kwargs), _sequence(coco_dir, **kwargs)
    for index in range(len(one)):
        for a, b in zip(one[index], two[index]):
            np.testing.assert_array_equal(a, b)
    epoch0 = one[0]
    one.on_epoch_end()
    assert one.epoch == 1
    assert not np.array_equal(one[0][0], epoch0[0])  # new order and augmentation
    np.testing.assert_array_equal(one.get_batch(0, epoch=0)[0], epoch0[0])
    other = _sequence(coco_dir, **dict(kwargs, seed=6))
    assert not np.array_equal(other[0][0], epoch0[0])
    # threads building batches in any order give the same batches
    with ThreadPoolExecutor(2) as pool:
        threaded = list(pool.map(two.get_batch, [2, 1, 0]))
    for index, batch in zip([2, 1, 0], threaded):
        np.testing.assert_array_equal(batch[1], one.get_batch(index, epoch=0)[1])


def test_epoch_orders(coco_dir):
    ids = read_json(coco_dir / "coco.json")["images"]
    sequence = _sequence(coco_dir, batch_size=4, shuffle=True, seed=1)
    for epoch in range(3):
        assert sorted(sequence.epoch_image_ids(epoch)) == [image["id"] for image in ids]  # each image once
    assert sequence.epoch_image_ids(0) != sequence.epoch_image_ids(1)
    fixed = _sequence(coco_dir, batch_size=4, shuffle=False, steps_per_epoch=2)
    assert len(fixed) == 2
    assert fixed.epoch_image_ids(0) == [1, 2, 3, 4, 5, 6, 1, 2]
    assert fixed.epoch_image_ids(1) == [3, 4, 5, 6, 1, 2, 3, 4]
    subset = _sequence(coco_dir, batch_size=4, image_ids=[2, 4])
    assert len(subset) == 1 and sorted(subset.epoch_image_ids()) == [2, 4]


def test_class_balanced_sampling_frequencies(tmp_path):
    coco = {
        "images": [
            {"id": i, "file_name": f"{i}.png", "height": 8, "width": 8, "image_class": "common" if i <= 8 else "rare"}
            for i in range(1, 11)
        ],
        "annotations": [],
        "categories": [{"id": 1, "name": "cell"}],
    }
    sequence = SegmentationSequence(coco, tmp_path, batch_size=10, class_balanced=True, steps_per_epoch=200, seed=0)
    drawn = np.array(sequence.epoch_image_ids(0))
    rare = np.isin(drawn, [9, 10]).mean()
    assert drawn.size == 2000 and abs(rare - 0.5) < 0.05  # 2 rare images of 10 drawn half the time
    assert sequence.epoch_image_ids(0) == sequence.epoch_image_ids(0)
    assert sequence.epoch_image_ids(1) != sequence.epoch_image_ids(0)
    plain = SegmentationSequence(coco, tmp_path, batch_size=10, steps_per_epoch=200, seed=0)
    assert abs(np.isin(plain.epoch_image_ids(0), [9, 10]).mean() - 0.2) < 1e-9
    # Power 0.5: each class in proportion to the square root of its count, sqrt(2) : sqrt(8) = 1 : 2.
    partial = SegmentationSequence(coco, tmp_path, batch_size=10, class_balanced=True, class_balance_power=0.5,
                                   steps_per_epoch=200, seed=0)
    assert abs(np.isin(partial.epoch_image_ids(0), [9, 10]).mean() - 1 / 3) < 0.05
    with pytest.raises(ConfigError, match="class_balance_power"):
        SegmentationSequence(coco, tmp_path, class_balanced=True, class_balance_power=2.0)


def test_standard_normalization_and_errors(coco_dir):
    sequence = _sequence(coco_dir, crop_size=None, augment="none", normalization="standard", mean=0.5, std=0.25)
    plain = _sequence(coco_dir, crop_size=None, augment="none")
    x, _ = sequence.load_sample(1)
    reference, _ = plain.load_sample(1)
    np.testing.assert_allclose(x[:48], (reference[:48] - 0.5) / 0.25, atol=1e-5)
    with pytest.raises(ConfigError):
        _sequence(coco_dir, normalization="standard")
    with pytest.raises(ConfigError):
        _sequence(coco_dir, channels=["edges"])
    with pytest.raises(ConfigError):
        _sequence(coco_dir, augment="wild")


def test_grey_dark_turns_stained_colour_into_one_inverted_grey_channel(tmp_path):
    from cell_seg.files import read_image
    from cell_seg.preprocess import normalize_image

    write_synthetic_coco(tmp_path, n_images=2, shape=SHAPE, seed=3, cells=(3, 6))
    coco = read_json(tmp_path / "coco.json")
    for entry in coco["images"]:  # tint each grey image pink, as a stained slide
        path = tmp_path / "images" / entry["file_name"]
        grey = read_image(path).astype(np.float32)
        write_image(np.dstack([grey, grey * 0.6, grey * 0.9]).astype(np.uint8), path)
    plain = _sequence(tmp_path, crop_size=None, augment="none", normalization="grey_dark")
    x, _ = plain.load_sample(coco["images"][0]["id"], pad=False)
    stained = read_image(tmp_path / "images" / coco["images"][0]["file_name"])
    np.testing.assert_array_equal(x, normalize_image(stained, "grey_dark"))
    luminance = normalize_image(stained, "minmax", in_channels=1)[..., 0]
    np.testing.assert_allclose(x[..., 0], 1 - luminance, atol=1e-6)  # stained colour is inverted
    augmented = _sequence(tmp_path, batch_size=2, crop_size=32, augment="strong", normalization="grey_dark")
    batch, _ = augmented[0]
    np.testing.assert_array_equal(batch[..., 0], batch[..., 2])  # augmented as one channel


def test_stain_jitter_changes_stained_colour_images_only_and_repeats_with_the_seed(tmp_path):
    from cell_seg.config import load_config
    from cell_seg.files import read_image

    write_synthetic_coco(tmp_path, n_images=2, shape=SHAPE, seed=5, cells=(3, 6))
    coco = read_json(tmp_path / "coco.json")
    stained_id, grey_id = coco["images"][0]["id"], coco["images"][1]["id"]
    path = tmp_path / "images" / coco["images"][0]["file_name"]
    dark = 255 - read_image(path).astype(np.float32)  # dark nuclei on a light slide, tinted purple
    write_image(np.dstack([dark * 0.8, dark * 0.5, dark * 0.9]).astype(np.uint8), path)
    settings = dict(crop_size=None, augment="none", normalization="scale")
    plain = _sequence(tmp_path, **settings)
    jittered = _sequence(tmp_path, stain_jitter=2.0, **settings)
    for seed in (1, 2):
        x_plain, _ = plain.load_sample(stained_id, seed=seed, pad=False)
        x_jit, _ = jittered.load_sample(stained_id, seed=seed, pad=False)
        assert np.abs(x_jit - x_plain).mean() > 0.005
        np.testing.assert_array_equal(x_jit, jittered.load_sample(stained_id, seed=seed, pad=False)[0])
    assert not np.array_equal(jittered.load_sample(stained_id, seed=1, pad=False)[0],
                              jittered.load_sample(stained_id, seed=2, pad=False)[0])
    np.testing.assert_array_equal(jittered.load_sample(grey_id, seed=1, pad=False)[0],
                                  plain.load_sample(grey_id, seed=1, pad=False)[0])
    with pytest.raises(ConfigError, match="stain_jitter"):
        load_config(None, ["data.stain_jitter=0.5"])


def test_to_tf_dataset_epochs_and_shapes(coco_dir):
    sequence = _sequence(coco_dir, batch_size=4, crop_size=32, augment="light", seed=2, workers=2)
    dataset = to_tf_dataset(sequence, prefetch=1)
    assert tuple(dataset.element_spec[0].shape) == (None, None, None, 3)
    assert tuple(dataset.element_spec[1].shape) == (None, None, None, 2)
    for epoch in range(2):  # each pass is the next epoch
        batches = list(dataset.as_numpy_iterator())
        assert [b[0].shape for b in batches] == [(4, 32, 32, 3), (2, 32, 32, 3)]
        for index, (x, y) in enumerate(batches):
            expected_x, expected_y = sequence.get_batch(index, epoch=epoch)
            np.testing.assert_array_equal(x, expected_x)
            np.testing.assert_array_equal(y, expected_y)


def test_keras_fit_accepts_the_sequence(coco_dir):
    sequence = _sequence(coco_dir, batch_size=2, crop_size=32, steps_per_epoch=2, workers=2)
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="sigmoid")(inputs))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    history = model.fit(sequence, epochs=2, verbose=0)
    # Keras calls on_epoch_end once before the first epoch, then after each epoch
    assert len(history.history["loss"]) == 2 and sequence.epoch == 3


def test_accepts_a_dataset_object(coco_dir):
    dataset = CocoDataset(coco_dir / "coco.json", coco_dir / "images", cache_size=8)
    sequence = SegmentationSequence(dataset, batch_size=6, crop_size=None, augment="none")
    sequence[0]
    sequence[0]
    assert dataset.stats["cache_hits"] == 6


def test_close_labels_closes_the_instances_of_the_named_classes_before_the_targets(coco_dir):
    from cell_seg.config import load_config
    from cell_seg.data.labels import close_instances

    broken = np.zeros(SHAPE, np.int32)
    broken[10:20, 5:15] = 1
    broken[10:20, 17:27] = 1  # one cell in two pieces
    broken[30:40, 30:40] = 2
    settings = dict(channels=["foreground", "border"], crop_size=None, augment="none")
    plain = _sequence(coco_dir, **settings)
    image_id = plain.image_ids[0]
    image_class = plain.dataset.image_class(image_id)
    named = _sequence(coco_dir, close_labels={image_class: 5}, **settings)
    other = _sequence(coco_dir, close_labels={"not_" + image_class: 5}, **settings)
    every = _sequence(coco_dir, close_labels=5, **settings)
    for sequence in (plain, named, other, every):
        sequence.dataset.load_labels = lambda _id: (broken.copy(), np.array([-1, 0, 0], np.int32))
    expected = build_targets(close_instances(broken, 5), np.array([-1, 0, 0]), ["foreground", "border"], 1)
    np.testing.assert_array_equal(named.load_sample(image_id, pad=False)[1], expected)
    np.testing.assert_array_equal(every.load_sample(image_id, pad=False)[1], expected)
    _, y_plain = plain.load_sample(image_id, pad=False)
    np.testing.assert_array_equal(other.load_sample(image_id, pad=False)[1], y_plain)
    assert y_plain[15, 16, 0] == 0 and expected[15, 16, 0] == 1  # the gap is foreground once closed
    with pytest.raises(ConfigError, match="close_labels"):
        load_config(None, ["data.close_labels=-3"])
    assert load_config(None, ["data.close_labels={astro: 5}"]).data.close_labels == {"astro": 5}
