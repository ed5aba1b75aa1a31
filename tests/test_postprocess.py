"""Tests of cell_seg.postprocess: probability maps to instance label maps."""

import json

import cv2
import numpy as np
import pytest

from cell_seg import postprocess
from cell_seg.data import labels as label_ops
from cell_seg.errors import ConfigError, DataError
from cell_seg.postprocess import PostprocessConfig, to_instances

CHANNELS = ["foreground", "border"]


def random_label_map(seed, shape=(48, 64), n=25, max_radius=7):
    """Random touching discs, labels 1..n painted in order (later discs cover earlier ones)."""
    rng = np.random.default_rng(seed)
    label_map = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        center = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
        cv2.circle(label_map, center, int(rng.integers(2, max_radius)), k, -1)
    return label_ops.relabel_sequential(label_map)[0]


def exact_probs(label_map, ring=0):
    """Foreground = union; border = pixels whose 3x3 window holds two different cell labels."""
    as_float = label_map.astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    # Different labels in the window; background (0) counts only when ring > 0.
    high = cv2.dilate(as_float, kernel)
    low = -cv2.dilate(-np.where(label_map > 0, as_float, np.inf).astype(np.float32), kernel)
    border = (label_map > 0) & (high != low) & np.isfinite(low)
    return np.stack([(label_map > 0), border], axis=-1).astype(np.float32)


