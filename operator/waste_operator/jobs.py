"""Builds the training Job of a TrainingRun: pure data in, pure data out."""

from __future__ import annotations

import hashlib
import math
from typing import Any

from . import API_VERSION, GROUP, KIND, MANAGED_BY, RUN_LABEL
from .config import OperatorConfig, quantity
from .queueing import PRIORITY_LABEL, QUEUE_LABEL, queue_name

# The trainer's defaults (docs/CONTRACTS.md); the CRD's schema defaults must equal these.
TRAINER_DEFAULTS: dict[str, Any] = {
    "epochs": 50,
    "batchSize": 16,
    "optimizer": "auto",
    "learningRate": None,  # optional: the optimizer's own rate when absent
    "imgSize": 640,
    "patience": 10,
    "device": "auto",
    "baseModel": "yolov8n.pt",
    "trainSplit": 0.8,
    "minDetections": 1,
    "replayRatio": 1.0,
    "historyVal": 1000,
}
FLAGS = {
    "epochs": "--epochs",
    "batchSize": "--batch-size",
    "optimizer": "--optimizer",
    "learningRate": "--learning-rate",
    "imgSize": "--img-size",
    "patience": "--patience",
    "device": "--device",
    "baseModel": "--base-model",
    "trainSplit": "--train-split",
    "minDetections": "--min-detections",
    "replayRatio": "--replay-ratio",
    "historyVal": "--history-val",
}
JOB_DEFAULTS: dict[str, Any] = {
    "backoffLimit": 2,
    "activeDeadlineSeconds": 86400,
    "ttlSecondsAfterFinished": 86400,
}
RESOURCE_DEFAULTS = {"gpus": 1, "cpu": "4", "memory": "16Gi"}

CONTAINER = "trainer"
# The pod's CPU request in millicores, for the trainer's loader workers (trainer/resources.py): with no
# CPU limit set, the container's cgroup has no quota to read, and os.cpu_count() is the node's.
CPU_REQUEST_ENV = "TRAINER_CPU_REQUEST_MILLICORES"
# Sizing of /dev/shm, the same rules as trainer/resources.py (tests/operator checks that they agree):
MAX_WORKERS = 16  # loader workers per GPU process
AUTO_BATCH_PER_GPU_640 = 64  # batchSize auto's images per GPU at 640 px
PREFETCH = 4  # batches each train-loader worker holds in shared memory (Ultralytics' prefetch_factor)
TERMINATION_LOG = "/dev/termination-log"
REPORT_PATH = "/tmp/report.json"
CACHE_DIR = "/cache"
TRAINER_UID = 10001
# Exit codes that no retry can fix (invalid input, empty selection, base model unavailable): fail the Job
# at once instead of spending the backoff limit on them.
PERMANENT_EXIT_CODES = [2, 3, 6]
# Labels that belong to the deployment tool of the TrainingRun, never to the Job it makes: ArgoCD would
# otherwise adopt (and prune) the Job as part of its Application.
FOREIGN_LABEL_PREFIXES = ("app.kubernetes.io/instance", "argocd.argoproj.io/")

MAX_NAME = 63


def job_name(run: dict) -> str:
    """The run's Job name: deterministic (retries and restarts find the same Job), at most 63 chars.

    The hash covers the run's uid, so a TrainingRun deleted and created again under the same name never
    meets the previous run's Job while it is being garbage-collected.
    """
    meta = run["metadata"]
    digest = hashlib.sha256(f"{meta['namespace']}/{meta['name']}/{meta['uid']}".encode()).hexdigest()[:8]
    stem = f"tr-{meta['name']}"[: MAX_NAME - len(digest) - 1].rstrip("-.")
    return f"{stem}-{digest}"


def run_labels(run: dict) -> dict[str, str]:
    """The run's own labels (less its deployment tool's tracking labels) and the ones linking to it."""
    inherited = {
        key: value
        for key, value in (run["metadata"].get("labels") or {}).items()
        if not key.startswith(FOREIGN_LABEL_PREFIXES)
    }
    return inherited | {
        "app.kubernetes.io/name": "waste-trainer",
        "app.kubernetes.io/component": "training",
        "app.kubernetes.io/part-of": "waste-detection",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        RUN_LABEL: run["metadata"]["name"],
    }


