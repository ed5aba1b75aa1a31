"""A trained run as float16 weight pieces and back: for moving a run off a machine with file-size limits.

`save_weight_pieces(model, folder, run_dir)` writes the model's weights (trainable float weights
in float16, the rest, e.g. BatchNorm statistics, as they are; no optimiser state) as one `.npz`
split into pieces of at most `max_piece_bytes`, and `manifest.json` with the pieces' SHA-256, the
variables' shapes and the run's small files (`config.yaml`, `metadata.json`, `history.csv`,
`train_time.json`). Snapshots alternate between two slots (`a`, `b`) when both fit the size
budget and the manifest is replaced last, so a process killed while writing leaves the previous
snapshot whole.

`rebuild_run(folder, out_dir)` checks the pieces, builds the model from the config on the local
backend, loads the weights and writes a run directory (`model.keras`, `metadata.json`,
`config.yaml`, history) that `cell_seg.evaluate --tune`, `cell_seg.predict` and `cell_seg.export`
accept.

Example:
    >>> save_weight_pieces(model, "$OUT", run_dir="runs/x")            # doctest: +SKIP
    >>> rebuild_run("/work/.device/files", "runs/x_from_gpu")           # doctest: +SKIP
"""

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from cell_seg.errors import DataError, ModelError

MANIFEST = "manifest.json"
#: 15 MiB: under the 16 MiB a file may have to be (a margin for file-system rounding).
MAX_PIECE_BYTES = 15 * 2**20
#: Two slots of snapshots only when both together stay under this many bytes.
TWO_SLOT_BUDGET = 40 * 2**20
RUN_FILES = ("config.yaml", "metadata.json", "history.csv", "train_time.json")
FORMAT = "cell_seg.weight_pieces/1"


def _weights_npz(model, dtype):
    """The model's weights as `.npz` bytes and their descriptions (in `model.weights` order)."""
    arrays, variables = {}, []
    trainable = {id(v) for v in model.trainable_weights}
    for index, variable in enumerate(model.weights):
        value = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        stored = value
        if id(variable) in trainable and np.issubdtype(value.dtype, np.floating):
            stored = value.astype(dtype)
        arrays[f"w{index:04d}"] = stored
        variables.append({"path": getattr(variable, "path", variable.name), "shape": list(value.shape),
                          "dtype": str(value.dtype), "stored": str(stored.dtype)})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue(), variables


def _write_atomic(path, data):
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _read_manifest(folder):
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DataError("no manifest.json: not a folder of weight pieces", file=folder)
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"not valid JSON ({error.msg})", file=path) from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"unknown format {manifest.get('format')!r} (expected {FORMAT})", file=path)
    return manifest


def save_weight_pieces(model, folder, run_dir=None, dtype="float16", max_piece_bytes=MAX_PIECE_BYTES, extra=None):
    """Write the model's weights as pieces plus `manifest.json` into `folder`; return the manifest.

    Args:
        model: a built `keras.Model`.
        folder: destination (created).
        run_dir: the training run directory whose small files travel in the manifest.
        dtype: storage dtype of the trainable float weights.
        max_piece_bytes: largest piece.
        extra: JSON-able dict stored as `manifest["extra"]` (e.g. epoch, timings).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data, variables = _weights_npz(model, dtype)
    previous = _read_manifest(folder) if (folder / MANIFEST).is_file() else None
    slot = "a"
    if previous is not None and 2 * len(data) <= TWO_SLOT_BUDGET:
        slot = "b" if previous.get("slot") == "a" else "a"
    pieces = []
    for number, start in enumerate(range(0, len(data), int(max_piece_bytes))):
        chunk = data[start:start + int(max_piece_bytes)]
        name = f"{slot}.weights.{number:02d}"
        _write_atomic(folder / name, chunk)
        pieces.append({"name": name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    files = {}
    if run_dir is not None:
        for name in RUN_FILES:
            path = Path(run_dir) / name
            if path.is_file():
                files[name] = path.read_text()
    manifest = {"format": FORMAT, "slot": slot, "model": model.name, "dtype": dtype, "pieces": pieces,
                "sha256": hashlib.sha256(data).hexdigest(), "variables": variables, "files": files,
                "extra": extra or {}}
    _write_atomic(folder / MANIFEST, json.dumps(manifest, indent=1).encode())
    # Pieces of this slot left over from a larger earlier snapshot.
    keep = {piece["name"] for piece in pieces}
    for stale in folder.glob(f"{slot}.weights.*"):
        if stale.name not in keep and not stale.name.endswith(".tmp"):
            stale.unlink()
    return manifest


def read_weight_pieces(folder):
    """Check and join the pieces in `folder`; return `(manifest, arrays in model.weights order)`."""
    folder = Path(folder)
    manifest = _read_manifest(folder)
    parts = []
    for piece in manifest["pieces"]:
        path = folder / piece["name"]
        if not path.is_file():
            raise DataError("weight piece missing", file=path)
        chunk = path.read_bytes()
        if hashlib.sha256(chunk).hexdigest() != piece["sha256"]:
            raise DataError("weight piece damaged or from another snapshot (SHA-256 differs)", file=path)
        parts.append(chunk)
    data = b"".join(parts)
    if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise DataError("joined weight pieces differ from the manifest's SHA-256", file=folder / MANIFEST)
    with np.load(io.BytesIO(data)) as npz:
        arrays = [npz[f"w{index:04d}"] for index in range(len(manifest["variables"]))]
    return manifest, arrays


def rebuild_run(folder, out_dir):
    """Write a run directory in `out_dir` from the weight pieces in `folder`; return its Path.

    The model is rebuilt from the run's `config.yaml` (encoder weights not read: they are
    overwritten) and saved as `model.keras`; the run's small files are written beside it.
    """
    import keras

    from cell_seg.config import load_config
    from cell_seg.models import build_model

    manifest, arrays = read_weight_pieces(folder)
    files = manifest.get("files", {})
    for name in ("config.yaml", "metadata.json"):
        if name not in files:
            raise DataError(f"the manifest carries no {name}", file=Path(folder) / MANIFEST)
    out_dir = Path(out_dir)
    if (out_dir / "model.keras").exists():
        raise DataError("already holds a run (model.keras); choose another --out", file=out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out_dir / name).write_text(text)
    config = load_config(out_dir / "config.yaml", ["model.encoder_weights=null"])
    channels = json.loads(files["metadata.json"])["channels"]
    keras.mixed_precision.set_global_policy("float32")
    model = build_model(config.model, len(channels))
    if len(model.weights) != len(arrays):
        raise ModelError(f"the config builds a model with {len(model.weights)} weights, the pieces hold {len(arrays)}")
    for variable, array, described in zip(model.weights, arrays, manifest["variables"]):
        if tuple(variable.shape) != tuple(array.shape):
            raise ModelError(f"weight {described['path']}: shape {tuple(array.shape)} does not fit "
                             f"{variable.path} {tuple(variable.shape)}")
        variable.assign(array.astype(keras.backend.standardize_dtype(variable.dtype)))
    model.save(out_dir / "model.keras")
    (out_dir / "transfer.json").write_text(json.dumps(
        {"from": str(folder), "dtype": manifest["dtype"], "extra": manifest.get("extra", {})}, indent=1))
    return out_dir
