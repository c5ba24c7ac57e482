"""The forms `--dataset` (spec.source.dataset.uri) and `--base-model` (spec.baseModel) may take.

One table, enforced by the CRD's patterns (crds/trainingrun.yaml holds the same regular expressions; a
test compares them and tries every example on the API server) and understood by the trainer:

| value | example | meaning |
|---|---|---|
| `gs://BUCKET[/PREFIX]` | `gs://waste-datasets/2025-06` | a YOLO dataset (images/..., labels/...) under the prefix |
| `NAME` | `2025-06`, `city/2025-06` | `gs://$GCS_DATASETS_BUCKET/NAME` |
| a local folder (CLI only) | `./data/waste` | a folder on the machine running `python -m trainer` |

Base models: a file name (`yolov8n.pt`, looked up in $TRAINER_WEIGHTS_DIR, then $TRAINER_LOCAL_DIR/weights/),
`gs://BUCKET/PATH.pt`, a `.yaml` architecture (from scratch), or (CLI only) a path to a `.pt` file.
"""

from __future__ import annotations

import re
from pathlib import Path

from trainer.errors import ConfigError

# Bucket names: lowercase letters, digits, '-', '_', '.', 3 to 222 characters, letters or digits at both ends.
_BUCKET = r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]"
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"  # never "." or "..": a name cannot climb out of its bucket
GS_DATASET = rf"gs://{_BUCKET}(/\S*)?"
DATASET_NAME = rf"{_SEGMENT}(/{_SEGMENT})*/?"
DATASET_URI = rf"^({GS_DATASET}|{DATASET_NAME})$"
BASE_MODEL = rf"^(gs://{_BUCKET}/\S+\.pt|{_SEGMENT}\.(pt|yaml|yml))$"

FORMS = (
    "gs://BUCKET/PREFIX, a dataset NAME in GCS_DATASETS_BUCKET (letters, digits, '.', '_', '-' in "
    "'/'-separated parts)"
)


def dataset_source(text: str, datasets_bucket: str | None, local_allowed: bool) -> str:
    """A `--dataset` value as the trainer reads it: a gs:// URI, or a local folder when allowed (the CLI)."""
    if text.startswith("gs://"):
        if not re.fullmatch(GS_DATASET, text):
            raise ConfigError(f"--dataset {text!r} is not a gs://BUCKET/PREFIX URI")
        return text
    if "://" in text:
        raise ConfigError(
            f"--dataset {text!r}: only {FORMS}" + (" or a local folder" if local_allowed else "")
        )
    if local_allowed and Path(text).is_dir():
        return text
    if not re.fullmatch(DATASET_NAME, text):
        where = ", or a local folder that exists" if local_allowed else ""
        raise ConfigError(f"--dataset {text!r} is none of: {FORMS}{where}")
    if not datasets_bucket:
        raise ConfigError(
            f"--dataset {text!r} is not a folder here and not a gs:// URI; set GCS_DATASETS_BUCKET to read it "
            "from the datasets bucket"
        )
    return f"gs://{datasets_bucket}/{text.strip('/')}"


def check_base_model(text: str, local_allowed: bool) -> None:
    """Refuses a --base-model the trainer could never load; a Job (not local) takes only the CRD's forms."""
    if "://" in text and not text.startswith("gs://"):
        raise ConfigError(
            f"--base-model {text!r}: the trainer runs offline; name a file, gs://BUCKET/PATH.pt or a .yaml"
        )
    if text.startswith("gs://") and not text[5:].partition("/")[2].strip("/"):
        raise ConfigError(f"--base-model {text!r} names no object: gs://BUCKET/PATH.pt")
    if not local_allowed and not re.fullmatch(BASE_MODEL, text):
        raise ConfigError(
            f"--base-model {text!r} is none of: a file name ending in .pt (in the trainer image's weights), "
            "gs://BUCKET/PATH.pt, or a .yaml architecture"
        )
