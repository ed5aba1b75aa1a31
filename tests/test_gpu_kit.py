"""The GPU run kit's data path: pack (WebP, gzip COCO) and the machine-side unpack give back the images."""

import json
from pathlib import Path

import numpy as np

from bench.gpu_kit import device_train, pack
from cell_seg.data.synthetic import write_synthetic_coco
from cell_seg.files import read_image, read_json

ROOT = Path(__file__).resolve().parents[1]


def test_packed_images_come_back_as_the_pngs_the_coco_names(tmp_path):
    coco = write_synthetic_coco(tmp_path / "data", n_images=5, shape=(64, 80), seed=2, cells=(3, 5))
    images = tmp_path / "data" / "images"
    out = tmp_path / "pack"
    code = pack.main(["--config", str(ROOT / "configs" / "demo.yaml"), "--out", str(out), "--no-wheels",
                      "--limit-mib", "1000", f"data.coco={coco}", f"data.images={images}", "data.val_fraction=0.4"])
    assert code == 0
    summary = json.loads((out / "pack.json").read_text())
    assert summary["images"] == 5 and summary["mean_abs_error_grey_levels"] < 4
    assert not list((out / "data" / "images").glob("*.png"))  # stored as WebP

    train_json, val_json, unpacked = device_train.unpack(out, tmp_path / "work", processes=2)
    names = [image["file_name"] for path in (train_json, val_json) for image in read_json(path)["images"]]
    assert len(names) == 5
    for name in names:  # the synthetic images are PNGs already: same names
        original = read_image(images / name)
        restored = read_image(unpacked / name)
        assert restored.shape == original.shape and restored.dtype == original.dtype
        assert np.abs(restored.astype(int) - original.astype(int)).mean() < 6


def test_set_aside_folders_leave_the_working_tree_count():
    import subprocess

    from bench.gpu_kit.pack import REPO, tracked_tree_bytes

    listed = subprocess.run(["git", "ls-files", "-z", "weights"], cwd=REPO, capture_output=True, check=True)
    weights = sum((REPO / name.decode()).stat().st_size for name in listed.stdout.split(b"\0") if name)
    whole = tracked_tree_bytes()
    assert weights > 0
    assert tracked_tree_bytes(["weights"]) == whole - weights
    assert tracked_tree_bytes(["weight"]) == whole  # whole path parts, not string prefixes
    assert tracked_tree_bytes(["no_such_folder"]) == whole
