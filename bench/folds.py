"""Does training on more sources help on sources still unseen? Halve the validation, train on one half.

Splits a config's validation part into the two halves of `evaluate --cross-tune` (whole sources
together, each kind spread over both) and writes three COCO files: the training part plus half A
(`<prefix>_trainA.json`), half A alone (`<prefix>_valA.json`) and half B (`<prefix>_valB.json`). A
run trained on the first (`data.train=<prefix>_trainA.json data.val=<prefix>_valB.json`) and the
model trained without half A, both scored on half B with the same settings, tell whether the
images of half A would help a release trained on the whole validation too.

    python -m bench.folds --config configs/dsb2018_unet_lite0_grey.yaml \
        --coco bench/out/dsb2018_all.json --images ../shared/data/dsb2018 --prefix bench/out/dsb
"""

import argparse
import sys
from collections import Counter

from cell_seg.config import load_config
from cell_seg.data.coco import subset_coco
from cell_seg.evaluate import cross_folds
from cell_seg.files import write_json_atomic
from cell_seg.train import resolve_data


def halves(config):
    """(train COCO + half A, half A, half B) of a config's split."""
    train, val, _ = resolve_data(config)
    records = [{"class": image.get("image_class"), "group": str(image.get("source") or image["file_name"]),
                "id": image["id"]} for image in val["images"]]
    part_a, part_b = ([record["id"] for record in part] for part in cross_folds(records))
    half_a, half_b = subset_coco(val, part_a), subset_coco(val, part_b)
    merged = dict(train, images=train["images"] + half_a["images"],
                  annotations=train["annotations"] + half_a["annotations"])
    return merged, half_a, half_b


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the training config whose split is halved")
    parser.add_argument("--coco", required=True, help="COCO JSON of all the images (the config's data.coco)")
    parser.add_argument("--images", required=True, help="folder the COCO file_name entries are relative to")
    parser.add_argument("--prefix", required=True, help="path prefix of the three COCO files written")
    args = parser.parse_args(argv)
    config = load_config(args.config, [f"data.coco={args.coco}", f"data.images={args.images}"])
    merged, half_a, half_b = halves(config)
    for suffix, coco in (("trainA", merged), ("valA", half_a), ("valB", half_b)):
        write_json_atomic(coco, f"{args.prefix}_{suffix}.json")
    kinds = lambda coco: dict(Counter(str(image.get("image_class")) for image in coco["images"]))  # noqa: E731
    print(f"training + A: {len(merged['images'])} images; A: {kinds(half_a)}; B: {kinds(half_b)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from cell_seg.cli.common import run_main

    run_main(main)
