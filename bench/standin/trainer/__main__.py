"""The bench's trainer: reports a successful result to its TrainingRun's status and to its termination message,
as the real trainer does at its end, and exits 0 at once.

Standard library and PyYAML only (no Kubernetes client), so a hundred of them cost the machine little and the
benchmark measures the operator. It authenticates with its Pod's ServiceAccount token, from the kubeconfig
the process kubelet hands it ($KUBECONFIG).
"""

import base64
import json
import os
import ssl
import time
import urllib.request

import yaml

RESULT = {
    "status": "Succeeded", "reason": "", "message": "", "modelVersion": "v1",
    "modelUri": "gs://m/models/v1/yolov8n_waste.pt", "promoted": False, "promotionReason": "bench",
    "metrics": {"mAP50": 0.5, "mAP50_95": 0.3, "precision": 0.6, "recall": 0.5},
    "dataset": {"selected": 1, "new": 1, "replayed": 0, "train": 1, "val": 1, "skipped": 0},
    "epochs": {"completed": 1, "requested": 1, "earlyStopped": False},
}  # fmt: skip


def report(result: dict) -> None:
    config = yaml.safe_load(open(os.environ["KUBECONFIG"]))
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    token = open(user["tokenFile"]).read().strip()
    ns, name = os.environ["TRAININGRUN_NAMESPACE"], os.environ["TRAININGRUN_NAME"]
    url = f"{cluster['server']}/apis/training.wastedetection.io/v1alpha1/namespaces/{ns}/trainingruns/{name}/status"
    request = urllib.request.Request(
        url,
        data=json.dumps({"status": {"result": result}}).encode(),
        method="PATCH",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"},
    )
    with urllib.request.urlopen(request, context=ssl.create_default_context(cadata=ca), timeout=30):
        pass


# How long the "training" lasts (bench/kueue_admission.py: long enough to be seen Running); 0 by default.
time.sleep(float(os.environ.get("BENCH_STANDIN_SECONDS", "0")))
report(RESULT)
with open(os.environ["TRAINER_TERMINATION_LOG"], "w") as out:
    out.write(json.dumps(RESULT, separators=(",", ":")))
