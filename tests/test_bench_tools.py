"""bench/soup.py (mean of runs' weights), bench/ensemble.py (mean of models' maps), bench/stain_shift.py and bench/loss_split.py."""

import json

import numpy as np
import pytest

from cell_seg.config import load_config
from cell_seg.errors import ConfigError

TINY = ["model.name=unet_plain", "model.depth=2"]


def tiny_run(path, filters=4, seed=0):
    """A run directory with an untrained tiny U-Net (its own random weights), metadata and settings."""
    import keras

    from cell_seg.models import build_model

    from cell_seg.metadata import ModelMetadata

    keras.utils.set_random_seed(seed)
    path.mkdir(parents=True)
    config = load_config(None, TINY + [f"model.filters={filters}"])
    build_model(config.model, 2).save(path / "model.keras")
    metadata = ModelMetadata.for_training(config, ["foreground", "border"], [], 32).to_dict()
    (path / "metadata.json").write_text(json.dumps({**metadata, "seed": seed}))
    (path / "postprocess.json").write_text(json.dumps({"mode": "watershed", "min_area": seed + 1}))
    return path


def test_soup_holds_the_mean_weights_and_the_chosen_settings(tmp_path):
    from bench.soup import main
    from cell_seg.models import load_model

    runs = [tiny_run(tmp_path / f"run{k}", seed=k) for k in range(3)]
    out = tmp_path / "soup"
    assert main(["--runs", *map(str, runs), "--postprocess", str(runs[2]), "--out", str(out)]) == 0
    weights = [load_model(run / "model.keras", compile=False).get_weights() for run in runs]
    soup = load_model(out / "model.keras", compile=False).get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(weights[0], weights[1]))  # the runs do differ
    for i, array in enumerate(soup):
        np.testing.assert_allclose(array, np.mean([w[i] for w in weights], axis=0), rtol=1e-6, atol=1e-7)
    assert json.loads((out / "metadata.json").read_text())["seed"] == 0  # the first run's metadata
    assert json.loads((out / "postprocess.json").read_text())["min_area"] == 3  # --postprocess's settings
    assert not (out / "model.partial.keras").exists()


def test_soup_refuses_runs_of_other_architectures(tmp_path):
    from bench.soup import main

    runs = [tiny_run(tmp_path / "small", filters=4), tiny_run(tmp_path / "wide", filters=8, seed=1)]
    with pytest.raises(ConfigError, match="not the same architecture"):
        main(["--runs", *map(str, runs), "--out", str(tmp_path / "soup")])
    assert not (tmp_path / "soup").exists()
    with pytest.raises(ConfigError, match="model.keras"):
        main(["--runs", str(runs[0]), str(tmp_path / "nothing"), "--out", str(tmp_path / "soup")])


def test_ensemble_averages_the_maps_and_keeps_the_rest_of_the_first_records():
    from bench.ensemble import averaged

    truth = np.zeros((2, 3), np.int32)
    first = [{"key": "a", "class": "cort", "probs": np.full((2, 3, 1), 0.2, np.float16), "truth": truth}]
    second = [{"key": "a", "class": "cort", "probs": np.full((2, 3, 1), 0.6, np.float16), "truth": truth}]
    (record,) = averaged([first, second])
    assert record["key"] == "a" and record["truth"] is truth and record["probs"].dtype == np.float16
    np.testing.assert_allclose(record["probs"], 0.4, atol=1e-3)
    assert first[0]["probs"][0, 0, 0] == np.float16(0.2)  # the inputs are left as they were


def test_block_majority_takes_each_blocks_most_frequent_label():
    from bench.postprocess_scale import block_majority

    labels = np.array([[1, 1, 2, 3, 0, 0],
                       [1, 2, 4, 5, 0, 7],
                       [6, 6, 8, 9, 9, 0],
                       [0, 0, 8, 9, 0, 9]], np.int32)
    # blocks: {1,1,1,2} -> 1; {2,3,4,5} all different -> the first, 2; {0,0,0,7} -> 0;
    # {6,6,0,0} a tie -> the first, 6; {8,9,8,9} -> 8; {9,0,0,9} -> 9
    np.testing.assert_array_equal(block_majority(labels, 2), [[1, 2, 0], [6, 8, 9]])
    assert block_majority(np.arange(9).reshape(3, 3), 3).tolist() == [[0]]


def test_stain_shift_dataset_shifts_only_the_chosen_kind(tmp_path):
    from bench.stain_shift import ShiftedDataset
    from cell_seg.data.augment import scale_stains

    class Images:  # the CocoDataset interface ShiftedDataset uses
        image_ids = [1, 2]
        pictures = {1: np.full((8, 8, 3), [150, 80, 170], np.uint8), 2: np.full((8, 8, 3), 90, np.uint8)}

        def image_class(self, image_id):
            return "histology" if image_id == 1 else "fluorescence"

        def load_image(self, image_id):
            return self.pictures[image_id]

        def key(self, image_id):
            return f"image{image_id}"

    faded = ShiftedDataset(Images(), "histology", (0.6, 0.6))
    assert faded.image_ids == [1] and faded.key(1) == "image1"
    np.testing.assert_array_equal(faded.load_image(1), scale_stains(Images.pictures[1], 0.6, 0.6))
    assert faded.load_image(1).mean() > Images.pictures[1].mean()  # fainter stain, brighter slide
    assert ShiftedDataset(Images(), "histology", (1.0, 1.0)).load_image(1) is Images.pictures[1]


def two_touching_cells():
    truth = np.zeros((10, 20), np.int64)
    truth[2:8, 2:10], truth[2:8, 10:18] = 1, 2
    return truth


def test_loss_split_gives_a_merge_back_only_in_the_perfect_separation_column():
    from bench.loss_split import image_row

    truth = two_touching_cells()
    merged = np.where(truth > 0, 1, 0)  # the right foreground, the two cells as one
    row = image_row(truth, merged)
    assert row["model"] == 0.0 and row["merged"] == 1.0 and row["split"] == 0.0
    assert row["perfect separation"] == 1.0
    assert row["exact foreground"] == 0.0


def test_loss_split_gives_an_outline_back_only_in_the_exact_foreground_column():
    from bench.loss_split import image_row

    truth = two_touching_cells()
    grown = truth.copy()
    grown[1, 2:10], grown[1, 10:18] = 1, 2  # both cells one row too tall, told apart correctly
    grown[8, 2:10], grown[8, 10:18] = 1, 2
    row = image_row(truth, grown)
    assert 0.0 < row["model"] < 1.0 and row["merged"] == 0.0 and row["false"] == 0.0
    assert row["exact foreground"] == 1.0
    assert row["perfect separation"] == row["model"]  # the extra rows join their own cells


def test_loss_split_separates_false_and_missed_cells():
    from bench.loss_split import image_row, summarise

    truth = two_touching_cells()
    pred = np.where(truth == 1, 1, 0)  # the second cell missed ...
    pred[0, 0:2] = 2                   # ... and a small false cell on the background
    row = image_row(truth, pred)
    assert row["missed"] == 0.5 and row["false"] == 0.5
    assert row["missed cells added"] > row["model"] and row["no false cells"] > row["model"]
    summary = summarise([row, image_row(truth, truth)], ["a", "b"])
    assert summary["all"]["images"] == 2 and summary["b"]["model"] == 1.0
    assert summary["all"]["model"] == pytest.approx((row["model"] + 1.0) / 2)
