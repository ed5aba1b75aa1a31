"""Post-processing tuning: the coordinate search over the evaluation grids."""

from cell_seg.evaluate import BORDER_THRESHOLDS, FG_THRESHOLDS, MIN_AREAS, TUNE_START, coordinate_search

GRID = [("fg_threshold", FG_THRESHOLDS), ("border_threshold", BORDER_THRESHOLDS), ("min_area", MIN_AREAS)]


def test_finds_the_optimum_of_a_separable_score_with_far_fewer_evaluations_than_the_grid():
    calls = []

    def score(params):
        calls.append(dict(params))
        return -((params["fg_threshold"] - 0.8) ** 2) - (params["border_threshold"] - 0.3) ** 2 \
            - ((params["min_area"] - 200) / 400) ** 2

    best, value = coordinate_search(score, GRID, TUNE_START)
    assert best == {"fg_threshold": 0.8, "border_threshold": 0.3, "min_area": 200}
    assert value == score(best)
    assert len(calls) - 1 <= 2 * (len(FG_THRESHOLDS) + len(BORDER_THRESHOLDS) + len(MIN_AREAS))
    assert len({tuple(c.values()) for c in calls[:-1]}) == len(calls) - 1  # each setting scored once


def test_follows_an_interaction_over_rounds():
    """The best min_area grows with the threshold: one round stops short (the start's min_area pulls
    the threshold down), later rounds reach the joint optimum."""

    def score(params):
        return -(params["fg_threshold"] - 0.8) ** 2 - ((params["min_area"] - 500 * params["fg_threshold"]) / 1000) ** 2

    rounds = []
    best, _ = coordinate_search(score, GRID[::2], TUNE_START, rounds=1)
    rounds.append(best)
    best, _ = coordinate_search(score, GRID[::2], TUNE_START)
    assert rounds[0] != best
    assert best == {"fg_threshold": 0.8, "min_area": 400}


def test_keeps_the_start_when_nothing_is_better():
    best, value = coordinate_search(lambda params: 1.0, GRID, TUNE_START)
    assert best == {name: TUNE_START[name] for name, _ in GRID} and value == 1.0


def test_retuning_ignores_the_earlier_per_class_settings(monkeypatch):
    """A run evaluated a second time has a tuned postprocess.json with per-class settings; they
    must not ride along into the candidates (they would override every threshold tried)."""
    from cell_seg import evaluate
    from cell_seg.postprocess import PostprocessConfig

    seen = []

    def fake_score(records, channels, config, full=False):
        seen.append(config)
        return -abs(config.fg_threshold - 0.8) - abs(config.min_area - 100) / 1000

    monkeypatch.setattr(evaluate, "score_predictions", fake_score)
    records = [{"class": name} for name in ("astro", "cort", "shsy5y")]
    earlier = PostprocessConfig(mode="components", fg_threshold=0.5, min_area=25,
                                per_class={name: {"fg_threshold": 0.5, "min_area": 25} for name in ("astro", "cort", "shsy5y")})
    settings, _, table = evaluate.tune_postprocess(records, ["foreground", "class_astro", "class_cort", "class_shsy5y"],
                                                   "components", base=earlier)
    assert all(candidate.per_class == {} for candidate in seen[:-1])
    assert settings.per_class == {name: {"fg_threshold": 0.8, "min_area": 100, "min_score": 0.0}
                                  for name in ("astro", "cort", "shsy5y")}
    assert [row["fg_threshold"] for row in table] == [0.8, 0.8, 0.8]


def test_the_chosen_mode_is_the_models_own_without_tuning_and_the_best_with_it(monkeypatch):
    """Symmetric: whichever mode the model's post-processing names is kept when nothing is tuned,
    components as well as watershed; tuning picks the best score, a tie going to the model's mode."""
    from cell_seg import evaluate
    from cell_seg.postprocess import PostprocessConfig

    maps = {}

    def fake_score(records, channels, config, full=False):
        value = maps[config.mode]
        return {"map": value, "ap_iou_0.6": value, "per_class": {}, "foreground_iou": 1.0} if full else value

    monkeypatch.setattr(evaluate, "score_predictions", fake_score)
    channels = ["foreground", "border"]
    maps.update(components=0.3, watershed=0.4)
    for own in ("components", "watershed"):
        report, chosen = evaluate.evaluate_records([], channels, PostprocessConfig(mode=own))
        assert report["best_mode"] == own and chosen.mode == own
    report, chosen = evaluate.evaluate_records([], channels, PostprocessConfig(mode="auto"))
    assert chosen.mode == "watershed"  # "auto" with a border channel
    monkeypatch.setattr(evaluate, "tune_postprocess",
                        lambda records, channels, mode, base=None: (base.replace(mode=mode), maps[mode], []))
    report, chosen = evaluate.evaluate_records([], channels, PostprocessConfig(mode="components"), tune=True)
    assert chosen.mode == "watershed" and report["summary"]["map"] == 0.4
    maps.update(components=0.4)
    for own in ("components", "watershed"):
        report, chosen = evaluate.evaluate_records([], channels, PostprocessConfig(mode=own), tune=True)
        assert chosen.mode == own  # a tie goes to the model's own mode


