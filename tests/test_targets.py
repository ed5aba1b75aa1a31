"""Training targets from label maps (cell_seg.data.targets), on hand-made maps."""

import numpy as np
import pytest

from cell_seg.data.synthetic import make_synthetic
from cell_seg.data.targets import build_targets, channel_names, contact_pixels, distance_map, outline_ring
from cell_seg.errors import ConfigError


def _touching_squares():
    labels = np.zeros((8, 10), np.int32)
    labels[2:6, 1:5] = 1
    labels[2:6, 5:9] = 2
    return labels


def _naive_contacts(labels):
    """Per-pixel reference: an instance pixel with another non-zero label in its 3 x 3 neighbourhood."""
    height, width = labels.shape
    out = np.zeros(labels.shape, bool)
    for r in range(height):
        for c in range(width):
            own = labels[r, c]
            if own == 0:
                continue
            window = labels[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
            out[r, c] = ((window != own) & (window != 0)).any()
    return out


def test_touching_squares_border_is_the_two_contact_columns():
    labels = _touching_squares()
    targets = build_targets(labels, np.array([-1, 0, 0]), ["foreground", "border"], 1)
    assert targets.dtype == np.float32 and targets.shape == (8, 10, 2)
    np.testing.assert_array_equal(targets[..., 0], labels > 0)
    expected = np.zeros(labels.shape, np.float32)
    expected[2:6, 4:6] = 1  # column 4 of square 1 and column 5 of square 2
    np.testing.assert_array_equal(targets[..., 1], expected)


def test_diagonal_contact_counts():
    labels = np.zeros((4, 4), np.int32)
    labels[0, 0] = 1
    labels[1, 1] = 2
    np.testing.assert_array_equal(contact_pixels(labels), labels > 0)


def test_isolated_square_has_no_border_without_width():
    labels = np.zeros((10, 10), np.int32)
    labels[2:8, 2:8] = 3
    assert not build_targets(labels, None, ["border"], 0).any()
    # touching the image edge is not a contact, nor part of the outline ring
    edge = np.zeros((10, 10), np.int32)
    edge[:, :3] = 7
    assert not contact_pixels(edge).any()
    assert not outline_ring(edge, 1)[:, :2].any() and outline_ring(edge, 1)[:, 2].all()


def test_ring_width():
    labels = np.zeros((14, 14), np.int32)
    labels[2:12, 2:12] = 1  # 10 x 10 square
    for width in (1, 2, 3):
        border = build_targets(labels, None, ["border"], 0, border_width=width)[..., 0]
        expected = np.zeros_like(border)
        expected[2:12, 2:12] = 1
        expected[2 + width : 12 - width, 2 + width : 12 - width] = 0
        np.testing.assert_array_equal(border, expected, err_msg=f"width {width}")


def test_ring_is_inside_each_of_two_touching_instances():
    labels = _touching_squares()
    ring = outline_ring(labels, 1)
    assert not ring[labels == 0].any()
    assert ring[2:6, 4].all() and ring[2:6, 5].all()  # the shared side is an outline of both
    assert not ring[3:5, 2:4].any() and not ring[3:5, 6:8].any()  # interiors


def test_vectorised_border_matches_per_pixel_reference():
    for _, _, labels, _ in make_synthetic(3, shape=(40, 56), seed=5, cells=(8, 15)):
        np.testing.assert_array_equal(contact_pixels(labels), _naive_contacts(labels))


def test_class_channels_and_names():
    labels = _touching_squares()
    labels[7, 9] = 3
    classes = np.array([-1, 2, 0, 2])
    targets = build_targets(labels, classes, ["classes", "foreground"], 3)
    assert targets.shape == (8, 10, 4)
    np.testing.assert_array_equal(targets[..., 0], labels == 2)
    assert not targets[..., 1].any()
    np.testing.assert_array_equal(targets[..., 2], (labels == 1) | (labels == 3))
    np.testing.assert_array_equal(targets[..., 3], labels > 0)
    assert channel_names(["classes", "foreground"], ["a", "b", "c"]) == ["class_a", "class_b", "class_c", "foreground"]


def test_bad_channel_names():
    with pytest.raises(ConfigError, match="edges"):
        build_targets(np.zeros((2, 2), np.int32), None, ["edges"], 1)
    with pytest.raises(ConfigError):
        channel_names(["border", "border"], [])
    with pytest.raises(ConfigError):
        build_targets(np.ones((2, 2), np.int32), None, ["classes"], 1)


def _naive_distance(labels):
    """Per-instance reference: Euclidean distance to the nearest pixel of another instance's
    contact or the background (per instance, full image), over the instance's maximum."""
    height, width = labels.shape
    rows, cols = np.mgrid[0:height, 0:width]
    outside = (labels == 0) | contact_pixels(labels)
    out = np.zeros(labels.shape, np.float64)
    for k in np.unique(labels[labels > 0]):
        mask = labels == k
        free = outside | ~mask
        fr, fc = rows[free], cols[free]
        d = np.zeros(labels.shape)
        for r, c in zip(*np.nonzero(mask & ~outside)):
            d[r, c] = np.sqrt(((fr - r) ** 2 + (fc - c) ** 2).min())
        if d.max() > 0:
            out[mask] = d[mask] / d.max()
    return out


def test_distance_target_on_touching_squares():
    labels = _touching_squares()  # two 4 x 4 squares side by side, rows 2..5
    targets = build_targets(labels, None, ["foreground", "distance"], 0)
    distance = targets[..., 1]
    assert targets.shape == (8, 10, 2) and distance.dtype == np.float32
    assert distance.min() == 0 and distance.max() == 1
    assert not distance[labels == 0].any()
    # The contact columns (4 and 5) are 0: a two-pixel valley between the squares.
    assert not distance[:, 4:6].any()
    # Square 1 (columns 1..4): its outline is at 1 px, its two inner pixels (rows 3-4, col 2-3
    # minus the one next to the contact) at 2 px; normalised by 2.
    np.testing.assert_allclose(distance[2:6, 1:4], [[0.5, 0.5, 0.5], [0.5, 1, 0.5], [0.5, 1, 0.5], [0.5, 0.5, 0.5]])
    # Mirror image for square 2.
    np.testing.assert_allclose(distance[2:6, 6:9], distance[2:6, 1:4][:, ::-1])


def test_distance_target_is_per_instance_normalised_and_matches_reference():
    labels = np.zeros((20, 30), np.int32)
    labels[2:5, 2:5] = 1  # small: max distance 2
    labels[6:19, 8:29] = 2  # large: max distance 7
    distance = distance_map(labels)
    assert distance[labels == 1].max() == 1 and distance[labels == 2].max() == 1
    assert distance[3, 3] == 1 and distance[12, 18] == 1
    for _, _, synthetic, _ in make_synthetic(2, shape=(40, 56), seed=3, cells=(8, 15)):
        np.testing.assert_allclose(distance_map(synthetic), _naive_distance(synthetic), atol=0.03)


def test_distance_target_empty_and_single_pixel_instances():
    assert not distance_map(np.zeros((4, 5), np.int32)).any()
    labels = np.zeros((4, 5), np.int32)
    labels[1, 1] = 1
    labels[1, 2] = 2  # two one-pixel cells touching: every pixel is a contact, no division by 0
    labels[3, 4] = 3
    distance = distance_map(labels)
    assert np.isfinite(distance).all()
    assert distance[1, 1] == 0 and distance[1, 2] == 0 and distance[3, 4] == 1


# --- the "centre" target ---------------------------------------------------------------------------


def _dumbbell(shape=(30, 46)):
    """One cell of two round lobes joined by a thin neck: two distance cores, one centre."""
    import cv2

    labels = np.zeros(shape, np.int32)
    cv2.circle(labels, (11, 15), 8, 1, -1)
    cv2.circle(labels, (34, 15), 8, 1, -1)
    labels[14:17, 11:35] = 1
    return labels


def test_centre_target_has_one_peak_per_cell_even_with_two_lobes():
    from cell_seg.data.targets import centre_map

    labels = _dumbbell()
    labels[3:9, 20:26] = 2  # a small square cell above the neck, touching nothing
    centre = centre_map(labels)
    assert centre.dtype == np.float32 and not centre[labels == 0].any()
    assert 0 < centre[labels > 0].min() and centre.max() == 1
    assert [int((centre[labels == k] == 1).sum()) for k in (1, 2)] == [1, 1]
    # The peak sits in one lobe; the other lobe's middle is far along the neck, hence low.
    peak = np.unravel_index(np.argmax(np.where(labels == 1, centre, 0)), labels.shape)
    other = (15, 34) if peak[1] < 23 else (15, 11)
    assert centre[other] < 0.4
    # The distance target gives both lobes a core of 1.
    assert distance_map(labels)[15, 11] > 0.999 and distance_map(labels)[15, 34] > 0.999


def test_centre_target_falls_with_the_distance_from_the_middle_of_a_disc():
    import cv2

    from cell_seg.data.targets import centre_map

    labels = np.zeros((41, 41), np.int32)
    cv2.circle(labels, (20, 20), 15, 1, -1)
    centre = centre_map(labels)
    assert centre[20, 20] == 1
    rows, cols = np.nonzero(labels)
    radius = np.hypot(rows - 20, cols - 20)
    # Alternating square and cross steps follow the Euclidean length to within about a tenth of the
    # radius (0.11 measured here at the worst angle).
    np.testing.assert_allclose(centre[rows, cols], 1 - radius / 16, atol=0.12)


def test_centre_target_of_touching_and_broken_cells():
    from cell_seg.data.targets import centre_map

    labels = _touching_squares()
    centre = build_targets(labels, None, ["foreground", "distance", "centre"], 0)[..., 2]
    assert [int((centre[labels == k] == 1).sum()) for k in (1, 2)] == [1, 1]  # a peak each, across the contact
    broken = np.zeros((5, 12), np.int32)
    broken[1:4, 1:5] = 1
    broken[1:4, 8:10] = 1  # a piece of cell 1 cut off from its centre
    centre = centre_map(broken)
    assert centre[1:4, 1:5].min() > 0 and not centre[1:4, 8:10].any()
    assert not centre_map(np.zeros((3, 4), np.int32)).any()
    single = np.zeros((3, 3), np.int32)
    single[1, 1] = 7
    assert centre_map(single)[1, 1] == 1
    huge = labels.astype(np.int64) * 2**30  # ids beyond float32's exact integers give the same map
    np.testing.assert_array_equal(centre_map(huge), centre_map(labels))


def test_close_instances_joins_broken_pieces_without_taking_other_cells_pixels():
    from cell_seg.data.labels import close_instances

    labels = np.zeros((20, 30), np.int32)
    labels[3:9, 2:8] = 1
    labels[3:9, 10:16] = 1  # the same cell, drawn in two pieces 2 px apart
    labels[12:18, 4:10] = 2
    labels[12:18, 10:14] = 3  # touches cell 2
    labels[5, 4] = 0  # a one-pixel hole in cell 1
    closed = close_instances(labels, 5)
    assert (closed[4:8, 8:10] == 1).all() and closed[5, 4] == 1  # the gap's corners stay round
    np.testing.assert_array_equal(closed[labels > 0], labels[labels > 0])  # no pixel changes hands
    assert set(np.unique(closed)) == {0, 1, 2, 3}
    assert (closed[0, :] == 0).all() and (closed[:, 20:] == 0).all()  # nothing grows outward
    np.testing.assert_array_equal(close_instances(labels, 1), labels)
    np.testing.assert_array_equal(close_instances(np.zeros((4, 4), np.int32), 5), np.zeros((4, 4)))
