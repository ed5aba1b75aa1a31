"""`python -m cell_seg.convert`: annotations to COCO JSON.

The command line (parser, `main`, `cli`) lives in `cell_seg.cli.convert`, the converters in
`cell_seg.data.convert`; this module only starts it.
"""

from cell_seg.cli.convert import cli, main  # noqa: F401  (re-exported: installed console scripts name cell_seg.convert:cli)

if __name__ == "__main__":
    cli()
