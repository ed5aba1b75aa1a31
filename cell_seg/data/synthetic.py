"""Seeded synthetic phase-contrast-like images with instance ground truth, for tests and demos.

Each image is 8-bit grayscale: a textured background, cells with a bright halo outside and a
dark rim inside (as phase contrast shows them), darker lines where cells touch, blur and noise.
Every image holds one cell type (as in Sartorius), drawn from `SYNTHETIC_CATEGORIES`:

- "blob": larger irregular shapes (astrocyte-like);
- "neurite": elongated bodies with one or two thin processes (neurite-like, as SH-SY5Y or
  cortical neurons);
- "round": near-circular ellipses, the smallest.

Cells are placed at random or next to an earlier cell, so clusters of touching cells are common;
a new cell may cover at most a few percent of its area with earlier cells, so the ground-truth
masks overlap by a few pixels, like the real Sartorius masks. The painted label maps resolve
those pixels as the rest of the project does: the later instance wins.

Image `i` of seed `s` depends only on `(s, i)`: asking for more images keeps the first ones.

Command line::

    python -m cell_seg.data.synthetic --out DIR --n 20 --format kaggle|coco --seed 0
"""

import argparse
import csv
import io
from pathlib import Path

import cv2
import numpy as np

from cell_seg.cli.common import run_main
from cell_seg.data import labels as label_ops
from cell_seg.data import rle as rle_codec
from cell_seg.files import write_image, write_json_atomic, write_text_atomic

SYNTHETIC_CATEGORIES = ("blob", "neurite", "round")  # category ids 1..3, in order of name
KAGGLE_COLUMNS = (
    "id",
    "annotation",
    "width",
    "height",
    "cell_type",
    "plate_time",
    "sample_date",
    "sample_id",
    "elapsed_timedelta",
)
MAX_OVERLAP_FRACTION = 0.04  # of the new cell's area; keeps ground-truth overlaps to a few pixels
PLACEMENT_TRIES = 25


# --- shapes --------------------------------------------------------------------------------------


def _radial_polygon(rng, radius, aspect, roughness, n_points=48):
    """Closed polygon (N x 2 float, x/y around 0) of a rotated, perturbed ellipse."""
    theta = np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=False)
    harmonics = np.arange(2, 6)
    amplitudes = rng.uniform(0.0, roughness, harmonics.size) / harmonics * 2.0
    phases = rng.uniform(0.0, 2.0 * np.pi, harmonics.size)
    wobble = 1.0 + (amplitudes[:, None] * np.cos(harmonics[:, None] * theta + phases[:, None])).sum(0)
    r = radius * np.clip(wobble, 0.4, None)
    x, y = r * np.cos(theta) * np.sqrt(aspect), r * np.sin(theta) / np.sqrt(aspect)
    angle = rng.uniform(0.0, np.pi)
    cos, sin = np.cos(angle), np.sin(angle)
    return np.stack([x * cos - y * sin, x * sin + y * cos], axis=1), angle


def _cell_mask(rng, cell_type, radius):
    """Local uint8 mask of one cell and the offset (row, col) of its centre inside that mask."""
    processes = []
    if cell_type == "round":
        polygon, _ = _radial_polygon(rng, radius * rng.uniform(0.8, 1.1), rng.uniform(1.0, 1.5), 0.05)
    elif cell_type == "neurite":
        body = radius * rng.uniform(0.7, 0.9)
        aspect = rng.uniform(2.5, 4.0)
        polygon, angle = _radial_polygon(rng, body, aspect, 0.08)
        half_length = body * np.sqrt(aspect)
        for side in rng.permutation([1.0, -1.0])[: rng.integers(1, 3)]:
            start = side * half_length * 0.8 * np.array([np.cos(angle), np.sin(angle)])
            bend = angle + rng.uniform(-0.6, 0.6)
            length = half_length * rng.uniform(0.8, 1.6)
            middle = start + side * 0.5 * length * np.array([np.cos(bend), np.sin(bend)])
            bend += rng.uniform(-0.6, 0.6)
            end = middle + side * 0.5 * length * np.array([np.cos(bend), np.sin(bend)])
            processes.append(np.stack([start, middle, end]))
    else:  # blob
        polygon, _ = _radial_polygon(rng, radius * rng.uniform(1.1, 1.5), rng.uniform(1.0, 2.0), 0.35)
    points = np.concatenate([polygon] + processes) if processes else polygon
    extent = int(np.ceil(np.abs(points).max())) + 3
    size = 2 * extent + 1
    mask = np.zeros((size, size), np.uint8)
    shift = np.array([extent, extent], np.float64)
    cv2.fillPoly(mask, [np.round(polygon + shift).astype(np.int32)], 1)
    thickness = max(1, int(round(radius / 6)))
    for line in processes:
        cv2.polylines(mask, [np.round(line + shift).astype(np.int32)], False, 1, thickness)
    return mask, (extent, extent)


