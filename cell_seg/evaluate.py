"""Evaluate a trained model on a COCO validation set and tune its post-processing.

    python -m cell_seg.evaluate --model runs/demo --coco val.json --images DIR [--tune] [--tta] [--out DIR]

Reports the Sartorius/DSB mAP over IoU 0.50:0.95 (overall and per class), COCO AP/AP50/AP75, the
HuBMAP-style AP at IoU 0.6 and the foreground IoU, for every post-processing mode the model's
channels allow (components; watershed with a border channel; distance with a distance channel). `--tune` searches thresholds, minimum areas and a minimum confidence (the mean
foreground probability inside an instance; per class when the data has classes; one parameter at a
time over wide grids) to maximise the mAP and writes `postprocess.json`, which predict and export
then use.
`--tta` averages the 8 flips and rotations of each image (8x slower), as `predict --tta` does.
"""

import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cell_seg.files import atomic_folder, write_json_atomic

FG_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
BORDER_THRESHOLDS = (0.2, 0.3, 0.5, 0.7, 0.8)
MIN_AREAS = (0, 10, 25, 50, 100, 200, 400)
DISTANCE_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
CENTRE_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
MIN_SEED_AREAS = (0, 5, 10, 20, 40)
MIN_SCORES = (0.0, 0.75, 0.8, 0.85, 0.9, 0.95)  # least mean foreground probability of an instance
#: Where the coordinate search starts, and how many rounds over the parameters it makes at most.
TUNE_START = {"fg_threshold": 0.5, "border_threshold": 0.5, "distance_threshold": 0.3, "centre_threshold": 0.6,
              "min_seed_area": 0, "min_area": 25, "min_score": 0.0}
TUNE_ROUNDS = 4
#: The image field that keeps images of one source together in cross-tuning folds (DSB2018: kind x
#: size x brightness band, `cell_seg.data.split.source_groups`); images without it are their own group.
GROUP_FIELD = "source"


def predict_dataset(predictor, dataset, desc="predicting", tta=False, group_field=GROUP_FIELD):
    """Run the model on every image: list of dicts with key, class, group (the image's `group_field`,
    else its key), probs (float16), truth label map."""
    results = []
    for image_id in tqdm(dataset.image_ids, desc=desc, unit="img", file=sys.stderr):
        image = dataset.load_image(image_id)
        truth, _ = dataset.load_labels(image_id)
        probs = predictor.predict_probs(image, tta=tta)
        key = dataset.key(image_id)
        group = dataset.image_info(image_id).get(group_field)
        results.append({"key": key, "class": dataset.image_class(image_id), "group": key if group is None else str(group),
                        "probs": probs.astype(np.float16), "truth": truth})
    return results


def score_predictions(records, channels, config, full=False):
    """Post-process every record with `config` (a `PostprocessConfig`) and score.

    full=False returns only the mAP (for tuning); True returns every metric.
    """
    from cell_seg import metrics
    from cell_seg.postprocess import to_instances

    preds, scores = [], []
    for record in records:
        labels, instances = to_instances(record["probs"].astype(np.float32), channels, config=config)
        preds.append(labels)
        scores.append(np.array([inst["score"] for inst in instances], np.float32))
    truths = [r["truth"] for r in records]
    classes = [r["class"] for r in records]
    result = metrics.map_iou(truths, preds, classes=classes if any(c is not None for c in classes) else None)
    if not full:
        return float(result["map"])
    out = {"map": float(result["map"]), "per_image": [float(v) for v in result["per_image"]]}
    out["per_class"] = {str(k): float(v) for k, v in (result.get("per_class") or {}).items()}
    out["ap_iou_0.6"] = float(metrics.ap_at_iou(truths, preds, scores, iou_threshold=0.6))
    out["foreground_iou"] = float(metrics.foreground_iou(truths, preds))
    coco = metrics.coco_eval(
        metrics.coco_gt_from_label_maps(truths), metrics.coco_results_from_label_maps(preds, scores), use_categories=False
    )
    out.update({f"coco_{k}": float(coco[k]) for k in ("AP", "AP50", "AP75")})
    table = result.get("table")
    if table is not None:
        out["table"] = table.to_dict(orient="records") if hasattr(table, "to_dict") else table
    return out


