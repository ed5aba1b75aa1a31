"""Oracle benchmark: how much can each instance representation give back, given perfect maps?

For each image the "network output" is made from the ground truth itself, with the package's own
target code (`cell_seg.data.targets.build_targets`, what training fits):
- baseline `components`: foreground = union of the cells, connected components;
- `watershed + contact border`: the "border" target with `border_width` 0 (pixels whose 3x3
  neighbourhood holds another cell's label), seeds grow back over the foreground;
- `watershed + contact + k px ring`: the "border" target with `border_width` k (also a k-pixel
  inner ring of every cell, elliptic structuring element);
- `distance (t)`: the "distance" target (per-cell distance to the outline over its maximum, 0 at
  contacts); seeds are its cores above t, grown over the foreground (mode "distance").
- `centre (c, d)`: the "centre" target (one peak per cell along the path inside it); seeds are
  where it is above c and the distance target above d, grown down the distance map (mode
  "centre"), so a cell with lobes keeps one seed.
With `--blur S` every map is blurred (Gaussian, sigma S px) before post-processing, a crude
stand-in for a network that cannot draw one-pixel lines: it shows how much of each
representation survives; give several thresholds to see the best of each.
Each is scored with the competition metric (`cell_seg.metrics.map_iou`) against the same ground
truth label map, per image kind, on a seeded subset (default 20 images per kind) or on every
image (--all).

Data sets (`--dataset`):
- sartorius (default): `train.csv` decoded, overlaps resolved with the later cell winning; kinds
  are the cell types.
- dsb2018: `bench/out/dsb2018_all.json` (all 664 stage-1 images, as `bench.accuracy` converts
  them; `--convert` makes it when missing) loaded through `CocoDataset`; kinds are the image kinds
  (fluorescence / histology / brightfield), and a second table splits the images by crowding
  (nuclei per image: < 30, 30-100, > 100 by default). `--val` scores the validation images of the
  by-source split the models use (`cell_seg.train.resolve_data` on `--config`), and
  `--model-metrics` puts a trained model's per-image scores on those images beside the oracle's
  (a `metrics.json` of `cell_seg.evaluate` whose modes carry `per_image`, as <run>/cross/metrics.json).
`--postprocess` starts from a run's tuned settings (its `postprocess.json`) instead of the package
defaults, to see what they cost on perfect maps; each variant still sets its own mode and
threshold.

Usage:
    python -m bench.oracle [--data ../shared/data] [--per-type 20] [--all] [--seed 0] [--min-area 10]
                           [--distance-thresholds 0.05 0.2 0.5] [--border-thresholds 0.5] [--blur 0]
                           [--centre-thresholds 0.6 0.7] [--centre-distance 0.2]
                           [--border-widths 0 1 2] [--kind astro ...] [--postprocess RUN/postprocess.json]
    python -m bench.oracle --dataset dsb2018 [--convert] [--all | --val [--config configs/dsb2018_unet_lite0.yaml]
                           [--model-metrics RUN/cross/metrics.json]] [--crowding-edges 30 100] [options above]
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from bench.common import DEFAULT_DATA, REPO, SARTORIUS_SHAPE
from cell_seg.data.targets import build_targets
from cell_seg.files import read_json
from cell_seg.metrics import map_iou
from cell_seg.postprocess import PostprocessConfig, to_instances

CHANNELS = ["foreground", "border", "distance", "centre"]
DSB2018_COCO = REPO / "bench" / "out" / "dsb2018_all.json"
DSB2018_CONFIG = REPO / "configs" / "dsb2018_unet_lite0.yaml"
CROWDING_EDGES = (30, 100)
BORDER_NAMES = {0: "contact border", 1: "contact + 1px ring", 2: "contact + 2px ring"}


def oracle_probs(label_map, border_width=0, blur=0.0):
    """Perfect foreground / border (with this ring width) / distance / centre maps from the package's targets,
    blurred with a Gaussian of sigma `blur` px when `blur` > 0."""
    probs = build_targets(label_map, None, CHANNELS, 0, border_width=border_width)
    return cv2.GaussianBlur(probs, (0, 0), blur) if blur > 0 else probs


def variants(distance_thresholds, border_thresholds=(0.5,), border_widths=(0, 1, 2), centre_thresholds=(),
             centre_distance=0.2):
    """(name, mode, border_width, postprocess overrides) of every variant, components first."""
    rows = [("components (union only)", "components", 0, {})]
    for width in border_widths:
        name = BORDER_NAMES.get(width, f"contact + {width}px ring")
        for b in border_thresholds:
            suffix = f" (b={b:g})" if len(border_thresholds) > 1 else ""
            rows.append((f"watershed + {name}{suffix}", "watershed", width, {"border_threshold": b}))
    rows += [(f"distance (t={t:g})", "distance", 0, {"distance_threshold": t}) for t in distance_thresholds]
    rows += [(f"centre (c={c:g}, d={centre_distance:g})", "centre", 0,
              {"centre_threshold": c, "distance_threshold": centre_distance}) for c in centre_thresholds]
    return rows


def crowding_bands(n_nuclei, edges=CROWDING_EDGES):
    """Crowding band of each image from its number of nuclei: below the first edge, between the
    edges (both included), above the second.

    Example:
        >>> crowding_bands([0, 29, 30, 100, 101])
        ['<30', '<30', '30-100', '30-100', '>100']
    """
    low, high = edges
    names = np.array(band_names(edges))
    n_nuclei = np.asarray(n_nuclei)
    return names[(n_nuclei >= low).astype(int) + (n_nuclei > high)].tolist()


def band_names(edges=CROWDING_EDGES):
    """Names of the crowding bands of `crowding_bands`, least crowded first."""
    low, high = edges
    return [f"<{low}", f"{low}-{high}", f">{high}"]


def choose_images(kinds, per_kind, seed, every=False):
    """The images to score (a Series image id -> kind): all of `kinds`, or a seeded subset of
    `per_kind` images of each kind (in their original order within a kind)."""
    if every:
        return kinds
    rng = np.random.default_rng(seed)
    return pd.concat([group.iloc[np.sort(rng.permutation(len(group))[:per_kind])] for _, group in kinds.groupby(kinds)])


def describe(chosen):
    """'N images (kind n, ...)' of a Series image id -> kind."""
    return f"{len(chosen)} images ({', '.join(f'{t} {n}' for t, n in chosen.value_counts().sort_index().items())})"


def sartorius_images(args):
    """(image id -> cell type Series, ground-truth label maps) of the Sartorius images to score, or None."""
    from cell_seg.submission import read_sartorius_csv

    csv = Path(args.data) / "sartorius" / "train.csv"
    if not csv.is_file():
        print(f"{csv} not found: nothing to measure (the oracle needs the Sartorius ground truth)")
        return None
    frame = pd.read_csv(csv, usecols=["id", "annotation", "cell_type"])
    chosen = choose_images(frame.groupby("id")["cell_type"].first(), args.per_type, args.seed, args.all)
    label_maps = read_sartorius_csv(csv, SARTORIUS_SHAPE, allow_overlap=True, column="annotation",
                                    ids=list(chosen.index))
    return chosen, [label_maps[image_id] for image_id in chosen.index]


def dsb2018_images(args):
    """(image id -> kind Series, ground-truth label maps) of the DSB2018 images to score, or None.

    Every image of the converted COCO file, a seeded subset per kind, or (`--val`) the validation
    images of the config's split, in the order the evaluation scores them.
    """
    from cell_seg.data.dataset import CocoDataset

    data_root = Path(args.data)
    images_dir = data_root / "dsb2018"
    if not images_dir.is_dir():
        print(f"{images_dir} not found: nothing to measure (the oracle needs the DSB2018 ground truth)")
        return None
    if not DSB2018_COCO.is_file():
        if not args.convert:
            print(f"{DSB2018_COCO} not found: make it with `python -m bench.oracle --dataset dsb2018 --convert` "
                  "(bench.accuracy.convert, as `python -m bench.accuracy --dataset dsb2018 --config "
                  "configs/dsb2018_unet_lite0.yaml` does before training)")
            return None
        from bench.accuracy import convert

        convert("dsb2018", data_root, DSB2018_COCO.parent)
    if args.val:
        from cell_seg.config import load_config
        from cell_seg.train import resolve_data

        config = load_config(args.config, [f"data.coco={DSB2018_COCO}", f"data.images={images_dir}"])
        _, coco, images_dir = resolve_data(config)
        print(f"validation images of the split of {args.config} (split_group {config.data.split_group}, "
              f"val_fraction {config.data.val_fraction}, seed {config.data.split_seed})")
    else:
        coco = read_json(DSB2018_COCO)
    dataset = CocoDataset(coco, images_dir, source=DSB2018_COCO)
    kinds = pd.Series({image_id: dataset.image_class(image_id) for image_id in dataset.image_ids})
    chosen = choose_images(kinds, args.per_type, args.seed, args.all or args.val)
    return chosen, [dataset.load_labels(image_id)[0] for image_id in chosen.index]


def predict_variants(truths, rows, blur, config):
    """Post-process every variant's oracle maps of every image: ({variant: [label map]}, {variant: seconds})."""
    predictions, seconds = {row[0]: [] for row in rows}, {row[0]: 0.0 for row in rows}
    for truth in truths:
        probs_by_width = {}
        for name, mode, border_width, overrides in rows:
            if border_width not in probs_by_width:
                probs_by_width[border_width] = oracle_probs(truth, border_width, blur)
            start = time.perf_counter()
            label_map, _ = to_instances(probs_by_width[border_width], CHANNELS, mode=mode, config=config, **overrides)
            seconds[name] += time.perf_counter() - start
            predictions[name].append(label_map)
    return predictions, seconds


