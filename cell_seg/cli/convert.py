"""Convert cell annotations (RLE CSV, mask folders, label images, polygons) to one COCO JSON.

Examples:
    python -m cell_seg.convert kaggle   --csv train.csv --images train --out coco.json
    python -m cell_seg.convert masks    --root stage1_train --out coco.json
    python -m cell_seg.convert labels   --images imgs --labels masks --pattern "{id}_masks.png" --out coco.json
    python -m cell_seg.convert polygons --jsonl polygons.jsonl --images train --out coco.json
    python -m cell_seg.convert csv-rle  --csv stage1_solution.csv --images stage1_test --out coco.json \\
        --id-col ImageId --rle-col EncodedPixels --order col --height-col Height --width-col Width
    python -m cell_seg.convert stats    --coco coco.json

Each converter prints one summary line (images, instances per class, empty images, overlapping
pixels, skipped rows, time) and writes the JSON atomically: a failing run leaves no file and
never touches an earlier one. An input that yields no image (a header-only CSV, an empty
polygons.jsonl) is an error unless `--allow-empty` is given.

The converters themselves live in `cell_seg.data.convert`; `python -m cell_seg.convert` runs
this module's `cli()`.
"""

import argparse
import sys

from cell_seg.cli.common import run_main

MAX_LISTED_SKIPS = 20


