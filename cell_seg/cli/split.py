"""Split a COCO JSON into train/val (or k folds), stratified by image class and grouped.

Examples:
    python -m cell_seg.split --coco coco.json --out splits --val 0.2 --seed 0
    python -m cell_seg.split --coco coco.json --out folds --folds 5 --group sample_id

Writes DIR/train.json and DIR/val.json, or DIR/fold{k}_train.json and DIR/fold{k}_val.json
(k = 0..K-1), atomically, and prints the images per class on each side.

The splitting itself lives in `cell_seg.data.split`; `python -m cell_seg.split` runs this module's `cli()`.
"""

import argparse

from cell_seg.cli.common import run_main


def build_parser():
    """The argparse parser."""
    parser = argparse.ArgumentParser(
        prog="python -m cell_seg.split",
        description="Split a COCO JSON into train/val or k folds, stratified by image class, grouped, seeded.",
    )
    parser.add_argument("--coco", required=True, help="COCO JSON to split (as written by cell_seg.convert)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--val", type=float, default=0.2, help="validation share of each class (default: 0.2)")
    parser.add_argument("--folds", type=int, default=None, help="write K folds instead of one train/val split")
    parser.add_argument("--seed", type=int, default=0, help="shuffling seed (default: 0)")
    parser.add_argument(
        "--stratify", default="image_class",
        help='per-image field to balance across sides (default: image_class; "none" to turn off)',
    )
    parser.add_argument("--group", default=None, help="per-image field whose images stay on one side (e.g. sample_id)")
    return parser


def _describe(name, coco, key):
    """'<name>: 352 images (astro 85, ...), 28000 instances'."""
    from cell_seg.data.split import class_counts

    counts = ", ".join(f"{value} {count}" for value, count in class_counts(coco, key).items()) if key else ""
    classes = f" ({counts})" if counts else ""
    return f"{name}: {len(coco['images'])} images{classes}, {len(coco['annotations'])} instances"


def main(argv=None):
    """Split and write; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.val < 1 and args.folds is None:
        parser.error("--val must be between 0 and 1")
    if args.folds is not None and args.folds < 2:
        parser.error("--folds must be at least 2")
    from pathlib import Path

    import sys

    from cell_seg.data.coco import validate_coco
    from cell_seg.data.split import images_with_field, kfold_coco, split_coco
    from cell_seg.errors import DataError
    from cell_seg.files import atomic_folder, read_json, write_json_atomic

    coco = validate_coco(read_json(args.coco), args.coco)
    if not coco["images"]:
        raise DataError("no images to split", file=args.coco, field="images")
    stratify = None if args.stratify.lower() == "none" else args.stratify
    if stratify == "image_class" and not any("image_class" in image for image in coco["images"]):
        stratify = None  # COCO files from other tools: fall back to a plain random split
        print("no image has image_class: splitting without stratification")
    for option, key in (("--stratify", stratify), ("--group", args.group)):
        if key is None:
            continue
        having = images_with_field(coco, key)
        if having == 0:
            raise DataError(f"no image has this field (change or drop {option})", file=args.coco, field=key)
        if having < len(coco["images"]):
            print(f"warning: {args.coco}: only {having} of {len(coco['images'])} images have field {key!r} "
                  f"({option}); the others are treated as {'one stratum' if option == '--stratify' else 'groups of one'}",
                  file=sys.stderr)
    out = Path(args.out)
    try:
        if args.folds is None:
            pairs = [("", split_coco(coco, args.val, args.seed, stratify, args.group))]
        else:
            folds = kfold_coco(coco, args.folds, args.seed, stratify, args.group)
            pairs = [(f"fold{k}_", pair) for k, pair in enumerate(folds)]
    except DataError as error:
        raise error.located(file=args.coco) from None
    with atomic_folder(out) as staging:  # all files or none: a failure leaves no half-written split
        for prefix, (train, val) in pairs:
            write_json_atomic(train, staging / f"{prefix}train.json")
            write_json_atomic(val, staging / f"{prefix}val.json")
    for prefix, (train, val) in pairs:
        print(_describe(f"wrote {out / (prefix + 'train.json')}", train, stratify))
        print(_describe(f"wrote {out / (prefix + 'val.json')}", val, stratify))
    return 0


def cli():
    """Console-script entry point."""
    run_main(main)


if __name__ == "__main__":
    cli()
