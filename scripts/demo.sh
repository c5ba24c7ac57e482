#!/usr/bin/env bash
# The main job on the embedded default: no cloud account, no database server, CPU only.
# Local folders play the buckets, SQLite plays the registry; sample data is generated.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ "${WD_SKIP_SETUP:-0}" == 1 ]] || bash scripts/setup.sh

export TRAINER_LOCAL_DIR="${TRAINER_LOCAL_DIR:-$PWD/.wd-local}"
dataset="$TRAINER_LOCAL_DIR/sample-dataset"
python3 scripts/make_sample_dataset.py "$dataset" --images "${DEMO_IMAGES:-60}"
python3 -m trainer --dataset "$dataset" --base-model yolov8n.yaml \
  --epochs "${DEMO_EPOCHS:-3}" --img-size "${DEMO_IMG_SIZE:-160}" --batch-size 16 --device cpu
echo
echo "Registered versions ($TRAINER_LOCAL_DIR/registry.sqlite):"
python3 -m trainer versions
echo
echo "Models: $TRAINER_LOCAL_DIR/models-bucket/models/"
ls "$TRAINER_LOCAL_DIR/models-bucket/models/"