def coordinate_search(score, grid, start, rounds=TUNE_ROUNDS, desc="tuning"):
    """Maximise `score(params)` over a grid one parameter at a time.

    Each round tries every value of each parameter with the others held, keeping the best; it
    stops after a round that changed nothing (or `rounds` rounds). Scores are cached, so a round
    costs about the sum, not the product, of the grid sizes (25 instead of 1,470 settings for watershed).
    Like any coordinate search it can stop at a local optimum.

    Args:
        score: function of a params dict -> float.
        grid: list of (name, values).
        start: initial params dict (a value of each name).

    Returns:
        (best params dict, best score).
    """
    cache = {}
    progress = tqdm(desc=desc, unit="set", file=sys.stderr, leave=False)

    def evaluate(params):
        key = tuple(params[name] for name, _ in grid)
        if key not in cache:
            cache[key] = score(params)
            progress.update()
        return cache[key]

    best = {name: start[name] for name, _ in grid}
    best_score = evaluate(best)
    for _ in range(rounds):
        changed = False
        for name, values in grid:
            for value in values:
                candidate = {**best, name: value}
                candidate_score = evaluate(candidate)
                if candidate_score > best_score:
                    best, best_score, changed = candidate, candidate_score, True
        if not changed:
            break
    progress.close()
    return best, best_score


def tune_postprocess(records, channels, mode, base=None):
    """Search thresholds, minimum area and minimum confidence (coordinate search over wide grids) for
    `mode`; per class when images carry classes and the model predicts them.

    `base` (a `PostprocessConfig`) gives the settings that are not searched.
    Returns (tuned `PostprocessConfig`, best mAP, table of per-class bests).
    """
    from cell_seg.postprocess import PostprocessConfig

    # Earlier tuned per-class settings would override every candidate: tune afresh without them.
    base = (base or PostprocessConfig()).replace(mode=mode, per_class={})
    grid = [("fg_threshold", FG_THRESHOLDS), ("min_area", MIN_AREAS), ("min_score", MIN_SCORES)]
    if mode == "watershed":
        grid.insert(1, ("border_threshold", BORDER_THRESHOLDS))
    elif mode == "distance":
        grid[1:1] = [("distance_threshold", DISTANCE_THRESHOLDS), ("min_seed_area", MIN_SEED_AREAS)]
    elif mode == "centre":
        grid[1:1] = [("centre_threshold", CENTRE_THRESHOLDS), ("min_seed_area", MIN_SEED_AREAS)]
        if "distance" in channels:
            grid.insert(2, ("distance_threshold", DISTANCE_THRESHOLDS))

    def best_for(subset, desc):
        return coordinate_search(lambda params: score_predictions(subset, channels, base.replace(**params)),
                                 grid, TUNE_START, desc=desc)

    classes = sorted({r["class"] for r in records if r["class"] is not None})
    table = []
    # Per-class settings only apply when the model predicts the class (class_* channels):
    # at prediction time nothing else tells post-processing which cell type an image shows.
    has_class_channels = any(name.startswith("class_") for name in channels)
    if len(classes) > 1 and has_class_channels:
        per_class = {}
        for name in classes:
            subset = [r for r in records if r["class"] == name]
            params, score = best_for(subset, f"tuning {mode} ({name})")
            per_class[name] = params
            table.append({"class": name, **params, "map": score, "images": len(subset)})
        overall_params, _ = best_for(records, f"tuning {mode} (all)")
        tuned = base.replace(**overall_params, per_class=per_class)
    else:
        params, score = best_for(records, f"tuning {mode}")
        tuned = base.replace(**params)
        table.append({"class": classes[0] if len(classes) == 1 else "all", **params, "map": score, "images": len(records)})
    return tuned, score_predictions(records, channels, tuned), table


#: Report key of the choice that gives each cell type the mode that scored best for it in tuning.
BY_CLASS = "by_class"


