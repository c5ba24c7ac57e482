"""The bench's trainer: writes a successful result to its termination message and exits 0, at once.

It imports nothing beyond the standard library, so a hundred of them cost the machine little and the
benchmark measures the operator. The operator reads the result from the Pod (the trainer did not patch
status.result), as it does when a real trainer could not reach the API server.
"""

import json
import os

RESULT = {
    "status": "Succeeded", "reason": "", "message": "", "modelVersion": "v1",
    "modelUri": "gs://m/models/v1/yolov8n_waste.pt", "promoted": False, "promotionReason": "bench",
    "metrics": {"mAP50": 0.5, "mAP50_95": 0.3, "precision": 0.6, "recall": 0.5},
    "dataset": {"selected": 1, "new": 1, "replayed": 0, "train": 1, "val": 1, "skipped": 0},
    "epochs": {"completed": 1, "requested": 1, "earlyStopped": False},
}  # fmt: skip

with open(os.environ["TRAINER_TERMINATION_LOG"], "w") as out:
    out.write(json.dumps(RESULT, separators=(",", ":")))