def trainer_args(spec: dict) -> list[str]:
    """The trainer's command-line flags from the run's spec, in the order of docs/CONTRACTS.md."""
    args: list[str] = []
    for field, flag in FLAGS.items():
        value = spec.get(field, TRAINER_DEFAULTS[field])
        if value is not None:
            args += [flag, _flag_value(value)]
    source = spec.get("source") or {"fromInferences": {}}
    if "dataset" in source:
        args += ["--dataset", source["dataset"]["uri"]]
    else:
        inferences = source.get("fromInferences") or {}
        args.append("--from-inferences")
        if inferences.get("onlyVerified", True):
            args.append("--only-verified")
        if inferences.get("allTime", False):
            args.append("--all-time")
    args += ["--promotion", (spec.get("promotion") or {}).get("mode", "gate")]
    return args


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def trainer_env(run: dict, config: OperatorConfig) -> list[dict]:
    meta = run["metadata"]
    return [
        {
            "name": "DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": config.db_secret_name, "key": config.db_secret_key}},
        },
        {"name": "GCS_MODELS_BUCKET", "value": config.models_bucket},
        {"name": "GCS_IMAGES_BUCKET", "value": config.images_bucket},
        {"name": "GCS_DATASETS_BUCKET", "value": config.datasets_bucket},
        {"name": "TRAININGRUN_NAME", "value": meta["name"]},
        {"name": "TRAININGRUN_NAMESPACE", "value": meta["namespace"]},
        # The run's identity: its registry row, checkpoints and status patches key on the uid, so a run
        # created again under the same name never resumes or repeats the old one.
        {"name": "TRAININGRUN_UID", "value": meta["uid"]},
        {"name": "TRAINER_REPORT_PATH", "value": REPORT_PATH},
        {"name": "TRAINER_TERMINATION_LOG", "value": TERMINATION_LOG},
        {
            "name": CPU_REQUEST_ENV,
            "valueFrom": {
                "resourceFieldRef": {"containerName": CONTAINER, "resource": "requests.cpu", "divisor": "1m"}
            },
        },
    ]


def trainer_resources(spec: dict, tmp_size: str) -> dict:
    wanted = {**RESOURCE_DEFAULTS, **(spec.get("resources") or {})}
    # The /tmp emptyDir (dataset, checkpoints) may grow to its sizeLimit: the scheduler places the Pod only
    # where that much ephemeral storage is free, instead of the kubelet evicting it midway.
    requests = {"cpu": str(wanted["cpu"]), "memory": str(wanted["memory"]), "ephemeral-storage": tmp_size}
    # Memory limit equals the request (an OOM kill says so, instead of a node under pressure); no CPU
    # limit, so the data loader may use idle cores.
    limits = {"memory": str(wanted["memory"])}
    if int(wanted["gpus"]) > 0:
        limits["nvidia.com/gpu"] = str(int(wanted["gpus"]))
    return {"requests": requests, "limits": limits}