def by_class_config(tuned):
    """One config that gives each class the mode whose tuning scored best on that class's images.

    `tuned` is {mode: (tuned config, tuning table)} from `tune_postprocess`; None unless the tables
    are per class (a model with class channels, images of several classes). Images of a class the
    tuning never saw get the mode with the best overall tuned score (ties: the earlier mode).

    Example:
        >>> from cell_seg.postprocess import PostprocessConfig
        >>> rows = lambda a, b: [{"class": "a", "map": a, "images": 3}, {"class": "b", "map": b, "images": 3}]
        >>> settings = {"a": {"fg_threshold": 0.5}, "b": {"fg_threshold": 0.6}}
        >>> tuned = {"watershed": (PostprocessConfig(mode="watershed", per_class=settings), rows(0.3, 0.1)),
        ...          "distance": (PostprocessConfig(mode="distance", per_class=settings), rows(0.2, 0.4))}
        >>> config = by_class_config(tuned)
        >>> config.for_class("a").mode, config.for_class("b").mode, config.for_class("b").fg_threshold
        ('watershed', 'distance', 0.6)
    """
    tables = {mode: table for mode, (_, table) in tuned.items()}
    classes = [row["class"] for row in next(iter(tables.values()), [])]
    if len(tuned) < 2 or len(classes) < 2 or any(not config.per_class for config, _ in tuned.values()):
        return None
    per_class = {}
    for name in classes:
        rows = {mode: next(row for row in table if row["class"] == name) for mode, table in tables.items()}
        mode = max(rows, key=lambda m: (rows[m]["map"], -list(rows).index(m)))
        per_class[name] = {"mode": mode, **tuned[mode][0].per_class[name]}
    overall = max(tuned, key=lambda m: (sum(row["map"] * row["images"] for row in tables[m]), -list(tuned).index(m)))
    return tuned[overall][0].replace(per_class=per_class)


def available_modes(channels):
    """Post-processing modes a model with these output channels can use.

    Example:
        >>> available_modes(["foreground", "border", "distance"])
        ['components', 'watershed', 'distance']
        >>> available_modes(["foreground", "distance", "centre"])
        ['components', 'distance', 'centre']
    """
    modes = ["components"]
    if "border" in channels:
        modes.append("watershed")
    for name in ("distance", "centre"):
        if name in channels:
            modes.append(name)
    return modes


def check_modes(modes, channels):
    """Raise `ConfigError` for a mode these output channels cannot serve."""
    from cell_seg.errors import ConfigError

    allowed = available_modes(channels)
    unknown = [mode for mode in modes if mode not in allowed]
    if unknown:
        raise ConfigError(f"mode {unknown[0]!r}: this model's channels allow {', '.join(allowed)}")


def evaluate_records(records, channels, postprocess=None, tune=False, modes=None):
    """Score every post-processing mode (tuning each first when `tune`) and choose one.

    Args:
        records: from `predict_dataset`.
        channels: the model's output channels.
        postprocess: the model's `PostprocessConfig` (default: the defaults); its mode ("auto"
            resolved by `cell_seg.postprocess.resolve_mode`) is the model's own mode.
        tune: search each mode's thresholds and minimum areas first.
        modes: the modes to score (default every mode the channels allow).

    The chosen mode is, without tuning, the model's own mode (what prediction would use) when it
    is among `modes`, else the best scoring; with tuning, the best scoring, a tie going to the
    model's own mode, then to the earlier mode in `modes`.

    Returns:
        (report dict: "modes", "tuning", "best_mode", "summary"; the chosen `PostprocessConfig`).
    """
    from cell_seg.postprocess import PostprocessConfig, resolve_mode

    base = postprocess if postprocess is not None else PostprocessConfig()
    own_mode = resolve_mode(base.mode, channels)
    modes = list(modes or available_modes(channels))
    report = {"modes": {}, "tuning": {}}
    chosen, tuned = {}, {}
    for mode in modes:
        config = base.with_mode(mode)
        if tune:
            config, _, table = tune_postprocess(records, channels, mode, base=base)
            report["tuning"][mode] = {"settings": config.to_dict(), "table": table}
            tuned[mode] = (config, table)
        report["modes"][mode] = score_predictions(records, channels, config, full=True)
        chosen[mode] = config
    mixed = None
    if tune:
        mixed = by_class_config(tuned)
    elif any("mode" in overrides for overrides in base.per_class.values()):
        # The model's own settings give each class its mode: score them as they are.
        mixed, own_mode = base, BY_CLASS
    if mixed is not None:
        report["modes"][BY_CLASS] = score_predictions(records, channels, mixed, full=True)
        if tune:
            report["tuning"][BY_CLASS] = {"settings": mixed.to_dict(), "table": []}
        chosen[BY_CLASS] = mixed
        modes.append(BY_CLASS)  # last: a tie goes to a single mode
    scores = {mode: report["modes"][mode]["map"] for mode in modes}
    if not tune and own_mode in modes:
        best_mode = own_mode
    else:
        top = max(scores.values())
        tied = [mode for mode in modes if scores[mode] == top]
        best_mode = own_mode if own_mode in tied else tied[0]
    report["best_mode"] = best_mode
    summary = {f"map_{mode}": scores[mode] for mode in modes}
    summary["map"] = scores[best_mode]
    summary["ap_iou_0.6"] = report["modes"][best_mode]["ap_iou_0.6"]
    if "coco_AP50" in report["modes"][best_mode]:
        summary["coco_AP50"] = report["modes"][best_mode]["coco_AP50"]
    report["summary"] = summary
    return report, chosen[best_mode]


