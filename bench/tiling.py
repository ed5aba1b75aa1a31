"""Benchmark: tiled prediction, tiles joined by keeping centres or by linear blending, against whole images.

Model: the released DSB2018 U-Net-EfficientNet-Lite0 (`weights/dsb2018_unet_lite0`, tuned watershed
post-processing from its metadata). Images: the DSB2018 validation images of the
`configs/dsb2018_unet.yaml` split (seeded, as `python -m bench.accuracy` makes it) that are larger than
--tile in either dimension, so that tiling changes something. Baseline: whole-image prediction.

Printed per way of joining tiles: mean and largest absolute difference of the probability maps
from the whole-image ones, the DSB mAP over IoU 0.50:0.95 on those images, and its difference
from the whole-image mAP. A U-Net-B0 sees far beyond 32 pixels, so neither way equals whole-image
prediction here; the figure says which one comes closer.

Usage:
    python -m bench.tiling [--data ../shared/data] [--tile 256] [--overlap 64] [--limit N]
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from bench.accuracy import convert  # noqa: E402
from bench.common import DEFAULT_DATA, REPO  # noqa: E402
from cell_seg.config import load_config  # noqa: E402

BLENDS = ("center", "linear")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder holding dsb2018/")
    parser.add_argument("--model", default=str(REPO / "weights" / "dsb2018_unet_effb0"), help="model to predict with")
    parser.add_argument("--tile", type=int, default=256, help="tile size (default 256)")
    parser.add_argument("--overlap", type=int, default=64, help="least overlap of neighbouring tiles (default 64)")
    parser.add_argument("--limit", type=int, help="at most this many images")
    args = parser.parse_args(argv)

    data_root = Path(args.data)
    if not (data_root / "dsb2018").is_dir():
        print(f"{data_root / 'dsb2018'} not found: nothing to measure", file=sys.stderr)
        return 0
    from cell_seg.data.dataset import CocoDataset
    from cell_seg.evaluate import score_predictions
    from cell_seg.inference import Predictor
    from cell_seg.train import resolve_data

    cache = REPO / "bench" / "out"
    cache.mkdir(parents=True, exist_ok=True)
    coco, images = convert("dsb2018", data_root, cache)
    config = load_config(REPO / "configs" / "dsb2018_unet.yaml", [f"data.coco={coco}", f"data.images={images}"])
    _, val_coco, images = resolve_data(config)
    dataset = CocoDataset(val_coco, images)
    large = [i for i in dataset.image_ids if max(dataset.image_shape(i)) > args.tile][: args.limit]
    predictor = Predictor.load(args.model)
    settings = predictor.postprocess
    mode = settings.mode

    records = {"whole": [], **{blend: [] for blend in BLENDS}}
    seconds = dict.fromkeys(records, 0.0)
    for number, image_id in enumerate(large, 1):
        image = dataset.load_image(image_id)
        truth, _ = dataset.load_labels(image_id)
        for way in records:
            started = time.perf_counter()
            if way == "whole":
                probs = predictor.predict_probs(image)
            else:
                probs = predictor.predict_probs(image, tile=args.tile, overlap=args.overlap, blend=way)
            seconds[way] += time.perf_counter() - started
            records[way].append({"key": image_id, "class": None, "probs": probs, "truth": truth})
        print(f"\r{number}/{len(large)} images", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    whole_map = score_predictions(records["whole"], predictor.channels, settings)
    shapes = sorted({dataset.image_shape(i) for i in large})
    print(f"{len(large)} DSB2018 validation images larger than {args.tile} px (shapes {shapes}), "
          f"model {Path(args.model).name}, {mode} post-processing, tile {args.tile}, overlap {args.overlap}")
    print(f"{'join':<8} {'mean |dp|':>10} {'max |dp|':>9} {'mAP':>7} {'vs whole':>9} {'seconds':>8}")
    print(f"{'whole':<8} {0:>10.4f} {0:>9.3f} {whole_map:>7.3f} {0:>+9.3f} {seconds['whole']:>8.1f}   (baseline)")
    for blend in BLENDS:
        diffs = [np.abs(t["probs"] - w["probs"]) for t, w in zip(records[blend], records["whole"])]
        mean = float(np.mean([d.mean() for d in diffs]))
        largest = float(max(d.max() for d in diffs))
        score = score_predictions(records[blend], predictor.channels, settings)
        print(f"{blend:<8} {mean:>10.4f} {largest:>9.3f} {score:>7.3f} {score - whole_map:>+9.3f} {seconds[blend]:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
