"""cell_seg.viz: every figure renders to a PNG of the promised size, the comparison view counts what
the metric counts, exploration helpers count right, and the overlay CLI works."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import cell_seg.cli.viz as viz_cli
from cell_seg import viz
from cell_seg.data.dataset import CocoDataset
from cell_seg.data.synthetic import write_synthetic_coco
from cell_seg.metrics import DEFAULT_THRESHOLDS, map_iou
from cell_seg.submission import sartorius_rows, write_label_image, write_sartorius_csv

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A CocoDataset of 6 synthetic images (3 cell types), 64 x 80 pixels."""
    root = tmp_path_factory.mktemp("viz_synthetic")
    coco = write_synthetic_coco(root, n_images=6, shape=(64, 80), seed=5, cells=(6, 12))
    return CocoDataset(coco, root / "images")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def imperfect_prediction(truth, seed=0):
    """A prediction with every kind of mistake: shifted cells, a dropped one, two merged, a split,
    a spurious blob; ids deliberately not 1..n."""
    rng = np.random.default_rng(seed)
    pred = np.roll(truth, (1, 1), axis=(0, 1)) * 3  # shifted, ids 3, 6, 9, ...
    ids = np.unique(truth[truth > 0])
    pred[np.roll(truth, (1, 1), axis=(0, 1)) == ids[0]] = 0  # dropped
    if ids.size > 2:
        pred[pred == 3 * ids[2]] = 3 * ids[1]  # merged
    if ids.size > 3:
        ys, xs = np.nonzero(pred == 3 * ids[3])
        half = xs > np.median(xs)
        pred[ys[half], xs[half]] = 1000  # split in two
    y, x = rng.integers(0, truth.shape[0] - 4), rng.integers(0, truth.shape[1] - 4)
    pred[y : y + 3, x : x + 3] = 2001  # spurious
    return pred.astype(np.int32)


def assert_png(path, fig):
    """The file exists, is a non-empty PNG, and its pixels are the figure's size times its dpi."""
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 1000
    image = cv2.imread(str(path))
    assert image is not None
    width, height = fig.get_size_inches() * viz.DPI
    assert image.shape[:2] == (round(height), round(width))
    assert image.std() > 1  # something was drawn
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temporary left behind


# --- every figure renders ---------------------------------------------------------------------


def figure_cases(dataset, tmp_path):
    image_id = dataset.image_ids[0]
    image = dataset.load_image(image_id)
    truth, _ = dataset.load_labels(image_id)
    pred = imperfect_prediction(truth)
    history = tmp_path / "history.csv"
    pd.DataFrame(
        {"epoch": [0, 1, 2], "loss": [1.0, 0.6, 0.5], "val_loss": [1.1, np.nan, 0.7], "learning_rate": [1e-3] * 3}
    ).to_csv(history, index=False)
    metrics = {
        "modes": {
            "components": {"map": 0.4, "per_class": {"blob": 0.3, "round": 0.5}},
            "watershed": {"map": 0.5, "per_class": {"blob": 0.45, "round": 0.55}},
        },
        "best_mode": "watershed",
    }
    return {
        "instances_fill": lambda save: viz.plot_instances(image, truth, style="fill", title="t", save=save),
        "instances_outline": lambda save: viz.plot_instances(image, truth, style="outline", save=save),
        "overlay": lambda save: viz.plot_overlay(image, truth, "title", save),
        "comparison": lambda save: viz.plot_comparison(image, truth, pred, 0.5, title="x", save=save),
        "truth_vs_prediction": lambda save: viz.plot_truth_vs_prediction(image, truth, pred, save=save),
        "truth_vs_prediction_2": lambda save: viz.plot_truth_vs_prediction(image, truth, pred, threshold=None, save=save),
        "comparisons": lambda save: viz.plot_comparisons(image, truth, {"a": pred, "b": truth}, save=save),
        "probabilities": lambda save: viz.plot_probabilities(
            image, np.stack([truth > 0, truth == 1], -1).astype(np.float32), ["foreground", "border"], save=save),
        "score_table": lambda save: viz.plot_score_table(truth, pred, save=save),
        "class_counts": lambda save: viz.plot_class_counts(dataset, save=save),
        "instances_per_image": lambda save: viz.plot_instances_per_image(dataset, save=save),
        "instance_areas": lambda save: viz.plot_instance_areas(dataset, save=save),
        "intensities": lambda save: viz.plot_intensity_histograms(dataset, max_images=2, save=save),
        "overview": lambda save: viz.plot_dataset_overview(dataset, save=save),
        "examples": lambda save: viz.plot_examples(dataset, n=3, save=save),
        "merge": lambda save: viz.plot_merge_stats(viz.merge_table(dataset), save=save),
        "history": lambda save: viz.plot_history(history, save=save),
        "class_scores": lambda save: viz.plot_class_scores(metrics, save=save),
    }


