"""The whole story as a user lives it, on real parts only: the control plane with its controllers, the
operator deployed from manifests/ (its Pod run by the process kubelet under the operator's ServiceAccount),
the real trainer in the Job's Pod, PostgreSQL, fake-gcs-server."""

from __future__ import annotations

import contextlib
import json
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


def apply_run(control_plane, name: str, **spec) -> None:
    control_plane.kubectl("apply", "-f", "-", input=training_run(name, **spec))


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


def manifests_with(control_plane, config: dict[str, str], operator_image: str | None = None) -> str:
    """`kubectl kustomize manifests/` with the operator's ConfigMap set for this installation, and the
    operator's image replaced by `operator_image` (what kustomize's `images:` does in a user's overlay)."""
    docs = list(yaml.safe_load_all(control_plane.kubectl("kustomize", str(ROOT / "manifests")).stdout))
    for doc in docs:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "waste-operator-config":
            doc["data"] |= config
        if operator_image and doc["kind"] == "Deployment" and doc["metadata"]["name"] == "waste-operator":
            doc["spec"]["template"]["spec"]["containers"][0]["image"] = operator_image
    return yaml.safe_dump_all(docs)


@contextlib.contextmanager
def installed(control_plane, kubelet, postgres, gcs, tmp_path, images=None):
    """The product installed from manifests/ with its database Secret, the operator Ready. Without
    `images`, the process kubelet runs the operator and the trainer from this checkout (fast), with the
    stand-in inference API; with `images` (tests/images/fixtures.py), its podman runtime runs the built
    operator and trainer images, as a cluster runs them."""
    from tests.controlplane.kubelet import NamespaceView
    from tests.controlplane.kubelet.podman_runtime import PodmanRuntime

    dsn = postgres.new_database()
    create_inference_table(dsn)
    feedback, models, datasets = gcs.bucket(), gcs.bucket(), gcs.bucket()
    # The cluster's route to "GCS" (and, for processes, a work folder for the trainer's downloads).
    if images is None:
        node = NamespaceView(kubelet, NS, cwd=ROOT, env={"STORAGE_EMULATOR_HOST": gcs.endpoint,
                                                         "TRAINER_WORK_DIR": str(tmp_path / "work")})  # fmt: skip
    else:
        node = NamespaceView(
            kubelet, NS, env={"STORAGE_EMULATOR_HOST": gcs.endpoint}, runtime=PodmanRuntime(images.podman)
        )
    # 1. The product's manifests, as a platform engineer applies them with their settings. The kubelet runs
    # Pods on the host's network: the liveness endpoint gets a free port instead of 8080.
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    config = {"GCS_MODELS_BUCKET": models.name, "GCS_IMAGES_BUCKET": feedback.name,
              "GCS_DATASETS_BUCKET": datasets.name, "LIVENESS_ENDPOINT": liveness}  # fmt: skip
    if images is not None:  # the built trainer; /dev/shm and /tmp sized for a small machine
        config |= {"TRAINER_IMAGE": images.trainer, "TRAINER_SHM_SIZE": "1Gi", "TRAINER_TMP_SIZE": "4Gi"}
    operator_image = images.operator if images is not None else None
    control_plane.kubectl("apply", "-f", "-", input=manifests_with(control_plane, config, operator_image))
    control_plane.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=30s")
    activate_bindings(control_plane, *SHIPPED_BINDINGS)  # the admission policies act, as in a cluster
    control_plane.kubectl(
        "-n", NS, "create", "secret", "generic", "waste-detection-db", f"--from-literal=database-url={dsn}"
    )
    if images is None:  # its stand-in runs as a process: there is no inference API image
        control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(INFERENCE_API))
    # 2. The operator's Pod, (re)started with this configuration (an earlier test may have applied the
    # manifests with their defaults), Ready under its ServiceAccount.
    control_plane.kubectl("-n", NS, "rollout", "restart", "deployment/waste-operator")
    control_plane.kubectl(
        "-n", NS, "rollout", "status", "deployment/waste-operator", "--timeout=90s", timeout=120
    )
    wait_for(lambda: urllib.request.urlopen(liveness, timeout=2).status == 200, 60, "operator liveness",
             ignore=(OSError,))  # fmt: skip
    api = InferenceAPI(dsn=dsn, bucket=feedback)
    try:
        yield api, models, datasets, dsn, node
    finally:
        log = control_plane.kubectl("-n", NS, "logs", "deployment/waste-operator", "--tail=40", check=False)
        print("--- operator log ---\n" + log.stdout + log.stderr)
        control_plane.kubectl(
            "-n", NS, "delete", "deployment", "waste-operator", "inference-api", "--wait=false",
            "--ignore-not-found",
        )  # fmt: skip
        control_plane.kubectl("-n", NS, "delete", "secret", "waste-detection-db", "--ignore-not-found")
        node.close()
        # They act on every namespace of this shared API server: the session's other tests use others.
        retire_bindings(control_plane, *SHIPPED_BINDINGS)


