#!/usr/bin/env bash
# The GPU proof's dry run on this CPU (`make gpu-dry-run`): bench/gpu/check.sh in a clean
# Python 3.12 environment that holds only what the lent machine has (machine-has.txt, CPU
# JAX among it) plus the carried wheels, on a sweep shrunk to seconds. Results in $OUT
# (default /tmp/gpu-dry-run).
set -euo pipefail
# The lent machine's Python is 3.12: the first 3.12 here that runs (pyenv's shim may not).
for PY312 in ${PY312:-} python3.12 /root/.pyenv/versions/3.12*/bin/python3.12; do
  "$PY312" -c '' 2>/dev/null && break
done
"$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12)' || { echo "no Python 3.12"; exit 2; }
VENV=${GPU_DRY_VENV:-/tmp/gpu-dry-venv}
"$PY312" -m venv --clear "$VENV"
.venv/bin/uv pip install -q --python "$VENV/bin/python" pip -r bench/gpu/machine-has.txt
export OUT=${OUT:-/tmp/gpu-dry-run} PYTHON="$VENV/bin/python" GPU_CHECK_SITE=/tmp/gpu-dry-site
export GPU_CHECK_WORK=/tmp/gpu-dry-work GPU_CHECK_SECONDS=${GPU_CHECK_SECONDS:-3}
export GPU_CHECK_OVERRIDES=${GPU_CHECK_OVERRIDES:-"models=[nin,resnet] train.epochs=1 train.warmup_epochs=0 \
per_model.resnet.train.epochs=1 data.train_limit=2000 data.test_limit=500 \
train.steps_per_execution=4 tracking.experiment=cnn-zoo-gpu-dry-run"}
rm -rf "$OUT" "$GPU_CHECK_SITE" "$GPU_CHECK_WORK"
bash bench/gpu/check.sh
