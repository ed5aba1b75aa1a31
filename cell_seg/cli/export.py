"""`python -m cell_seg.export`: the command line of the SavedModel export; the work is `cell_seg.export.export_model`."""

import argparse
import sys

from cell_seg.cli.common import run_main
from cell_seg.errors import ConfigError
from cell_seg.export import WEIGHT_DTYPES, export_model


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m cell_seg.export",
        description="Export a run directory or .keras file as a TensorFlow SavedModel: raw uint8/uint16 image of "
        "any size in, probabilities out; needs only TensorFlow to load.",
        epilog="Example:\n  python -m cell_seg.export --model runs/sartorius_unet_effb0 --out exported/sartorius\n"
        "Load it with cell_seg.inference.Predictor.load(DIR) or tf.saved_model.load(DIR).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="run directory or .keras file (metadata.json beside it)")
    parser.add_argument("--out", required=True, help="output SavedModel directory (an earlier export there is replaced)")
    parser.add_argument("--weights-dtype", choices=WEIGHT_DTYPES, default="float32",
                        help="how the weights are stored: float16 halves the size (computation stays float32; "
                        "probabilities move by a few 1e-3)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="make averaging the 8 flips/rotations the export's default for predict and evaluate "
                        "(default: as the run; --no-tta turns it off)")
    parser.add_argument("--scale", type=float,
                        help="resize images by this before the network when predicting (default: the training "
                        "scale, data.scale), e.g. 1.5 for a model that finds small nuclei better enlarged; the raw "
                        "signatures then expect images resized by it")
    parser.add_argument("--scale-by-kind", nargs="*", metavar="KIND=SCALE",
                        help="predict images of a kind (fluorescence, brightfield, histology: cell_seg's guess from "
                        "colour and background) at their own scale, e.g. fluorescence=1.5; without values: none "
                        "(default: as the run)")
    parser.add_argument("--target-diameter", type=float, metavar="PX",
                        help="the size rule: predict each image at the factor that brings the median diameter of the "
                        "objects found in it (first at --scale) to PX pixels, e.g. 28 for nuclei; 0 turns it off "
                        "(default: as the run, data.target_diameter)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip loading the export back and comparing it with the Keras model")
    args = parser.parse_args(argv)
    scale_by_kind = None if args.scale_by_kind is None else parse_scale_by_kind(args.scale_by_kind)
    if args.scale is not None and not args.scale > 0:
        raise ConfigError(f"--scale {args.scale:g}: must be a positive number")
    if args.target_diameter is not None and args.target_diameter < 0:
        raise ConfigError(f"--target-diameter {args.target_diameter:g}: must be a positive number of pixels (0: off)")
    out = export_model(args.model, args.out, check=not args.no_check, weights_dtype=args.weights_dtype, tta=args.tta,
                       scale_by_kind=scale_by_kind, scale=args.scale, target_diameter=args.target_diameter)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    print(f"exported {args.model} to {out} ({size:.1f} MB)", file=sys.stderr)
    return 0


def parse_scale_by_kind(items):
    """{kind: scale} from ["fluorescence=1.5", ...]; a bad item is a one-line `ConfigError`.

    Example:
        >>> parse_scale_by_kind(["fluorescence=1.5"])
        {'fluorescence': 1.5}
    """
    from cell_seg.metadata import IMAGE_KINDS

    out = {}
    for item in items:
        kind, _, value = item.partition("=")
        try:
            scale = float(value)
        except ValueError:
            scale = None
        if kind not in IMAGE_KINDS or scale is None or not scale > 0:
            raise ConfigError(f"--scale-by-kind {item!r}: expected KIND=SCALE with KIND one of "
                              f"{', '.join(IMAGE_KINDS)} and SCALE a positive number")
        out[kind] = scale
    return out


def cli():
    run_main(main)


if __name__ == "__main__":
    cli()