def test_every_figure_renders_to_a_png_of_the_figure_size(synthetic, tmp_path):
    import matplotlib.figure

    for name, draw in figure_cases(synthetic, tmp_path).items():
        path = tmp_path / "figures" / f"{name}.png"
        fig = draw(path)
        assert isinstance(fig, matplotlib.figure.Figure), name
        assert_png(path, fig)


def test_figures_without_save_write_nothing(synthetic, tmp_path):
    image = synthetic.load_image(synthetic.image_ids[0])
    truth, _ = synthetic.load_labels(synthetic.image_ids[0])
    before = set(Path.cwd().iterdir())
    fig = viz.plot_comparison(image, truth, truth)
    assert fig.counts == {"tp": len(np.unique(truth)) - 1, "fp": 0, "fn": 0}
    assert set(Path.cwd().iterdir()) == before


# --- overlays -----------------------------------------------------------------------------------


def test_overlays_keep_the_image_size_and_mark_instances(small_label_map):
    image = np.full(small_label_map.shape, 40, np.uint16)
    outline = viz.outline_overlay(image, small_label_map)  # the signature predict.py uses
    assert outline.shape == small_label_map.shape + (3,) and outline.dtype == np.uint8
    assert outline[0, 0].tolist() == [255, 255, 0]  # corner of instance 1 (image edge)
    assert outline[1, 1].tolist() != [255, 255, 0]  # its centre
    filled = viz.fill_overlay(image, small_label_map, alpha=1.0, outline=False)
    assert (filled[small_label_map == 0] == filled[11, 0]).all()  # background unchanged
    colours = {tuple(filled[small_label_map == k][0]) for k in range(1, 5)}
    assert len(colours) == 4  # one colour per instance


def test_overlay_rejects_a_label_map_of_another_size():
    with pytest.raises(viz.DataError, match="label map is 4x4 but the image is 5x5"):
        viz.outline_overlay(np.zeros((5, 5), np.uint8), np.zeros((4, 4), np.int32))


def test_display_image_stretches_uint16_and_keeps_uint8():
    image = np.arange(100, dtype=np.uint16).reshape(10, 10) * 100
    rgb = viz.display_image(image)
    assert rgb.dtype == np.uint8 and rgb.shape == (10, 10, 3)
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255
    dim = np.full((4, 4), 7, np.uint8)
    assert (viz.display_image(dim) == 7).all()


# --- comparison view against the metric -------------------------------------------------------


def test_comparison_counts_equal_the_metric_table_at_every_threshold(synthetic):
    thresholds = np.concatenate([[0.1, 0.3], DEFAULT_THRESHOLDS])
    for seed, image_id in enumerate(synthetic.image_ids):
        truth, _ = synthetic.load_labels(image_id)
        pred = imperfect_prediction(truth, seed)
        table = map_iou(truth, pred, thresholds=thresholds)["table"]
        for row in table.itertuples():
            counts = viz.match_instances(truth, pred, row.threshold)["counts"]
            assert counts == {"tp": row.tp, "fp": row.fp, "fn": row.fn}, (image_id, row.threshold)
        image = synthetic.load_image(image_id)
        fig = viz.plot_comparison(image, truth, pred, threshold=0.5)
        row = table.loc[np.isclose(table["threshold"], 0.5)].iloc[0]
        expected = {"tp": int(row.tp), "fp": int(row.fp), "fn": int(row.fn)}
        assert fig.counts == expected
        assert "TP {tp}, FP {fp}, FN {fn}".format(**expected) in fig.axes[0].get_title()


def test_comparisons_report_counts_and_scores_per_prediction(synthetic):
    truth, _ = synthetic.load_labels(synthetic.image_ids[3])
    pred = imperfect_prediction(truth)
    image = synthetic.load_image(synthetic.image_ids[3])
    fig = viz.plot_comparisons(image, truth, {"shifted": pred, "perfect": truth}, threshold=0.5)
    assert fig.counts["shifted"] == viz.match_instances(truth, pred, 0.5)["counts"]
    assert fig.scores == {"shifted": map_iou(truth, pred)["map"], "perfect": 1.0}
    assert len(fig.axes) == 3 and fig.axes[2].get_title().startswith("perfect: mAP 1.000")


