"""Benchmark: training batches per second on real Sartorius images, against a seed-style generator.

Measured in the same run, on the same images (520 x 704, shuffled with a fixed seed), batch 4,
"strong" augmentation, foreground + border targets:
- project: `SegmentationSequence.get_batch` (lazy COCO decode to a label map, augmentation of
  image + label map, targets from the augmented label map) with 256 x 256 crops and with whole
  images (padded to 544 x 704), built by 1 and by 2 threads (as `PyDataset(workers=2)` does).
- baseline ("seed-style"): the generator this project replaces: per image, one
  `coco.annToMask(ann)` per cell in a Python loop, stacked into an H x W x N array; foreground
  is the stack's max, the border is where the dilated masks of two cells meet (one
  `cv2.dilate` per cell), then the same augmentation of image + 2-channel target. 1 thread.
Reported as images per second and the ratio project / baseline.

Then the project's training crops (256 x 256) built by worker processes
(`cell_seg.data.workers.BatchProcessPool`, what `data.use_multiprocessing: true` uses) with 1, 2
and all cores' processes, read in order from `batch_stream` as `model.fit` reads them, after a
warm-up of two batches per process (the spawned workers start first); reported as crops per second
and the ratio to one process.

Usage:
    python -m bench.generator [--data ../shared/data] [--batches 40] [--baseline-batches 10]
                              [--process-batches 60] [--processes-only]
"""

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from bench.common import DEFAULT_DATA, pycocotools_index, sartorius_reference
from cell_seg.data.augment import build_augmentation
from cell_seg.preprocess import normalize_image, pad_to_multiple

BATCH_SIZE = 4


class SeedStyleGenerator:
    """The per-annotation mask-stack generator, kept only as the benchmark's baseline."""

    def __init__(self, coco_index, dataset, image_ids, crop_size):
        self.coco_index = coco_index
        self.dataset = dataset
        self.image_ids = image_ids
        self.crop_size = crop_size
        self.augment = build_augmentation("strong", seed=0, crop_size=crop_size)
        self.kernel = np.ones((3, 3), np.uint8)

    def sample(self, image_id):
        image = normalize_image(self.dataset.load_image(image_id))
        anns = self.coco_index.imgToAnns[image_id]
        masks = np.stack([self.coco_index.annToMask(ann) for ann in anns], axis=-1)  # H x W x N
        foreground = masks.max(axis=-1)
        dilated = np.stack([cv2.dilate(masks[..., k], self.kernel) for k in range(masks.shape[-1])], axis=-1)
        border = ((dilated.sum(axis=-1) > 1) & (foreground > 0)).astype(np.uint8)
        targets = np.dstack([foreground, border])
        image, targets = self.augment(image, targets)
        image, _ = pad_to_multiple(image, 32)
        targets, _ = pad_to_multiple(targets, 32)
        return image, targets.astype(np.float32)

    def batch(self, index):
        from cell_seg.data.generator import stack_padded  # a Keras import: only once data is found

        samples = [self.sample(i) for i in self.image_ids[index * BATCH_SIZE : (index + 1) * BATCH_SIZE]]
        return stack_padded([s[0] for s in samples]), stack_padded([s[1] for s in samples])


def images_per_second(make_batch, n_batches, workers):
    """Images per second building batches 1..n_batches (batch 0 warms up) with `workers` threads."""
    make_batch(0)
    start = time.perf_counter()
    if workers == 1:
        for index in range(1, n_batches + 1):
            make_batch(index)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(make_batch, range(1, n_batches + 1)))
    return n_batches * BATCH_SIZE / (time.perf_counter() - start)