def check_consistent(label_map, instances):
    """Instances table agrees with the label map: ids 1..N, areas, boxes."""
    assert label_map.dtype == np.int32
    ids = [inst["id"] for inst in instances]
    assert ids == list(range(1, len(instances) + 1))
    assert label_map.max() == len(instances)
    areas = np.bincount(label_map.ravel(), minlength=len(instances) + 1)[1:]
    for inst in instances:
        k = inst["id"]
        assert inst["area"] == areas[k - 1] > 0
        rows, cols = np.nonzero(label_map == k)
        assert inst["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]


# --- components --------------------------------------------------------------------------------


def test_components_two_blobs_area_box_and_mean_score():
    probs = np.zeros((10, 12, 1), np.float32)
    probs[1:4, 1:5, 0] = 0.8
    probs[2, 2, 0] = 0.6
    probs[6:9, 7:11, 0] = 0.9
    label_map, instances = to_instances(probs, ["foreground"], mode="components", min_area=1)
    check_consistent(label_map, instances)
    assert len(instances) == 2
    first = instances[0]
    assert first["area"] == 12 and first["bbox"] == [1, 1, 4, 3]
    assert first["score"] == pytest.approx((11 * 0.8 + 0.6) / 12, rel=1e-6)
    assert instances[1]["score"] == pytest.approx(0.9, rel=1e-6)
    assert first["class"] is None


def test_components_merge_touching_cells_and_watershed_separates_them():
    truth = np.zeros((20, 30), np.int32)
    truth[4:16, 3:15] = 1
    truth[4:16, 15:27] = 2
    probs = exact_probs(truth)
    merged, _ = to_instances(probs, CHANNELS, mode="components")
    assert merged.max() == 1
    split, instances = to_instances(probs, CHANNELS, mode="watershed")
    check_consistent(split, instances)
    assert len(instances) == 2
    assert np.array_equal(split > 0, truth > 0)  # the border pixels are given back to the cells
    # each truth cell maps to exactly one predicted label
    for k in (1, 2):
        assert len(np.unique(split[truth == k])) == 1


def test_2d_input_is_one_foreground_channel_and_threshold_is_strict():
    probs = np.zeros((6, 6), np.float32)
    probs[1:3, 1:3] = 0.5
    probs[4:6, 4:6] = 0.51
    label_map, instances = to_instances(probs, ["foreground"], min_area=1)
    assert len(instances) == 1 and instances[0]["bbox"] == [4, 4, 2, 2]


def test_empty_probabilities_give_no_instance():
    for mode in ("components", "watershed"):
        label_map, instances = to_instances(np.zeros((8, 9, 2), np.float32), CHANNELS, mode=mode)
        assert instances == [] and label_map.shape == (8, 9) and not label_map.any()


def test_min_area_and_min_score_remove_and_relabel():
    probs = np.zeros((12, 20, 1), np.float32)
    probs[1:3, 1:3] = 0.9  # area 4
    probs[5:10, 1:6] = 0.6  # area 25, low score
    probs[5:10, 10:16] = 0.95  # area 30
    label_map, instances = to_instances(probs, ["foreground"], min_area=5)
    assert [i["area"] for i in instances] == [25, 30]
    label_map, instances = to_instances(probs, ["foreground"], min_area=5, min_score=0.7)
    check_consistent(label_map, instances)
    assert [i["area"] for i in instances] == [30] and label_map.max() == 1


def test_auto_mode_uses_watershed_when_border_exists():
    truth = np.zeros((20, 30), np.int32)
    truth[4:16, 3:15] = 1
    truth[4:16, 15:27] = 2
    probs = exact_probs(truth)
    assert to_instances(probs, CHANNELS)[0].max() == 2
    assert to_instances(probs[..., :1], ["foreground"])[0].max() == 1


# --- watershed ---------------------------------------------------------------------------------


def voronoi_cells(seed, shape=(48, 64), n=20, spacing=8, radius=9):
    """Convex touching cells: Voronoi regions of spaced random points, cut to discs."""
    rng = np.random.default_rng(seed)
    points = []
    while len(points) < n:
        point = rng.uniform([0, 0], shape)
        if all(np.hypot(*(point - q)) >= spacing for q in points):
            points.append(point)
    points = np.array(points)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    distance = np.hypot(rows[..., None] - points[:, 0], cols[..., None] - points[:, 1])
    return np.where(distance.min(-1) < radius, distance.argmin(-1) + 1, 0).astype(np.int32)


def recovered(truth, mode):
    """Instances of `mode` from exact maps of `truth`, checked for consistency and against the truth's union."""
    probs, channels = (distance_probs(truth), DISTANCE_CHANNELS) if mode == "distance" else (exact_probs(truth), CHANNELS)
    label_map, instances = to_instances(probs, channels, mode=mode, min_area=1)
    check_consistent(label_map, instances)
    assert np.array_equal(label_map > 0, truth > 0)
    assert len(instances) == truth.max()
    return label_map


@pytest.mark.parametrize("seed", range(6))
def test_watershed_recovers_touching_cells_from_exact_borders(seed):
    from cell_seg.metrics import iou_matrix

    truth = voronoi_cells(seed)
    label_map = recovered(truth, "watershed")
    assert iou_matrix(truth, label_map).max(axis=1).min() > 0.85  # every cell found, only its border pixels may differ
    merged, _ = to_instances(exact_probs(truth), CHANNELS, mode="components", min_area=1)
    assert merged.max() < truth.max() / 2


def test_watershed_keeps_or_drops_foreground_without_seed():
    probs = np.zeros((12, 24, 2), np.float32)
    probs[2:10, 2:10, 0] = 0.9  # a cell with a seed
    probs[2:10, 14:22, 0] = 0.9  # a cell whose border probability is high everywhere
    probs[2:10, 14:22, 1] = 0.9
    kept, instances = to_instances(probs, CHANNELS, mode="watershed")
    assert len(instances) == 2 and kept[5, 17] > 0 and kept[5, 17] != kept[5, 5]
    dropped, instances = to_instances(probs, CHANNELS, mode="watershed", keep_unseeded=False)
    assert len(instances) == 1 and dropped[5, 17] == 0


def test_watershed_does_not_leak_into_nearby_unseeded_component():
    probs = np.zeros((12, 24, 2), np.float32)
    probs[2:10, 2:10, 0] = 0.9
    probs[2:10, 11:20, 0] = 0.9  # one pixel column of background between the two
    probs[2:10, 11:20, 1] = 0.9  # no seed in the second
    label_map, instances = to_instances(probs, CHANNELS, mode="watershed", keep_unseeded=False)
    assert len(instances) == 1 and not label_map[:, 11:].any()


def test_watershed_reaches_pixels_joined_by_corners_only():
    probs = np.zeros((16, 16, 2), np.float32)
    probs[1:5, 1:5, 0] = 0.9
    for i in range(5, 13):
        probs[i, i, 0] = 0.9  # a one-pixel diagonal process (flooding itself is 4-connected)
    label_map, instances = to_instances(probs, CHANNELS, mode="watershed", min_area=1)
    assert len(instances) == 1 and instances[0]["area"] == 16 + 8
    label_map, instances = to_instances(probs, CHANNELS, mode="watershed", min_area=1, connectivity=4)
    assert len(instances) == 9  # with 4-connectivity each diagonal pixel is its own component


def test_watershed_without_border_channel_and_seed_erosion():
    truth = np.zeros((20, 40), np.int32)
    cv2.circle(truth, (10, 10), 8, 1, -1)
    cv2.circle(truth, (26, 10), 8, 2, -1)  # two discs joined by a 5-pixel neck
    foreground = cv2.GaussianBlur((truth > 0).astype(np.float32), (0, 0), 1)
    merged, _ = to_instances(foreground, ["foreground"], mode="watershed", seed_erosion=2)
    assert merged.max() == 1
    split, instances = to_instances(foreground, ["foreground"], mode="watershed", seed_erosion=3)
    assert len(instances) == 2 and abs(instances[0]["area"] - instances[1]["area"]) < 10
    assert np.array_equal(split > 0, foreground > 0.5)  # the eroded seeds grow back over it all


def test_watershed_lines_are_filled_and_frame_pixels_kept():
    truth = np.zeros((10, 10), np.int32)
    truth[:, :5], truth[:, 5:] = 1, 2  # two cells filling the image, frame included
    label_map, instances = to_instances(exact_probs(truth), CHANNELS, mode="watershed", min_area=1)
    assert len(instances) == 2 and (label_map > 0).all()
    assert len(np.unique(label_map[:, :4])) == 1 and len(np.unique(label_map[:, 6:])) == 1


# --- distance ----------------------------------------------------------------------------------

DISTANCE_CHANNELS = ["foreground", "distance"]


def distance_probs(label_map):
    """Perfect foreground and distance maps, from the package's own target code."""
    from cell_seg.data.targets import build_targets

    return build_targets(label_map, None, DISTANCE_CHANNELS, 0)


def two_touching_disks():
    truth = np.zeros((30, 44), np.int32)
    cv2.circle(truth, (13, 15), 10, 1, -1)
    cv2.circle(truth, (31, 15), 8, 2, -1)  # overlaps the first: the later disk wins the lens
    return truth


def test_distance_mode_splits_two_touching_disks_that_components_merges():
    truth = two_touching_disks()
    probs = distance_probs(truth)
    merged, _ = to_instances(probs, DISTANCE_CHANNELS, mode="components", min_area=1)
    assert merged.max() == 1
    split, instances = to_instances(probs, DISTANCE_CHANNELS, mode="distance", min_area=1)
    check_consistent(split, instances)
    assert len(instances) == 2
    assert np.array_equal(split > 0, truth > 0)  # the cores grow back over the whole foreground
    for k in (1, 2):
        values, counts = np.unique(split[truth == k], return_counts=True)
        assert counts.max() / counts.sum() > 0.95  # each disk is (almost all) one instance


def test_distance_mode_with_soft_maps_and_auto():
    truth = two_touching_disks()
    probs = cv2.GaussianBlur(distance_probs(truth), (0, 0), 1.0)  # what a network might say
    _, instances = to_instances(probs, DISTANCE_CHANNELS, mode="distance", distance_threshold=0.4)
    assert len(instances) == 2
    # "auto" is the distance mode when a distance channel exists, as before otherwise.
    assert len(to_instances(probs, DISTANCE_CHANNELS)[1]) == 2
    assert postprocess.auto_mode(["foreground", "border", "distance"]) == "distance"
    assert postprocess.auto_mode(["foreground", "border"]) == "watershed"
    assert postprocess.auto_mode(["foreground"]) == "components"
    with pytest.raises(DataError, match="distance"):
        to_instances(probs[..., :1], ["foreground"], mode="distance")


@pytest.mark.parametrize("seed", range(4))
def test_distance_mode_recovers_touching_cells_from_exact_maps(seed):
    from cell_seg.metrics import iou_matrix

    truth = voronoi_cells(seed)
    assert iou_matrix(truth, recovered(truth, "distance")).max(axis=1).min() > 0.75


def test_distance_levels_put_the_line_between_unequal_cells_in_the_valley():
    from cell_seg.metrics import iou_matrix

    truth = np.zeros((40, 70), np.int32)
    cv2.circle(truth, (20, 20), 16, 1, -1)
    cv2.circle(truth, (45, 20), 9, 2, -1)  # a small cell against a large one
    probs = cv2.GaussianBlur(distance_probs(truth), (0, 0), 1.0)
    quality = {}
    for levels in (0, 3):
        label_map, instances = to_instances(probs, DISTANCE_CHANNELS, mode="distance", distance_threshold=0.5,
                                            distance_levels=levels)
        check_consistent(label_map, instances)
        assert len(instances) == 2
        quality[levels] = iou_matrix(truth, label_map).max(axis=1)
    # Halfway between the cores the large cell takes part of the small one; down the valley it does not.
    assert quality[0][1] < 0.94 and quality[3][1] > 0.95 and quality[3][0] > quality[0][0]


def test_line_pixels_go_uphill_in_the_distance_mode():
    label_map = np.array([[1, 0, 2], [1, 0, 2], [0, 0, 0]], np.int32)
    uphill = np.array([[0.2, 0.1, 0.6], [0.9, 0.1, 0.3], [0.0, 0.0, 0.0]], np.float32)
    pixels = np.array([1, 4, 8])  # (0, 1), (1, 1) between the two labels; (2, 2) next to 2 only
    got = postprocess._neighbour_uphill(label_map, uphill, pixels, postprocess._RING)
    assert got.tolist() == [1, 1, 2]  # (0, 1) sees 1 at 0.9 (diagonal) above 2 at 0.6


CENTRE_CHANNELS = ["foreground", "distance", "centre"]


def two_lobed_cell_beside_a_disk():
    """Cell 1: two round lobes joined by a neck (two distance cores); cell 2: a disk touching a lobe."""
    truth = np.zeros((34, 60), np.int32)
    cv2.circle(truth, (11, 15), 8, 1, -1)
    cv2.circle(truth, (34, 15), 8, 1, -1)
    truth[14:17, 11:35] = 1
    cv2.circle(truth, (49, 15), 8, 2, -1)  # overlaps lobe 2's edge: the disk wins the lens
    return truth


def test_centre_mode_keeps_a_two_lobed_cell_whole_that_distance_splits():
    from cell_seg.data.targets import build_targets
    from cell_seg.metrics import iou_matrix

    truth = two_lobed_cell_beside_a_disk()
    probs = cv2.GaussianBlur(build_targets(truth, None, CENTRE_CHANNELS, 0), (0, 0), 1.0)
    split, _ = to_instances(probs, CENTRE_CHANNELS, mode="distance", distance_threshold=0.4, min_area=1)
    assert split.max() == 3  # a core in each lobe
    whole, instances = to_instances(probs, CENTRE_CHANNELS, mode="centre", distance_threshold=0.2, min_area=1)
    check_consistent(whole, instances)
    assert len(instances) == 2
    assert iou_matrix(truth, whole).max(axis=1).min() > 0.9
    # Without a distance channel the seeds and the growth come from the centre map alone.
    alone, _ = to_instances(probs[..., [0, 2]], ["foreground", "centre"], mode="centre", min_area=1)
    assert alone.max() == 2 and iou_matrix(truth, alone).max(axis=1).min() > 0.8


def test_centre_mode_auto_settings_and_errors():
    assert postprocess.auto_mode(CENTRE_CHANNELS) == "centre"
    assert postprocess.auto_mode(["foreground", "border", "distance"]) == "distance"
    with pytest.raises(DataError, match="'centre' channel"):
        to_instances(np.zeros((4, 4, 2), np.float32), DISTANCE_CHANNELS, mode="centre")
    cfg = PostprocessConfig(mode="centre", per_class={"astro": {"centre_threshold": 0.7}})
    assert cfg.for_class("astro").centre_threshold == 0.7 and cfg.for_class("cort").centre_threshold == 0.6
    assert PostprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="centre_threshold"):
        PostprocessConfig(centre_threshold=-0.1)


