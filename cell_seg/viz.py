"""The one import for every figure and overlay function, and the entry of the overlay command line.

The functions live by job: `cell_seg.overlays` (RGB overlays and truth/prediction matching, numpy
and OpenCV only), `cell_seg.plots` (matplotlib figures, curves and score tables) and
`cell_seg.explore` (data-set tables and figures); `from cell_seg import viz` offers them all.

    python -m cell_seg.viz --image IMG --labels LABELS.png [--out overlay.png]
    python -m cell_seg.viz --image IMG --submission submission.csv --id ID [--truth TRUTH.png]

runs `cell_seg.cli.viz`, where the command line lives.
"""

from cell_seg.errors import DataError
from cell_seg.explore import (
    dataset_tables,
    merge_stats,
    merge_table,
    plot_class_counts,
    plot_dataset_overview,
    plot_examples,
    plot_instance_areas,
    plot_instances_per_image,
    plot_intensity_histograms,
    plot_merge_stats,
)
from cell_seg.overlays import (
    MATCH_COLORS,
    MATCH_LABELS,
    comparison_overlay,
    display_image,
    fill_overlay,
    instance_edges,
    instance_overlay,
    label_colors,
    match_instances,
    outline_overlay,
)
from cell_seg.plots import (
    DPI,
    _counts_text,
    _pyplot,
    format_score_table,
    plot_class_scores,
    plot_comparison,
    plot_comparisons,
    plot_history,
    plot_instances,
    plot_overlay,
    plot_probabilities,
    plot_score_table,
    plot_truth_vs_prediction,
    score_table,
)


__all__ = [
    "DataError",
    "dataset_tables",
    "merge_stats",
    "merge_table",
    "plot_class_counts",
    "plot_dataset_overview",
    "plot_examples",
    "plot_instance_areas",
    "plot_instances_per_image",
    "plot_intensity_histograms",
    "plot_merge_stats",
    "MATCH_COLORS",
    "MATCH_LABELS",
    "comparison_overlay",
    "display_image",
    "fill_overlay",
    "instance_edges",
    "instance_overlay",
    "label_colors",
    "match_instances",
    "outline_overlay",
    "DPI",
    "_counts_text",
    "_pyplot",
    "format_score_table",
    "plot_class_scores",
    "plot_comparison",
    "plot_comparisons",
    "plot_history",
    "plot_instances",
    "plot_overlay",
    "plot_probabilities",
    "plot_score_table",
    "plot_truth_vs_prediction",
    "score_table",
    "read_csv_labels",
]


# --- reading --------------------------------------------------------------------------------------


def read_csv_labels(path, image_id, shape, column=None):
    """Label map of one image from a Sartorius-style CSV (submission `id,predicted` or train.csv
    `id,annotation`), later rows winning overlaps: `cell_seg.submission.read_sartorius_csv` for one id.

    Example:
        >>> labels = read_csv_labels("submission.csv", "0030fd0e6378", (520, 704))   # doctest: +SKIP
    """
    from cell_seg.submission import read_sartorius_csv

    return read_sartorius_csv(path, {str(image_id): shape}, allow_overlap=True, column=column,
                              ids=[image_id])[str(image_id)]


if __name__ == "__main__":  # python -m cell_seg.viz: the command line lives in cell_seg.cli.viz
    from cell_seg.cli.viz import cli

    cli()