def test_comparison_overlay_colours_each_kind():
    truth = np.zeros((20, 20), np.int32)
    truth[2:8, 2:8] = 1  # matched
    truth[12:18, 2:8] = 2  # missed
    pred = np.zeros_like(truth)
    pred[2:8, 2:8] = 5
    pred[12:18, 12:18] = 9  # spurious
    rgb, match = viz.comparison_overlay(np.zeros((20, 20), np.uint8), truth, pred, alpha=1.0)
    assert match["counts"] == {"tp": 1, "fp": 1, "fn": 1}
    assert match["matches"] == [(1, 5, 1.0)] and match["missed"] == [2] and match["spurious"] == [9]
    assert rgb[4, 4].tolist() == list(viz.MATCH_COLORS["tp"])
    assert rgb[14, 14].tolist() == list(viz.MATCH_COLORS["fp"])
    assert rgb[12, 4].tolist() == list(viz.MATCH_COLORS["fn"])  # missed cell's outline
    assert rgb[0, 19].tolist() == [0, 0, 0]


def test_empty_truth_or_prediction():
    empty = np.zeros((6, 6), np.int32)
    cell = empty.copy()
    cell[1:4, 1:4] = 1
    assert viz.match_instances(empty, cell)["counts"] == {"tp": 0, "fp": 1, "fn": 0}
    assert viz.match_instances(cell, empty, threshold=0.1)["counts"] == {"tp": 0, "fp": 0, "fn": 1}
    rgb, _ = viz.comparison_overlay(np.zeros((6, 6), np.uint8), empty, empty)
    assert not rgb.any()


# --- score table --------------------------------------------------------------------------------


def test_score_table_text_matches_the_metric(synthetic):
    truth, _ = synthetic.load_labels(synthetic.image_ids[1])
    pred = imperfect_prediction(truth)
    result = map_iou(truth, pred)
    lines = viz.format_score_table(truth, pred).splitlines()
    assert lines[0].split() == ["Thresh", "TP", "FP", "FN", "Prec."]
    assert len(lines) == 2 + len(DEFAULT_THRESHOLDS)
    for line, row in zip(lines[1:], result["table"].itertuples()):
        assert line.split() == [f"{row.threshold:.3f}", str(row.tp), str(row.fp), str(row.fn), f"{row.precision:.3f}"]
    assert lines[-1].split()[-1] == f"{result['map']:.3f}"


# --- exploration ----------------------------------------------------------------------------------


def test_dataset_tables_count_instances_and_areas(synthetic):
    images, instances = viz.dataset_tables(synthetic)
    assert len(images) == len(synthetic)
    assert images["n_instances"].tolist() == [synthetic.n_instances(i) for i in synthetic.image_ids]
    assert set(instances["category"]) <= {"blob", "neurite", "round"}
    # Areas come from the annotations; without the field they are decoded from the RLE.
    coco = json.loads(Path(synthetic.source).read_text())
    for annotation in coco["annotations"]:
        del annotation["area"]
    _, decoded = viz.dataset_tables(coco)
    np.testing.assert_array_equal(decoded["area"].to_numpy(), instances["area"].to_numpy())


def test_grouping_by_an_unknown_field_names_it(synthetic):
    with pytest.raises(viz.DataError, match="no image field 'colour'"):
        viz.plot_class_counts(synthetic, by="colour")


def test_merge_stats_counts_touching_cells():
    labels = np.zeros((10, 12), np.int32)
    labels[1:4, 1:4], labels[1:4, 4:7] = 1, 2  # touching pair
    labels[5:8, 1:3], labels[8:10, 3:5] = 3, 4  # touch only diagonally: merged at 8-connectivity
    labels[1:3, 9:11] = 7  # alone
    assert viz.merge_stats(labels) == {
        "instances": 5, "components": 3, "merged_components": 2, "instances_merged": 4, "lost": 2,
    }
    assert viz.merge_stats(labels, connectivity=4)["components"] == 4
    assert viz.merge_stats(np.zeros((3, 3), np.int32))["instances"] == 0


def test_merge_table_covers_every_image(synthetic):
    table = viz.merge_table(synthetic)
    assert len(table) == len(synthetic)
    assert (table["components"] <= table["instances"]).all()
    assert set(table.columns) >= {"key", "class", "instances", "components", "instances_merged", "lost"}


# --- curves and scores --------------------------------------------------------------------------


def test_class_scores_from_a_run_directory(tmp_path):
    metrics = {"modes": {"components": {"map": 0.61, "per_class": {}}}, "best_mode": "components"}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    fig = viz.plot_class_scores(tmp_path)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["all"]
    with pytest.raises(viz.DataError, match="no 'modes'"):
        viz.plot_class_scores({"summary": {}})


def test_history_skips_epochs_without_validation(tmp_path):
    frame = pd.DataFrame({"epoch": [0, 1, 2, 3], "loss": [4, 3, 2, 1], "val_loss": [np.nan, 3.5, np.nan, 1.5]})
    fig = viz.plot_history(frame)
    train_line, val_line = fig.axes[0].get_lines()
    assert list(val_line.get_xdata()) == [2, 4]