def test_min_seed_area_drops_small_cores():
    probs = np.zeros((12, 30, 2), np.float32)
    probs[2:10, 2:28, 0] = 0.9  # one foreground blob ...
    probs[4:8, 4:10, 1] = 0.9  # ... with a core of 24 pixels
    probs[5:7, 20:22, 1] = 0.9  # and one of 4 pixels
    _, instances = to_instances(probs, DISTANCE_CHANNELS, mode="distance", min_area=1)
    assert len(instances) == 2
    label_map, instances = to_instances(probs, DISTANCE_CHANNELS, mode="distance", min_area=1, min_seed_area=5)
    assert len(instances) == 1 and instances[0]["area"] == 8 * 26
    # In the watershed mode too (seeds = foreground below the border threshold).
    border = np.stack([probs[..., 0], 1 - probs[..., 1]], axis=-1)
    assert len(to_instances(border, CHANNELS, mode="watershed", min_area=1, min_seed_area=5)[1]) == 1


def test_distance_settings_are_checked_and_per_class():
    cfg = PostprocessConfig(mode="distance", per_class={"shsy5y": {"distance_threshold": 0.3, "min_seed_area": 4}})
    assert cfg.for_class("shsy5y").distance_threshold == 0.3 and cfg.for_class("cort").distance_threshold == 0.5
    assert PostprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="distance_threshold"):
        PostprocessConfig(distance_threshold=1.2)
    with pytest.raises(ConfigError, match="min_seed_area"):
        PostprocessConfig(min_seed_area=-1)
    with pytest.raises(ConfigError, match="distance_levels"):
        PostprocessConfig(distance_levels=1.5)


