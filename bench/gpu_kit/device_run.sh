#!/usr/bin/env bash
# The one command for the GPU machine (no TensorFlow, no network), run from the repository root with
# bench/gpu_kit/pack carried (python -m bench.gpu_kit.pack made it):
#
#   bash bench/gpu_kit/device_run.sh MINUTES [device_train.py options] [key=value ...]
#
# Installs the pack's wheels into /tmp/site, trains the pack's config for MINUTES under
# KERAS_BACKEND=jax and leaves float16 weight pieces (at most 15 MiB each), manifest.json and
# train.log in $OUT. Locally: python -m bench.gpu_kit.reassemble --from FILES --out runs/NAME.
# The repository root is the current directory, so `python3 -m` finds `bench` and `cell_seg` there
# (the package is not installed on the machine); /tmp/site holds the wheels.
set -euo pipefail
PACK=bench/gpu_kit/pack
OUT="${OUT:-gpu_out}"
mkdir -p "$OUT"
if [ "$#" -lt 1 ]; then echo "usage: bash bench/gpu_kit/device_run.sh MINUTES [options] [key=value ...]" >&2; exit 2; fi
minutes="$1"; shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$PACK"/wheels/*.whl
export PYTHONPATH=/tmp/site KERAS_BACKEND=jax PYTHONUNBUFFERED=1
python3 -m bench.gpu_kit.device_train --pack "$PACK" --out "$OUT" --minutes "$minutes" "$@" 2>&1 | tee "$OUT/train.log"
