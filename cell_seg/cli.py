"""Shared command-line plumbing: one-line errors, exit codes."""

import sys

from cell_seg.errors import CellSegError


def run_main(main, argv=None):
    """Run `main(argv)`; print a `CellSegError` or a missing file as one line on stderr, exit 2.

    Used by every `python -m cell_seg.X` entry point so users never see a traceback for bad input.
    """
    try:
        code = main(argv)
    except CellSegError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except FileNotFoundError as error:
        name = error.filename or str(error)
        print(f"error: {name}: no such file or directory", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
