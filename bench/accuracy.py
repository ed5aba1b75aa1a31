"""Accuracy on real data: convert, split, train within a time budget, tune, report.

    python -m bench.accuracy --dataset dsb2018 --config configs/dsb2018_unet.yaml --budget 45
    python -m bench.accuracy --dataset sartorius --config configs/sartorius_unet_effb0.yaml --budget 90
    python -m bench.accuracy --dataset dsb2018 --config configs/dsb2018_unet.yaml --resume   # after a kill
    python -m bench.accuracy --dataset dsb2018 --config configs/dsb2018_unet.yaml --resume --budget 40 train.epochs=34
    python -m bench.accuracy --dataset dsb2018 --config configs/dsb2018_unet.yaml --evaluate-only --tta
    python -m bench.accuracy --dataset dsb2018 --config configs/dsb2018_unet_lite0.yaml --write-val bench/out/dsb_val.json

Reads ../shared/data (or --data). The conversion uses the project's own converters; the split is
the seeded, stratified one of `data.coco`. Training runs through `cell_seg.train.run`, which
tunes post-processing on the validation part and scores both modes. Results go to
bench/results/<dataset>_<model>.md and .json with the config, the commit, the hardware and the
training time. `--tta` adds rows for test-time augmentation (the 8 flips/rotations averaged, its
post-processing tuned again on the same validation part); `--evaluate-only` tunes and scores a
finished run again without training. The validation split is not the competition leaderboard, and the
post-processing is tuned on the split it is scored on, so the figures are optimistic by that much.
"""

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench.common import DEFAULT_DATA, REPO
from cell_seg.config import load_config
from cell_seg.files import read_json, write_json_atomic, write_text_atomic
from cell_seg.postprocess import INSTANCE_MODES

PUBLISHED = {
    "sartorius": "published leaderboard scores: plain U-Net + components 0.04-0.15, Mask R-CNN 0.28-0.34, "
    "Cellpose 0.31-0.335, top private about 0.35",
    "dsb2018": "DSB2018 stage-1 public leaderboard winners reached about 0.63 (different images and split)",
}


def _dsb2018_all(root):
    """All 664 DSB2018 stage-1 training images from the competition's label CSV, by kind and source.

    `image_class` becomes the image kind (fluorescence / brightfield / histology), so splits are
    stratified and scores reported per kind; `source` groups images of one kind, size and
    brightness band (`cell_seg.data.split.source_groups`), so a split grouped by it validates on
    sources the training saw less.
    """
    import numpy as np

    from cell_seg.data.convert import convert_csv_rle
    from cell_seg.data.split import source_groups
    from cell_seg.files import read_image

    coco, stats = convert_csv_rle(root / "stage1_train_labels.csv", [root / "stage1_train", root / "stage1_train_rest"],
                                  order="col", category="nucleus", progress=True)
    brightness = [float(np.mean(read_image(root / image["file_name"]))) for image in coco["images"]]
    for image, source in zip(coco["images"], source_groups(coco["images"], brightness)):
        image["image_class"] = image["modality"]
        image["source"] = source
    return coco, stats


def convert(dataset, data_root, cache):
    """Convert the shared dataset once with the project's converter; returns (coco_path, images_dir)."""
    from cell_seg.data.convert import convert_kaggle

    if dataset == "sartorius":
        images = data_root / "sartorius" / "train"
        make = lambda: convert_kaggle(data_root / "sartorius" / "train.csv", images, progress=True)  # noqa: E731
        path = cache / "sartorius.json"
    else:
        images = data_root / "dsb2018"
        make = lambda: _dsb2018_all(images)  # noqa: E731
        path = cache / "dsb2018_all.json"
    if not path.is_file():
        coco, stats = make()
        write_json_atomic(coco, path)
        print(stats.summary(path), file=sys.stderr)
    return path, images


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def _rows(metrics, suffix=""):
    """One table row per post-processing mode of a metrics.json."""
    rows = []
    for mode, values in metrics["modes"].items():
        table = {row["threshold"]: row for row in values.get("table", [])} if values.get("table") else {}
        at50 = next((r for t, r in table.items() if abs(float(t) - 0.5) < 1e-6), None)
        rows.append({
            "mode": mode + suffix,
            "map": values["map"],
            "per_class": values.get("per_class", {}),
            "coco_AP50": values.get("coco_AP50"),
            "precision_iou_0.5": at50["precision"] if at50 else None,
            "ap_iou_0.6": values["ap_iou_0.6"],
            "foreground_iou": values.get("foreground_iou"),
        })
    return rows


