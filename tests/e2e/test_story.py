"""The whole story as a user lives it, on real parts only: the control plane with its controllers, the
operator deployed from manifests/ (its Pod run by the process kubelet under the operator's ServiceAccount),
the real trainer in the Job's Pod, PostgreSQL, fake-gcs-server."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.controlplane.server import free_port
from tests.controlplane.util import wait_for
from tests.fixtures.data import write_yolo_folder
from tests.fixtures.inference_api import InferenceAPI, create_inference_table, psql
from tests.operator.admission import SHIPPED_BINDINGS, activate_bindings, retire_bindings

ROOT = Path(__file__).resolve().parents[2]
NS = "waste-detection"
GROUP, VERSION, PLURAL = "training.wastedetection.io", "v1alpha1", "trainingruns"
SMALL = {
    "epochs": 1,
    "imgSize": 64,
    "batchSize": 8,
    "device": "cpu",
    "baseModel": "yolov8n.yaml",
    "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
    "backoffLimit": 0,
}


def training_run(name: str, **spec) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TrainingRun",
            "metadata": {"name": name, "namespace": NS},
            "spec": {**SMALL, **spec},
        }
    )


RESTRICTED = {  # the namespace enforces the restricted Pod Security Standard
    "runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}  # fmt: skip
INFERENCE_API = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "inference-api", "namespace": NS},
    "spec": {
        "selector": {"matchLabels": {"app": "inference-api"}},
        "template": {
            "metadata": {"labels": {"app": "inference-api"}},
            "spec": {"containers": [{"name": "api", "image": "inference-api:1", "securityContext": RESTRICTED,
                                     "command": ["python", "-c", "import time; time.sleep(3600)"]}]},
        },
    },
}  # fmt: skip


def manifests_with(control_plane, config: dict[str, str]) -> str:
    """`kubectl kustomize manifests/` with the operator's ConfigMap set for this installation."""
    docs = list(yaml.safe_load_all(control_plane.kubectl("kustomize", str(ROOT / "manifests")).stdout))
    for doc in docs:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "waste-operator-config":
            doc["data"] |= config
    return yaml.safe_dump_all(docs)


@pytest.fixture
def cluster(control_plane, kubelet, postgres, gcs, tmp_path):
    from tests.controlplane.kubelet import NamespaceView

    dsn = postgres.new_database()
    create_inference_table(dsn)
    images, models, datasets = gcs.bucket(), gcs.bucket(), gcs.bucket()
    # The cluster's route to "GCS", and a work folder for the trainer's downloads.
    node = NamespaceView(kubelet, NS, cwd=ROOT, env={"STORAGE_EMULATOR_HOST": gcs.endpoint,
                                                     "TRAINER_WORK_DIR": str(tmp_path / "work")})  # fmt: skip
    # 1. The product's manifests, as a platform engineer applies them with their settings. The process
    # kubelet runs Pods on the host's network: the liveness endpoint gets a free port instead of 8080.
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    config = {"GCS_MODELS_BUCKET": models.name, "GCS_IMAGES_BUCKET": images.name,
              "GCS_DATASETS_BUCKET": datasets.name, "LIVENESS_ENDPOINT": liveness}  # fmt: skip
    control_plane.kubectl("apply", "-f", "-", input=manifests_with(control_plane, config))
    control_plane.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=30s")
    activate_bindings(control_plane, *SHIPPED_BINDINGS)  # the admission policies act, as in a cluster
    control_plane.kubectl(
        "-n", NS, "create", "secret", "generic", "waste-detection-db", f"--from-literal=database-url={dsn}"
    )
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(INFERENCE_API))
    # 2. The operator's Pod, (re)started with this configuration (an earlier test may have applied the
    # manifests with their defaults), Ready under its ServiceAccount.
    control_plane.kubectl("-n", NS, "rollout", "restart", "deployment/waste-operator")
    control_plane.kubectl(
        "-n", NS, "rollout", "status", "deployment/waste-operator", "--timeout=90s", timeout=120
    )
    wait_for(lambda: urllib.request.urlopen(liveness, timeout=2).status == 200, 60, "operator liveness",
             ignore=(OSError,))  # fmt: skip
    api = InferenceAPI(dsn=dsn, bucket=images)
    try:
        yield api, models, datasets, dsn, node
    finally:
        log = control_plane.kubectl("-n", NS, "logs", "deployment/waste-operator", "--tail=40", check=False)
        print("--- operator log ---\n" + log.stdout + log.stderr)
        control_plane.kubectl(
            "-n", NS, "delete", "deployment", "waste-operator", "inference-api", "--wait=false"
        )
        node.close()
        # They act on every namespace of this shared API server: the session's other tests use others.
        retire_bindings(control_plane, *SHIPPED_BINDINGS)