# --- placement and rendering ---------------------------------------------------------------------


def _place_cells(rng, shape, n_cells, cell_type, radius_range):
    """Row-major flat index arrays of up to `n_cells` cells, allowed to touch and overlap slightly."""
    height, width = shape
    occupied = np.zeros(shape, bool)
    cells, centres, radii = [], [], []
    for _ in range(n_cells):
        radius = rng.uniform(*radius_range)
        mask, (cy, cx) = _cell_mask(rng, cell_type, radius)
        area = int(mask.sum())
        for _ in range(PLACEMENT_TRIES):
            if centres and rng.random() < 0.6:  # next to an earlier cell: touching clusters
                j = rng.integers(len(centres))
                direction = rng.uniform(0.0, 2.0 * np.pi)
                distance = (radii[j] + radius) * rng.uniform(0.75, 1.05)
                y = centres[j][0] + distance * np.sin(direction)
                x = centres[j][1] + distance * np.cos(direction)
            else:
                y, x = rng.uniform(0, height), rng.uniform(0, width)
            top, left = int(round(y)) - cy, int(round(x)) - cx
            y0, x0 = max(top, 0), max(left, 0)
            y1, x1 = min(top + mask.shape[0], height), min(left + mask.shape[1], width)
            if y1 <= y0 or x1 <= x0:
                continue
            local = mask[y0 - top : y1 - top, x0 - left : x1 - left].astype(bool)
            inside = int(local.sum())
            if inside < 0.6 * area or inside < 6:
                continue
            if (local & occupied[y0:y1, x0:x1]).sum() > MAX_OVERLAP_FRACTION * area:
                continue
            occupied[y0:y1, x0:x1] |= local
            rows, cols = np.nonzero(local)
            cells.append((rows + y0) * width + (cols + x0))
            centres.append((y, x))
            radii.append(radius)
            break
    return cells


def _smooth_noise(rng, shape, scale):
    """Zero-mean, unit-ish noise with features of about `scale` pixels."""
    height, width = shape
    small = rng.standard_normal((max(2, int(height / scale) + 2), max(2, int(width / scale) + 2))).astype(np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _render(rng, label_map, cell_type):
    """Phase-contrast-like uint8 image of a painted label map."""
    shape = label_map.shape
    inside = label_map > 0
    image = 120.0 + 10.0 * _smooth_noise(rng, shape, 24) + 4.0 * _smooth_noise(rng, shape, 6)
    distance_out = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 3)
    distance_in = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 3)
    halo = 55.0 * np.exp(-(distance_out - 1.0) / 2.0)
    rim = 45.0 * np.exp(-(distance_in - 1.0) / 1.5)
    offset = {"round": 10.0, "neurite": -8.0, "blob": -4.0}[cell_type]
    texture = 6.0 * _smooth_noise(rng, shape, 3)
    image = np.where(inside, image + offset + texture - rim, image + halo)
    image -= 35.0 * label_ops.contact_pixels(label_map)
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.7)
    image += rng.normal(0.0, 4.0, shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _generate(n_images, shape, seed, cells, radius=None):
    """Yield (key, image, row-major index arrays with overlaps, category per instance, label map)."""
    height, width = int(shape[0]), int(shape[1])
    if radius is None:
        side = np.sqrt(height * width)
        radius = (0.04 * side, 0.07 * side)
    for i in range(n_images):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))
        category = int(rng.integers(len(SYNTHETIC_CATEGORIES)))
        cell_type = SYNTHETIC_CATEGORIES[category]
        n_cells = int(rng.integers(cells[0], cells[1] + 1))
        index_arrays = _place_cells(rng, (height, width), n_cells, cell_type, radius)
        label_map, _ = label_ops.paint_instances(index_arrays, (height, width), order="row")
        image = _render(rng, label_map, cell_type)
        categories = np.full(len(index_arrays), category, np.int32)
        yield f"synthetic_s{seed}_{i:04d}", image, index_arrays, categories, label_map


# --- public API ----------------------------------------------------------------------------------


def make_synthetic(n_images, shape=(128, 160), seed=0, cells=(10, 40), radius=None):
    """Make `n_images` synthetic images with their instance label maps.

    Args:
        n_images: how many images.
        shape: (height, width).
        seed: images depend only on (seed, image index).
        cells: (min, max) cells per image, inclusive; fewer when no free place is found.
        radius: (min, max) cell radius in pixels; default 4 % to 7 % of sqrt(H * W).

    Returns:
        list of (key, image uint8 H x W, label_map int32 H x W, classes) where `classes[k]` is the
        0-based index into `SYNTHETIC_CATEGORIES` of instance k and `classes[0]` is -1.

    Example:
        >>> key, image, label_map, classes = make_synthetic(1, shape=(64, 80), seed=3)[0]
        >>> image.dtype, label_map.dtype, label_map.shape, classes[0]
        (dtype('uint8'), dtype('int32'), (64, 80), np.int32(-1))
        >>> int(label_map.max()) == len(classes) - 1
        True
    """
    out = []
    for key, image, _, categories, label_map in _generate(n_images, shape, seed, cells, radius):
        classes = np.concatenate([[-1], categories]).astype(np.int32)
        out.append((key, image, label_map, classes))
    return out


