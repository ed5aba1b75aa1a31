"""Turn the files a GPU run returned (weight pieces + manifest.json) into a run directory, on this CPU.

    python -m bench.gpu_kit.reassemble --from /work/.device/files/... --out runs/sartorius_gpu

The run directory then works with every command that takes one:

    python -m cell_seg.evaluate --model runs/sartorius_gpu --coco data/split/val.json --images DIR --tune
    python -m cell_seg.predict  --model runs/sartorius_gpu --images DIR --out predictions
    python -m cell_seg.export   --model runs/sartorius_gpu --out exported/sartorius_gpu
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, help="folder with manifest.json and the pieces")
    parser.add_argument("--out", required=True, help="new run directory")
    args = parser.parse_args(argv)
    from cell_seg.weight_pieces import rebuild_run

    run_dir = rebuild_run(args.source, args.out)
    extra = json.loads((run_dir / "transfer.json").read_text())["extra"]
    shown = {k: extra[k] for k in ("epoch", "monitor", "value", "final", "train_step_seconds") if k in extra}
    print(f"run written to {run_dir} ({json.dumps(shown)})")
    return 0


if __name__ == "__main__":
    from cell_seg.cli.common import run_main

    run_main(main)  # bad input: one line on stderr, exit 2, as the package's CLIs