def wait_phase(control_plane, name: str, timeout: float = 420) -> dict:
    from kubernetes import client

    with control_plane.api_client() as c:
        custom = client.CustomObjectsApi(c)

        def done():
            run = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
            return run if (run.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

        return wait_for(done, timeout=timeout, message=f"TrainingRun {name} to finish", interval=1.0)


def restarted_at(control_plane) -> str | None:
    dep = yaml.safe_load(
        control_plane.kubectl("-n", NS, "get", "deployment", "inference-api", "-o", "yaml").stdout
    )
    return (dep["spec"]["template"]["metadata"].get("annotations") or {}).get(
        "kubectl.kubernetes.io/restartedAt"
    )


@pytest.mark.slow
@pytest.mark.controlplane
def test_feedback_becomes_a_deployed_model_and_the_next_run_learns_only_what_is_new(control_plane, cluster):
    api, models, datasets, dsn, _ = cluster
    api.add(16, "verified")
    api.add(4, "corrected")
    api.add(5, "pending")
    api.add(3, "rejected")

    # First run: everything verified so far; the inference API is restarted with the new model.
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=training_run(
            "first",
            source={"fromInferences": {"onlyVerified": True}},
            restartDeployment={"name": "inference-api"},
        ),
    )
    run = wait_phase(control_plane, "first")
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    assert status["modelVersion"] == "v1" and status["promoted"] is True
    assert status["metrics"]["mAP50"] >= 0 and status["dataset"]["new"] == 20
    assert status["jobName"].startswith("tr-first-")
    assert {"models/v1/yolov8n_waste.pt", "models/latest/yolov8n_waste.pt"} <= {
        b.name for b in models.client.list_blobs(models, prefix="models/")
    }
    assert psql(dsn, "SELECT name FROM model_versions WHERE promoted") == "v1"
    first_restart = wait_for(lambda: restarted_at(control_plane), timeout=30, message="inference-api restart")

    # New feedback: the second run trains on the new records (plus replay) from v1 and publishes v2, forced
    # past the gate (whether a one-epoch model passes it is chance; the gate has its own tests).
    api.add(6, "verified")
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=training_run(
            "second", restartDeployment={"name": "inference-api"}, promotion={"mode": "force"}
        ),
    )
    status = wait_phase(control_plane, "second")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["dataset"]["new"] == 6 and status["dataset"]["replayed"] >= 1
    assert status["baseVersion"] == "v1" and status["modelVersion"] == "v2"
    assert status["promoted"] is True
    assert models.get_blob("models/latest/yolov8n_waste.pt").metadata["version"] == "v2"
    wait_for(lambda: restarted_at(control_plane) != first_restart, timeout=30, message="second restart")

    # What a user sees.
    table = control_plane.kubectl("-n", NS, "get", "trainingruns").stdout
    lines = {line.split()[0]: line.split() for line in table.strip().splitlines()}
    assert lines["NAME"][:6] == ["NAME", "PHASE", "PROGRESS", "MAP50", "MODEL", "PROMOTED"]
    assert lines["first"][1:3] == ["Succeeded", "1/1"] and lines["first"][4:6] == ["v1", "true"], table
    assert lines["second"][1:3] == ["Succeeded", "1/1"] and lines["second"][4:6] == ["v2", "true"], table

    # Nothing new: the run fails with a clear reason; latest is untouched.
    gen = models.get_blob("models/latest/yolov8n_waste.pt").generation
    control_plane.kubectl("apply", "-f", "-", input=training_run("third"))
    status = wait_phase(control_plane, "third")["status"]
    assert status["phase"] == "Failed" and status["reason"] == "EmptySelection", status
    assert "no new verified or corrected inferences" in status["message"]
    assert models.get_blob("models/latest/yolov8n_waste.pt").generation == gen
    wide = control_plane.kubectl("-n", NS, "get", "tr", "third", "-o", "wide").stdout
    assert "EmptySelection" in wide

    # A dataset in a bucket, no inference records involved.
    folder = write_yolo_folder(Path(os.environ.get("TMPDIR", "/tmp")) / f"ds-{os.getpid()}", 12, seed=7)
    for path in folder.rglob("*"):
        if path.is_file():
            datasets.blob("curated/" + path.relative_to(folder).as_posix()).upload_from_filename(str(path))
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=training_run("curated", source={"dataset": {"uri": f"gs://{datasets.name}/curated"}}),
    )
    status = wait_phase(control_plane, "curated")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["modelVersion"] == "v3" and status["dataset"]["selected"] == 12