def write_synthetic_kaggle(out_dir, n_images=20, shape=(128, 160), seed=0, cells=(10, 40), progress=False):
    """Write a synthetic set in the Sartorius layout: `out_dir/train/<id>.png` and `out_dir/train.csv`.

    `train.csv` has one row per cell with the competition's columns; `annotation` is the
    row-major RLE of the cell's own mask (masks of touching cells may share a few pixels), the
    last four columns are empty.

    Returns:
        Path of train.csv.
    """
    out_dir = Path(out_dir)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(KAGGLE_COLUMNS)
    height, width = int(shape[0]), int(shape[1])
    for key, image, index_arrays, categories, _ in _progress(
        _generate(n_images, shape, seed, cells), n_images, progress, "synthetic kaggle"
    ):
        write_image(image, out_dir / "train" / f"{key}.png")
        for indices, category in zip(index_arrays, categories):
            annotation = rle_codec.format_runs(*rle_codec.indices_to_runs(indices))
            writer.writerow([key, annotation, width, height, SYNTHETIC_CATEGORIES[category], "", "", "", ""])
    csv_path = out_dir / "train.csv"
    write_text_atomic(buffer.getvalue(), csv_path)
    return csv_path


def write_synthetic_coco(out_dir, n_images=20, shape=(128, 160), seed=0, cells=(10, 40), progress=False):
    """Write a synthetic set as COCO: `out_dir/images/<key>.png` and `out_dir/coco.json`.

    Same COCO layout as `cell_seg.data.convert`: integer image ids 1..N, `key` (file stem),
    `file_name` relative to the images folder, `image_class`, compressed RLE with str counts,
    area, bbox, iscrowd and category_id (1-based, in `SYNTHETIC_CATEGORIES` order).

    Returns:
        Path of coco.json.
    """
    out_dir = Path(out_dir)
    height, width = int(shape[0]), int(shape[1])
    images, annotations = [], []
    for image_number, (key, image, index_arrays, categories, _) in enumerate(
        _progress(_generate(n_images, shape, seed, cells), n_images, progress, "synthetic coco"), start=1
    ):
        write_image(image, out_dir / "images" / f"{key}.png")
        images.append(
            {
                "id": image_number,
                "key": key,
                "file_name": f"{key}.png",
                "width": width,
                "height": height,
                "image_class": SYNTHETIC_CATEGORIES[int(categories[0])] if len(categories) else None,
            }
        )
        for indices, category in zip(index_arrays, categories):
            col_indices = rle_codec.reorder_indices(indices, (height, width), "row", "col")
            segmentation = rle_codec.indices_to_coco(col_indices, (height, width))
            area, bbox = rle_codec.coco_area_bbox(segmentation)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_number,
                    "category_id": int(category) + 1,
                    "segmentation": segmentation,
                    "area": area,
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {"description": f"cell_seg synthetic phase-contrast set, seed {seed}"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(SYNTHETIC_CATEGORIES)],
    }
    json_path = out_dir / "coco.json"
    write_json_atomic(coco, json_path)
    return json_path


def _progress(iterable, total, enabled, description):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=description, unit="image")


# --- command line --------------------------------------------------------------------------------


def main(argv=None):
    """Write a synthetic data set (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m cell_seg.data.synthetic",
        description="Write seeded synthetic phase-contrast-like images with instance ground truth, "
        "in the Sartorius Kaggle layout (train/ + train.csv) or as COCO (images/ + coco.json).",
    )
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--n", type=int, default=20, help="number of images (default 20)")
    parser.add_argument("--format", choices=("kaggle", "coco"), default="coco", help="output layout (default coco)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--height", type=int, default=128, help="image height (default 128)")
    parser.add_argument("--width", type=int, default=160, help="image width (default 160)")
    parser.add_argument("--min-cells", type=int, default=10, help="fewest cells per image (default 10)")
    parser.add_argument("--max-cells", type=int, default=40, help="most cells per image (default 40)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.height < 16 or args.width < 16 or not 0 <= args.min_cells <= args.max_cells:
        parser.error("need --n >= 1, --height/--width >= 16 and 0 <= --min-cells <= --max-cells")
    writer = write_synthetic_kaggle if args.format == "kaggle" else write_synthetic_coco
    path = writer(
        args.out,
        n_images=args.n,
        shape=(args.height, args.width),
        seed=args.seed,
        cells=(args.min_cells, args.max_cells),
        progress=True,
    )
    print(path)
    return 0


def cli():
    run_main(main)


if __name__ == "__main__":
    cli()
