"""Shared small fixtures: tiny images and label maps made in code, the real-data location."""

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Tests run against the working tree even when the package is not installed (pip install -e .).
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def write_png(path, array):
    """Write `array` (H x W, H x W x 3 RGB or H x W x 4 RGBA; uint8/uint16) as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"cannot write {path}")
    return path


@pytest.fixture
def png_writer():
    """The `write_png(path, array)` helper as a fixture."""
    return write_png


@pytest.fixture
def rng():
    """A seeded numpy generator."""
    return np.random.default_rng(0)


@pytest.fixture
def small_label_map():
    """A 12 x 16 int32 label map with 4 instances: one touches the first, one the last pixel.

    Instance 1: 3 x 3 square at the top-left corner; 2: 2 x 5 bar; 3: single pixel; 4: 3 x 3 square
    at the bottom-right corner (covers the last pixel in both orders).
    """
    labels = np.zeros((12, 16), np.int32)
    labels[0:3, 0:3] = 1
    labels[5:7, 4:9] = 2
    labels[8, 2] = 3
    labels[9:12, 13:16] = 4
    return labels
