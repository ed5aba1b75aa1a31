"""Average the weights of runs of one architecture into a new run directory (a "model soup").

Runs fine-tuned from the same network (e.g. the release and a `bench/folds.py` run started from
it) stay in one basin, so the mean of their weights is a model of the same size and cost that may
score like their ensemble. The new run directory gets `model.keras` with the mean weights and the
first run's `metadata.json` and `config.yaml`; its `postprocess.json` holds the settings of
`--postprocess` (a run directory or an export, e.g. the release; read as `predict` reads them) or
else of the first run.
Export and score it as any run:

    python -m bench.soup --runs runs/accuracy_sartorius_sartorius_unet_lite0_distance_more2 \
        runs/accuracy_sartorius_sartorius_unet_lite0_distance_foldA \
        --postprocess weights/sartorius_unet_lite0_distance --out runs/sartorius_soup
    python -m cell_seg.export --model runs/sartorius_soup --out exported/sartorius_soup --weights-dtype float16 --tta
"""

import argparse
import shutil
from pathlib import Path

from cell_seg.files import write_json_atomic


def mean_weights(weight_lists):
    """Element-wise mean of the float arrays of several `get_weights()` lists (others from the first)."""
    first = weight_lists[0]
    for k, weights in enumerate(weight_lists[1:], start=2):
        shapes = [w.shape for w in weights]
        if shapes != [w.shape for w in first]:
            raise ValueError(f"run {k} has other weight shapes than run 1: not the same architecture")
    return [sum(ws[i] for ws in weight_lists) / len(weight_lists) if first[i].dtype.kind == "f" else first[i]
            for i in range(len(first))]


def main(argv=None):
    from cell_seg.errors import ConfigError
    from cell_seg.metadata import ModelMetadata
    from cell_seg.models import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="run directories (two or more) holding model.keras")
    parser.add_argument("--postprocess", help="run directory or export whose post-processing settings the soup keeps "
                                              "(default: the first run's)")
    parser.add_argument("--out", required=True, help="new run directory")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("--runs: two or more run directories")
    runs = [Path(run) for run in args.runs]
    for run in runs:
        for name in ("model.keras", "metadata.json"):
            if not (run / name).is_file():
                raise ConfigError(f"{run / name}: missing (a run directory holds model.keras and metadata.json)")
    settings = ModelMetadata.of_model(args.postprocess or runs[0]).postprocess.to_dict()
    models = [load_model(run / "model.keras", compile=False) for run in runs]
    try:
        weights = mean_weights([model.get_weights() for model in models])
    except ValueError as exc:
        raise ConfigError(f"{args.runs}: {exc}") from exc
    soup = models[0]
    soup.set_weights(weights)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "model.partial.keras"
    soup.save(partial)
    partial.replace(out / "model.keras")
    for name in ("metadata.json", "config.yaml"):
        if (runs[0] / name).is_file():
            shutil.copyfile(runs[0] / name, out / name)
    write_json_atomic(settings, out / "postprocess.json", indent=2)
    print(f"wrote {out} (mean of {len(runs)} runs' weights)")
    return 0


if __name__ == "__main__":
    from cell_seg.cli.common import run_main

    run_main(main)
