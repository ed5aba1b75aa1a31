"""Tests of cell_seg.submission: writers, readers and round trips of every format."""

import base64
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cell_seg import submission
from cell_seg.data import labels as label_ops
from cell_seg.errors import DataError
from cell_seg.metrics import coco_eval, coco_gt_from_label_maps, map_iou

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def synthetic_label_map(seed, shape=(40, 56), n=30):
    """Random rectangles with non-contiguous ids; a cell touching the right edge wraps rows."""
    rng = np.random.default_rng(seed)
    label_map = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        r, c = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
        h, w = rng.integers(2, 9, size=2)
        label_map[r : r + h, c : c + w] = 5 * k
    label_map[10:14, -3:] = 999
    label_map[11:15, :2] = 999  # same instance continues at the start of the next rows
    return label_map


# --- Sartorius ---------------------------------------------------------------------------------


def test_sartorius_round_trip_scores_one(tmp_path):
    maps = {"img_a": synthetic_label_map(0), "img_b": synthetic_label_map(1), "empty": np.zeros((40, 56), np.int32)}
    rows = [row for key, label_map in maps.items() for row in submission.sartorius_rows(key, label_map)]
    path = submission.write_sartorius_csv(rows, tmp_path / "submission.csv")
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]  # no temporary file left
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["id", "predicted"]
    assert (frame["id"] == "empty").sum() == 1 and frame.loc[frame["id"] == "empty", "predicted"].item() == ""
    decoded = submission.read_sartorius_csv(path, (40, 56))
    assert set(decoded) == set(maps)
    for key, label_map in maps.items():
        assert map_iou(label_map, decoded[key])["map"] == 1.0
        assert np.array_equal(decoded[key], label_ops.relabel_sequential(label_map)[0])


def test_sartorius_rows_are_row_major_one_indexed():
    label_map = np.zeros((3, 4), np.int32)
    label_map[0, 3] = label_map[1, 0] = 2  # run wrapping from row 0 into row 1: pixels 4 and 5
    label_map[2, 1:3] = 1
    assert submission.sartorius_rows("x", label_map) == [("x", "10 2"), ("x", "4 2")]


