"""Predict cell instances for a folder of images and write a submission or label images.

    python -m cell_seg.predict --model PATH --images DIR [--out FILE_OR_DIR] [--format sartorius|hubmap|coco|labels]

Without `--format` it writes one 16-bit label image per input image (and an outline overlay)
to `--out` (default `predictions/`). `--ids sample_submission.csv` predicts exactly the ids of a
CSV's `id` column, in that order (a Kaggle test set). `--tile 512` predicts large images in
overlapping tiles.

`--model` is a run directory, a `.keras` file or an exported SavedModel directory; the model's
tuned post-processing (`postprocess.json`, or the SavedModel's metadata) and its TTA default are
used unless overridden. The command line is `cell_seg.cli.predict`; this module holds
`predict_folder`, which it (and the offline notebook) calls. With a SavedModel this needs only TensorFlow, numpy, OpenCV and pandas: importing
this module imports none of segmentation-models, albumentations or pycocotools.
"""

import sys
from pathlib import Path

from tqdm import tqdm

from cell_seg.errors import DataError

FORMATS = ("sartorius", "hubmap", "coco", "labels")
DEFAULT_OUT = {"sartorius": "submission.csv", "hubmap": "submission.csv", "coco": "predictions.json",
               "labels": "predictions"}


def predict_folder(predictor, images, out, fmt, mode=None, postprocess=None, tta=None, skip_bad=False, overlays=False,
                   tile=None, overlap=None, blend=None):
    """Predict every image of `images` (id -> path, predicted in that order) and write `out` in format `fmt`.

    Nothing is written to `out` unless every image succeeds (or is skipped with `skip_bad`): label
    images go to a hidden staging folder beside `out` and are moved in at the end; the CSV and
    JSON formats are written atomically.

    `mode`, `postprocess` (a `PostprocessConfig` or a dict of settings) and `tta` override the
    predictor's own (the model's metadata) when given.

    Returns (n_images, n_instances, skipped list of (key, reason)).
    """
    from cell_seg.files import atomic_folder

    if fmt != "labels":
        return _predict_images(predictor, images, Path(out), fmt, mode, postprocess, tta, skip_bad, overlays,
                               tile, overlap, blend)
    with atomic_folder(out) as staging:
        return _predict_images(predictor, images, staging, fmt, mode, postprocess, tta, skip_bad, overlays,
                               tile, overlap, blend)


def _predict_images(predictor, images, out, fmt, mode, postprocess, tta, skip_bad, overlays, tile, overlap, blend):
    """`predict_folder`'s loop; label images are written into the folder `out`."""
    from cell_seg import submission
    from cell_seg.files import read_image

    rows, results, skipped, n_instances = [], [], [], 0
    for number, (key, path) in enumerate(tqdm(list(images.items()), desc="predicting", unit="img", file=sys.stderr), 1):
        try:
            image = read_image(path)
        except DataError as error:
            if not skip_bad:
                raise
            skipped.append((key, error.message))
            continue
        label_map, instances = predictor.predict_instances(image, mode=mode, postprocess=postprocess, tta=tta,
                                                           tile=tile, overlap=overlap, blend=blend)
        scores = [inst["score"] for inst in instances]
        n_instances += len(instances)
        if fmt == "sartorius":
            rows.extend(submission.sartorius_rows(key, label_map))
        elif fmt == "hubmap":
            rows.append(submission.hubmap_row(key, label_map, scores))
        elif fmt == "coco":
            results.extend(submission.coco_results(number, label_map, scores))
        else:
            submission.write_label_image(label_map, out / f"{key}.png")
            if overlays:
                from cell_seg.files import write_image
                from cell_seg.overlays import outline_overlay

                write_image(outline_overlay(image, label_map), out / f"{key}_overlay.png")
    if fmt == "sartorius":
        submission.write_sartorius_csv(rows, out)
    elif fmt == "hubmap":
        submission.write_hubmap_csv(rows, out)
    elif fmt == "coco":
        submission.write_coco_results(results, out)
    return len(images) - len(skipped), n_instances, skipped


if __name__ == "__main__":  # the command line lives in cell_seg.cli.predict
    from cell_seg.cli.predict import cli

    cli()
