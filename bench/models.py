"""Benchmark: seconds per training step of the models, against named baselines, same run.

Measured (graph mode, `model.train_on_batch`, loss = weighted BCE + dice, IoU/dice metrics):
- project default: `unet` with `efficientnetb0`, compiled with `jit_compile=False` (what
  `train.xla: false` gives), 256 x 256 x 3 images, batch 4, 2 output channels;
- baseline "xla": the same model with `jit_compile=True` (`train.xla: true`). Keras'
  default `jit_compile="auto"` does not turn XLA on when the machine has no GPU;
- baseline "unet_plain": `unet_plain` with filters 16, depth 4 (no pretrained encoder);
- "mixed_bfloat16": the project model built under Keras' `mixed_bfloat16` policy
  (`train.mixed_precision: bfloat16`: bfloat16 compute, float32 weights), against the same
  model in float32. This CPU reports AVX512_BF16; whether that pays is what this measures.

Inputs are synthetic (a step's time does not depend on pixel values), so the benchmark
does not read ../shared/data. The first step of each model (tracing, XLA compilation) is
reported separately from the median of the following steps, which alternate between
the models so that background load affects them alike.

Usage:
    python -m bench.models [--size 256] [--batch 4] [--steps 5] [--no-xla] [--no-bf16] [--only-bf16]
"""

import argparse
import dataclasses
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from cell_seg.config import ModelConfig  # noqa: E402
from cell_seg.losses import SegmentationLoss  # noqa: E402
from cell_seg.train_metrics import build_metrics  # noqa: E402
from cell_seg.models import build_model  # noqa: E402


def prepare(config, jit_compile, size, batch, policy="float32"):
    """Build, compile and run a model's first step; return (step function, first-step seconds, parameters)."""
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(policy)  # layers take the policy when they are built
    try:
        model = build_model(config, n_outputs=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.compile(keras.optimizers.Adam(1e-3), SegmentationLoss(dice_weight=1.0),
                  metrics=build_metrics(["foreground", "border"]), jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    images = rng.random((batch, size, size, 3), dtype=np.float32)
    targets = (rng.random((batch, size, size, 2)) > 0.7).astype(np.float32)

    def step():
        start = time.perf_counter()
        model.train_on_batch(images, targets)
        return time.perf_counter() - start

    return step, step(), model.count_params()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image height and width")
    parser.add_argument("--batch", type=int, default=4, help="batch size")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the first")
    parser.add_argument("--no-xla", action="store_true",
                        help="skip the XLA baseline (slow to compile on CPU)")
    parser.add_argument("--no-bf16", action="store_true", help="skip the mixed_bfloat16 run")
    parser.add_argument("--only-bf16", action="store_true",
                        help="only the project model in float32 and in mixed_bfloat16")
    args = parser.parse_args(argv)
    devices = [d.device_type for d in tf.config.list_physical_devices()]
    print(f"devices: {devices}; {os.cpu_count()} CPUs; "
          f"input {args.batch} x {args.size} x {args.size} x 3 (synthetic)")

    project = dataclasses.replace(ModelConfig(), name="unet", backbone="efficientnetb0")
    runs = [("unet-efficientnetb0, jit_compile=False", project, False, "float32")]
    if not args.no_xla and not args.only_bf16:
        runs.append(("baseline xla: unet-efficientnetb0, jit_compile=True", project, True, "float32"))
    plain = dataclasses.replace(ModelConfig(), name="unet_plain", filters=16, depth=4)
    if not args.only_bf16:
        runs.append(("baseline unet_plain f16 d4, jit_compile=False", plain, False, "float32"))
    if not args.no_bf16:
        runs.append(("mixed_bfloat16: unet-efficientnetb0, jit_compile=False", project, False, "mixed_bfloat16"))

    prepared = [(label, *prepare(config, jit, args.size, args.batch, policy))
                for label, config, jit, policy in runs]
    # Steps of the models alternate, so a change of background load hits all of them alike.
    times = {label: [] for label, *_ in prepared}
    for _ in range(args.steps):
        for label, step, _, _ in prepared:
            times[label].append(step())
    results = {}
    for label, _, first, params in prepared:
        step = results[label] = statistics.median(times[label])
        print(f"{label}: {step:.3f} s/step (median of {args.steps}), first step {first:.1f} s, "
              f"{params / 1e6:.2f} M parameters, {args.batch / step:.1f} images/s")
    reference = results[runs[0][0]]
    for label, step in list(results.items())[1:]:
        print(f"ratio {label.split(':')[0]} / project: {step / reference:.2f}x the project's step time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
