"""Where does a trained model lose: in its foreground, or in telling touching cells apart?

Every image of a COCO validation set is predicted (without TTA unless `--tta`) and post-processed
with the model's own settings, then scored with the competition metric beside two half-oracles
made from that same prediction:

- "perfect separation": the pixels the model's instances cover, labelled with the
  true cell under them; a predicted pixel on true background joins the true cell its predicted
  cell overlaps most, or, when that predicted cell overlaps none, stays a false cell of its own.
  Cells are told apart perfectly; foreground, false cells and missed cells are the model's. Its gap
  to the model's score is what the separation of touching cells loses.
- "exact foreground": the same the other way round: the true cells' pixels,
  labelled with the predicted cell over them; a true pixel the model calls background joins the
  predicted cell that covers most of its true cell, or, when none does, its true cell becomes a
  cell of its own. The separation is the model's; the foreground is exact. Its gap to the model's
  score is what the foreground loses: missed cells, false cells and outlines.

and two that take apart what the second one fixes:
- "no false cells": the model's instances without those lying mostly (over half) on true background,
- "missed cells added": the model's instances plus, on the background it predicts, every true cell
  it missed (over half of it predicted background), as drawn.
What the exact foreground gains beyond these two is the outline of the cells found.

Per image kind (the image's class: the cell type for Sartorius, the modality for DSB2018), the error
counts behind them, as fractions of each image's true or predicted cells (mean over images):
- split: true cells of which two or more predicted cells each hold at least 20 %,
- merged: predicted cells that hold at least 20 % of each of two or more true cells,
- missed: true cells of which more than half is predicted background,
- false: predicted cells of which more than half lies on true background,
- matched IoU and area ratio: over the true and predicted cells that match at IoU > 0.5, the median
  IoU and the median of predicted over true area (above 1: the outlines are drawn too wide), and the
  median area of the true cells in pixels.

`bench/oracle.py` asks the other question (what each representation gives back from perfect maps).

Usage:
    python -m bench.loss_split --model weights/sartorius_unet_lite0_distance --coco bench/out/sart_val.json \
        --images ../shared/data/sartorius/train --out bench/results/loss_split_sartorius.json [--tta]
"""

import sys

import numpy as np

from bench.common import scoring_parser
from cell_seg.files import write_json_atomic
from cell_seg.metrics import map_iou

SHARE = 0.2  # the least share of a cell that counts as "holding" it
SCORES = ("model", "perfect separation", "exact foreground", "no false cells", "missed cells added")
COUNTS = ("split", "merged", "missed", "false", "matched IoU", "area ratio", "true area")
COLUMNS = SCORES + COUNTS


def overlap_table(truth, pred):
    """Pixels shared by every true (rows) and predicted (columns) label, background 0 included."""
    truth, pred = np.asarray(truth, np.int64), np.asarray(pred, np.int64)
    n_pred = int(pred.max()) + 1
    return np.bincount((truth * n_pred + pred).ravel(), minlength=(int(truth.max()) + 1) * n_pred).reshape(-1, n_pred)


def overlap_counts(truth, pred, table=None):
    """The error counts of one image: {split, merged, missed, false, matched IoU, area ratio, true area}.

    Example (two true cells, one predicted cell over both):
        >>> truth = np.zeros((4, 8), np.int32); truth[:, :4] = 1; truth[:, 4:] = 2
        >>> pred = np.zeros((4, 8), np.int32); pred[:, 1:] = 1
        >>> {k: round(v, 2) for k, v in overlap_counts(truth, pred).items()}
        {'split': 0.0, 'merged': 1.0, 'missed': 0.0, 'false': 0.0, 'matched IoU': 0.57, 'area ratio': 1.75, 'true area': 16.0}
    """
    table = overlap_table(truth, pred) if table is None else table
    true_area, pred_area = table[1:].sum(1), table[:, 1:].sum(0)
    true_ids, pred_ids = true_area > 0, pred_area > 0
    shared = table[1:, 1:]
    held = shared >= SHARE * np.maximum(true_area, 1)[:, None]  # [true, pred]: pred holds >= 20 % of true
    iou = shared / np.maximum(true_area[:, None] + pred_area[None, :] - shared, 1)
    pairs = np.nonzero(iou > 0.5)
    matched = iou[pairs]
    ratios = pred_area[pairs[1]] / np.maximum(true_area[pairs[0]], 1)

    def share(flags):
        return float(flags.mean()) if flags.size else 0.0

    return {"split": share((held.sum(1) >= 2)[true_ids]), "merged": share((held.sum(0) >= 2)[pred_ids]),
            "missed": share((table[1:, 0] > 0.5 * true_area)[true_ids]),
            "false": share((table[0, 1:] > 0.5 * pred_area)[pred_ids]),
            "matched IoU": float(np.median(matched)) if matched.size else 0.0,
            "area ratio": float(np.median(ratios)) if ratios.size else 0.0,
            "true area": float(np.median(true_area[true_ids])) if true_ids.any() else 0.0}


