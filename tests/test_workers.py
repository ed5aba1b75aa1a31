"""Training batches from worker processes: same batches as in-process, no Keras in the workers, training with them."""

import sys

import numpy as np
import pytest

from cell_seg.data.generator import SampleBatches, batch_stream
from cell_seg.data.synthetic import write_synthetic_coco
from cell_seg.data.workers import BatchProcessPool


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    write_synthetic_coco(root, n_images=5, shape=(80, 96), seed=5, cells=(3, 6))
    return root


def make_batches(coco_dir, **kwargs):
    kwargs = dict(dict(crop_size=64, batch_size=2, augment="strong", steps_per_epoch=3, seed=7), **kwargs)
    return SampleBatches(coco_dir / "coco.json", coco_dir / "images", **kwargs)


def assert_same_batches(got, expected):
    assert len(got) == len(expected)
    for (x, y), (x_ref, y_ref) in zip(got, expected):
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(y, y_ref)


def test_importing_the_generator_imports_no_keras():
    import subprocess

    code = "import sys, cell_seg.data.generator, cell_seg.data.workers; print('keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_pool_stream_equals_in_process_batches_across_epochs(coco_dir):
    batches = make_batches(coco_dir)
    batches.set_epoch(2)
    expected = [batches.get_batch(index, epoch) for epoch in (2, 3) for index in range(3)]
    with BatchProcessPool(batches, processes=2, prefetch=3) as pool:
        stream = batch_stream(batches, pool)
        got = [next(stream) for _ in range(6)]
        assert pool._pool.apply(eval, ("'keras' in __import__('sys').modules",)) is False
        cpu = pool.worker_cpu_seconds()
        assert cpu is None or cpu > 0
    assert_same_batches(got, expected)


def test_thread_stream_equals_in_process_batches(coco_dir):
    batches = make_batches(coco_dir, workers=2)
    stream = batch_stream(batches, epoch=1)
    assert_same_batches([next(stream) for _ in range(4)],
                        [batches.get_batch(index % 3, 1 + index // 3) for index in range(4)])


def test_a_keras_sequence_goes_to_workers_as_plain_batches(coco_dir):
    from cell_seg.data.generator import SegmentationSequence

    sequence = SegmentationSequence(coco_dir / "coco.json", coco_dir / "images", crop_size=64, batch_size=2,
                                    steps_per_epoch=3, seed=7, workers=3, use_multiprocessing=True)
    plain = sequence.plain()
    assert type(plain) is SampleBatches
    assert (plain.workers, plain.use_multiprocessing, len(plain)) == (3, True, 3)
    assert_same_batches([plain.get_batch(1, 4)], [sequence.get_batch(1, 4)])


@pytest.mark.slow
def test_training_with_worker_processes(coco_dir, tmp_path):
    from cell_seg.config import load_config
    from cell_seg.train import run

    overrides = [
        "model.name=unet_plain", "model.filters=4", "model.depth=2", "data.crop_size=64", "data.batch_size=2",
        "data.steps_per_epoch=3", "train.epochs=2", "train.verbose=0", "data.workers=2",
        "data.use_multiprocessing=true", "data.val_fraction=0.4", f"data.coco={coco_dir / 'coco.json'}", f"data.images={coco_dir / 'images'}",
        f"out_dir={tmp_path / 'run'}",
    ]
    _, history = run(load_config(None, overrides), evaluate_after=False)
    assert len(history.history["loss"]) == 2
    assert (tmp_path / "run" / "model.keras").is_file()
