"""Does resizing images before the network help, image by image? A sweep of test-time scales.

For every image of a COCO validation set, the model predicts at each scale of `--scales` (maps
returned at the original size, post-processed with the model's own settings) and the image is
scored with the competition metric. The table shows each fixed scale per kind and per band of
nucleus size, the best scale per image (an oracle: it looks at the truth) and the size rule a
predictor can use without the truth: predict at scale 1, measure the median diameter `d` of the
instances found, predict again at `target / d` (snapped to the nearest scale of the sweep). The
target is chosen on one half of the images and scored on the other (the halves of `evaluate
--cross-tune`: whole sources together, each kind spread over both).

    python -m bench.scale_sweep --model weights/dsb2018_unet_lite0 --coco val.json \
        --images ../shared/data/dsb2018 --out bench/results/scale_sweep_dsb2018.md

Per-image scores go to `<out>.json`; `--from-json` makes the tables again without predicting.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cell_seg.errors import DataError
from cell_seg.evaluate import cross_folds
from cell_seg.files import read_json, write_json_atomic, write_text_atomic
from cell_seg.preprocess import median_diameter, size_scale

SIZE_BANDS = ((0, 12), (12, 20), (20, 35), (35, 1e9))


def sweep(model, coco, images, scales, limit=None):
    """Per-image records: key, class (kind), group, true and predicted (scale 1) diameters, score per scale."""
    from cell_seg import metrics
    from cell_seg.data.dataset import CocoDataset
    from cell_seg.inference import Predictor

    dataset = CocoDataset(coco, images)
    predictor = Predictor.load(model)
    records = []
    for image_id in tqdm(dataset.image_ids[:limit], desc="images", unit="img", file=sys.stderr):
        image = dataset.load_image(image_id)
        truth, _ = dataset.load_labels(image_id)
        info = dataset.image_info(image_id)
        record = {"key": dataset.key(image_id), "class": dataset.image_class(image_id),
                  "group": str(info.get("source", dataset.key(image_id))),
                  "true_diameter": median_diameter(truth), "scores": {}}
        predictor.scale_by_kind, predictor.target_diameter = {}, None  # every image at the swept scale
        for scale in scales:
            predictor.scale = float(scale)
            labels, _ = predictor.predict_instances(image, tta=False)
            record["scores"][str(scale)] = float(metrics.map_iou([truth], [labels])["map"])
            if float(scale) == 1.0:
                record["pred_diameter"] = median_diameter(labels)
        records.append(record)
    return records


def snap(value, scales):
    return min(scales, key=lambda s: abs(np.log(s) - np.log(value)))


def rule_scale(record, target, scales):
    return snap(size_scale(record.get("pred_diameter", float("nan")), target), scales)


def cross_chosen(records, candidates, score):
    """Pick the candidate with the best mean `score(record, candidate)` on one half, score it on the other.

    Returns (the pooled mean over both halves, the candidate chosen on each half).
    """
    a, b = cross_folds(records)
    chosen, scored = [], []
    for tune, test in ((a, b), (b, a)):
        best = max(candidates, key=lambda c: np.mean([score(r, c) for r in tune]))
        chosen.append(best)
        scored += [score(r, best) for r in test]
    return float(np.mean(scored)), chosen


def kind_cross_chosen(records, scales):
    """One scale per image kind, chosen on one half (scale 1 for a kind that half lacks), scored on the other.

    The kind is the image's `image_class`, which for DSB2018 is `image_modality`, the rule
    `Predictor` applies to a model's `scale_by_kind`. Returns (pooled mean, [{kind: scale}] per half).
    """
    kinds = sorted({r["class"] for r in records})
    a, b = cross_folds(records)
    chosen, scored = [], []
    for tune, test in ((a, b), (b, a)):
        pick = {}
        for kind in kinds:
            subset = [r for r in tune if r["class"] == kind]
            pick[kind] = max(scales, key=lambda s: np.mean([r["scores"][str(s)] for r in subset])) if subset else 1.0
        chosen.append(pick)
        scored += [r["scores"][str(pick[r["class"]])] for r in test]
    return float(np.mean(scored)), chosen


def tables(records, scales, targets):
    kinds = sorted({r["class"] for r in records if r["class"] is not None})

    def fixed(r, scale):
        return r["scores"][str(scale)]

    def size_rule(r, target):
        return r["scores"][str(rule_scale(r, target, scales))]


    def row(name, pick):
        cells = []
        for subset in [records] + [[r for r in records if r["class"] == k] for k in kinds] + [
                [r for r in records if lo <= r["true_diameter"] < hi] for lo, hi in SIZE_BANDS]:
            cells.append(f"{np.mean([pick(r) for r in subset]):.3f}" if subset else "-")
        return f"| {name} | " + " | ".join(cells) + " |"

    counts = [len(records)] + [sum(r["class"] == k for r in records) for k in kinds] + [
        sum(lo <= r["true_diameter"] < hi for r in records) for lo, hi in SIZE_BANDS]
    bands = [f"d {lo:g}-{hi:g} px" if hi < 1e9 else f"d >= {lo:g} px" for lo, hi in SIZE_BANDS]
    header = ["all"] + kinds + bands
    lines = ["| scale | " + " | ".join(f"{h} ({n})" for h, n in zip(header, counts)) + " |",
             "| --- | " + " | ".join("---" for _ in header) + " |"]
    for scale in scales:
        lines.append(row(f"{scale:g}", lambda r, s=scale: fixed(r, s)))
    lines.append(row("best per image (oracle)", lambda r: max(r["scores"].values())))
    for target in targets:
        lines.append(row(f"size rule, target {target:g} px", lambda r, t=target: size_rule(r, t)))
    plain = np.mean([fixed(r, 1.0) for r in records])
    fixed_score, fixed_chosen = cross_chosen(records, scales, fixed)
    rule_score, rule_chosen = cross_chosen(records, targets, size_rule)
    kind_score, kind_chosen = kind_cross_chosen(records, scales)
    kind_words = " and ".join("(" + ", ".join(f"{k} {v:g}" for k, v in pick.items()) + ")" for pick in kind_chosen)
    lines += ["", "Chosen on one half of the images (the halves of `evaluate --cross-tune`), scored on the other, "
              f"against {plain:.3f} at scale 1:", "",
              f"- one fixed scale for every image (chosen {fixed_chosen[0]:g} and {fixed_chosen[1]:g}): **{fixed_score:.3f}**",
              f"- the size rule (targets chosen {rule_chosen[0]:g} and {rule_chosen[1]:g} px): **{rule_score:.3f}**",
              f"- one scale per image kind (metadata `scale_by_kind`; chosen {kind_words}; scale 1 for a kind "
              f"the choosing half lacks): **{kind_score:.3f}**"]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="run directory, .keras file or SavedModel")
    parser.add_argument("--coco", help="COCO JSON with the ground truth (image_class / source fields used)")
    parser.add_argument("--images", help="folder the COCO file names are relative to")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.5, 2.0])
    parser.add_argument("--targets", type=float, nargs="+", default=[16, 20, 24, 28, 32, 40])
    parser.add_argument("--limit", type=int, help="first N images only (a quick look)")
    parser.add_argument("--out", required=True, help="markdown report; per-image scores go beside it as .json")
    parser.add_argument("--from-json", action="store_true", help="make the tables from <out>.json, no predicting")
    args = parser.parse_args()
    scales = [float(s) for s in args.scales]
    if 1.0 not in scales:
        parser.error("--scales must include 1 (the size rule measures nuclei at scale 1)")
    out = Path(args.out)
    if args.from_json:
        try:
            data = read_json(out.with_suffix(".json"))
            records, scales = data["records"], [float(s) for s in data["scales"]]  # the scales it was swept at
        except DataError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    else:
        if not (args.model and args.coco and args.images):
            parser.error("--model, --coco and --images are needed unless --from-json")
        records = sweep(args.model, args.coco, args.images, scales, args.limit)
        write_json_atomic({"model": args.model, "scales": scales, "records": records}, out.with_suffix(".json"))
    text = (f"# Test-time scale sweep: {args.model or 'see the json'}\n\n"
            f"mAP 0.50:0.95 per image, averaged; the model's own post-processing settings at every scale;"
            f" no TTA. Columns: kind, and band of the true median nucleus diameter d.\n\n"
            + tables(records, scales, args.targets) + "\n")
    write_text_atomic(text, out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
