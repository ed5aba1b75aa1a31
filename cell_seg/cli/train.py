"""`python -m cell_seg.train`: the command line of training (parser, `main`, resume messages).

The training itself is `cell_seg.train.run`.
"""

import argparse
import os
import sys
from pathlib import Path

from cell_seg.cli.common import run_main
from cell_seg.config import describe_fields, load_config
from cell_seg.errors import DataError
from cell_seg.files import read_json
from cell_seg.train import DEMO_CONFIG, completed_epochs, run, run_directory

# Fewer validation images than this: the printed score comes with a warning that it is noisy.
FEW_VALIDATION_IMAGES = 20


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m cell_seg.train",
        description="Train a cell segmentation model. With no arguments: a small model on the embedded demo data.",
        epilog="Examples:\n  python -m cell_seg.train\n"
        "  python -m cell_seg.train --config configs/sartorius_unet_effb0.yaml train.epochs=5 model.backbone=efficientnetb3\n"
        "  python -m cell_seg.train --resume runs/sartorius_unet_effb0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML config (default: the demo config, configs/demo.yaml, shipped in the package)")
    parser.add_argument("--out", help="run directory (default runs/<name>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its directory")
    parser.add_argument("--no-eval", action="store_true", help="skip evaluation and threshold tuning after training")
    parser.add_argument("--help-config", action="store_true",
                        help="list every config key with the value this command would use (with --config and "
                        "overrides: theirs; bare: the demo config's), then exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=5")
    # Intermixed: key=value overrides may come before, between or after the options.
    return parser.parse_intermixed_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.help_config:
        source = Path(args.resume) / "config.yaml" if args.resume else (args.config or DEMO_CONFIG)
        print(f"# values used by this command (from {source}; '# default X' marks a change from the built-in default)")
        print(describe_fields(load_config(source, args.overrides)))
        return 0
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise DataError("not a run directory (no config.yaml)", file=run_dir)
        config = load_config(run_dir / "config.yaml", args.overrides)
        config.out_dir = str(run_dir)
    else:
        config = load_config(args.config or DEMO_CONFIG, args.overrides)
        if args.out:
            config.out_dir = args.out
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads (cell_seg.cli sets it too)
    if args.resume and not resume_plan(config, Path(args.resume), evaluate=not args.no_eval):
        return 0
    try:
        run(config, evaluate_after=not args.no_eval, resume=bool(args.resume))
    except KeyboardInterrupt:
        run_dir = run_directory(config)
        if (run_dir / "config.yaml").is_file():
            print(f"\ninterrupted: resume with  python -m cell_seg.train --resume {run_dir}", file=sys.stderr)
        raise
    run_dir = run_directory(config)
    print_validation(run_dir / "metrics.json")
    print(f"run written to {run_dir}")
    return 0


def resume_plan(config, run_dir, evaluate=True):
    """Say what `--resume` will do with `run_dir`; False when there is nothing to do.

    An interrupted run (backup/ present) restarts its interrupted epoch; a finished run with a
    raised `train.epochs` trains on from `checkpoints/last.keras`; a finished run that was already
    evaluated is left alone (its metrics.json is not overwritten); one never evaluated is evaluated.
    """
    done = completed_epochs(run_dir)
    finished = not (run_dir / "backup").exists() and (run_dir / "model.keras").is_file()
    metrics = run_dir / "metrics.json"
    if (run_dir / "backup").exists():
        print(f"resuming {run_dir} from its backup/: epoch {done + 1} of {config.train.epochs} restarts from the "
              "last backup (weights, optimiser and epoch as they were)", file=sys.stderr)
        return True
    if finished and done >= config.train.epochs:
        if metrics.is_file() or not evaluate:
            print(f"{run_dir} already finished {done} of {config.train.epochs} epochs: nothing to resume, "
                  f"{metrics.name} left as it is. To train on, raise the epochs "
                  f"(python -m cell_seg.train --resume {run_dir} train.epochs={done + 10}); to re-score, "
                  f"python -m cell_seg.evaluate --model {run_dir} --coco VAL.json --images DIR --out OTHER_DIR",
                  file=sys.stderr)
            print_validation(metrics)
            return False
        print(f"{run_dir} already finished {done} epochs but was not evaluated: evaluating it (writes {metrics})",
              file=sys.stderr)
    elif metrics.is_file() and evaluate:
        print(f"{run_dir}: training resumes at epoch {done + 1} of {config.train.epochs}; the evaluation "
              f"afterwards replaces {metrics.name} and postprocess.json", file=sys.stderr)
    return True


def print_validation(metrics_path):
    """Print the validation scores of metrics.json with the number of images they rest on."""
    if not Path(metrics_path).is_file():
        return
    metrics = read_json(metrics_path)
    summary = ", ".join(f"{k} {v:.3f}" for k, v in metrics.get("summary", {}).items())
    images = metrics.get("images")
    print(f"validation ({images} images): {summary}" if images else f"validation: {summary}")
    if images and images < FEW_VALIDATION_IMAGES:
        print(f"  only {images} validation images: the score moves by about 0.1 between runs (seed, resume); "
              "it shows the pipeline works, not how good the model is")


def cli():
    run_main(main)


if __name__ == "__main__":
    cli()