# --- holes and dilation ------------------------------------------------------------------------


def reference_fill_holes(label_map):
    """Plain version: each background 4-region not touching the frame and bordered by exactly
    one label takes that label."""
    height, width = label_map.shape
    n, regions = cv2.connectedComponents((label_map == 0).astype(np.uint8), connectivity=4)
    out = label_map.copy()
    for region in range(1, n):
        rows, cols = np.nonzero(regions == region)
        if rows.min() == 0 or cols.min() == 0 or rows.max() == height - 1 or cols.max() == width - 1:
            continue
        neighbours = set()
        for r, c in zip(rows, cols):
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                if label_map[r + dr, c + dc] > 0:
                    neighbours.add(int(label_map[r + dr, c + dc]))
        if len(neighbours) == 1:
            out[rows, cols] = neighbours.pop()
    return out


def test_fill_holes_single_owner_only():
    label_map = np.zeros((9, 16), np.int32)
    label_map[1:6, 1:6] = 1
    label_map[2:4, 2:4] = 0  # hole of cell 1
    label_map[1:6, 8:11] = 2
    label_map[1:6, 12:15] = 3
    label_map[1, 11] = label_map[5, 11] = 2  # gap between cells 2 and 3: not a hole of either
    label_map[6:9, 0:4] = 4
    label_map[7, 0] = 0  # touches the frame: not a hole
    filled = postprocess.fill_label_holes(label_map)
    assert (filled[2:4, 2:4] == 1).all()
    assert (filled[2:5, 11] == 0).all()
    assert filled[7, 0] == 0
    assert np.array_equal(filled, reference_fill_holes(label_map))


