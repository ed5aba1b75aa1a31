"""Post-process at the network's resolution instead of the image's? A check for models trained enlarged.

A model with `scale` k (e.g. 2 for Sartorius) predicts on the image enlarged k times; the
Predictor resizes the maps back and post-processes at the original size, where a one-pixel border
line of the enlarged maps is half a pixel wide. This script post-processes the enlarged maps
instead (seeds, watershed or distance flooding at k x; `min_seed_area` x k^2, `seed_erosion` x k),
takes each original pixel's label by the majority of its k x k block (integer k), then fills
holes and filters by minimum area and score at the original size with the same settings. Both
ways are scored with the model's own settings, then tuned like `evaluate --cross-tune` (each
half of the images with settings tuned on the other half; slow: about 40 minutes for 88
Sartorius images on two cores). No TTA.

    python -m bench.postprocess_scale --model weights/sartorius_unet_lite0_distance \
        --coco bench/out/sart_val.json --images ../shared/data/sartorius/train \
        --modes watershed distance --cross-tune --out bench/out/postprocess_scale_sartorius.json
"""

import sys

import numpy as np

from bench.common import scoring_parser
from cell_seg.files import write_json_atomic


def block_majority(label_map, k):
    """`H/k x W/k` label map: each output pixel the label held by most pixels of its k x k block
    (ties: the first in row-major order among the most frequent)."""
    height, width = label_map.shape[0] // k, label_map.shape[1] // k
    blocks = label_map[:height * k, :width * k].reshape(height, k, width, k).transpose(0, 2, 1, 3).reshape(
        height, width, k * k)
    counts = (blocks[..., :, None] == blocks[..., None, :]).sum(axis=-1)
    first_best = counts.argmax(axis=-1)
    return np.ascontiguousarray(np.take_along_axis(blocks, first_best[..., None], axis=-1)[..., 0])


def instances_at_scale(small, large, channels, config, k):
    """(label map, instances) at the original size from maps at the original size (`small`, which
    decides the image class as `to_instances` does) and at k x (`large`, which the segmentation uses)."""
    import cell_seg.postprocess as pp

    foreground = small[..., channels.index("foreground")]
    image_class = pp._image_class(small, channels, config) if config.class_mode == "image" else None
    cfg = config.for_class(image_class) if image_class is not None else config
    large_cfg = cfg.replace(min_seed_area=cfg.min_seed_area * k * k, seed_erosion=cfg.seed_erosion * k)
    labels = pp._segment(large, channels, pp.resolve_mode(cfg.mode, channels), large_cfg)
    labels = block_majority(labels, k)[:foreground.shape[0], :foreground.shape[1]]
    if cfg.fill_holes:
        labels = pp.fill_label_holes(labels)
    return pp._filter_and_describe(labels, foreground, cfg, image_class)


def main(argv=None):
    import cell_seg.evaluate as evaluate
    from cell_seg import metrics
    from cell_seg.data.dataset import CocoDataset
    from cell_seg.errors import ConfigError
    from cell_seg.inference import Predictor, check_image
    from cell_seg.preprocess import rescale, resize_to
    from tqdm import tqdm

    parser = scoring_parser(__doc__, modes=True)
    parser.add_argument("--model", required=True, help="run directory or exported SavedModel with an integer scale")
    parser.add_argument("--cross-tune", action="store_true", help="also tune on one half, score the other")
    parser.add_argument("--limit", type=int, help="only the first N images (a smoke run)")
    args = parser.parse_args(argv)
    predictor = Predictor.load(args.model)
    k = predictor.scale
    if k != int(k) or k < 2:
        raise ConfigError(f"{args.model}: scale {k:g}; this check needs an integer scale of 2 or more")
    k = int(k)
    channels = list(predictor.channels)
    dataset = CocoDataset(args.coco, args.images, source=args.coco)
    records = []
    for image_id in tqdm(dataset.image_ids[:args.limit], desc=f"predicting at {k}x", unit="img", file=sys.stderr):
        image = check_image(dataset.load_image(image_id))
        image = image[..., :3] if image.ndim == 3 else image  # as predict_probs: an alpha channel dropped
        truth, _ = dataset.load_labels(image_id)
        large = predictor._predict_checked(rescale(image, k), False, None, None, None)
        key = dataset.key(image_id)
        records.append({"key": key, "class": dataset.image_class(image_id), "group": key, "truth": truth,
                        "probs": resize_to(large, image.shape[:2]).astype(np.float16),
                        "large": large.astype(np.float16)})

    def score_at_scale(these, channels_, config, full=False):
        preds = [instances_at_scale(r["probs"].astype(np.float32), r["large"].astype(np.float32), channels_,
                                    config, k)[0] for r in these]
        result = metrics.map_iou([r["truth"] for r in these], preds, classes=[r["class"] for r in these])
        if not full:
            return float(result["map"])
        return {"map": float(result["map"]), "per_image": [float(v) for v in result["per_image"]],
                "per_class": {str(name): float(v) for name, v in (result.get("per_class") or {}).items()}}

    out = {"model": args.model, "images": len(records), "scale": k}
    original_score = evaluate.score_predictions
    for name, score in (("original size", original_score), (f"{k}x", score_at_scale)):
        evaluate.score_predictions = score  # tuning and cross-tuning score through this name
        try:
            own = score(records, channels, predictor.postprocess, full=True)
            out[name] = {"own_settings": {"map": own["map"], "per_class": own["per_class"]}}
            print(f"post-processed at {name}: {own['map']:.3f} with the model's settings", file=sys.stderr)
            if args.cross_tune:
                cross = evaluate.cross_tuned_scores(records, channels, predictor.postprocess, modes=args.modes)
                out[name]["cross_tuned"] = {mode: {"map": v["map"], "per_class": v["per_class"]}
                                            for mode, v in cross.items()}
                for mode, value in cross.items():
                    print(f"post-processed at {name}: {mode} {value['map']:.3f} tuned on the other half",
                          file=sys.stderr)
        finally:
            evaluate.score_predictions = original_score
    write_json_atomic(out, args.out, indent=2)
    return 0


if __name__ == "__main__":
    from cell_seg.cli.common import run_main

    run_main(main)