def crops_per_second_with_processes(sequence, processes, n_batches):
    """(crops per second, crops per worker CPU-second) from `batch_stream` over `processes` workers (after warm-up).

    The second figure does not depend on how many cores other jobs leave free: when it stays the
    same for 1 and N processes, the workers do not slow each other down and throughput grows with
    the cores they get.
    """
    from cell_seg.data.generator import batch_stream
    from cell_seg.data.workers import BatchProcessPool

    with BatchProcessPool(sequence, processes=processes) as pool:
        stream = batch_stream(sequence, pool, epoch=0)
        for _ in range(2 * processes):  # the workers start (spawn) and fill the queue
            next(stream)
        cpu_start, start = pool.worker_cpu_seconds(), time.perf_counter()
        for _ in range(n_batches):
            next(stream)
        elapsed, cpu_end = time.perf_counter() - start, pool.worker_cpu_seconds()
    crops = n_batches * BATCH_SIZE
    per_cpu = crops / (cpu_end - cpu_start) if cpu_start is not None and cpu_end > cpu_start else float("nan")
    return crops / elapsed, per_cpu


def process_table(dataset, n_batches):
    """Print crops/s with 1, 2 and all-cores worker processes and the ratio to one process."""
    from cell_seg.data.generator import SegmentationSequence
    from cell_seg.data.workers import default_processes

    sequence = SegmentationSequence(dataset, channels=("foreground", "border"), batch_size=BATCH_SIZE, crop_size=256,
                                    augment="strong", seed=0, steps_per_epoch=n_batches + 64)
    cores = default_processes()
    counts = sorted({1, 2, cores})
    rates = {count: crops_per_second_with_processes(sequence, count, n_batches) for count in counts}
    with open("/proc/loadavg") if Path("/proc/loadavg").is_file() else open(os.devnull) as handle:
        load = handle.read().split()[:1]
    print(f"\ncrop 256, worker processes ({cores} cores; {n_batches} batches of {BATCH_SIZE} after warm-up; "
          f"load average {load[0] if load else 'unknown'})")
    print(f"{'processes':<16}{'crops/s':>10}{'vs 1 process':>15}{'crops per worker CPU-s':>25}")
    for count in counts:
        label = f"{count} (all)" if count == cores else str(count)
        rate, per_cpu = rates[count]
        print(f"{label:<16}{rate:>10.1f}{rate / rates[1][0]:>14.2f}x{per_cpu:>25.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="shared data folder")
    parser.add_argument("--batches", type=int, default=40, help="timed batches per project configuration")
    parser.add_argument("--baseline-batches", type=int, default=10, help="timed batches per baseline configuration")
    parser.add_argument("--process-batches", type=int, default=60, help="timed batches per worker-process count")
    parser.add_argument("--processes-only", action="store_true", help="only the worker-process table")
    args = parser.parse_args(argv)
    reference = sartorius_reference(args.data)
    if reference is None:
        return 0
    from cell_seg.data.generator import SegmentationSequence

    coco_path, coco, dataset = reference
    if args.processes_only:
        process_table(dataset, args.process_batches)
        return 0
    index = pycocotools_index(coco)
    n_needed = (max(args.batches, args.baseline_batches) + 1) * BATCH_SIZE
    print(f"data: {coco_path} ({len(dataset)} images); batch {BATCH_SIZE}, 'strong' augmentation, foreground + border")

    rows = []
    for crop_size, label in ((256, "crop 256"), (None, "full 520x704")):
        sequence = SegmentationSequence(
            dataset,
            channels=("foreground", "border"),
            batch_size=BATCH_SIZE,
            crop_size=crop_size,
            augment="strong",
            seed=0,
            steps_per_epoch=max(args.batches, args.baseline_batches) + 1,
        )
        order = sequence.epoch_image_ids(0)[:n_needed]
        baseline = SeedStyleGenerator(index, dataset, order, crop_size)
        theirs = images_per_second(baseline.batch, args.baseline_batches, 1)
        for workers in (1, 2):
            ours = images_per_second(sequence.get_batch, args.batches, workers)
            rows.append((label, workers, ours, theirs))
    print(f"{'images':<16}{'threads':>8}{'project img/s':>15}{'seed-style img/s (1 thread)':>29}{'ratio':>8}")
    for label, workers, ours, theirs in rows:
        print(f"{label:<16}{workers:>8}{ours:>15.1f}{theirs:>29.1f}{ours / theirs:>7.1f}x")
    process_table(dataset, args.process_batches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
