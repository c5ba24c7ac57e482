#!/usr/bin/env bash
# The product's story on the embedded default (no cloud account, no database server, CPU only): v1 learns from
# scratch, new feedback arrives, v2 is fine-tuned from v1 with replay of v1's images, and the gate compares
# both on the same validation images before moving latest. Local folders play the buckets, SQLite plays the
# registry; the images are generated (coloured boxes), nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ "${WD_SKIP_SETUP:-0}" == 1 ]] || bash scripts/setup.sh
source scripts/demo-settings.sh

# Its own folder by default, so a rerun can start over without touching anything else under .wd-local.
export TRAINER_LOCAL_DIR="${TRAINER_LOCAL_DIR:-$PWD/.wd-local/demo}"
local_dir="$TRAINER_LOCAL_DIR"
models="$local_dir/models-bucket/models"
reports="$local_dir/demo-reports"

# The story starts from nothing each time: remove what an earlier demo left here, and only that.
if [[ -e "$local_dir/registry.sqlite" && ! -e "$local_dir/.demo" ]]; then
  echo "error: $local_dir holds a registry this demo did not create; set TRAINER_LOCAL_DIR to another folder" >&2
  exit 2
fi
rm -rf "$local_dir/registry.sqlite" "$local_dir/models-bucket" "$local_dir/sample-dataset" \
  "$local_dir/feedback-1" "$reports"
mkdir -p "$reports" && touch "$local_dir/.demo"

echo "== 1/2 v1 learns from scratch: generated images, Plastic rare in them"
python3 scripts/make_sample_dataset.py "$local_dir/sample-dataset" "${V1_DATA[@]}"
# The full JSON report goes to its file; stderr shows one line per step, then the decision.
TRAINER_REPORT_PATH="$reports/run1-v1.json" python3 -m trainer --dataset "$local_dir/sample-dataset" \
  "${TRAIN[@]}" "${V1_TRAIN[@]}" >/dev/null

echo
echo "== 2/2 feedback arrives: new images, mostly Plastic. v2 is fine-tuned from v1 with replay of v1's"
echo "       images, then compared with v1 on the same validation images (the new ones and v1's)"
python3 scripts/make_sample_dataset.py "$local_dir/feedback-1" "${FEEDBACK_DATA[@]}"
TRAINER_REPORT_PATH="$reports/run2-v2.json" python3 -m trainer --dataset "$local_dir/feedback-1" \
  "${TRAIN[@]}" "${FEEDBACK_TRAIN[@]}" >/dev/null

echo
echo "Registered versions (each measured on its own run's validation images):"
python3 -m trainer versions
echo
python3 -c 'import json, sys; [print(json.load(open(p))["promotion"]["summary"]) for p in sys.argv[1:]]' \
  "$reports/run1-v1.json" "$reports/run2-v2.json"
echo
echo "Where to look:"
echo "  versions table:  TRAINER_LOCAL_DIR=$local_dir python -m trainer versions"
echo "  AP50 per class:  $models/v2/map50_per_class.png"
echo "  full reports:    $reports/run1-v1.json, $reports/run2-v2.json"
echo "  models:          $models/v1/, $models/v2/, $models/latest/"
