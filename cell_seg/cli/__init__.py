"""The command-line layer: shared plumbing and the argument parsers of commands whose library code lives elsewhere.

* `cell_seg.cli.common`: `run_main` (one-line errors, exit code 2), quiet TensorFlow start-up;
  its names are re-exported here.
* one module per command, with its parser and `main()`: `cell_seg.cli.convert`, `split`, `train`,
  `evaluate`, `predict`, `export`, `viz`. `python -m cell_seg.<command>` starts them; the work
  they call lives in the library modules (`cell_seg.data.convert`, `cell_seg.data.split`,
  `cell_seg.train.run`, `cell_seg.evaluate.evaluate_run`, `cell_seg.predict.predict_folder`,
  `cell_seg.export.export_model`, `cell_seg.overlays` / `plots` / `explore`).

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
