"""A scripted stand-in for `python -m trainer` that follows docs/CONTRACTS.md, for the operator's tests.

The process kubelet runs it with cwd=tests/operator/standin (`standin_runner`), so `python -m trainer` finds
this package instead of the real trainer. It accepts exactly the contract's flags, reports progress and its result to its
TrainingRun's status with the trainer ServiceAccount's kubeconfig ($KUBECONFIG), writes the compact result to
$TRAINER_TERMINATION_LOG and exits with the contract's exit codes. What it does comes from the run's
annotation `test.waste-detection.io/standin`, a JSON object:
  outcome: "succeed" (default) | "fail" (a trainer error: exitCode, reason, message) | "crash" (exit 1,
           a traceback, no result) | "hang" (reports one epoch, then sleeps until killed)
  epochDelay: seconds per epoch (default 0.2); promoted: bool (default true); map50: the final model's
  mAP50 (default: the best epoch's);
  reportStatus: write status.result (default true; false leaves only the termination message);
  checkpointDir: a folder that outlives the Pod (the real trainer's models bucket): after each epoch but the
  last, the epoch is written to <dir>/<run uid>.json, and a later attempt resumes after it, reporting
  status.progress.resumedFromEpoch as the real trainer does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from kubernetes import client, config

GROUP, VERSION, PLURAL = "training.wastedetection.io", "v1alpha1", "trainingruns"
ANNOTATION = "test.waste-detection.io/standin"
EXIT_CODES = {
    "InvalidInput": 2,
    "EmptySelection": 3,
    "StorageError": 4,
    "RegistryError": 5,
    "ModelUnavailable": 6,
    "TrainingError": 7,
    "DeviceUnavailable": 8,
}


def batch_size(text: str) -> int | str:
    """A whole number, or auto (the contract's --batch-size)."""
    return "auto" if text.strip().lower() == "auto" else int(text)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="trainer")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch-size", type=batch_size, required=True)
    p.add_argument("--optimizer", required=True)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--img-size", type=int, required=True)
    p.add_argument("--patience", type=int, required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--base-model", required=True)
    p.add_argument("--train-split", type=float, required=True)
    p.add_argument("--min-detections", type=int, required=True)
    p.add_argument("--replay-ratio", type=float, required=True)
    p.add_argument("--history-val", type=int, required=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-inferences", action="store_true")
    source.add_argument("--dataset")
    p.add_argument("--only-verified", action="store_true")
    p.add_argument("--all-time", action="store_true")
    p.add_argument("--promotion", choices=["gate", "force", "skip"], required=True)
    return p.parse_args(argv)


class Status:
    def __init__(self) -> None:
        config.load_kube_config()
        self.api = client.CustomObjectsApi()
        self.namespace = os.environ["TRAININGRUN_NAMESPACE"]
        self.name = os.environ["TRAININGRUN_NAME"]
        self.uid = os.environ["TRAININGRUN_UID"]  # the contract: the operator passes the run's uid

    def run(self) -> dict:
        run = self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
        if run["metadata"]["uid"] != self.uid:
            raise SystemExit(f"stand-in trainer: TRAININGRUN_UID {self.uid} is not the uid of {self.name}")
        return run

    def patch(self, status: dict) -> None:
        self.api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            self.name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )


def progress(epoch: int, epochs: int, best: float, stage: str, resumed: int | None = None) -> dict:
    text = f"{epoch}/{epochs}" if stage in ("Training", "Done") else stage
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"progress": {"epoch": epoch, "epochs": epochs, "bestMAP50": best, "stage": stage, "text": text,
                         "updatedAt": now, "resumedFromEpoch": resumed}}  # fmt: skip