def cross_folds(records, folds=2):
    """Split records (dicts with "class" and "group") into `folds` parts for choosing on some, scoring on others.

    Whole groups (e.g. an image source) stay in one part, and the groups of each class go round-robin
    over the parts, so every part gets some of each kind.

    Example:
        >>> records = [{"class": "a", "group": g} for g in "xxyz"]
        >>> [[r["group"] for r in part] for part in cross_folds(records)]
        [['x', 'x', 'z'], ['y']]
    """
    groups = sorted({(str(r["class"]), r["group"]) for r in records})
    fold_of, per_class_count = {}, {}
    for name, group in groups:
        count = per_class_count.get(name, 0)
        fold_of[(name, group)] = count % folds
        per_class_count[name] = count + 1
    return [[r for r in records if fold_of[(str(r["class"]), r["group"])] == k] for k in range(folds)]


def cross_tuned_scores(records, channels, postprocess=None, modes=None, folds=2):
    """Scores whose post-processing was tuned on other images: an honest figure beside the tuned one.

    The records are split into `folds` parts, whole groups (`record["group"]`, e.g. the image
    source) together and every class spread over the parts; each part is scored with the settings
    tuned on the other parts, and the per-image scores are pooled.

    Returns:
        {mode: {"map", "per_class", "images", "folds", "settings"}}, "settings" being the
        post-processing each part was scored with (a `PostprocessConfig.to_dict()` per part).
    """
    from cell_seg.postprocess import PostprocessConfig

    base = postprocess if postprocess is not None else PostprocessConfig()
    parts = cross_folds(records, folds)
    modes = list(modes or available_modes(channels))
    scores, classes, settings = {}, {}, {}
    for k, part in enumerate(parts):
        rest = [r for j, other in enumerate(parts) if j != k for r in other]
        if not part or not rest:
            continue
        tuned = {}
        for mode in modes:
            config, _, table = tune_postprocess(rest, channels, mode, base=base)
            tuned[mode] = (config, table)
        mixed = by_class_config(tuned)
        configs = {mode: config for mode, (config, _) in tuned.items()}
        if mixed is not None:
            configs[BY_CLASS] = mixed  # each class's mode chosen on the other part too
        for mode, config in configs.items():
            scores.setdefault(mode, []).extend(score_predictions(part, channels, config, full=True)["per_image"])
            classes.setdefault(mode, []).extend(r["class"] for r in part)
            settings.setdefault(mode, []).append(config.to_dict())
    if BY_CLASS in scores and len(scores[BY_CLASS]) != len(scores[modes[0]]):
        del scores[BY_CLASS]  # some part's tuning images held a single class: no per-class choice there
    out = {}
    for mode in scores if scores else modes:
        scores_, classes_ = scores.get(mode, []), classes.get(mode, [])
        per_class = {}
        for name in sorted({str(c) for c in classes_ if c is not None}):
            values = [v for v, c in zip(scores_, classes_) if str(c) == name]
            per_class[name] = float(np.mean(values))
        out[mode] = {"map": float(np.mean(scores_)) if scores_ else float("nan"), "per_class": per_class,
                     "images": len(scores_), "folds": folds, "settings": settings.get(mode, [])}
    return out