def n_instances(label_map):
    """Number of distinct instances present in a label map."""
    return int(np.count_nonzero(np.bincount(label_map.ravel())[1:]))


def print_table(scores, groups, columns, found, seconds, extra=None):
    """One line per variant: mean per-image score in each group (`groups[i]`: the group of image i,
    `columns` in the order to print), over all images, and (oracle variants) instances found, time
    and ratio to the first variant. `extra`: more rows ({name: per-image scores}), scores only."""
    groups = np.asarray(groups)
    width = max(9, *(len(c) + 2 for c in columns))
    header = f"{'variant':42s}" + "".join(f"{c:>{width}s}" for c in columns)
    header += f"{'all':>9s}{'cells found':>13s}{'ms/img':>8s}{'vs base':>9s}"
    print(header)
    print("-" * len(header))
    baseline = None
    for name, per_image in {**scores, **(extra or {})}.items():
        per_image = np.asarray(per_image)
        cells = "".join(f"{np.mean(per_image[groups == c]):{width}.3f}" if np.any(groups == c) else f"{'-':>{width}s}"
                        for c in columns)
        row = f"{name:42s}{cells}{np.mean(per_image):9.3f}"
        if name in scores:
            baseline = np.mean(per_image) if baseline is None else baseline
            row += f"{found[name]:12.2f}x{1000 * seconds[name] / len(per_image):8.1f}{np.mean(per_image) / baseline:8.2f}x"
        print(row)


