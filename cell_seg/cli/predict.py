"""`python -m cell_seg.predict`: the command line of prediction (parser, id lists, tiling checks).

Predicting a folder into a submission is `cell_seg.predict.predict_folder`; loading a model and
predicting one image is `cell_seg.inference.Predictor`. This module imports no Keras, TensorFlow or
segmentation-models until a model is loaded.
"""

import argparse
import sys

from cell_seg.cli.common import run_main
from cell_seg.errors import CellSegError, DataError
from cell_seg.inference import AUTO_OVERLAP, AUTO_TILE, AUTO_TILE_PIXELS, BLEND_MODES, DEFAULT_OVERLAP
from cell_seg.postprocess import INSTANCE_MODES
from cell_seg.predict import DEFAULT_OUT, FORMATS, predict_folder


def select_ids(images, ids_csv, folder):
    """The images of the ids in the `id` column of `ids_csv`, in the CSV's order (duplicates once).

    Raises DataError naming the CSV and the row of the first id without an image in `folder`.
    """
    from cell_seg.files import read_csv_table

    frame = read_csv_table(ids_csv, ["id"])
    selected = {}
    for row, key in enumerate(frame["id"], start=2):  # row 1 is the header
        key = key.strip()
        if key not in images:
            raise DataError(f"id {key!r} has no image in {folder}", file=ids_csv, row=row)
        selected.setdefault(key, images[key])
    if not selected:
        raise DataError("the id list is empty", file=ids_csv)
    return selected


def overlap_value(text):
    """`--overlap`: a whole number of pixels or "auto".

    Example:
        >>> overlap_value("96"), overlap_value("auto")
        (96, 'auto')
    """
    if text == AUTO_OVERLAP:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels or {AUTO_OVERLAP!r}, not {text!r}") from None


def check_tiling(tile, overlap, stride):
    """Raise ConfigError naming --tile/--overlap when they cannot tile with the model's stride (before any work).

    Example:
        >>> check_tiling(500, 64, 32)
        Traceback (most recent call last):
        cell_seg.errors.ConfigError: --tile 500 must be a multiple of the model's stride 32 (e.g. 512)
    """
    from cell_seg.errors import ConfigError

    if tile < stride or tile % stride:
        suggestion = max(stride, round(tile / stride) * stride)
        raise ConfigError(f"--tile {tile} must be a multiple of the model's stride {stride} (e.g. {suggestion})")
    if not 0 <= overlap < tile:
        raise ConfigError(f"--overlap must be in [0, {tile}) for --tile {tile}, not {overlap}")
    if (tile - overlap) // stride * stride < stride:
        raise ConfigError(f"--tile {tile} with --overlap {overlap} leaves no step of the model's stride {stride}; "
                          "use a larger tile or a smaller overlap")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m cell_seg.predict",
        description="Predict cell instances for every PNG/TIFF/JPEG in a folder and write a submission.",
    )
    parser.add_argument("--model", required=True, help="run directory, .keras file or exported SavedModel directory")
    parser.add_argument("--images", required=True, help="folder of images (also DIR/<id>/images/<id>.png); id = file stem")
    parser.add_argument("--ids", help="CSV with an 'id' column (e.g. sample_submission.csv): predict exactly those "
                        "images, in that order")
    parser.add_argument("--out", help="CSV (sartorius, hubmap), JSON (coco) or folder (labels); default "
                        + ", ".join(f"{v} ({k})" for k, v in DEFAULT_OUT.items() if k != "hubmap"))
    parser.add_argument("--format", default="labels", choices=FORMATS,
                        help="output format (default labels: 16-bit label PNGs with outline overlays)")
    parser.add_argument("--mode", choices=INSTANCE_MODES,
                        help="one post-processing mode for every image (default: the model's, which may differ per cell type)")
    parser.add_argument("--postprocess", help="JSON file of post-processing settings that override the model's "
                        "(default: the model's tuned ones)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="average the 8 flips/rotations (8x slower); default: the model's own default "
                        "(on for a model exported with --tta; --no-tta turns it off)")
    parser.add_argument("--tile", type=int, help="predict images larger than this in overlapping tiles of this size "
                        "(a multiple of the model's stride, e.g. 512); default: whole images, except that an image of "
                        f"more than {AUTO_TILE_PIXELS / 1e6:.1f} million pixels at the model's scale is predicted in "
                        f"tiles of {AUTO_TILE} with the measured overlap ('auto'), which bounds memory and gives the "
                        "same maps")
    parser.add_argument("--overlap", type=overlap_value, default=DEFAULT_OVERLAP,
                        help=f"least overlap of neighbouring tiles in pixels (default {DEFAULT_OVERLAP}), or 'auto': "
                        "twice the model's receptive-field radius, measured once (about a minute on a CPU for a "
                        "trained U-Net-Lite0; capped at half the tile), so that tiles equal whole-image prediction")
    parser.add_argument("--blend", choices=BLEND_MODES, default=BLEND_MODES[0],
                        help="join tiles by keeping each tile's centre (default) or by a linear-weighted "
                        "average over the overlaps")
    parser.add_argument("--no-overlays", action="store_true", help="with --format labels: no outline overlays")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable images (reported) instead of stopping")
    args = parser.parse_args(argv)

    from cell_seg.inference import Predictor
    from cell_seg.files import list_images, read_json

    images = list_images(args.images)
    if not images:
        raise DataError("no PNG/TIFF/JPEG images found", file=args.images)
    if args.ids:
        images = select_ids(images, args.ids, args.images)
    out = args.out or DEFAULT_OUT[args.format]
    postprocess = read_json(args.postprocess) if args.postprocess else None
    if postprocess is not None and not isinstance(postprocess, dict):
        raise DataError("post-processing settings must be a JSON object", file=args.postprocess)
    predictor = Predictor.load(args.model)
    if postprocess is not None:
        try:
            postprocess = predictor.postprocess.replace(**postprocess)
        except CellSegError as error:
            raise DataError(str(error), file=args.postprocess) from None
    if args.tile is not None:
        if args.overlap == AUTO_OVERLAP:
            args.overlap = predictor.tile_overlap(args.tile)
            print(f"tile overlap {args.overlap} px (measured receptive field {predictor.receptive_field()})",
                  file=sys.stderr)
        check_tiling(args.tile, args.overlap, predictor.stride)
    n_images, n_instances, skipped = predict_folder(
        predictor, images, out, args.format, mode=args.mode, postprocess=postprocess, tta=args.tta,
        skip_bad=args.skip_bad, overlays=not args.no_overlays, tile=args.tile, overlap=args.overlap,
        blend=args.blend,
    )
    for key, reason in skipped:
        print(f"skipped {key}: {reason}", file=sys.stderr)
    print(f"wrote {out}: {n_images} images, {n_instances} instances, {len(skipped)} skipped", file=sys.stderr)
    return 0


def cli():
    run_main(main)


if __name__ == "__main__":
    cli()