def build_parser():
    """The argparse parser with one sub-command per input layout."""
    parser = argparse.ArgumentParser(
        prog="python -m cell_seg.convert",
        description="Convert cell instance annotations to COCO JSON (compressed RLE).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Bad input stops with one line naming the file and row; --skip-bad skips and lists it instead.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _output_options()
    for add_command in (_add_kaggle, _add_masks, _add_labels, _add_polygons, _add_csv_rle):
        add_command(commands, common)
    _add_stats(commands)
    return parser


def _output_options():
    """Parent parser with the output options every converter takes."""
    common = argparse.ArgumentParser(add_help=False)
    output = common.add_argument_group("output")
    output.add_argument("--out", required=True, help="COCO JSON file to write (atomically)")
    output.add_argument(
        "--skip-bad", action="store_true", help="skip bad rows/images, count and list them, instead of stopping"
    )
    output.add_argument("--indent", type=int, default=None, help="indent the JSON (default: compact)")
    output.add_argument("--quiet", action="store_true", help="no progress bar (shown only on a terminal anyway)")
    output.add_argument(
        "--allow-empty", action="store_true",
        help="write the file even when the input holds no image (a warning instead of an error)",
    )
    return common


def _add_kaggle(commands, common):
    kaggle = commands.add_parser(
        "kaggle", parents=[common], help="Sartorius train.csv (id, annotation, width, height, cell_type)",
        description="Kaggle Sartorius train.csv: row-major RLE, one category per cell_type.",
    )
    kaggle.add_argument("--csv", required=True, help="train.csv")
    kaggle.add_argument("--images", required=True, help="folder of <id>.png images")


def _add_masks(commands, common):
    masks = commands.add_parser(
        "masks", parents=[common], help="DSB2018 folders <root>/<id>/{images,masks}/*.png",
        description="DSB2018 layout: <root>/<id>/images/<id>.png and one mask PNG per instance in <root>/<id>/masks/.",
    )
    masks.add_argument("--root", required=True, help="folder with one sub-folder per image (e.g. stage1_train)")
    masks.add_argument("--category", default="nucleus", help="category name (default: nucleus)")


def _add_labels(commands, common):
    labels = commands.add_parser(
        "labels", parents=[common], help="instance label images (0 = background)",
        description="Instance label images (16-bit PNG or TIFF; 0 = background, k = instance k).",
    )
    labels.add_argument("--images", required=True, help="folder of images")
    labels.add_argument("--labels", required=True, help="folder of label images")
    labels.add_argument(
        "--pattern", default=None,
        help='label file name for image id {id}, e.g. "{id}_masks.png" or "{id}.tif" (default: same stem, any suffix)',
    )
    labels.add_argument("--category", default="cell", help="category name (default: cell)")


def _add_polygons(commands, common):
    polygons = commands.add_parser(
        "polygons", parents=[common], help="HuBMAP polygons.jsonl",
        description="HuBMAP polygons.jsonl: {id, annotations: [{type, coordinates}]} per line; categories from type.",
    )
    polygons.add_argument("--jsonl", required=True, help="polygons.jsonl")
    polygons.add_argument("--images", required=True, help="folder of <id>.tif/.png images")


def _add_csv_rle(commands, common):
    csv_rle = commands.add_parser(
        "csv-rle", parents=[common], help="any RLE CSV, configurable columns and pixel order",
        description="Generic run-length CSV, one row per instance (e.g. DSB2018 stage1_solution.csv).",
    )
    csv_rle.add_argument("--csv", required=True, help="the CSV file")
    csv_rle.add_argument(
        "--images", required=True, nargs="+", metavar="DIR",
        help="one or more folders of images (also DSB layout); with several, file_name is relative to their common parent",
    )
    csv_rle.add_argument("--id-col", default="ImageId", help="image id column (default: ImageId)")
    csv_rle.add_argument("--rle-col", default="EncodedPixels", help="RLE column (default: EncodedPixels)")
    csv_rle.add_argument(
        "--order", required=True, choices=("row", "col"),
        help="pixel numbering: row (r*W+c+1, Sartorius/HuBMAP) or col (c*H+r+1, DSB2018)",
    )
    csv_rle.add_argument("--height-col", default=None, help="height column, checked against the image")
    csv_rle.add_argument("--width-col", default=None, help="width column, checked against the image")
    csv_rle.add_argument("--class-col", default=None, help="class name column (default: one category)")
    csv_rle.add_argument("--category", default="cell", help="category name without --class-col (default: cell)")
    csv_rle.add_argument("--keep-cols", default="", help="comma-separated columns kept as per-image fields")


def _add_stats(commands):
    stats = commands.add_parser(
        "stats", help="summarise an existing COCO JSON",
        description="Print images, instances per class, empty images and overlapping pixels of a COCO JSON.",
    )
    stats.add_argument("--coco", required=True, help="COCO JSON file")


def main(argv=None):
    """Run one conversion (or `stats`); returns the exit code."""
    args = build_parser().parse_args(argv)
    # Imported here so that --help answers without loading pandas/pycocotools.
    import cv2

    from cell_seg.data import convert
    from cell_seg.data.coco import coco_stats, validate_coco
    from cell_seg.errors import DataError
    from cell_seg.files import read_json, write_json_atomic

    # Unreadable files are reported as one DataError line; OpenCV's own log lines would repeat it.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    if args.command == "stats":
        print(coco_stats(validate_coco(read_json(args.coco), args.coco)).summary(args.coco))
        return 0
    progress = False if args.quiet else None  # None: a bar only when stderr is a terminal
    if args.command == "kaggle":
        coco, stats = convert.convert_kaggle(args.csv, args.images, skip_bad=args.skip_bad, progress=progress)
    elif args.command == "masks":
        coco, stats = convert.convert_masks(
            args.root, skip_bad=args.skip_bad, progress=progress, category=args.category
        )
    elif args.command == "labels":
        coco, stats = convert.convert_labels(
            args.images, args.labels, pattern=args.pattern, skip_bad=args.skip_bad, progress=progress,
            category=args.category,
        )
    elif args.command == "polygons":
        coco, stats = convert.convert_polygons(args.jsonl, args.images, skip_bad=args.skip_bad, progress=progress)
    else:
        coco, stats = convert.convert_csv_rle(
            args.csv, args.images, order=args.order, id_col=args.id_col, rle_col=args.rle_col,
            height_col=args.height_col, width_col=args.width_col, class_col=args.class_col, category=args.category,
            extra_cols=[c for c in args.keep_cols.split(",") if c], skip_bad=args.skip_bad, progress=progress,
        )
    if not coco["images"]:
        source = {"kaggle": "csv", "masks": "root", "labels": "images", "polygons": "jsonl"}.get(args.command, "csv")
        message = "no image to convert (no records, or every one skipped)"
        if not args.allow_empty:
            raise DataError(f"{message}; --allow-empty writes an empty COCO file anyway", file=getattr(args, source))
        print(f"warning: {getattr(args, source)}: {message}", file=sys.stderr)
    write_json_atomic(coco, args.out, indent=args.indent)
    print(stats.summary(f"wrote {args.out}"))
    for message in stats.skipped[:MAX_LISTED_SKIPS]:
        print(f"  skipped: {message}")
    if len(stats.skipped) > MAX_LISTED_SKIPS:
        print(f"  ... and {len(stats.skipped) - MAX_LISTED_SKIPS} more skipped")
    sys.stdout.flush()
    return 0


def cli():
    """Console-script entry point."""
    run_main(main)


if __name__ == "__main__":
    cli()