@pytest.mark.parametrize("seed", range(5))
def test_fill_holes_matches_plain_reference_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    label_map = random_label_map(seed, n=30)
    label_map[rng.random(label_map.shape) < 0.08] = 0  # punch holes
    assert np.array_equal(postprocess.fill_label_holes(label_map), reference_fill_holes(label_map))


def test_to_instances_fills_holes_by_default():
    probs = np.zeros((10, 10, 1), np.float32)
    probs[1:9, 1:9] = 0.9
    probs[4:6, 4:6] = 0.1
    filled, instances = to_instances(probs, ["foreground"])
    assert instances[0]["area"] == 64 and filled[4, 4] == 1
    assert instances[0]["score"] == pytest.approx((60 * 0.9 + 4 * 0.1) / 64, rel=1e-6)
    kept, instances = to_instances(probs, ["foreground"], fill_holes=False)
    assert instances[0]["area"] == 60 and kept[4, 4] == 0


def test_dilation_grows_into_background_only():
    label_map = random_label_map(3, n=20)
    for pixels in (1, 2):
        grown = postprocess.dilate_labels(label_map, pixels)
        assert np.array_equal(grown[label_map > 0], label_map[label_map > 0])
        new = (grown > 0) & (label_map == 0)
        assert new.any()
        # every new pixel is within `pixels` steps (L1) of a pixel of the same label
        for r, c in zip(*np.nonzero(new)):
            window = label_map[max(r - pixels, 0) : r + pixels + 1, max(c - pixels, 0) : c + pixels + 1]
            assert grown[r, c] in window


