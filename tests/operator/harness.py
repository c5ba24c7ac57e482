"""Runs the operator as it runs in the cluster, for the integration tests: `python -m waste_operator` as a
subprocess, with only the operator ServiceAccount's permissions from manifests/operator-rbac.yaml."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

from tests.controlplane.server import free_port
from tests.controlplane.util import wait_for

ROOT = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).resolve().parent / "standin"
DB_URL = "postgresql://trainer:n0t-a-real-s3cret@db.internal:5432/waste"
IMAGE = "registry.example/waste-trainer:test"


def rbac_documents(namespace: str) -> str:
    """The operator's and trainer's RBAC from manifests/, moved into `namespace`."""
    docs = []
    for name in ("operator-rbac.yaml", "trainer-rbac.yaml"):
        for doc in yaml.safe_load_all((ROOT / "manifests" / name).read_text()):
            doc["metadata"]["namespace"] = namespace
            for subject in doc.get("subjects") or []:
                subject["namespace"] = namespace
            docs.append(doc)
    return yaml.safe_dump_all(docs)


def prepare_namespace(control_plane, namespace: str) -> None:
    control_plane.kubectl("apply", "-f", "-", input=rbac_documents(namespace))
    control_plane.kubectl(
        "create",
        "secret",
        "generic",
        "waste-detection-db",
        "-n",
        namespace,
        f"--from-literal=database-url={DB_URL}",
    )


class OperatorProcess:
    def __init__(
        self,
        control_plane,
        namespace: str,
        logdir: Path,
        stuck_seconds: float = 3.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.extra_env = dict(extra_env or {})
        self.namespace = namespace
        self.kubeconfig = control_plane.service_account_kubeconfig(namespace, "waste-operator")
        self.port = free_port()
        self.log_path = logdir / f"operator-{namespace}.log"
        self.stuck_seconds = stuck_seconds
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def liveness_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"

    def start(self) -> OperatorProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
        env |= {
            "KUBECONFIG": self.kubeconfig,
            "WATCH_NAMESPACES": self.namespace,
            "TRAINER_IMAGE": IMAGE,
            "GCS_MODELS_BUCKET": "wd-models",
            "GCS_IMAGES_BUCKET": "wd-images",
            "GCS_DATASETS_BUCKET": "wd-datasets",
            # Tests name other images of this registry (an image that cannot be pulled, for one).
            "TRAINER_IMAGE_PREFIXES": "registry.example/",
            # The trainer's /tmp sizeLimit is also its ephemeral-storage request: small, for a small test node.
            "TRAINER_TMP_SIZE": "2Gi",
            "STUCK_SECONDS": str(self.stuck_seconds),
            # Stuck Pods are noticed by the resync pass: make it frequent so the tests stay short.
            "RESYNC_SECONDS": "1",
            "LIVENESS_ENDPOINT": self.liveness_url,
            "PYTHONUNBUFFERED": "1",
        } | self.extra_env
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "waste_operator"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for(self.alive, timeout=30, message=f"the operator's liveness endpoint; log:\n{self.tail()}")
        return self

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(
                f"the operator exited ({self.proc and self.proc.returncode}):\n{self.tail()}"
            )
        try:
            with urllib.request.urlopen(self.liveness_url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def wait_run(api, namespace: str, name: str, predicate, timeout: float = 45.0, message: str = "") -> dict:
    from waste_operator import GROUP, PLURAL, VERSION

    def check():
        run = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return run if predicate(run.get("status") or {}) else None

    return wait_for(check, timeout=timeout, message=message or f"TrainingRun {name}", interval=0.2)


def phase_is(*phases: str):
    return lambda status: status.get("phase") in phases
