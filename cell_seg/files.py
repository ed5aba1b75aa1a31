"""File input and output at the edges: atomic writes, reading images, JSON and CSV, listing image folders.

Named `files`, not `io`, so that it never shadows the standard library's `io` module.
Only numpy and OpenCV (tifffile for TIFF when installed), so this runs in offline notebooks.
"""

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from cell_seg.errors import DataError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A crash or an error inside the block leaves any earlier `path` untouched and no partial file.

    Example:
        >>> with atomic_path("out.json") as tmp:          # doctest: +SKIP
        ...     Path(tmp).write_text("{}")
    """
    path = Path(path)
    tmp = None
    try:
        _make_parent(path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as error:
            reason = (error.strerror or str(error)).lower()
            raise type(error)(error.errno, f"cannot create a file in {path.parent} ({reason})", str(path)) from None
        os.close(fd)
        try:
            yield tmp
        except OSError as error:
            if error.filename not in (None, tmp):
                raise  # about another file the block touched: its own name is the right one
            raise _naming(error, path) from None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs should read like any file
        os.replace(tmp, path)
    except OSError as error:
        # Users gave `path`: name it, not the hidden temporary file (or the folder) the failure was about.
        if error.filename is None or _is_ours(error.filename, path):
            raise _naming(error, path) from None
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _is_ours(filename, path):
    """Whether an OSError's file name is `path`'s folder or one of the hidden files made beside it."""
    filename = Path(os.fsdecode(filename))
    return filename == path.parent or (filename.parent == path.parent and filename.name.startswith(f".{path.name}."))


def _make_parent(path):
    """Create `path`'s folder; a file where a folder should be is NotADirectoryError naming `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in [path.parent, *path.parent.parents] if p.exists() and not p.is_dir()), path.parent)
        raise NotADirectoryError(errno.ENOTDIR, f"{blocking} is a file, not a folder", str(path)) from None


def make_folder(folder):
    """Create `folder` (and its parents); errors are OSErrors naming `folder` itself.

    Example:
        >>> make_folder("/etc/hostname/run")  # doctest: +SKIP
        NotADirectoryError: [Errno 20] /etc/hostname is a file, not a folder: '/etc/hostname/run'
    """
    folder = Path(folder)
    _make_parent(folder / "x")
    try:
        folder.mkdir(exist_ok=True)
    except OSError as error:
        raise _naming(error, folder) from None
    return folder


def _naming(error, path):
    """The same kind of OSError as `error`, naming `path` (e.g. 'out.json: No space left on device')."""
    return type(error)(error.errno, error.strerror or str(error), str(path))


@contextlib.contextmanager
def atomic_folder(folder):
    """Yield a hidden staging folder beside `folder`; move its files into `folder` only if the block succeeds.

    For outputs of many files (label images, train/val pairs, folds): an error or Ctrl-C inside
    the block leaves nothing new in `folder`. Files already in `folder` with other names stay;
    files of the same name are replaced.

    Example:
        >>> with atomic_folder("predictions") as staging:          # doctest: +SKIP
        ...     write_image(label_map, staging / "a.png")
    """
    import shutil

    folder = Path(folder)
    staging = None
    try:
        _make_parent(folder)
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(folder))
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        except OSError as error:
            reason = (error.strerror or str(error)).lower()
            raise type(error)(error.errno, f"cannot create a folder in {folder.parent} ({reason})", str(folder)) from None
        yield staging
        folder.mkdir(exist_ok=True)
        for item in sorted(staging.rglob("*")):
            target = folder / item.relative_to(staging)
            if item.is_dir():
                target.mkdir(exist_ok=True)
            else:
                os.replace(item, target)
    except OSError as error:
        inside = staging is not None and Path(os.fsdecode(error.filename or "")).is_relative_to(staging)
        if error.filename is None or inside or _is_ours(error.filename, folder):
            raise _naming(error, folder) from None
        raise
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_json_atomic(obj, path, indent=None):
    """Write `obj` as JSON to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as handle:
            json.dump(obj, handle, indent=indent)


def write_text_atomic(text, path):
    """Write a string to `path` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def read_json(path):
    """Read a JSON file; a missing or malformed file is a `DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=path)
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise DataError(f"not valid JSON ({error.msg}: line {error.lineno}, column {error.colno})", file=path) from None
    except UnicodeDecodeError as error:
        raise DataError(not_utf8(error), file=path) from None


def not_utf8(error):
    """'not UTF-8 text (byte 0x89 at offset 33)' for a UnicodeDecodeError: a binary or mis-encoded file."""
    byte = error.object[error.start:error.start + 1].hex() if error.object else "?"
    return f"not UTF-8 text (byte 0x{byte} at offset {error.start}); a binary or mis-encoded file"


def read_image(path):
    """Read an image as stored: `H x W` or `H x W x 3` (RGB), uint8 or uint16.

    RGBA images lose their alpha channel (DSB2018 stores opaque RGBA PNGs); images whose three
    channels are equal stay 3-channel: callers decide how to use colour.
    Raises `DataError` naming the file when it is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("image file not found", file=path)
    image = None
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            import tifffile

            image = tifffile.imread(str(path))
        except ImportError:
            image = None
        except Exception as error:  # tifffile raises many types on corrupt files
            raise DataError(f"cannot decode TIFF ({error})", file=path) from None
    if image is None:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DataError("cannot decode image (corrupt or unsupported format)", file=path)
        if image.ndim == 3:
            code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
            image = cv2.cvtColor(image, code)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3):
        raise DataError(f"unexpected image shape {image.shape}", file=path)
    return np.ascontiguousarray(image)


def image_size(path):
    """Return (height, width) of an image file, decoding it (and so checking it is readable)."""
    image = read_image(path)
    return image.shape[0], image.shape[1]


def list_images(folder):
    """Map image id (file stem) to path for every image in `folder`.

    Also accepts the DSB2018 layout `folder/<id>/images/<id>.png`.
    Raises `DataError` if the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("image folder not found", file=folder)
    found = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            found[path.stem] = path
        elif path.is_dir():
            nested = path / "images"
            for candidate in sorted(nested.glob(f"{path.name}.*")) if nested.is_dir() else []:
                if candidate.suffix.lower() in IMAGE_SUFFIXES:
                    found[path.name] = candidate
                    break
    return found


def write_image(image, path):
    """Write a PNG/TIFF atomically (RGB input is stored as RGB)."""
    path = Path(path)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    suffix = path.suffix.lower()
    ok, data = cv2.imencode(suffix if suffix in (".png", ".tif", ".tiff", ".jpg", ".jpeg") else ".png", image)
    if not ok:
        raise DataError("cannot encode image", file=path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data.tobytes())


def read_csv_table(path, columns=()):
    """Read a CSV as strings (empty cells stay ""), checking that `columns` are present.

    Raises DataError naming the file (and the missing column) when it is absent, unreadable or
    lacks a column.
    """
    import pandas as pd  # lazy: the CLIs' --help must not pay for pandas

    path = Path(path)
    if not path.is_file():
        raise DataError("CSV file not found", file=path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"cannot parse CSV ({str(error).strip()})", file=path) from None
    for column in columns:
        if column is not None and column not in table.columns:
            names = ", ".join(map(str, table.columns))
            raise DataError(f"missing column (columns are {names})", file=path, field=column)
    return table