def test_to_instances_dilation_changes_area_not_score():
    probs = np.zeros((12, 12, 1), np.float32)
    probs[4:8, 4:8] = 0.8
    _, plain = to_instances(probs, ["foreground"], min_area=1)
    _, grown = to_instances(probs, ["foreground"], min_area=1, dilation=1)
    assert plain[0]["area"] == 16 and grown[0]["area"] == 16 + 16
    assert grown[0]["score"] == pytest.approx(plain[0]["score"])
    assert grown[0]["bbox"] == [3, 3, 6, 6]


# --- classes -----------------------------------------------------------------------------------

CLASS_CHANNELS = ["foreground", "border", "class_astro", "class_cort", "class_shsy5y"]


def class_probs():
    probs = np.zeros((12, 24, 5), np.float32)
    probs[2:5, 2:5, 0] = 0.9  # small cell (9 px)
    probs[2:10, 12:20, 0] = 0.9  # big cell (64 px)
    probs[2:5, 2:5, 3] = 0.9  # small one looks like cort
    probs[2:10, 12:20, 2] = 0.6  # big one looks like astro, and astro wins the image sum
    return probs


def test_image_class_and_its_parameters():
    cfg = PostprocessConfig(min_area=5, per_class={"astro": {"min_area": 20}, "cort": {"min_area": 1}})
    label_map, instances = to_instances(class_probs(), CLASS_CHANNELS, mode="components", config=cfg)
    assert [i["class"] for i in instances] == ["astro"]  # astro's min_area 20 removes the small one
    check_consistent(label_map, instances)