@pytest.fixture
def cluster(control_plane, kubelet, postgres, gcs, tmp_path):
    with installed(control_plane, kubelet, postgres, gcs, tmp_path) as found:
        yield found


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
    apply_run(
        control_plane,
        "first",
        source={"fromInferences": {"onlyVerified": True}},
        restartDeployment={"name": "inference-api"},
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
    apply_run(
        control_plane, "second", restartDeployment={"name": "inference-api"}, promotion={"mode": "force"}
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
    apply_run(control_plane, "third")
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
    apply_run(control_plane, "curated", source={"dataset": {"uri": f"gs://{datasets.name}/curated"}})
    status = wait_phase(control_plane, "curated")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["modelVersion"] == "v3" and status["dataset"]["selected"] == 12


@pytest.mark.slow
@pytest.mark.controlplane
@pytest.mark.images
@pytest.mark.timeout(1800)
def test_the_built_images_take_feedback_to_a_published_model_as_a_cluster_runs_them(
    control_plane, kubelet, postgres, gcs, images, tmp_path
):
    """The same story through the images users deploy: the operator's Deployment and the run's Job each run
    their image under podman (ServiceAccount token, securityContext, read-only root, uid 10001)."""
    from kubernetes import client

    with installed(control_plane, kubelet, postgres, gcs, tmp_path, images=images) as cluster:
        api, models, _, dsn, _ = cluster
        api.add(12, "verified")
        api.add(3, "pending")
        apply_run(
            control_plane,
            "from-images",
            source={"fromInferences": {"onlyVerified": True}},
            resources={"gpus": 0, "cpu": "1", "memory": "4Gi"},
        )
        status = wait_phase(control_plane, "from-images", timeout=900)["status"]
        assert status["phase"] == "Succeeded", status
        assert status["modelVersion"] == "v1" and status["promoted"] is True
        assert status["metrics"]["mAP50"] >= 0 and status["dataset"]["new"] == 12
        assert {"models/v1/yolov8n_waste.pt", "models/latest/yolov8n_waste.pt"} <= {
            b.name for b in models.client.list_blobs(models, prefix="models/")
        }
        assert psql(dsn, "SELECT name FROM model_versions WHERE promoted") == "v1"

        # Both Pods ran their image through podman, as the kubelet's status says.
        with control_plane.api_client() as c:
            pods = client.CoreV1Api(c).list_namespaced_pod(NS).items
        by_image = {
            p.spec.containers[0].image: p
            for p in pods
            if p.status.container_statuses and (p.status.container_statuses[0].container_id or "").startswith("podman://")
        }  # fmt: skip
        assert set(by_image) == {images.operator, images.trainer}, [p.metadata.name for p in pods]
        trainer = by_image[images.trainer]
        assert trainer.metadata.labels["batch.kubernetes.io/job-name"] == status["jobName"]
        assert trainer.status.phase == "Succeeded"
        assert (
            json.loads(trainer.status.container_statuses[0].state.terminated.message)["modelVersion"] == "v1"
        )
        # The operator's container, still running: the settings podman applied from its Pod.
        operator = by_image[images.operator]
        name = operator.status.container_statuses[0].container_id.removeprefix("podman://")
        (found,) = json.loads(images.podman("inspect", "--type", "container", name))
        assert found["Config"]["User"] == "10001:10001"
        assert found["HostConfig"]["ReadonlyRootfs"] is True
        assert not found.get("EffectiveCaps"), found.get("EffectiveCaps")  # capabilities: drop [ALL]
        mounts = {m["Destination"] for m in found["Mounts"]}
        assert {"/tmp", "/var/run/secrets/kubernetes.io/serviceaccount", "/dev/termination-log"} <= mounts
