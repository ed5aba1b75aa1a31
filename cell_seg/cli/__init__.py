"""The command-line layer: shared plumbing and the argument parsers of commands whose library code lives elsewhere.

* `cell_seg.cli.common`: `run_main` (one-line errors, exit code 2), quiet TensorFlow start-up;
  its names are re-exported here.
* `cell_seg.cli.convert`, `cell_seg.cli.split`, `cell_seg.cli.viz`: parsers and `main()` of
  `python -m cell_seg.convert`, `cell_seg.split` and `cell_seg.viz` (those modules only start them;
  the converters, splits and figures live in `cell_seg.data.convert`, `cell_seg.data.split`,
  `cell_seg.overlays`, `cell_seg.plots` and `cell_seg.explore`).

Importing any of them sets TF_CPP_MIN_LOG_LEVEL before TensorFlow loads (see `common`).
"""

from cell_seg.cli.common import (
    QuietTensorFlowImport,
    describe_os_error,
    install_quiet_tensorflow,
    run_main,
    silenced_stderr_fd,
    uninstall_quiet_tensorflow,
)

__all__ = [
    "QuietTensorFlowImport",
    "describe_os_error",
    "install_quiet_tensorflow",
    "run_main",
    "silenced_stderr_fd",
    "uninstall_quiet_tensorflow",
]
