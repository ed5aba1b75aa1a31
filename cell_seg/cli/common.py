"""Shared command-line plumbing: one-line errors, exit codes, quiet TensorFlow."""

import contextlib
import importlib.abc
import importlib.util
import os
import sys

from cell_seg.errors import CellSegError

# Every CLI imports this module before TensorFlow loads: keep TensorFlow's C++ start-up log
# (CUDA probing, oneDNN notes, `failed call to cuInit` on machines without a GPU) off stderr
# unless the user chose a level. Errors that matter still reach Python as exceptions.
USER_SET_TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def silenced_stderr_fd():
    """Send file descriptor 2 (where C++ libraries log) to /dev/null inside the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Import hook: the first `import tensorflow` runs with C++ stderr silenced.

    TensorFlow 2.21 logs through absl before its log level is read ("All log messages before
    absl::InitializeLog() ...", oneDNN and CUDA-driver notes), so TF_CPP_MIN_LOG_LEVEL alone does
    not quiet it. Python exceptions raised by the import still propagate.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        uninstall_quiet_tensorflow()
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            load = spec.loader.exec_module

            def exec_module(module):
                with silenced_stderr_fd():
                    load(module)

            spec.loader.exec_module = exec_module
        return spec


def install_quiet_tensorflow():
    """Quiet TensorFlow's start-up log for this process, unless the user set TF_CPP_MIN_LOG_LEVEL."""
    if USER_SET_TF_LOG_LEVEL or "tensorflow" in sys.modules:
        return
    if not any(isinstance(finder, QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlowImport())


def uninstall_quiet_tensorflow():
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, QuietTensorFlowImport)]


def run_main(main, argv=None):
    """Run `main(argv)`; print a `CellSegError` or any `OSError` as one line on stderr, exit 2.

    Used by every `python -m cell_seg.X` entry point so users never see a traceback for bad input.
    """
    install_quiet_tensorflow()
    try:
        code = main(argv)
    except CellSegError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # missing file, permission denied, disk full, read-only file system, a path through a file
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        uninstall_quiet_tensorflow()
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