def model_scores(path, n_images):
    """{'model: <mode>': per-image scores} of a metrics.json of `cell_seg.evaluate` (its modes' `per_image`).

    Raises ValueError when it has none, or not one per image scored here.
    """
    modes = read_json(path)["modes"]
    out = {f"model: {mode}": np.asarray(values["per_image"]) for mode, values in modes.items() if "per_image" in values}
    if not out:
        raise ValueError(f"{path}: no per-image scores (modes.*.per_image), as <run>/cross/metrics.json has")
    for name, values in out.items():
        if len(values) != n_images:
            raise ValueError(f"{path}: {len(values)} per-image scores for {name!r} but {n_images} images scored "
                             "(--model-metrics needs --val and the run's split)")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=("sartorius", "dsb2018"), default="sartorius")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="shared data root")
    parser.add_argument("--per-type", type=int, default=20, help="images per cell type / kind in the seeded subset")
    parser.add_argument("--all", action="store_true", help="use every image instead of the subset")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset")
    parser.add_argument("--postprocess", help="postprocess.json to start from (e.g. a run's tuned settings); default: "
                        "the package defaults")
    parser.add_argument("--min-area", type=int, help="post-processing min_area (default: --postprocess's, else "
                        f"{PostprocessConfig().min_area})")
    parser.add_argument("--distance-thresholds", type=float, nargs="+", default=[0.05, 0.2, 0.5],
                        help="distance-mode seed thresholds to score")
    parser.add_argument("--centre-thresholds", type=float, nargs="+", default=[0.6, 0.7],
                        help="centre-mode seed thresholds on the centre map to score")
    parser.add_argument("--centre-distance", type=float, default=0.2,
                        help="centre mode: the distance map above which seeds lie (its distance_threshold)")
    parser.add_argument("--border-thresholds", type=float, nargs="+", default=[0.5],
                        help="watershed border thresholds to score")
    parser.add_argument("--border-widths", type=int, nargs="+", default=[0, 1, 2],
                        help="border target ring widths to score (configs/dsb2018_unet_lite0.yaml trains 1)")
    parser.add_argument("--kind", nargs="+", help="score only images of these cell types / kinds")
    parser.add_argument("--blur", type=float, default=0.0, help="Gaussian blur (sigma, px) of every map; 0 = perfect")
    dsb = parser.add_argument_group("dsb2018")
    dsb.add_argument("--convert", action="store_true", help=f"make {DSB2018_COCO.name} when missing")
    dsb.add_argument("--val", action="store_true",
                     help="every validation image of --config's split (instead of the subset; --kind still applies)")
    dsb.add_argument("--config", default=str(DSB2018_CONFIG.relative_to(REPO)), help="config whose split --val takes")
    dsb.add_argument("--crowding-edges", type=int, nargs=2, default=list(CROWDING_EDGES), metavar=("LOW", "HIGH"),
                     help="nuclei per image that bound the crowding bands")
    dsb.add_argument("--model-metrics", help="metrics.json with per-image scores of a model on the --val images")
    args = parser.parse_args(argv)

    loaded = dsb2018_images(args) if args.dataset == "dsb2018" else sartorius_images(args)
    if loaded is None:
        return 0
    chosen, truths = loaded
    extra = {}
    if args.model_metrics:
        try:
            extra = model_scores(args.model_metrics, len(truths))
        except ValueError as error:
            parser.error(str(error))
    if args.kind:  # after the model's scores are matched to the images they were computed on
        keep = np.isin(chosen.values, args.kind)
        chosen, truths = chosen[keep], [truth for truth, kept in zip(truths, keep) if kept]
        extra = {name: values[keep] for name, values in extra.items()}
    config = PostprocessConfig.from_dict(read_json(args.postprocess)) if args.postprocess else PostprocessConfig()
    if args.min_area is not None:
        config = dataclasses.replace(config, min_area=args.min_area)
    print(f"{describe(chosen)}; post-processing {config.to_dict()}; maps blurred with sigma {args.blur:g} px")

    rows = variants(args.distance_thresholds, args.border_thresholds, args.border_widths, args.centre_thresholds,
                    args.centre_distance)
    predictions, seconds = predict_variants(truths, rows, args.blur, config)
    scores = {name: map_iou(truths, predictions[name])["per_image"] for name, *_ in rows}
    n_true = sum(n_instances(m) for m in truths)
    found = {name: sum(int(m.max()) for m in predictions[name]) / max(n_true, 1) for name, *_ in rows}
    kinds = list(chosen.values)
    print_table(scores, kinds, sorted(set(kinds)), found, seconds, extra)
    if args.dataset == "dsb2018":
        edges = tuple(args.crowding_edges)
        bands = crowding_bands([n_instances(m) for m in truths], edges)
        counts = pd.crosstab(pd.Series(kinds, name="kind"), pd.Series(bands, name="band"))
        print(f"\nby crowding (nuclei per image); images per band and kind:\n"
              f"{counts.reindex(columns=band_names(edges), fill_value=0)}\n")
        print_table(scores, bands, band_names(edges), found, seconds, extra)
    print("scores: mean over images of the Sartorius metric (IoU 0.50:0.05:0.95); 'cells found' = predicted / true "
          "instances; 'vs base' = ratio to the components baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