def test_image_class_given_by_the_caller():
    cfg = PostprocessConfig(min_area=5, per_class={"astro": {"min_area": 20}, "cort": {"min_area": 1}})
    probs = class_probs()[..., :2]  # no class channels
    _, instances = to_instances(probs, CHANNELS, mode="components", config=cfg, image_class="cort")
    assert [i["class"] for i in instances] == ["cort", "cort"]
    _, instances = to_instances(class_probs(), CLASS_CHANNELS, mode="components", config=cfg, image_class="cort")
    assert len(instances) == 2  # the caller's class wins over the class channels
    _, instances = to_instances(probs, CHANNELS, mode="components", config=cfg)
    assert [i["class"] for i in instances] == [None, None]


def test_instance_classes_and_per_class_min_area():
    cfg = PostprocessConfig(min_area=5, class_mode="instance", per_class={"cort": {"min_area": 10}})
    _, instances = to_instances(class_probs(), CLASS_CHANNELS, mode="components", config=cfg)
    assert [i["class"] for i in instances] == ["astro"]
    cfg = cfg.replace(per_class={"cort": {"min_area": 9}})
    _, instances = to_instances(class_probs(), CLASS_CHANNELS, mode="components", config=cfg)
    assert [i["class"] for i in instances] == ["cort", "astro"]


# --- config and errors -------------------------------------------------------------------------


def test_config_round_trip_through_json():
    cfg = PostprocessConfig(mode="watershed", fg_threshold=0.4, dilation=1, per_class={"astro": {"min_area": 60}})
    restored = PostprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert restored == cfg
    assert restored.for_class("astro").min_area == 60 and restored.for_class("class_astro").min_area == 60
    assert restored.for_class("cort") is restored


@pytest.mark.parametrize(
    "data, key",
    [
        ({"fg_treshold": 0.5}, "fg_treshold"),
        ({"fg_threshold": 1.5}, "fg_threshold"),
        ({"min_area": -1}, "min_area"),
        ({"mode": "magic"}, "mode"),
        ({"class_mode": "pixel"}, "class_mode"),
        ({"per_class": {"astro": {"mode": "magic"}}}, "astro.mode"),
        ({"per_class": {"astro": {"class_mode": "instance"}}}, "astro.class_mode"),
        ({"per_class": {"astro": {"min_score": "high"}}}, "astro.min_score"),
    ],
)
def test_config_errors_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key):
        PostprocessConfig.from_dict(data)


def test_params_override_config_and_unknown_param_fails():
    probs = np.zeros((6, 6, 1), np.float32)
    probs[1:3, 1:3] = 0.9
    cfg = PostprocessConfig(min_area=10)
    assert to_instances(probs, ["foreground"], config=cfg)[1] == []
    assert len(to_instances(probs, ["foreground"], config=cfg, min_area=1)[1]) == 1
    with pytest.raises(ConfigError, match="min_aera"):
        to_instances(probs, ["foreground"], min_aera=1)


def test_channel_errors():
    with pytest.raises(DataError, match="channels"):
        to_instances(np.zeros((4, 4, 2), np.float32), ["foreground"])
    with pytest.raises(DataError, match="foreground"):
        to_instances(np.zeros((4, 4, 1), np.float32), ["border"])


# --- statistics and RLE ------------------------------------------------------------------------


@pytest.mark.parametrize("table", [True, False])
def test_label_stats_match_plain_loop(table, monkeypatch):
    if not table:
        monkeypatch.setattr(label_ops, "PRESENCE_TABLE_LIMIT", 0)
    label_map = random_label_map(7, n=30)
    label_map[label_map == 5] = 0  # an id with no pixel
    areas, boxes = label_ops.label_stats(label_map)
    for k in range(1, label_map.max() + 1):
        rows, cols = np.nonzero(label_map == k)
        if rows.size == 0:
            assert areas[k - 1] == 0 and boxes[k - 1] == [0, 0, 0, 0]
            continue
        assert areas[k - 1] == rows.size
        assert boxes[k - 1] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]


