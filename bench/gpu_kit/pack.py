"""Pack what a GPU machine without TensorFlow or network needs to train a config: `bench/gpu_kit/pack/`.

The pack (an ignored folder, carried to the machine with the working tree) holds:

- `wheels/`: the cp312 manylinux wheels of `bench/gpu_kit/wheels.txt` (Keras, segmentation_models,
  albumentations, pycocotools and their missing dependencies), downloaded with --no-deps;
- `data/train.json.gz`, `data/val.json.gz`: the config's training and validation COCO (after its
  split), `file_name`s unchanged;
- `data/images/`: every image they use, 8-bit images as lossy WebP (`--quality`, default 80),
  16-bit ones as they are; `data/images.json` says which were grayscale, so the machine writes
  them back as the same PNGs the pipeline reads here;
- `cache/weights/`: ImageNet weights of an EfficientNet-Lite encoder (converted here, stored in
  float16), or `encoder/`: a local `model.encoder_weights` file;
- `config.yaml`: the resolved config; `pack.json`: sizes and settings.

The working tree travels too (45.8 MiB in December 2026, 42 of it the two releases in `weights/`), and
both together must stay under 64 MiB: the script prints the total and fails above `--limit-mib`.
`--set-aside weights` leaves a folder out of the count and prints the commands that move it out of
the working tree before the device call and back after it (the device tool copies the working tree as
it is; not yet tried on a device).

Usage (from the repository root):
    python -m bench.gpu_kit.pack --config configs/dsb2018_unet_lite0.yaml [--quality 80] [key=value ...]
"""

import argparse
import gzip
import json
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
KIT = Path(__file__).resolve().parent
PACK = KIT / "pack"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def pinned_wheels(path=KIT / "wheels.txt"):
    """`name==version` lines of the pinned wheel list."""
    lines = [line.split("#")[0].strip() for line in Path(path).read_text().splitlines()]
    return [line for line in lines if line]


def download_wheels(folder, requirements):
    """pip download the cp312 manylinux wheels, without dependencies, into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", "-d", str(folder)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run(command + requirements, check=True)


def tracked_tree_bytes(set_aside=()):
    """Bytes of what the device tool sends besides carried paths: tracked and untracked-not-ignored files,
    without those under the folders of `set_aside` (paths relative to the repository root)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.split(b"\0")
    aside = [Path(folder).parts for folder in set_aside]
    names = [Path(name.decode()) for name in listed if name]
    return sum((REPO / name).stat().st_size for name in names
               if (REPO / name).is_file() and not any(name.parts[:len(parts)] == parts for parts in aside))


def folder_bytes(folder):
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def compress_image(job):
    """Write one image into the pack: WebP for 8-bit, a copy otherwise; return (file_name, entry)."""
    source, target, quality = job
    image = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SystemExit(f"{source}: cannot read image")
    target.parent.mkdir(parents=True, exist_ok=True)
    if image.dtype != np.uint8:
        shutil.copyfile(source, target)
        return {"stored": target.name, "mode": "copy"}
    gray = image.ndim == 2 or image.shape[2] == 1
    if not gray and image.shape[2] == 4:
        image = image[..., :3]  # the pipeline drops alpha (cell_seg.io.read_image)
    webp = target.with_suffix(target.suffix + ".webp")
    ok, data = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, int(quality)])
    if not ok:
        raise SystemExit(f"{source}: WebP encoding failed")
    webp.write_bytes(data.tobytes())
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if gray and decoded.ndim == 3:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2GRAY)  # as the machine writes it back
    error = float(np.abs(decoded.astype(np.int16) - image.reshape(decoded.shape).astype(np.int16)).mean())
    return {"stored": webp.name, "mode": "gray" if gray else "color", "mean_abs_error": round(error, 3)}


def pack_images(train_coco, val_coco, images_dir, out, quality):
    """Compress every image the two COCO files use into `out/images/`; return the manifest dict."""
    names = sorted({image["file_name"] for coco in (train_coco, val_coco) for image in coco["images"]})
    jobs = [(images_dir / name, out / "images" / name, quality) for name in names]
    with ProcessPoolExecutor() as pool:
        entries = list(pool.map(compress_image, jobs, chunksize=8))
    return dict(zip(names, entries))


