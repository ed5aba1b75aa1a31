"""How much does a model's score on stained tissue move when the stain changes? A robustness check.

Unseen colour tissue (another lab's haematoxylin and eosin, another scanner) differs from the
validation images mostly in how much of each stain there is. This script takes the validation
images of one kind (default: `histology`), separates each into its haematoxylin, eosin and DAB
optical densities, scales the first two (`cell_seg.data.augment.scale_stains`, the shifts below)
and scores the model on every shifted copy with its own post-processing settings and defaults
(scale, size rule, TTA), as `python -m cell_seg.predict` would run it. Nothing is tuned, so the drop from the
`none` row to another is what that stain change costs.

    python -m bench.stain_shift --model weights/dsb2018_unet_lite0 --coco bench/out/dsb_val.json \
        --images ../shared/data/dsb2018 --out bench/results/stain_shift_dsb2018.json

The shifts are simulated: they say how fragile the model is to stain amounts, not what it scores
on another lab's tissue, whose nuclei, sizes and textures differ as well. A model trained with
`data.stain_jitter` has seen such shifts (factors 1/2 to 2 for `stain_jitter: 2`): for it the rows
inside that range measure what the training taught, not robustness to something new.
"""

import sys

from bench.common import scoring_parser
from cell_seg.data.augment import scale_stains
from cell_seg.files import write_json_atomic

#: name -> (haematoxylin factor, eosin factor): optical densities are multiplied by these.
SHIFTS = {
    "none": (1.0, 1.0),
    "haematoxylin x0.6": (0.6, 1.0),
    "haematoxylin x1.5": (1.5, 1.0),
    "eosin x0.3": (1.0, 0.3),
    "eosin x2": (1.0, 2.0),
    "faded (both x0.6)": (0.6, 0.6),
    "strong (both x1.5)": (1.5, 1.5),
}


class ShiftedDataset:
    """The images of `dataset` whose class is `kind`, loaded with a stain shift (the rest of the
    `CocoDataset` interface that `predict_dataset` uses is passed through)."""

    def __init__(self, dataset, kind, factors):
        self.dataset, self.factors = dataset, factors
        self.image_ids = [i for i in dataset.image_ids if dataset.image_class(i) == kind]

    def load_image(self, image_id):
        image = self.dataset.load_image(image_id)
        if self.factors == (1.0, 1.0):
            return image
        return scale_stains(image, *self.factors)

    def __getattr__(self, name):
        return getattr(self.dataset, name)


def main(argv=None):
    from cell_seg.data.dataset import CocoDataset
    from cell_seg.evaluate import predict_dataset, score_predictions
    from cell_seg.inference import Predictor

    parser = scoring_parser(__doc__)
    parser.add_argument("--model", required=True, help="run directory or exported SavedModel")
    parser.add_argument("--kind", default="histology", help="image class of the images to shift (default: histology)")
    args = parser.parse_args(argv)
    predictor = Predictor.load(args.model)
    dataset = CocoDataset(args.coco, args.images, source=args.coco)
    n_images = len(ShiftedDataset(dataset, args.kind, (1.0, 1.0)).image_ids)
    if not n_images:
        parser.error(f"--coco: no image of class {args.kind!r} in {args.coco}")
    results = {}
    for name, factors in SHIFTS.items():
        shifted = ShiftedDataset(dataset, args.kind, factors)
        records = predict_dataset(predictor, shifted, desc=name, tta=predictor.tta)
        score = score_predictions(records, predictor.channels, predictor.postprocess, full=True)
        results[name] = {"map": score["map"], "foreground_iou": score["foreground_iou"]}
        print(f"{name}: mAP {score['map']:.3f}, foreground IoU {score['foreground_iou']:.3f} "
              f"({n_images} images)", file=sys.stderr)
    write_json_atomic({"model": args.model, "kind": args.kind, "images": n_images,
                       "tta": bool(predictor.tta), "results": results}, args.out, indent=2)
    return 0


if __name__ == "__main__":
    from cell_seg.cli.common import run_main

    run_main(main)
