"""`python -m cell_seg.evaluate`: the command line of evaluation; the work is `cell_seg.evaluate.evaluate_run`."""

import argparse
from pathlib import Path

from cell_seg.cli.common import run_main
from cell_seg.evaluate import describe_best_mode, evaluate_run
from cell_seg.postprocess import INSTANCE_MODES


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m cell_seg.evaluate",
        description="Score a trained model on a COCO validation set; --tune searches post-processing settings.",
    )
    parser.add_argument("--model", required=True, help="run directory, .keras file or exported SavedModel directory")
    parser.add_argument("--coco", required=True, help="COCO JSON with the ground truth")
    parser.add_argument("--images", required=True, help="folder the COCO file_name entries are relative to")
    parser.add_argument("--tune", action="store_true",
                        help="tune thresholds, minimum areas and minimum confidence and write postprocess.json")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="average the 8 flips/rotations of each image (8x slower; default: the model's own "
                        "default, on for a model exported with --tta)")
    parser.add_argument("--cross-tune", action="store_true",
                        help="also score every mode with settings tuned on the other half of the images (halves "
                        "keep each image 'source' together): a figure not tuned on the images it scores")
    parser.add_argument("--modes", nargs="+", metavar="MODE", choices=INSTANCE_MODES,
                        help="instance modes to score and tune (default: every mode the model's channels allow; "
                        "with classes, tuning also offers each class its best mode)")
    parser.add_argument("--out", help="where metrics.json (and postprocess.json) go (default: the run directory, "
                        "or the current directory for a .keras file or SavedModel)")
    args = parser.parse_args(argv)
    from cell_seg.data.coco import validate_coco
    from cell_seg.errors import DataError
    from cell_seg.inference import Predictor
    from cell_seg.files import make_folder, read_json

    coco = validate_coco(read_json(args.coco), args.coco)  # bad ground truth fails before the model loads
    if not coco["images"]:
        raise DataError("no images to evaluate", file=args.coco, field="images")
    model_path = Path(args.model)
    out = args.out or (model_path if model_path.is_dir() and not (model_path / "saved_model.pb").exists() else ".")
    if args.out:
        make_folder(out)  # an --out that cannot be written fails now, not after predicting every image
    if args.modes:  # before the model loads: a wrong mode is a one-line error in a second
        from cell_seg.evaluate import check_modes
        from cell_seg.metadata import ModelMetadata

        check_modes(args.modes, ModelMetadata.of_model(model_path).channels)
    predictor = Predictor.load(args.model)
    report = evaluate_run(model_path, coco=coco, images=args.images, tune=args.tune,
                          predictor=predictor, out_dir=out, tta=args.tta, source=args.coco,
                          cross_tune=args.cross_tune, modes=args.modes)
    print(f"mAP {report['summary']['map']:.3f} on {report['images']} images ({describe_best_mode(report)}); "
          f"metrics written to {Path(out) / 'metrics.json'}")
    return 0


def cli():
    run_main(main)


if __name__ == "__main__":
    cli()