def test_a_model_with_a_distance_channel_is_scored_and_tuned_in_the_distance_mode_too():
    import cv2
    import numpy as np

    from cell_seg import evaluate
    from cell_seg.data.targets import build_targets

    channels = ["foreground", "border", "distance"]
    assert evaluate.available_modes(channels) == ["components", "watershed", "distance"]
    assert evaluate.available_modes(["foreground", "border"]) == ["components", "watershed"]
    truth = np.zeros((40, 60), np.int32)
    for k, (x, y, r) in enumerate([(12, 14, 9), (27, 14, 7), (44, 20, 10), (20, 30, 8)], start=1):
        cv2.circle(truth, (x, y), r, k, -1)  # touching, overlapping disks: later ones win
    probs = cv2.GaussianBlur(build_targets(truth, None, channels, 0), (0, 0), 1.0)
    records = [{"key": "a", "class": None, "probs": probs, "truth": truth}]
    report, settings = evaluate.evaluate_records(records, channels, tune=True)
    assert list(report["modes"]) == ["components", "watershed", "distance"]
    tuned = report["tuning"]["distance"]["settings"]  # as written to postprocess.json
    assert tuned["distance_threshold"] in evaluate.DISTANCE_THRESHOLDS and "min_seed_area" in tuned
    assert report["modes"]["distance"]["map"] > report["modes"]["components"]["map"]
    assert settings.mode == report["best_mode"]


def test_a_model_with_a_centre_channel_is_tuned_in_the_centre_mode_with_its_own_threshold():
    import cv2
    import numpy as np

    from cell_seg import evaluate
    from cell_seg.data.targets import build_targets

    channels = ["foreground", "distance", "centre"]
    assert evaluate.available_modes(channels) == ["components", "distance", "centre"]
    truth = np.zeros((40, 60), np.int32)
    for k, (x, y, r) in enumerate([(12, 14, 9), (27, 14, 7), (44, 20, 10), (20, 30, 8)], start=1):
        cv2.circle(truth, (x, y), r, k, -1)
    probs = cv2.GaussianBlur(build_targets(truth, None, channels, 0), (0, 0), 1.0)
    records = [{"key": "a", "class": None, "probs": probs, "truth": truth}]
    report, _ = evaluate.evaluate_records(records, channels, tune=True, modes=["components", "centre"])
    tuned = report["tuning"]["centre"]["settings"]
    assert tuned["centre_threshold"] in evaluate.CENTRE_THRESHOLDS
    assert tuned["distance_threshold"] in evaluate.DISTANCE_THRESHOLDS
    assert report["modes"]["centre"]["map"] > report["modes"]["components"]["map"]


def test_cross_tuning_scores_each_half_with_settings_tuned_on_the_other(monkeypatch):
    """Whole groups stay in one fold (3 groups of a class: 2 in the first, 1 in the second), every class
    is in both, and no image is scored with settings
    tuned on itself."""
    import numpy as np

    from cell_seg import evaluate
    from cell_seg.postprocess import PostprocessConfig

    records = [{"key": f"{kind}{group}{i}", "class": kind, "group": f"{kind}{group}", "truth": None, "probs": None}
               for kind in ("fluo", "tissue") for group in range(3) for i in range(2)]
    tuned_on = []

    def fake_tune(rest, channels, mode, base=None):
        tuned_on.append({r["key"] for r in rest})
        return base.replace(mode=mode, min_area=len(tuned_on)), 0.0, []

    def fake_score(part, channels, config, full=False):
        assert not {r["key"] for r in part} & tuned_on[-1]  # never scored with its own tuning
        return {"per_image": [float(config.min_area)] * len(part)}

    monkeypatch.setattr(evaluate, "tune_postprocess", fake_tune)
    monkeypatch.setattr(evaluate, "score_predictions", fake_score)
    out = evaluate.cross_tuned_scores(records, ["foreground"], PostprocessConfig(), modes=["components"])
    assert out["components"]["images"] == len(records) and out["components"]["folds"] == 2
    assert [settings["min_area"] for settings in out["components"]["settings"]] == [1, 2]  # each part's own
    assert len(tuned_on) == 2 and tuned_on[0].isdisjoint(tuned_on[1])
    for keys in tuned_on:
        groups = {key[:-1] for key in keys}
        assert {key for key in (r["key"] for r in records) if key[:-1] in groups} == keys  # whole groups
        assert {g.rstrip("0123456789") for g in groups} == {"fluo", "tissue"}
    assert np.isclose(out["components"]["map"], (8 * 1 + 4 * 2) / 12) and set(out["components"]["per_class"]) == {"fluo", "tissue"}


def test_tuning_drops_confident_looking_false_positives_by_their_confidence():
    """Three small nuclei at probability 0.99 and two large blobs at 0.93 that are not nuclei: no
    foreground threshold of the grid (at most 0.9) and no minimum area (the blobs are the larger)
    removes the blobs and keeps the nuclei; the minimum confidence (mean probability inside an
    instance) does."""
    import cv2
    import numpy as np

    from cell_seg import evaluate

    truth = np.zeros((64, 64), np.int32)
    for k, (x, y) in enumerate([(12, 12), (40, 16), (20, 44)], start=1):
        cv2.circle(truth, (x, y), 4, k, -1)
    probs = np.where(truth > 0, 0.99, 0.01).astype(np.float32)
    cv2.circle(probs, (48, 46), 9, 0.93, -1)
    cv2.circle(probs, (10, 30), 7, 0.93, -1)
    records = [{"key": "a", "class": None, "probs": probs[..., None], "truth": truth}]
    settings, value, _ = evaluate.tune_postprocess(records, ["foreground"], "components")
    assert 0.93 < settings.min_score <= 0.99 and value == 1.0
    assert evaluate.score_predictions(records, ["foreground"], settings.replace(min_score=0.0)) < 0.7
