#!/usr/bin/env bash
# The GPU proof in one call on the lent machine (issue 34), run from the repository root:
#   device run, carry [".whl", "data/fashion-mnist"], command "bash bench/gpu/check.sh"
# That machine has Python 3.12 with JAX, NumPy, pandas, scikit-learn, matplotlib, Pillow and
# PyYAML, and no Keras, MLflow or BentoML: it installs the carried wheels (`make gpu-wheels`),
# then bench/gpu/check.py trains configs/gpu.yaml under JAX into a file-based MLflow store,
# promotes the champion, serves it with BentoML on the GPU and measures it, writing under $OUT
# as it goes. `make gpu-dry-run` runs this same script on this CPU in a clean environment.
set -uo pipefail
: "${OUT:?OUT must name the folder the results go to}"
PYTHON=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/gpu-check-site}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/check.log") 2>&1
ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: run make gpu-wheels here first"; exit 2; }
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" .whl/*.whl || { echo "installing the carried wheels failed"; exit 2; }
export PYTHONPATH="$SITE:$PWD" KERAS_BACKEND=jax MLFLOW_ALLOW_FILE_STORE=true \
  BENTOML_DO_NOT_TRACK=True PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
exec "$PYTHON" -m bench.gpu.check