class Checkpoint:
    """The run's last epoch in a folder that outlives its Pods, keyed by the run's uid (as the real trainer
    keys checkpoints/<uid>/last.pt in the models bucket)."""

    def __init__(self, folder: str | None, uid: str) -> None:
        self.path = Path(folder) / f"{uid}.json" if folder else None

    def load(self) -> tuple[int, float] | None:
        if self.path is None or not self.path.is_file():
            return None
        saved = json.loads(self.path.read_text())
        return int(saved["epoch"]), float(saved["best"])

    def save(self, epoch: int, best: float) -> None:
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"epoch": epoch, "best": best}))
            tmp.replace(self.path)  # whole or not at all: a Pod killed mid-write leaves the previous epoch

    def drop(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def finish(status: Status, result: dict, report: bool, code: int) -> int:
    compact = json.dumps(result, separators=(",", ":"))
    with open(os.environ["TRAINER_TERMINATION_LOG"], "w") as out:
        out.write(compact)
    if report:
        status.patch({"result": result})
    return code


def main(argv: list[str]) -> int:
    args = parse(argv)
    status = Status()
    behaviour = json.loads((status.run()["metadata"].get("annotations") or {}).get(ANNOTATION) or "{}")
    outcome = behaviour.get("outcome", "succeed")
    delay = float(behaviour.get("epochDelay", 0.2))
    report = bool(behaviour.get("reportStatus", True))
    print(f"stand-in trainer: {outcome}, {args.epochs} epochs", flush=True)
    # What the real trainer sizes its loaders from (trainer/resources.py), as the kubelet resolved it.
    print(f"stand-in trainer: batch {args.batch_size}, device {args.device}, "
          f"TRAINER_CPU_REQUEST_MILLICORES={os.environ.get('TRAINER_CPU_REQUEST_MILLICORES', '')}", flush=True)  # fmt: skip
    status.patch(progress(0, args.epochs, 0.0, "Selecting"))

    if outcome == "crash":
        print("Traceback (most recent call last):\nKeyError: 'boxes'", file=sys.stderr, flush=True)
        return 1
    if outcome == "fail":
        reason = behaviour.get("reason", "EmptySelection")
        result = {"status": "Failed", "reason": reason, "message": behaviour.get("message", "no samples"),
                  "modelVersion": None, "modelUri": None, "promoted": False}  # fmt: skip
        return finish(status, result, report, int(behaviour.get("exitCode", EXIT_CODES[reason])))

    checkpoint = Checkpoint(behaviour.get("checkpointDir"), status.uid)
    best, resumed = 0.0, None
    saved = checkpoint.load()
    if saved is not None:
        resumed, best = saved
        print(f"stand-in trainer: resuming after epoch {resumed}", flush=True)
    for epoch in range((resumed or 0) + 1, args.epochs + 1):
        time.sleep(delay)
        best = round(max(best, 0.1 * epoch / args.epochs + 0.3), 4)
        status.patch(progress(epoch, args.epochs, best, "Training", resumed))
        if epoch < args.epochs:
            checkpoint.save(epoch, best)
        if outcome == "hang":
            time.sleep(3600)
    status.patch(progress(args.epochs, args.epochs, best, "Done", resumed))
    checkpoint.drop()
    promoted = bool(behaviour.get("promoted", True))
    result = {
        "status": "Succeeded",
        "reason": "",
        "message": "trained",
        "modelVersion": "v7",
        "modelUri": "gs://wd-models/models/v7/yolov8n_waste.pt",
        "baseVersion": "v6",
        "promoted": promoted,
        "promotionReason": f"mAP50 {best} vs champion 0.3",
        "metrics": {"mAP50": behaviour.get("map50", best), "mAP50_95": 0.2, "precision": 0.5, "recall": 0.4},
        "championMAP50": 0.3,
        "dataset": {"selected": 12, "new": 6, "replayed": 6, "train": 10, "val": 2, "skipped": 0},
        "epochs": {"completed": args.epochs, "requested": args.epochs, "earlyStopped": False,
                   "resumedFromEpoch": resumed},
    }  # fmt: skip
    return finish(status, result, report, 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
