"""File input and output at the edges: images, atomic writes, image folders.

Only numpy and OpenCV (tifffile for TIFF when installed), so this runs in offline notebooks.
"""

import contextlib
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
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
        if error.filename in (None, tmp, str(path.parent), path.parent):
            raise _naming(error, path) from None
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _naming(error, path):
    """The same kind of OSError as `error`, naming `path` (e.g. 'out.json: No space left on device')."""
    renamed = type(error)(error.errno, error.strerror or str(error), str(path))
    return renamed


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
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(20, "exists and is not a folder", str(folder))
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        yield staging
        folder.mkdir(exist_ok=True)
        for item in sorted(staging.rglob("*")):
            target = folder / item.relative_to(staging)
            if item.is_dir():
                target.mkdir(exist_ok=True)
            else:
                os.replace(item, target)
    except OSError as error:
        if error.filename is None or (staging is not None and str(staging) in str(error.filename)) \
                or str(error.filename) == str(folder.parent):
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
