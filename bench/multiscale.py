"""Does averaging the maps predicted at two or more scales beat one scale? A test-time multi-scale check.

Every image of a COCO validation set is predicted at each scale of `--scales` without TTA (maps
returned at the original size); each scale alone and the average of all of them are then tuned
and scored like `evaluate --tune --cross-tune`: settings tuned on the images scored, and each half
of the images scored with settings tuned on the other half (the figure to compare).

    python -m bench.multiscale --model weights/sartorius_unet_lite0_distance --coco val.json \
        --images ../shared/data/sartorius/train --scales 2 2.5 --modes watershed distance \
        --out bench/results/multiscale_sartorius.json
"""

import sys

from bench.common import scoring_parser
from bench.ensemble import averaged as average_records
from cell_seg.files import write_json_atomic


def averaged(records_by_scale, scales):
    """The records of the first scale with the probability maps averaged over `scales`."""
    return average_records([records_by_scale[s] for s in scales])


def main(argv=None):
    from cell_seg.data.dataset import CocoDataset
    from cell_seg.evaluate import cross_tuned_scores, evaluate_records, predict_dataset
    from cell_seg.inference import Predictor

    parser = scoring_parser(__doc__, modes=True)
    parser.add_argument("--model", required=True, help="run directory or exported SavedModel")
    parser.add_argument("--scales", nargs="+", type=float, required=True, help="the scales (at least two)")
    args = parser.parse_args(argv)
    if len(args.scales) < 2 or min(args.scales) <= 0:
        parser.error("--scales: two or more positive numbers")
    predictor = Predictor.load(args.model)
    predictor.scale_by_kind, predictor.target_diameter = {}, None  # one fixed scale per pass
    dataset = CocoDataset(args.coco, args.images, source=args.coco)
    records = {}
    for scale in args.scales:
        predictor.scale = scale
        records[scale] = predict_dataset(predictor, dataset, desc=f"predicting at {scale:g}x", tta=False)
    results = {}
    for scales in [[s] for s in args.scales] + [args.scales]:
        these = averaged(records, scales)
        cross = cross_tuned_scores(these, predictor.channels, predictor.postprocess, modes=args.modes)
        tuned, _ = evaluate_records(these, predictor.channels, predictor.postprocess, tune=True, modes=args.modes)
        name = " + ".join(f"{s:g}" for s in scales)
        results[name] = {
            "cross_tuned": {mode: {"map": v["map"], "per_class": v["per_class"]} for mode, v in cross.items()},
            "tuned": {mode: {"map": v["map"], "per_class": v.get("per_class", {})} for mode, v in tuned["modes"].items()},
        }
        for mode, value in cross.items():
            per_class = ", ".join(f"{k} {v:.3f}" for k, v in value["per_class"].items())
            print(f"{name}: {mode} {value['map']:.3f} tuned on the other half ({per_class}), "
                  f"{tuned['modes'][mode]['map']:.3f} tuned on these images", file=sys.stderr)
    write_json_atomic({"model": args.model, "images": len(dataset.image_ids), "results": results}, args.out, indent=2)
    return 0


if __name__ == "__main__":
    from cell_seg.cli.common import run_main

    run_main(main)
