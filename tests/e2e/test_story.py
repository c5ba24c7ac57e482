"""The whole story as a user lives it, on real parts only: the control plane, the operator running with its
ServiceAccount's permissions, the job runner playing kubelet, the real trainer, PostgreSQL, fake-gcs-server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


@pytest.fixture
def cluster(control_plane, postgres, gcs, tmp_path):
    from tests.controlplane.jobrunner import JobRunner

    # 1. The product's manifests, as a platform engineer applies them.
    control_plane.kubectl("apply", "-k", str(ROOT / "manifests"))
    control_plane.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=30s")
    activate_bindings(control_plane, *SHIPPED_BINDINGS)  # the admission policies act, as in a cluster
    dsn = postgres.new_database()
    create_inference_table(dsn)
    images, models, datasets = gcs.bucket(), gcs.bucket(), gcs.bucket()
    control_plane.kubectl(
        "-n",
        NS,
        "patch",
        "configmap",
        "waste-operator-config",
        "--type=merge",
        "-p",
        yaml.safe_dump(
            {
                "data": {
                    "GCS_MODELS_BUCKET": models.name,
                    "GCS_IMAGES_BUCKET": images.name,
                    "GCS_DATASETS_BUCKET": datasets.name,
                }
            }
        ),
    )
    control_plane.kubectl(
        "-n", NS, "create", "secret", "generic", "waste-detection-db", f"--from-literal=database-url={dsn}"
    )
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "inference-api", "namespace": NS},
                "spec": {
                    "selector": {"matchLabels": {"app": "inference-api"}},
                    "template": {
                        "metadata": {"labels": {"app": "inference-api"}},
                        "spec": {"containers": [{"name": "api", "image": "inference-api:1"}]},
                    },
                },
            }
        ),
    )

    runner = JobRunner(
        control_plane,
        namespace=NS,
        cwd=ROOT,
        extra_env={
            "STORAGE_EMULATOR_HOST": gcs.endpoint,  # the cluster's route to "GCS"
            "TRAINER_WORK_DIR": str(tmp_path / "work"),
        },
    ).start()

    # 2. The operator, configured from its ConfigMap (as envFrom does) and with only its ServiceAccount.
    config = yaml.safe_load(
        control_plane.kubectl("-n", NS, "get", "configmap", "waste-operator-config", "-o", "yaml").stdout
    )["data"]
    port = free_port()
    env = (
        {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        | config
        | {
            "KUBECONFIG": control_plane.service_account_kubeconfig(NS, "waste-operator"),
            "LIVENESS_ENDPOINT": f"http://127.0.0.1:{port}/healthz",
            "PYTHONUNBUFFERED": "1",
        }
    )
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        operator = subprocess.Popen(
            [sys.executable, "-m", "waste_operator"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive() -> bool:
        assert operator.poll() is None, log.read_text()
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200
        except OSError:
            return False

    wait_for(alive, timeout=30, message="operator liveness")
    api = InferenceAPI(dsn=dsn, bucket=images)
    try:
        yield api, models, datasets, dsn, runner
    finally:
        os.killpg(operator.pid, signal.SIGTERM)
        operator.wait(20)
        runner.stop()
        # They act on every namespace of this shared API server: the session's other tests use others.
        retire_bindings(control_plane, *SHIPPED_BINDINGS)
        print("--- operator log ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))


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
