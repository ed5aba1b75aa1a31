"""Render the README figures from the embedded DSB2018 demo sample into docs/figures/.

- `demo_ground_truth.png`: four demo images (fluorescence, histology, brightfield) above their
  ground-truth nuclei, one colour per nucleus;
- `demo_overview.png`: the data-set overview (instances and images per modality, nuclei per
  image, nucleus areas, pixel intensities);
- `oracle_components_vs_watershed.png`: on the demo image where touching nuclei are most common,
  perfect network outputs made from the ground truth (foreground = union of the nuclei, border =
  where two nuclei touch, as the training target) post-processed by connected components and by
  the seeded watershed, each coloured by matched (TP), spurious (FP) and missed (FN) nuclei.

It also prints the oracle scores over the whole demo set, the watershed against the baseline
(components) measured in the same run: the most a border channel can buy on this data.

Needs only the package (the demo data ships with it), no network and no training.

Usage:
    python -m bench.make_figures [--out docs/figures]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import REPO
from cell_seg import viz
from cell_seg.data.dataset import CocoDataset
from cell_seg.data.targets import build_targets
from cell_seg.metrics import map_iou
from cell_seg.postprocess import to_instances
from cell_seg.sample_data import COCO_JSON, IMAGES_DIR

CHANNELS = ["foreground", "border"]
FIGURES = ("demo_ground_truth.png", "demo_overview.png", "oracle_components_vs_watershed.png")


def oracle_predictions(truth):
    """Label maps that components and watershed make from perfect probabilities of `truth`."""
    probs = build_targets(truth, None, CHANNELS, 1)
    out = {}
    for mode in ("components", "watershed"):
        out[mode], _ = to_instances(probs, CHANNELS, mode=mode, min_area=0)
    return out


def shrink_png(path, colors=256):
    """Rewrite a PNG with a 256-colour palette (about 2.5x smaller for photos, no visible change;
    small areas of one colour, such as legend patches, may shift)."""
    from PIL import Image

    from cell_seg.files import atomic_path

    with Image.open(path) as image:
        quantized = image.convert("RGB").quantize(colors, method=Image.Quantize.MEDIANCUT)
    with atomic_path(path) as tmp:
        quantized.save(tmp, format="PNG", optimize=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "figures"), help="folder for the PNGs (default docs/figures)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    started = time.time()
    dataset = CocoDataset(COCO_JSON, IMAGES_DIR)
    plt = viz._pyplot()

    # Ground truth of one image per look: two fluorescence (sparse, crowded), histology, brightfield.
    by_modality = {}
    for image_id in dataset.image_ids:
        by_modality.setdefault(dataset.image_info(image_id)["modality"], []).append(image_id)
    fluorescence = sorted(by_modality["fluorescence"], key=dataset.n_instances)
    picks = [fluorescence[len(fluorescence) // 2], fluorescence[-1], by_modality["histology"][0], by_modality["brightfield"][0]]
    fig = viz.plot_examples(dataset, image_ids=picks, save=out / "demo_ground_truth.png")
    plt.close(fig)
    fig = viz.plot_dataset_overview(dataset, by="modality", save=out / "demo_overview.png")
    plt.close(fig)

    # Oracle: every image, both modes; the figure shows the image where merging costs most.
    truths, predictions = [], {"components": [], "watershed": []}
    for image_id in dataset.image_ids:
        truth, _ = dataset.load_labels(image_id)
        truths.append(truth)
        for mode, labels in oracle_predictions(truth).items():
            predictions[mode].append(labels)
    scores = {mode: map_iou(truths, labels) for mode, labels in predictions.items()}
    gap = np.array(scores["watershed"]["per_image"]) - np.array(scores["components"]["per_image"])
    worst = int(np.argmax(gap))
    image_id = dataset.image_ids[worst]
    fig = viz.plot_comparisons(
        dataset.load_image(image_id),
        truths[worst],
        {mode: labels[worst] for mode, labels in predictions.items()},
        threshold=0.5,
        title="Perfect probabilities made from the ground truth, two post-processings",
        save=out / "oracle_components_vs_watershed.png",
    )
    plt.close(fig)

    baseline, improved = scores["components"]["map"], scores["watershed"]["map"]
    print(f"demo set, {len(truths)} images, oracle probabilities (mAP over IoU 0.50:0.95):")
    print(f"  components (baseline): {baseline:.3f}")
    print(f"  watershed + border:    {improved:.3f}  ({improved / baseline:.2f}x the baseline)")
    print(f"  figure image {dataset.key(image_id)[:16]}: components {scores['components']['per_image'][worst]:.3f}, "
          f"watershed {scores['watershed']['per_image'][worst]:.3f}")
    shrink_png(out / "demo_ground_truth.png")  # photos: 2.5x smaller; the others keep their exact colours
    for name in FIGURES:
        print(f"wrote {out / name} ({(out / name).stat().st_size // 1024} KiB)")
    print(f"{time.time() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