@pytest.mark.parametrize("order", ["row", "col"])
def test_label_map_to_rle_matches_per_instance_encoder(order):
    from cell_seg.data import rle as rle_codec

    label_map = random_label_map(11, n=40)
    label_map[3, -2:] = 77  # a run wrapping from one row ...
    label_map[4, :3] = 77  # ... into the next (row-major)
    label_map[-1, -1] = 123456  # many digits
    expected = {k: rle_codec.encode_rle(label_map == k, order) for k in np.unique(label_map) if k}
    assert label_ops.label_map_to_rle(label_map, order) == expected
    assert label_ops.label_map_to_rle(np.zeros((3, 3), np.int32)) == {}


def _touching_pair():
    """Two touching squares, a border line between them, one distance peak in each, class channel "b"."""
    probs = np.zeros((12, 20, 4), np.float32)
    probs[2:10, 2:18, 0] = 0.9
    probs[2:10, 9:11, 1] = 0.9
    probs[4:8, 4:7, 2] = probs[4:8, 13:16, 2] = 0.9
    probs[2:10, 2:18, 3] = 0.9
    return probs, ["foreground", "border", "distance", "class_b"]


def test_a_class_can_have_its_own_mode_and_an_explicit_mode_overrides_it():
    probs, channels = _touching_pair()
    cfg = PostprocessConfig(mode="components", min_area=1, per_class={"b": {"mode": "watershed"}})
    labels, _ = to_instances(probs, channels, config=cfg)
    assert labels.max() == 2  # class b's watershed split the pair
    labels, _ = to_instances(probs, channels, config=cfg, mode="components")
    assert labels.max() == 1  # the mode asked for wins over the class's
    assert cfg.with_mode("components").per_class == {"b": {}}
    with pytest.raises(ConfigError, match="b.mode"):
        PostprocessConfig(per_class={"b": {"mode": "flows"}})


def test_tuning_with_classes_offers_each_class_its_best_mode():
    """Class a is one cell (components keeps it whole); class b is two touching cells (watershed splits them)."""
    from cell_seg.evaluate import BY_CLASS, evaluate_records

    probs, channels = _touching_pair()
    probs = np.concatenate([probs, np.zeros_like(probs[..., :1])], axis=-1)
    channels = ["foreground", "border", "distance", "class_b", "class_a"]
    one = probs.copy()
    one[..., 1] = 0.05  # no border line: components and watershed both keep one cell ...
    one[..., 2] = 0.0
    one[4:8, 4:16, 2] = 0.9
    one[..., 3], one[..., 4] = 0.0, probs[..., 3]
    two_truth = np.zeros((12, 20), np.int32)
    two_truth[2:10, 2:10], two_truth[2:10, 10:18] = 1, 2
    one_truth = (two_truth > 0).astype(np.int32)
    records = [{"probs": p, "truth": t, "class": c, "group": g}
               for g, (p, t, c) in enumerate([(probs, two_truth, "b"), (one, one_truth, "a")] * 2)]
    report, chosen = evaluate_records(records, channels, PostprocessConfig(min_area=1), tune=True,
                                      modes=["components", "watershed"])
    assert report["modes"][BY_CLASS]["map"] >= max(report["modes"][m]["map"] for m in ("components", "watershed"))
    assert report["tuning"][BY_CLASS]["settings"]["per_class"]["b"]["mode"] == "watershed"
    from cell_seg.evaluate import cross_tuned_scores

    cross = cross_tuned_scores(records, channels, PostprocessConfig(min_area=1), modes=["components", "watershed"])
    assert cross[BY_CLASS]["images"] == 4 and cross[BY_CLASS]["per_class"]["b"] == pytest.approx(1.0)
    assert cross["components"]["per_class"]["b"] == 0.0
    mixed = PostprocessConfig.from_dict(report["tuning"][BY_CLASS]["settings"])
    untuned, own = evaluate_records(records, channels, mixed, modes=["components", "watershed"])
    assert untuned["best_mode"] == BY_CLASS and own is mixed  # a model's per-class modes are scored as they are
    assert untuned["modes"][BY_CLASS]["map"] == report["modes"][BY_CLASS]["map"]
