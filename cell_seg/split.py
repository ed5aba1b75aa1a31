"""`python -m cell_seg.split`: a COCO JSON into train/val or k folds.

The command line (parser, `main`, `cli`) lives in `cell_seg.cli.split`, the splitting in
`cell_seg.data.split`; this module only starts it.
"""

from cell_seg.cli.split import cli, main  # noqa: F401  (re-exported: installed console scripts name cell_seg.split:cli)

if __name__ == "__main__":
    cli()