def pack_encoder_weights(config, out):
    """Copy the encoder weights the config needs into the pack; return the config overrides for the machine."""
    from cell_seg.efficientnet_lite import VARIANTS, weight_cache_dir

    weights = config.model.encoder_weights
    if weights in (None, "", "null", "none"):
        return []
    backbone = str(config.model.backbone).lower()
    if str(weights).lower() == "imagenet":
        if backbone not in VARIANTS:
            raise SystemExit(f"ImageNet weights of {backbone} cannot be downloaded on the GPU machine: set "
                             "model.encoder_weights to a local file")
        from cell_seg.models import build_encoder

        build_encoder(backbone, weights="imagenet")  # converts and caches them here if needed
        cached = weight_cache_dir() / f"{backbone}_imagenet_notop.weights.h5"
        target = out / "cache" / "weights" / cached.name
        target.parent.mkdir(parents=True, exist_ok=True)
        to_float16_h5(cached, target)
        return []  # the machine sets CELL_SEG_CACHE to the pack's cache/
    source = Path(weights)
    target = out / "encoder" / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return [f"model.encoder_weights=@PACK@/encoder/{source.name}"]


def to_float16_h5(source, target):
    """Copy a Keras weights file with its float32 arrays stored as float16 (half the bytes)."""
    import h5py

    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        def copy(name, item):
            if isinstance(item, h5py.Dataset):
                data = item[()]
                if getattr(data, "dtype", None) == np.float32:
                    data = data.astype(np.float16)
                dst.create_dataset(name, data=data)
            else:
                dst.require_group(name)
            for key, value in item.attrs.items():
                dst[name].attrs[key] = value

        for key, value in src.attrs.items():
            dst.attrs[key] = value
        src.visititems(copy)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training config (YAML)")
    parser.add_argument("--out", default=str(PACK), help="pack folder (default bench/gpu_kit/pack, git-ignored)")
    parser.add_argument("--quality", type=int, default=80, help="WebP quality of 8-bit images")
    parser.add_argument("--limit-mib", type=float, default=64.0, help="largest pack + working tree")
    parser.add_argument("--no-wheels", action="store_true", help="skip the wheel download (tests)")
    parser.add_argument("--set-aside", nargs="+", default=[], metavar="FOLDER",
                        help="folders (e.g. weights) moved out of the working tree for the device call: not counted")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)

    from cell_seg.config import load_config, save_config
    from cell_seg.train import resolve_data

    config = load_config(args.config, args.overrides)
    train_coco, val_coco, images_dir = resolve_data(config)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "data").mkdir(parents=True)
    if not args.no_wheels:
        download_wheels(out / "wheels", pinned_wheels())
    for name, coco in (("train", train_coco), ("val", val_coco)):
        with gzip.open(out / "data" / f"{name}.json.gz", "wt") as handle:
            json.dump(coco, handle)
    entries = pack_images(train_coco, val_coco, Path(images_dir), out / "data", args.quality)
    (out / "data" / "images.json").write_text(json.dumps(entries))
    overrides = pack_encoder_weights(config, out)
    save_config(config, out / "config.yaml")

    sizes = {part: folder_bytes(out / part) for part in ("wheels", "data", "cache", "encoder") if (out / part).exists()}
    tree = tracked_tree_bytes(args.set_aside)
    total = folder_bytes(out) + tree
    errors = [entry["mean_abs_error"] for entry in entries.values() if "mean_abs_error" in entry]
    error = round(float(np.mean(errors)), 2) if errors else 0.0
    summary = {"config": args.config, "overrides": args.overrides, "machine_overrides": overrides,
               "quality": args.quality, "images": len(entries), "mean_abs_error_grey_levels": error,
               "bytes": sizes, "tree_bytes": tree, "total_bytes": total}
    (out / "pack.json").write_text(json.dumps(summary, indent=1))
    mib = 2**20
    print(f"pack {out}: " + ", ".join(f"{k} {v / mib:.1f} MiB" for k, v in sizes.items())
          + f"; {len(entries)} images (WebP mean error {error} grey levels); with the working tree ({tree / mib:.1f} MiB) {total / mib:.1f} MiB")
    if total > args.limit_mib * mib:
        print(f"too large: {total / mib:.1f} MiB > {args.limit_mib} MiB (lower --quality, or use fewer images)",
              file=sys.stderr)
        return 1
    if args.set_aside:
        aside = "/tmp/cell_seg_set_aside"
        print("before the device call: mkdir -p " + aside + " && "
              + " && ".join(f"mv {folder} {aside}/" for folder in args.set_aside)
              + "; after it: " + " && ".join(f"mv {aside}/{Path(folder).name} {folder}" for folder in args.set_aside))
    return 0


if __name__ == "__main__":
    sys.exit(main())