def test_read_sartorius_errors_name_file_row_and_field(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("id,predicted\na,1 3\na,5 2 9\n")
    with pytest.raises(DataError) as error:
        submission.read_sartorius_csv(path, {"a": (4, 4)})
    assert "bad.csv" in str(error.value) and "row 3" in str(error.value) and "predicted" in str(error.value)
    path.write_text("id,predicted\na,1 3\na,2 2\n")
    with pytest.raises(DataError, match="overlap"):
        submission.read_sartorius_csv(path, (4, 4))
    assert submission.read_sartorius_csv(path, (4, 4), allow_overlap=True)["a"][0].tolist() == [1, 2, 2, 0]
    with pytest.raises(DataError, match="no known shape"):
        submission.read_sartorius_csv(path, {"b": (4, 4)})
    path.write_text("image,predicted\na,1 3\n")
    with pytest.raises(DataError, match="field id"):
        submission.read_sartorius_csv(path, (4, 4))
    with pytest.raises(DataError, match="not found"):
        submission.read_sartorius_csv(tmp_path / "missing.csv", (4, 4))


@pytest.mark.real_data
@pytest.mark.skipif(not SHARED.exists(), reason="shared data absent")
def test_real_sartorius_ground_truth_round_trip(tmp_path):
    from cell_seg.data import rle as rle_codec

    frame = pd.read_csv(SHARED / "sartorius" / "train.csv", usecols=["id", "annotation", "cell_type"])
    image_ids = frame.groupby("cell_type")["id"].first().tolist()  # one image per cell type
    truths, rows = {}, []
    for image_id in image_ids:
        annotations = frame.loc[frame["id"] == image_id, "annotation"]
        arrays = [rle_codec.rle_to_indices(a, (520, 704), "row") for a in annotations]
        label_map, overlapping = label_ops.paint_instances(arrays, (520, 704), order="row")
        truths[image_id] = label_map
        rows += submission.sartorius_rows(image_id, label_map)
    path = submission.write_sartorius_csv(rows, tmp_path / "submission.csv")
    decoded = submission.read_sartorius_csv(path, (520, 704))
    for image_id, label_map in truths.items():
        assert map_iou(label_map, decoded[image_id])["map"] == 1.0


# --- HuBMAP ------------------------------------------------------------------------------------


def test_hubmap_encoding_matches_competition_sample_code():
    from pycocotools import mask as mask_utils

    label_map = synthetic_label_map(2)
    text = submission.hubmap_prediction_string(label_map, {k: 0.5 for k in np.unique(label_map) if k})
    first_mask = label_map == np.unique(label_map)[1]
    # the HuBMAP sample: encode the binary mask with pycocotools, zlib at level 9, base64
    counts = mask_utils.encode(np.asfortranarray(first_mask[..., None].astype(np.uint8)))[0]["counts"]
    expected = base64.b64encode(zlib.compress(counts, zlib.Z_BEST_COMPRESSION)).decode()
    assert text.split()[:3] == ["0", "0.5", expected]


def test_hubmap_round_trip(tmp_path):
    maps = [synthetic_label_map(3), np.zeros((8, 8), np.int32)]
    scores = [np.linspace(0.1, 0.9, maps[0].max()), np.zeros(0)]
    rows = [submission.hubmap_row(f"img{i}", m, s) for i, (m, s) in enumerate(zip(maps, scores))]
    path = submission.write_hubmap_csv(rows, tmp_path / "sub.csv")
    frame = pd.read_csv(path, keep_default_na=False)
    assert list(frame.columns) == ["id", "height", "width", "prediction_string"]
    decoded = submission.read_hubmap_csv(path)
    label_map, read_scores, classes = decoded["img0"]
    assert np.array_equal(label_map, label_ops.relabel_sequential(maps[0])[0])
    present = np.unique(maps[0])[1:]
    assert read_scores == pytest.approx(scores[0][present - 1])
    assert (classes == 0).all()
    assert not decoded["img1"][0].any() and decoded["img1"][1].size == 0


def test_hubmap_decode_errors(tmp_path):
    with pytest.raises(DataError, match="triples"):
        submission.decode_hubmap_prediction_string("0 0.5", (4, 4))
    with pytest.raises(DataError, match="base64"):
        submission.decode_hubmap_prediction_string("0 0.5 not-base64!", (4, 4))
    path = tmp_path / "bad.csv"
    path.write_text("id,height,width,prediction_string\na,4,4,0 x AAAA\n")
    with pytest.raises(DataError, match="row 2.*prediction_string"):
        submission.read_hubmap_csv(path)


# --- COCO results ------------------------------------------------------------------------------


def test_coco_results_written_and_scored(tmp_path):
    maps = [synthetic_label_map(4), synthetic_label_map(5)]
    results = []
    for i, label_map in enumerate(maps):
        ids = np.unique(label_map)[1:]
        results += submission.coco_results(i + 1, label_map, {int(k): 0.9 for k in ids})
    path = submission.write_coco_results(results, tmp_path / "results.json")
    loaded = json.loads(path.read_text())
    assert set(loaded[0]) == {"image_id", "category_id", "segmentation", "score"}
    assert isinstance(loaded[0]["segmentation"]["counts"], str)
    assert coco_eval(coco_gt_from_label_maps(maps), path)["AP"] == pytest.approx(1.0)


def test_coco_results_categories():
    label_map = np.array([[1, 0, 2]], np.int32)
    results = submission.coco_results("x", label_map, None, category_ids=np.array([3, 1]))
    assert [r["category_id"] for r in results] == [3, 1] and [r["score"] for r in results] == [1.0, 1.0]


# --- label images ------------------------------------------------------------------------------


def test_label_png_and_tiff_round_trip(tmp_path):
    small = synthetic_label_map(6)
    path = submission.write_label_image(small, tmp_path / "a.png")
    assert path.suffix == ".png"
    assert np.array_equal(submission.read_label_image(path), small)
    many = np.arange(1, 300 * 300 + 1, dtype=np.int32).reshape(300, 300)  # 90,000 labels
    path = submission.write_label_image(many, tmp_path / "b.png")
    assert path.suffix == ".tif"
    read = submission.read_label_image(path)
    assert read.dtype == np.int32 and np.array_equal(read, many)


# --- offline notebook: no pycocotools, TensorFlow or albumentations ---------------------------


def test_predict_to_sartorius_csv_runs_without_pycocotools(tmp_path):
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import sys

        BLOCKED = ("pycocotools", "tensorflow", "albumentations", "segmentation_models", "scipy", "skimage")

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked " + name)

        sys.meta_path.insert(0, Block())
        import numpy as np
        from cell_seg import metrics, postprocess, submission

        probs = np.zeros((20, 30, 2), np.float32)
        probs[2:18, 2:28, 0] = 0.9
        probs[2:18, 14:16, 1] = 0.9
        label_map, instances = postprocess.to_instances(probs, ["foreground", "border"])
        assert len(instances) == 2
        submission.write_sartorius_csv(submission.sartorius_rows("a", label_map), r"{tmp_path / 'sub.csv'}")
        assert metrics.map_iou(label_map, label_map)["map"] == 1.0
        print("ok")
        """
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok" and (tmp_path / "sub.csv").is_file()
