"""Do two or more models averaged beat the first alone? A map-averaging ensemble check.

Every image of a COCO set is predicted by each model without TTA (each at its own scale, maps at
the original size); each model alone and the average of all their maps are scored with the first
model's post-processing settings as they are (no tuning: the images scored may be the only ones
none of the models saw, as with half B of `bench/folds.py`). `--cross-tune` adds the figure with
settings tuned on the other half of the images (slow: a tuning per model and half). The models must
predict the same channels.

    python -m bench.ensemble --models weights/sartorius_unet_lite0_distance exported/sart_foldA \
        --coco bench/out/sart_valB.json --images ../shared/data/sartorius/train \
        --out bench/out/ensemble_sart_B.json
"""

import sys

import numpy as np

from bench.common import scoring_parser
from cell_seg.files import write_json_atomic


def averaged(record_lists):
    """The records of the first list with the probability maps averaged over all lists."""
    return [{**record, "probs": np.mean([records[i]["probs"].astype(np.float32) for records in record_lists],
                                        axis=0).astype(np.float16)}
            for i, record in enumerate(record_lists[0])]


def main(argv=None):
    from cell_seg.data.dataset import CocoDataset
    from cell_seg.errors import ConfigError
    from cell_seg.evaluate import cross_tuned_scores, evaluate_records, predict_dataset
    from cell_seg.inference import Predictor

    parser = scoring_parser(__doc__)
    parser.add_argument("--models", nargs="+", required=True,
                        help="run directories or exported SavedModels (two or more; the first gives the settings)")
    parser.add_argument("--cross-tune", action="store_true",
                        help="also score each half with settings tuned on the other half")
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("--models: two or more models")
    predictors = [Predictor.load(path) for path in args.models]
    first = predictors[0]
    for path, predictor in zip(args.models[1:], predictors[1:]):
        if list(predictor.channels) != list(first.channels):
            raise ConfigError(f"{path}: channels {list(predictor.channels)} differ from "
                              f"{args.models[0]}'s {list(first.channels)}")
    dataset = CocoDataset(args.coco, args.images, source=args.coco)
    records = [predict_dataset(p, dataset, desc=f"predicting with model {k + 1}", tta=False)
               for k, p in enumerate(predictors)]
    results = {}
    candidates = [(path, [r]) for path, r in zip(args.models, records)] + [("average of all", records)]
    for name, lists in candidates:
        these = averaged(lists)
        report, _ = evaluate_records(these, first.channels, first.postprocess)
        results[name] = {"settings_of_first": {mode: {"map": v["map"], "per_class": v.get("per_class", {})}
                                               for mode, v in report["modes"].items()}}
        best = report["best_mode"]
        per_class = ", ".join(f"{k} {v:.3f}" for k, v in report["modes"][best].get("per_class", {}).items())
        print(f"{name}: {best} {report['modes'][best]['map']:.3f} with the first model's settings ({per_class})",
              file=sys.stderr)
        if args.cross_tune:
            cross = cross_tuned_scores(these, first.channels, first.postprocess)
            results[name]["cross_tuned"] = {mode: {"map": v["map"], "per_class": v["per_class"]}
                                            for mode, v in cross.items()}
    write_json_atomic({"models": args.models, "images": len(dataset.image_ids), "results": results}, args.out, indent=2)
    return 0


if __name__ == "__main__":
    from cell_seg.cli.common import run_main

    run_main(main)
