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
    assert best == TUNE_START and value == 1.0