def split_words(config):
    """How the validation images were chosen, in words."""
    if config.data.split_group:
        return f"images sharing '{config.data.split_group}' kept on one side where they carry it"
    return "stratified by class"


def report(dataset, config, run_dir, train_seconds):
    from cell_seg.train import completed_epochs

    metrics = read_json(run_dir / "metrics.json")
    rows = _rows(metrics)
    if (run_dir / "tta" / "metrics.json").is_file():
        rows += _rows(read_json(run_dir / "tta" / "metrics.json"), suffix=" + TTA")
    cross = []
    for folder, suffix in ((run_dir, ""), (run_dir / "cross", ""), (run_dir / "tta", " + TTA")):
        if (folder / "metrics.json").is_file():
            for mode, values in read_json(folder / "metrics.json").get("cross_tuned", {}).items():
                cross.append({"mode": mode + suffix, **values})
    result = {
        "cross_tuned": cross,
        "dataset": dataset,
        "model": f"{config.model.name}" + (f"-{config.model.backbone}" if config.model.name in ("unet", "fpn", "linknet") else ""),
        "rows": rows,
        "best_mode": metrics["best_mode"],
        "validation_images": metrics.get("images"),
        "train_seconds": round(train_seconds),
        "budget_minutes_last_session": config.train.time_budget_minutes,
        "epochs_trained": completed_epochs(run_dir),
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "commit": commit(),
        "config": config.to_dict(),
        "tuned_postprocess": read_json(run_dir / "postprocess.json") if (run_dir / "postprocess.json").is_file() else None,
        "published": PUBLISHED[dataset],
    }
    result["run"] = config.name
    result["encoder_weights"] = config.model.encoder_weights
    out = REPO / "bench" / "results" / config.name
    write_json_atomic(result, out.with_suffix(".json"), indent=2)
    lines = [
        f"# {dataset}: {result['model']} ({result['train_seconds'] / 60:.0f} min training, {result['epochs_trained']} epochs, "
        f"{result['hardware']})",
        "",
        f"Validation split ({result['validation_images']} images, seeded; {split_words(config)}); not the competition "
        "leaderboard.",
        "",
        "| mode | mAP 0.50:0.95 | per class | COCO AP50 | TP/(TP+FP+FN) @0.5 | AP @0.6 (HuBMAP) | foreground IoU |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        per_class = ", ".join(f"{k} {v:.3f}" for k, v in row["per_class"].items())
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {row['mode']} | {row['map']:.3f} | {per_class} | {fmt(row['coco_AP50'])} | "
                     f"{fmt(row['precision_iou_0.5'])} | {fmt(row['ap_iou_0.6'])} | {fmt(row.get('foreground_iou'))} |")
    lines += ["", "Post-processing thresholds are tuned on this same validation split (optimistic by that much)."]
    if result["cross_tuned"]:
        lines += ["", "Not tuned on the images scored (each half of the validation images, whole sources together, "
                  "scored with the settings tuned on the other half; per-image scores pooled):", "",
                  "| mode | mAP 0.50:0.95 | per class | images |", "| --- | --- | --- | --- |"]
        for row in result["cross_tuned"]:
            per_class = ", ".join(f"{k} {v:.3f}" for k, v in row["per_class"].items())
            lines.append(f"| {row['mode']} | {row['map']:.3f} | {per_class} | {row['images']} |")
    lines += ["", f"Commit {result['commit']}; {PUBLISHED[dataset]}.", ""]
    write_text_atomic("\n".join(lines), out.with_suffix(".md"))
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("sartorius", "dsb2018"), required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--budget", type=float, default=90, help="training minutes")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--runs", default=str(REPO / "runs"))
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="tune and score the finished run again (e.g. after a post-processing change), no training")
    parser.add_argument("--tta", action="store_true",
                        help="also score with the 8 flips/rotations averaged (post-processing tuned again)")
    parser.add_argument("--cross-tune", action="store_true",
                        help="also score with post-processing tuned on the other half of the validation images "
                        "(halves by source): the figure to report; writes <run>/cross/metrics.json (with --evaluate-only: "
                        "into the run's own metrics.json, from the same prediction pass)")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report again from the finished run's metrics.json, no training or tuning")
    parser.add_argument("--modes", nargs="+", choices=INSTANCE_MODES,
                        help="with --evaluate-only, --tta or --cross-tune: the instance modes to tune and score "
                        "(default: all the model allows)")
    parser.add_argument("--write-val", metavar="PATH",
                        help="write the validation part of the split as COCO JSON to PATH (for scoring a release "
                        "with python -m cell_seg.evaluate), then exit")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    data_root = Path(args.data)
    if not data_root.is_dir():
        print(f"{data_root} not found: nothing to measure", file=sys.stderr)
        return 0
    cache = REPO / "bench" / "out"
    cache.mkdir(parents=True, exist_ok=True)
    coco, images = convert(args.dataset, data_root, cache)
    from cell_seg.train import resolve_data, run

    config = load_config(args.config, args.overrides + [f"data.coco={coco}", f"data.images={images}",
                                                        f"train.time_budget_minutes={args.budget}"])
    run_dir = Path(args.runs) / f"accuracy_{args.dataset}_{config.name}"
    config.out_dir = str(run_dir)
    finished = (run_dir / "model.keras").is_file() and not args.resume
    if finished and not (args.evaluate_only or args.report_only):
        print(f"{run_dir} holds a finished run: scoring it, not training again (--resume trains on)", file=sys.stderr)
    if args.resume or args.evaluate_only or args.report_only or finished:
        # The run's own config; on --resume the overrides (e.g. more train.epochs) and --budget
        # apply to this session, and the report counts the time of every session.
        extra = args.overrides + [f"train.time_budget_minutes={args.budget}"] if args.resume else []
        config = load_config(run_dir / "config.yaml", extra)
        config.out_dir = str(run_dir)
    if args.write_val:
        _, val_coco, _ = resolve_data(config)
        write_json_atomic(val_coco, args.write_val)
        print(f"{len(val_coco['images'])} validation images written to {args.write_val} (images in {images})",
              file=sys.stderr)
        return 0
    started = time.time()
    if not (args.evaluate_only or args.report_only or finished):
        run(config, resume=args.resume)  # trains, then tunes and scores on the validation part
    train_seconds = read_json(run_dir / "train_time.json")["train_seconds"] if (run_dir / "train_time.json").is_file() else time.time() - started
    if (args.evaluate_only or args.tta or args.cross_tune) and not args.report_only:
        from cell_seg.evaluate import evaluate_run

        _, val_coco, images = resolve_data(config)
        modes = args.modes
        if args.evaluate_only:
            # One prediction pass for both: the cross-tuned scores go into the run's own metrics.json.
            evaluate_run(run_dir, coco=val_coco, images=images, tune=True, modes=modes,
                         cross_tune=args.cross_tune and not args.tta)
        if args.tta:
            evaluate_run(run_dir, coco=val_coco, images=images, tune=True, out_dir=run_dir / "tta", tta=True,
                         cross_tune=args.cross_tune, modes=modes)
        elif args.cross_tune and not args.evaluate_only:
            evaluate_run(run_dir, coco=val_coco, images=images, tune=True, out_dir=run_dir / "cross", tta=False,
                         cross_tune=True, modes=modes)
    report(args.dataset, config, run_dir, train_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