# --- command line ---------------------------------------------------------------------------------


@pytest.fixture
def cli_files(synthetic, tmp_path):
    image_id = synthetic.image_ids[2]
    key = synthetic.key(image_id)
    image_path = synthetic.image_path(image_id)
    truth, _ = synthetic.load_labels(image_id)
    pred = imperfect_prediction(truth)
    write_label_image(pred, tmp_path / "pred.png")
    write_label_image(truth, tmp_path / "truth.png")
    write_sartorius_csv(sartorius_rows(key, pred) + sartorius_rows("other", np.ones((3, 3), np.int32)), tmp_path / "sub.csv")
    return {"image": image_path, "key": key, "truth": truth, "pred": pred, "dir": tmp_path}


def test_cli_overlay_from_a_label_image(cli_files, capsys):
    out = cli_files["dir"] / "o.png"
    assert viz_cli.main(["--image", str(cli_files["image"]), "--labels", str(cli_files["dir"] / "pred.png"), "--out", str(out)]) == 0
    written = cv2.imread(str(out))
    assert written.shape[:2] == cli_files["truth"].shape  # the image's own resolution
    assert f"{len(np.unique(cli_files['pred'])) - 1} instances" in capsys.readouterr().out


def test_cli_overlay_from_a_submission_equals_the_label_image_one(cli_files):
    d = cli_files["dir"]
    viz_cli.main(["--image", str(cli_files["image"]), "--labels", str(d / "pred.png"), "--style", "fill", "--out", str(d / "a.png")])
    viz_cli.main(["--image", str(cli_files["image"]), "--submission", str(d / "sub.csv"), "--id", cli_files["key"],
              "--style", "fill", "--out", str(d / "b.png")])
    # Same instances; ids differ (CSV rows are renumbered 1..n), so compare where something is drawn.
    a, b = cv2.imread(str(d / "a.png")), cv2.imread(str(d / "b.png"))
    image = cv2.imread(str(cli_files["image"]))
    np.testing.assert_array_equal((a != image).any(axis=2), (b != image).any(axis=2))


def test_cli_comparison_prints_the_metric_counts(cli_files, capsys):
    d = cli_files["dir"]
    code = viz_cli.main(["--image", str(cli_files["image"]), "--labels", str(d / "pred.png"), "--truth", str(d / "truth.png"),
                     "--threshold", "0.7", "--figure", "--out", str(d / "c.png")])
    assert code == 0
    row = next(map_iou(cli_files["truth"], cli_files["pred"], thresholds=[0.7])["table"].itertuples())
    assert f"TP {row.tp}, FP {row.fp}, FN {row.fn}" in capsys.readouterr().out
    assert cv2.imread(str(d / "c.png")) is not None


def run_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DISPLAY", None)
    env.pop("MPLBACKEND", None)
    return subprocess.run([sys.executable, "-m", "cell_seg.viz", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def test_cli_help_and_one_line_errors(cli_files):
    d = cli_files["dir"]
    result = run_cli("--help", cwd=d)
    assert result.returncode == 0 and "--submission" in result.stdout
    result = run_cli("--image", cli_files["image"], "--submission", d / "sub.csv", "--id", "missing", cwd=d)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {d / 'sub.csv'}, field id: no row for image 'missing'"
    (d / "bad.csv").write_text(f"id,predicted\n{cli_files['key']},1 2 3\n")
    result = run_cli("--image", cli_files["image"], "--submission", d / "bad.csv", "--id", cli_files["key"], cwd=d)
    assert result.returncode == 2 and "row 2, field predicted" in result.stderr and "Traceback" not in result.stderr
    write_label_image(np.zeros((5, 5), np.int32), d / "small.png")
    result = run_cli("--image", cli_files["image"], "--labels", d / "small.png", cwd=d)
    assert result.returncode == 2 and "small.png" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_default_output_name_and_headless_figure(cli_files):
    d = cli_files["dir"]
    result = run_cli("--image", cli_files["image"], "--labels", d / "pred.png", "--figure", cwd=d)
    assert result.returncode == 0, result.stderr
    assert (d / f"{cli_files['key']}_overlay.png").is_file()


def test_readme_figures_script_writes_its_three_figures(tmp_path, capsys):
    from bench import make_figures

    assert make_figures.main(["--out", str(tmp_path)]) == 0
    for name in make_figures.FIGURES:
        image = cv2.imread(str(tmp_path / name))
        assert image is not None and image.shape[0] > 300 and image.shape[1] > 1000, name
    printed = capsys.readouterr().out
    assert "components (baseline)" in printed and "x the baseline" in printed