def without_false_cells(truth, pred, table=None):
    """`pred` without its cells that lie mostly (over half) on true background."""
    table = overlap_table(truth, pred) if table is None else table
    false = table[0] > 0.5 * table.sum(0)
    false[0] = False
    return np.where(false[pred], 0, pred)


def with_missed_cells(truth, pred, table=None):
    """`pred` plus, on its background, every true cell of which over half is predicted background."""
    table = overlap_table(truth, pred) if table is None else table
    missed = table[:, 0] > 0.5 * table.sum(1)
    missed[0] = False
    return np.where((pred == 0) & missed[truth], truth + int(pred.max()), pred)


def relabel_over(keep, other, table=None):
    """The pixels of label map `keep`, labelled by label map `other` (see the module docstring).

    Where `other` has a label, that label; elsewhere on `keep`'s instance, the `other` label that
    overlaps that instance most, or a fresh label for the instance when it overlaps none.
    `table` is `overlap_table(keep, other)` when the caller has it.

    Example (one true cell cut in two by the prediction, and a false cell):
        >>> truth = np.array([[1, 1, 1, 1, 0, 0]]); pred = np.array([[2, 2, 3, 3, 3, 4]])
        >>> relabel_over(pred, truth).tolist()      # perfect separation: one cell, the false one kept
        [[1, 1, 1, 1, 1, 6]]
        >>> relabel_over(truth, pred).tolist()      # exact foreground: still two cells
        [[2, 2, 3, 3, 0, 0]]
    """
    keep, other = np.asarray(keep, np.int64), np.asarray(other, np.int64)
    table = overlap_table(keep, other) if table is None else table
    n_other = table.shape[1]
    fresh = n_other + np.arange(len(table))
    fallback = np.where(table[:, 1:].max(1) > 0, table[:, 1:].argmax(1) + 1, fresh) if n_other > 1 else fresh
    fallback[0] = 0
    return np.where((keep > 0) & (other > 0), other, fallback[keep]).astype(np.int32)


def image_row(truth, pred):
    """The scores (`SCORES`) and error counts (`COUNTS`) of one image's true and predicted label maps."""
    truth, pred = np.asarray(truth, np.int64), np.asarray(pred, np.int64)
    table = overlap_table(truth, pred)  # one pass over the pixels serves every variant and count
    variants = {"model": pred, "perfect separation": relabel_over(pred, truth, table.T),
                "exact foreground": relabel_over(truth, pred, table),
                "no false cells": without_false_cells(truth, pred, table),
                "missed cells added": with_missed_cells(truth, pred, table)}
    row = {name: float(map_iou([truth], [labels])["map"]) for name, labels in variants.items()}
    row.update(overlap_counts(truth, pred, table))
    return row


def summarise(rows, kinds):
    """Mean of every column over all images and per kind: {"all" or kind: {"images": n, column: mean}}."""
    groups = {"all": rows}
    for kind in sorted({k for k in kinds if k is not None}):
        groups[kind] = [r for r, k in zip(rows, kinds) if k == kind]
    return {name: {"images": len(group), **{c: float(np.mean([r[c] for r in group])) for c in COLUMNS}}
            for name, group in groups.items() if group}


def markdown(summary):
    """The summary as a markdown table, a row per kind."""
    lines = ["| images | n | " + " | ".join(COLUMNS) + " |", "| --- " * (len(COLUMNS) + 2) + "|"]
    for name, s in summary.items():
        cells = [f"{s[c]:.0f}" if c == "true area" else f"{s[c]:.3f}" for c in COLUMNS]
        lines.append(f"| {name} | {s['images']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    from cell_seg.data.dataset import CocoDataset
    from cell_seg.evaluate import predict_dataset
    from cell_seg.inference import Predictor
    from cell_seg.postprocess import to_instances

    parser = scoring_parser(__doc__)
    parser.add_argument("--model", required=True, help="run directory or exported SavedModel")
    parser.add_argument("--tta", action="store_true", help="average the 8 flips and rotations (8x slower)")
    args = parser.parse_args(argv)
    predictor = Predictor.load(args.model)
    dataset = CocoDataset(args.coco, args.images, source=args.coco)
    records = predict_dataset(predictor, dataset, tta=args.tta)
    rows = [image_row(r["truth"], to_instances(r["probs"].astype(np.float32), predictor.channels,
                                                config=predictor.postprocess)[0]) for r in records]
    summary = summarise(rows, [r["class"] for r in records])
    write_json_atomic({"model": str(args.model), "tta": args.tta, "coco": str(args.coco), "summary": summary,
                       "per_image": [{"key": r["key"], "class": r["class"], **row} for r, row in zip(records, rows)]},
                      args.out, indent=2)
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
