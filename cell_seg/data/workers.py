"""Training batches built by worker processes, so that data feeding scales with CPU cores.

One thread cannot feed a GPU: a batch is image decoding, albumentations and target building in
Python and OpenCV, and threads share one interpreter lock (`bench/generator.py`: two threads
build batches no faster than one). `BatchProcessPool` builds them in separate processes.

The processes are *spawned* (a fresh interpreter), never forked: forking a process after JAX,
TensorFlow or PyTorch has started its threads can deadlock the child, and spawning is safe at any
time. A worker receives a pickled `SampleBatches` (`sequence.plain()`), which imports no Keras, so
it starts in about a second and never touches the accelerator. Workers run OpenCV single-threaded
and ignore Ctrl-C (the parent stops them).

Batches are deterministic whichever process builds them (see `cell_seg.data.generator`), so a run
with processes reads exactly the batches a run with one thread reads.
"""

import collections
import itertools
import multiprocessing
import os
import pickle
import signal
from pathlib import Path

#: The batch source of this worker process (set by `_start_worker`).
_WORKER_BATCHES = None


def _start_worker(payload):
    """Initialise a worker: one OpenCV thread, Ctrl-C left to the parent, the pickled batches."""
    global _WORKER_BATCHES
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import cv2

    cv2.setNumThreads(1)
    _WORKER_BATCHES = pickle.loads(payload)


def _build_batch(epoch, index):
    return _WORKER_BATCHES.get_batch(index, epoch)


class ThreadStateNotPickled:
    """Mixin for objects sent to worker processes: locks and thread-locals cannot be pickled.

    The attributes named in `_THREAD_STATE` are left out of the pickle and made anew, by their
    factory, when it is loaded.
    """

    _THREAD_STATE = {}  # attribute name -> factory, e.g. {"_lock": threading.Lock}

    def __getstate__(self):
        state = dict(self.__dict__)
        for name in self._THREAD_STATE:
            del state[name]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        for name, make in self._THREAD_STATE.items():
            setattr(self, name, make())


def default_processes():
    """Processes to use by default: the CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class BatchProcessPool:
    """Build the batches of a `SampleBatches` / `SegmentationSequence` in `processes` spawned processes.

    Args:
        sequence: the batch source; its state is sent to every worker once, at start.
        processes: worker processes (default: all cores, `default_processes()`).
        prefetch: batches being built ahead of use (default twice the processes).

    Use as a context manager (or call `close`):

    Example:
        >>> with BatchProcessPool(sequence, processes=4) as pool:                        # doctest: +SKIP
        ...     model.fit(batch_stream(sequence, pool), steps_per_epoch=len(sequence))
    """

    def __init__(self, sequence, processes=None, prefetch=None):
        self.sequence = sequence
        self.processes = int(processes or default_processes())
        if self.processes < 1:
            raise ValueError(f"processes must be at least 1, not {processes!r}")
        self.prefetch = int(prefetch or 2 * self.processes)
        payload = pickle.dumps(sequence.plain(), protocol=pickle.HIGHEST_PROTOCOL)
        context = multiprocessing.get_context("spawn")
        self._pool = context.Pool(self.processes, initializer=_start_worker, initargs=(payload,))

    def get_batch(self, index, epoch):
        """Batch `index` of `epoch`, built by a worker."""
        return self._pool.apply(_build_batch, (int(epoch), int(index)))

    def stream(self, epoch=0):
        """Every batch, in order, epoch after epoch from `epoch`, forever; `prefetch` in flight."""
        steps = len(self.sequence)
        tasks = ((current, index) for current in itertools.count(int(epoch)) for index in range(steps))
        pending = collections.deque(self._pool.apply_async(_build_batch, task)
                                    for task in itertools.islice(tasks, self.prefetch))
        while True:
            batch = pending.popleft().get()
            pending.append(self._pool.apply_async(_build_batch, next(tasks)))
            yield batch

    def worker_cpu_seconds(self):
        """CPU seconds (user + system) the worker processes have used so far; None off Linux."""
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        total = 0.0
        for process in self._pool._pool:  # multiprocessing.Pool keeps its processes here
            try:
                fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return None
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return total

    def close(self):
        """Stop the workers (batches still being built are dropped)."""
        self._pool.terminate()
        self._pool.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
