"""What the benchmark scripts share: where the repository and the shared data are, the samples they measure on.

- `REPO`, `DEFAULT_DATA`: the repository root and the default `--data` folder (`../shared/data`);
- `sartorius_reference(data_root)`: `coco_reference.json` of the shared Sartorius data as a
  `CocoDataset`, and `pycocotools_index(coco)`, the pycocotools index the baselines use;
- `sartorius_ground_truth(data_root, ...)`: the ground-truth label map of one Sartorius image (by
  default the shsy5y image with about 300 cells), and `synthetic_label_map` / `synthetic_sample`,
  random touching ellipses for when the data is absent;
- `model_like_probabilities(label_map)`: foreground / border / distance / centre maps made from a label
  map, blurred and noisy like a network's output, for timing post-processing;
- `scoring_parser(doc)`: the command line of a script that scores models on a COCO set.

Scripts are run from the repository root as modules (`python -m bench.postprocess`), so
`cell_seg` and `bench` import without any change to `sys.path`.
"""

import argparse
from pathlib import Path

import cv2
import numpy as np

from cell_seg.data import labels as label_ops
from cell_seg.data import rle as rle_codec
from cell_seg.data.targets import centre_map, distance_map
from cell_seg.files import read_json
from cell_seg.postprocess import INSTANCE_MODES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
SARTORIUS_SHAPE = (520, 704)


def sartorius_reference(data_root):
    """(coco path, COCO dict, `CocoDataset`) of `<data_root>/sartorius/coco_reference.json` and its images.

    Returns None, after printing why, when the file or the image folder is missing.
    """
    from cell_seg.data.dataset import CocoDataset

    folder = Path(data_root) / "sartorius"
    coco_path, images_dir = folder / "coco_reference.json", folder / "train"
    if not coco_path.is_file() or not images_dir.is_dir():
        print(f"{coco_path} or {images_dir} not found: benchmark skipped")
        return None
    coco = read_json(coco_path)
    return coco_path, coco, CocoDataset(coco, images_dir)


def pycocotools_index(coco):
    """A pycocotools `COCO` index over an already loaded COCO dict (the baselines' `annToMask`)."""
    from pycocotools.coco import COCO

    index = COCO()
    index.dataset = coco
    index.createIndex()
    return index


def sartorius_ground_truth(data_root, image_id=None, target_cells=300):
    """(COCO image record, ground-truth label map) of a Sartorius image.

    Args:
        data_root: folder holding `sartorius/coco_reference.json`.
        image_id: the image to load; None picks the shsy5y image whose number of cells is closest
            to `target_cells` (the lower id on a tie).
        target_cells: see `image_id`.
    """
    coco = read_json(Path(data_root) / "sartorius" / "coco_reference.json")
    shsy5y = {c["id"] for c in coco["categories"] if c["name"] == "shsy5y"}
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    if image_id is None:
        candidates = [i for i, anns in by_image.items() if anns[0]["category_id"] in shsy5y]
        image_id = min(candidates, key=lambda i: (abs(len(by_image[i]) - target_cells), i))
    info = next(image for image in coco["images"] if image["id"] == image_id)
    arrays = [rle_codec.coco_to_indices(a["segmentation"]) for a in by_image[image_id]]
    label_map, _ = label_ops.paint_instances(arrays, SARTORIUS_SHAPE, order="col")
    return info, label_map


def _random_ellipses(rng, n_cells):
    label_map = np.zeros(SARTORIUS_SHAPE, np.int32)
    for k in range(1, n_cells + 1):
        center = (int(rng.integers(0, SARTORIUS_SHAPE[1])), int(rng.integers(0, SARTORIUS_SHAPE[0])))
        axes = (int(rng.integers(5, 14)), int(rng.integers(4, 10)))
        cv2.ellipse(label_map, center, axes, float(rng.uniform(0, 180)), 0, 360, k, -1)
    return label_ops.relabel_sequential(label_map)[0]


def synthetic_label_map(n_cells=300, seed=0):
    """Label map of `n_cells` random touching ellipses on a 520 x 704 image."""
    return _random_ellipses(np.random.default_rng(seed), n_cells)


def synthetic_sample(n_cells=300, seed=0):
    """(uint8 image, label map): `synthetic_label_map(n_cells, seed)` and a noisy image of it."""
    rng = np.random.default_rng(seed)
    label_map = _random_ellipses(rng, n_cells)
    image = np.clip(120 + 60 * (label_map > 0) + rng.normal(0, 10, SARTORIUS_SHAPE), 0, 255).astype(np.uint8)
    return image, label_map


def model_like_probabilities(label_map, seed=0):
    """Realistic-looking foreground / border / distance / centre probabilities (H x W x 4) from a label map.

    Foreground: the blurred union of the cells plus a little noise; border: blurred instance
    outlines; distance and centre: the package's targets, blurred, plus noise.
    """
    rng = np.random.default_rng(seed)
    union = (label_map > 0).astype(np.float32)
    foreground = cv2.GaussianBlur(union, (0, 0), 1.5) + rng.normal(0, 0.05, union.shape).astype(np.float32)
    as_float = label_map.astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    outline = (cv2.dilate(as_float, kernel) != cv2.erode(as_float, kernel)) & (label_map > 0)
    border = cv2.GaussianBlur(outline.astype(np.float32), (0, 0), 1.0) * 2.0
    distance = cv2.GaussianBlur(distance_map(label_map), (0, 0), 1.0)
    distance += rng.normal(0, 0.05, union.shape).astype(np.float32)
    centre = cv2.GaussianBlur(centre_map(label_map), (0, 0), 1.0)
    centre += rng.normal(0, 0.05, union.shape).astype(np.float32)
    return np.clip(np.stack([foreground, border, distance, centre], axis=-1), 0, 1).astype(np.float32)


def scoring_parser(doc, modes=False):
    """An argument parser for a script that scores models on a COCO set: description and epilog from
    the module docstring `doc` (first line; the rest after the first blank line), `--coco`, `--images`,
    `--out` and, with `modes`, `--modes`. The script adds its own model options."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0], epilog=doc.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco", required=True, help="COCO JSON of the images to score")
    parser.add_argument("--images", required=True, help="folder the COCO file_name entries are relative to")
    parser.add_argument("--out", required=True, help="JSON file of the scores")
    if modes:
        parser.add_argument("--modes", nargs="+", choices=INSTANCE_MODES,
                            help="instance modes to tune and score (default: every mode the model allows)")
    return parser
