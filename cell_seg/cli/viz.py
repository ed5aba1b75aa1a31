"""Command-line overlay tool: `python -m cell_seg.viz` (instances drawn on an image, or matched against truth).

    python -m cell_seg.viz --image IMG --labels LABELS.png [--out overlay.png]
    python -m cell_seg.viz --image IMG --submission submission.csv --id ID [--truth TRUTH.png]

The drawing lives in `cell_seg.overlays` and `cell_seg.plots`, the CSV reading in
`cell_seg.viz.read_csv_labels`; `python -m cell_seg.viz` runs this module's `cli()`.
"""

import argparse
from pathlib import Path

import numpy as np

from cell_seg.cli.common import run_main
from cell_seg.errors import DataError
from cell_seg.overlays import comparison_overlay, fill_overlay, outline_overlay
from cell_seg.plots import _counts_text, _pyplot, plot_comparison, plot_overlay
from cell_seg.viz import read_csv_labels


def _read_labels_file(path, shape):
    from cell_seg.submission import read_label_image

    label_map = read_label_image(path)
    if label_map.shape != tuple(shape):
        raise DataError(f"label image is {label_map.shape[0]}x{label_map.shape[1]}, the image {shape[0]}x{shape[1]}", file=path)
    return label_map


def main(argv=None):
    """Render an overlay of instances (from a label image or a Sartorius CSV) on an image."""
    parser = argparse.ArgumentParser(
        prog="python -m cell_seg.viz",
        description="Draw instances on an image: from a label image (uint16 PNG / TIFF, 0 = background) or from "
        "the rows of one image in a Sartorius CSV (submission id,predicted or train.csv id,annotation). With "
        "--truth, colour the prediction as matched / spurious / missed at an IoU threshold.",
        epilog="Examples:\n"
        "  python -m cell_seg.viz --image test/abc.png --labels out/abc.png --out abc_overlay.png\n"
        "  python -m cell_seg.viz --image train/abc.png --submission submission.csv --id abc --style fill\n"
        "  python -m cell_seg.viz --image img.png --labels pred.png --truth truth.png --threshold 0.5 --figure",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image", required=True, help="the image (PNG, TIFF or JPEG)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", help="instance label image of the same size (as predict --format labels writes)")
    source.add_argument("--submission", metavar="CSV", help="Sartorius-style CSV with run-length encoded instances")
    parser.add_argument("--id", help="image id of the CSV rows to draw (default: the image's file stem)")
    parser.add_argument("--column", help="CSV column holding the RLE (default: predicted, else annotation)")
    parser.add_argument("--truth", help="ground-truth label image: draw TP / FP / FN instead of plain instances")
    parser.add_argument("--threshold", type=float, default=0.5, help="IoU a match must exceed (with --truth; default 0.5)")
    parser.add_argument("--style", choices=("outline", "fill"), default="outline", help="how to draw instances")
    parser.add_argument("--stretch", action="store_true", help="contrast-stretch 8-bit images too")
    parser.add_argument("--figure", action="store_true", help="write a titled matplotlib figure instead of "
                        "an overlay at the image's own resolution")
    parser.add_argument("--out", help="output PNG (default: <image stem>_overlay.png in the current folder)")
    args = parser.parse_args(argv)

    from cell_seg.files import read_image, write_image

    image = read_image(args.image)
    shape = image.shape[:2]
    if args.labels:
        labels = _read_labels_file(args.labels, shape)
    else:
        labels = read_csv_labels(args.submission, args.id or Path(args.image).stem, shape, args.column)
    out = Path(args.out or f"{Path(args.image).stem}_overlay.png")
    n = int(np.unique(labels[labels > 0]).size)
    if args.truth:
        truth = _read_labels_file(args.truth, shape)
        if args.figure:
            fig = plot_comparison(image, truth, labels, args.threshold, title=Path(args.image).name, save=out)
            _pyplot().close(fig)
            match = fig.match
        else:
            rgb, match = comparison_overlay(image, truth, labels, args.threshold, stretch=args.stretch)
            write_image(rgb, out)
        print(f"wrote {out}: {_counts_text(match)}")
        return 0
    if args.figure:
        fig = plot_overlay(image, labels, title=f"{Path(args.image).name}: {n} instances", save=out,
                           style=args.style, stretch=args.stretch)
        _pyplot().close(fig)
    elif args.style == "outline":
        write_image(outline_overlay(image, labels, stretch=args.stretch), out)
    else:
        write_image(fill_overlay(image, labels, stretch=args.stretch), out)
    print(f"wrote {out}: {n} instances")
    return 0


def cli():
    """Console-script entry point."""
    run_main(main)


if __name__ == "__main__":
    cli()