def shm_size(spec: dict, config: OperatorConfig) -> str:
    """/dev/shm for every GPU process's loader workers: each worker holds PREFETCH batches of its
    process's share of the batch as uint8 images, doubled for headroom. At least the configured size; at
    most the memory limit, which shared memory counts against anyway."""
    wanted = {**RESOURCE_DEFAULTS, **(spec.get("resources") or {})}
    processes = max(1, int(wanted["gpus"]))
    workers = min(MAX_WORKERS, max(1, math.ceil(quantity(wanted["cpu"])) // processes))
    imgsz = int(spec.get("imgSize", TRAINER_DEFAULTS["imgSize"]))
    batch = spec.get("batchSize", TRAINER_DEFAULTS["batchSize"])
    if batch == "auto":
        per_process = min(256, max(8, int(AUTO_BATCH_PER_GPU_640 * (640 / imgsz) ** 2) // 8 * 8))
    else:
        per_process = max(1, int(batch) // processes)
    needed = 2 * processes * workers * PREFETCH * per_process * imgsz * imgsz * 3
    size = min(max(quantity(config.shm_size), needed), quantity(wanted["memory"]))
    return f"{math.ceil(size / 2**20)}Mi"


def container_security_context() -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": TRAINER_UID,
        "runAsGroup": TRAINER_UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def build_job(run: dict, config: OperatorConfig) -> dict:
    """The one Job of a TrainingRun. Pure: the same run and config always give the same Job."""
    meta = run["metadata"]
    spec = run.get("spec") or {}
    labels = run_labels(run)
    gpus = int({**RESOURCE_DEFAULTS, **(spec.get("resources") or {})}["gpus"])
    tolerations = list(spec.get("tolerations") or [])
    if gpus > 0 and not any(t.get("key") == "nvidia.com/gpu" for t in tolerations):
        tolerations.append({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": config.trainer_service_account,
        "automountServiceAccountToken": True,  # the trainer reports progress to its TrainingRun's status
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRAINER_UID,
            "runAsGroup": TRAINER_UID,
            "fsGroup": TRAINER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": spec.get("image") or config.trainer_image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["python", "-m", "trainer"],
                "args": trainer_args(spec),
                "env": trainer_env(run, config),
                "resources": trainer_resources(spec, config.tmp_size),
                "securityContext": container_security_context(),
                "terminationMessagePath": TERMINATION_LOG,
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": [
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "dshm", "mountPath": "/dev/shm"},
                ],
            }
        ],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": config.tmp_size}},
            # PyTorch data-loader workers die with "Bus error" on the runtime's default 64 MB /dev/shm.
            # Sized for the loader workers of every GPU process (shm_size).
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size(spec, config)}},
        ],
    }
    if config.cache_claim:
        # A download cache that outlives the Job: the next run downloads only what is new. Shared by
        # concurrent Jobs (the cache writes complete files by rename) and bounded by TRAINER_CACHE_MAX_GB.
        pod_spec["volumes"].append(
            {"name": "cache", "persistentVolumeClaim": {"claimName": config.cache_claim}}
        )
        pod_spec["containers"][0]["volumeMounts"].append({"name": "cache", "mountPath": CACHE_DIR})
        pod_spec["containers"][0]["env"] += [
            {"name": "TRAINER_CACHE_DIR", "value": CACHE_DIR},
            {"name": "TRAINER_CACHE_MAX_GB", "value": _flag_value(config.cache_max_gb)},
        ]
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if spec.get("nodeSelector"):
        pod_spec["nodeSelector"] = dict(spec["nodeSelector"])
    queue = queue_name(run, config.default_queue_name)
    job_labels = dict(labels)
    if queue:
        # Kueue admits the Job (it unsuspends it) when its ClusterQueue has quota; without Kueue's mutating
        # webhook nothing else would suspend it, so it is created suspended.
        job_labels[QUEUE_LABEL] = queue
        if spec.get("priorityClassName"):
            # A WorkloadPriorityClass: Kueue orders and preempts by it. Not also the Pod's priority, or the
            # scheduler would preempt on its own, behind Kueue's back.
            job_labels[PRIORITY_LABEL] = spec["priorityClassName"]
    elif spec.get("priorityClassName"):
        pod_spec["priorityClassName"] = spec["priorityClassName"]

    job_spec: dict[str, Any] = {
        "backoffLimit": spec.get("backoffLimit", JOB_DEFAULTS["backoffLimit"]),
        "activeDeadlineSeconds": spec.get("activeDeadlineSeconds", JOB_DEFAULTS["activeDeadlineSeconds"]),
        "ttlSecondsAfterFinished": spec.get(
            "ttlSecondsAfterFinished", JOB_DEFAULTS["ttlSecondsAfterFinished"]
        ),
        "suspend": bool(queue) or bool(spec.get("suspend", False)),
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": PERMANENT_EXIT_CODES,
                    },
                },
                # A preempted or evicted Pod is not the trainer's fault: retry without counting it.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(run),
            "namespace": meta["namespace"],
            "labels": job_labels,
            "annotations": {f"{GROUP}/trainingrun-uid": meta["uid"]},
            "ownerReferences": [owner_reference(run)],
        },
        "spec": job_spec,
    }


def owner_reference(run: dict) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": run["metadata"]["name"],
        "uid": run["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_owned_by(job: dict, run: dict) -> bool:
    uid = run["metadata"]["uid"]
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in job["metadata"].get("ownerReferences") or []
    )
