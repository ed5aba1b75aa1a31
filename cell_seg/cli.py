"""Shared command-line plumbing: one-line errors, exit codes, quiet TensorFlow."""

import os
import sys

from cell_seg.errors import CellSegError

# Every CLI imports this module before TensorFlow loads: keep TensorFlow's C++ start-up log
# (CUDA probing, oneDNN notes, `failed call to cuInit` on machines without a GPU) off stderr
# unless the user chose a level. Errors that matter still reach Python as exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def run_main(main, argv=None):
    """Run `main(argv)`; print a `CellSegError` or any `OSError` as one line on stderr, exit 2.

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
    except OSError as error:  # permission denied, disk full, read-only file system, a path through a file
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def describe_os_error(error):
    """'PATH: reason' for an OSError (the path it names, else its message alone).

    Example:
        >>> describe_os_error(PermissionError(13, "Permission denied", "out/coco.json"))
        'out/coco.json: permission denied'
    """
    reason = error.strerror or str(error) or type(error).__name__
    reason = reason[:1].lower() + reason[1:]
    if error.filename is None:
        return reason
    target = f"{error.filename} -> {error.filename2}" if error.filename2 is not None else str(error.filename)
    return f"{target}: {reason}"