def print_report(report, file=None):
    """A small terminal table on `file` (default stderr): mAP per mode and class, and the tuned settings."""
    file = sys.stderr if file is None else file
    for mode, metrics in report["modes"].items():
        per_class = ", ".join(f"{k} {v:.3f}" for k, v in metrics.get("per_class", {}).items())
        extra = f" ({per_class})" if per_class else ""
        print(f"{mode:>10}: mAP {metrics['map']:.3f}{extra}, AP@0.6 {metrics['ap_iou_0.6']:.3f}, "
              f"fg IoU {metrics['foreground_iou']:.3f}", file=file)
    for mode, tuned in report.get("tuning", {}).items():
        if mode == BY_CLASS:
            choice = ", ".join(f"{name} {values['mode']}" for name, values in tuned["settings"]["per_class"].items())
            print(f"  {BY_CLASS}: each cell type's best tuned mode ({choice})", file=file)
        for row in tuned["table"]:
            settings = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("class", "map", "images"))
            print(f"  tuned {mode} [{row['class']}, {row['images']} images]: {settings} -> mAP {row['map']:.3f}", file=file)
    for mode, metrics in report.get("cross_tuned", {}).items():
        per_class = ", ".join(f"{k} {v:.3f}" for k, v in metrics["per_class"].items())
        print(f"{mode:>10}: mAP {metrics['map']:.3f} ({per_class}) with settings tuned on other images "
              f"({metrics['folds']} folds by source)", file=file)
    print(f"best mode: {describe_best_mode(report)}", file=file)


def describe_best_mode(report):
    """'watershed', or 'components (a tie with watershed at mAP 0.180)' when the printed scores are equal.

    Example:
        >>> describe_best_mode({"best_mode": "components",
        ...                     "modes": {"components": {"map": 0.18}, "watershed": {"map": 0.18}}})
        'components (a tie with watershed at mAP 0.180)'
    """
    best = report["best_mode"]
    score = report["modes"][best]["map"]
    tied = [mode for mode, metrics in report["modes"].items() if mode != best and round(metrics["map"], 3) == round(score, 3)]
    if not tied:
        return best
    return f"{best} (a tie with {', '.join(tied)} at mAP {score:.3f})"


def evaluate_run(run_dir, coco=None, images=None, tune=True, predictor=None, out_dir=None, tta=None, source=None,
                 cross_tune=False, modes=None):
    """Evaluate a run (after training, or from the CLI) and write metrics.json and postprocess.json.

    The model is loaded from `run_dir` (its best checkpoint and metadata) unless `predictor` is given.
    `tta` averages the 8 flips and rotations of every image before post-processing (default: the
    model's own default, `Predictor.tta`). `cross_tune` adds "cross_tuned" to the report: every mode
    scored with settings tuned on other images (`cross_tuned_scores`). `source` is the
    file `coco` was read from, named in errors. `modes` limits the instance modes scored (default:
    every mode the model's channels allow).
    """
    from cell_seg.data.dataset import CocoDataset
    from cell_seg.inference import Predictor
    from cell_seg.metadata import ModelMetadata

    run_dir = Path(run_dir)
    out_dir = Path(out_dir or run_dir)
    if modes:
        check_modes(modes, predictor.channels if predictor else ModelMetadata.of_model(run_dir).channels)
    predictor = predictor or Predictor.load(run_dir)
    dataset = CocoDataset(coco, images, source=source)
    started = time.time()
    tta = predictor.tta if tta is None else bool(tta)
    records = predict_dataset(predictor, dataset, desc="predicting (8 flips/rotations)" if tta else "predicting", tta=tta)
    report, settings = evaluate_records(records, predictor.channels, predictor.postprocess, tune=tune, modes=modes)
    if cross_tune:
        report["cross_tuned"] = cross_tuned_scores(records, predictor.channels, predictor.postprocess, modes=modes)
    report["images"] = len(records)
    report["seconds"] = round(time.time() - started, 1)
    report["model"] = predictor.source
    report["tta"] = bool(tta)
    with atomic_folder(out_dir) as staging:  # metrics.json and postprocess.json together, or neither
        write_json_atomic(report, staging / "metrics.json", indent=2)
        if tune:
            write_json_atomic(settings.to_dict(), staging / "postprocess.json", indent=2)
    print_report(report)
    return report


if __name__ == "__main__":  # the command line lives in cell_seg.cli.evaluate
    from cell_seg.cli.evaluate import cli

    cli()
