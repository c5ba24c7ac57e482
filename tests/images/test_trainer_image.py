"""The trainer image runs the operator's real Job Pod, through the podman runtime, on the real services."""

from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import threading
import uuid

import pytest
from waste_operator.config import OperatorConfig
from waste_operator.jobs import build_job

from tests.fixtures.inference_api import InferenceAPI, create_inference_table, psql
from tests.images.fixtures import ROOT
from tests.images.podman_args import run_command
from tests.images.podspec import resolve_env

pytestmark = [pytest.mark.images, pytest.mark.slow, pytest.mark.timeout(3600)]


def job_pod(config: OperatorConfig, spec: dict) -> dict:
    """The Pod the Job controller makes from the operator's Job of a TrainingRun with `spec`."""
    run = {
        "apiVersion": "training.wastedetection.io/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "first", "namespace": "images", "uid": str(uuid.uuid4())},
        "spec": spec,
    }
    template = build_job(run, config)["spec"]["template"]
    name = f"tr-first-{uuid.uuid4().hex[:5]}"
    return {
        "metadata": {**template["metadata"], "name": name, "namespace": "images", "uid": str(uuid.uuid4())},
        "spec": template["spec"],
    }


def test_trainer_image_trains_one_epoch_and_publishes_v1(images, postgres, gcs, tmp_path):
    dsn = postgres.new_database()
    create_inference_table(dsn)
    suffix = uuid.uuid4().hex[:8]
    config = OperatorConfig(
        trainer_image=images.trainer,
        models_bucket=f"models-{suffix}",
        images_bucket=f"images-{suffix}",
        datasets_bucket=f"datasets-{suffix}",
        shm_size="1Gi",
        tmp_size="4Gi",
    )
    models, feedback = gcs.bucket(config.models_bucket), gcs.bucket(config.images_bucket)
    InferenceAPI(dsn=dsn, bucket=feedback).add(16, "verified")

    spec = {
        "epochs": 1,
        "imgSize": 64,
        "batchSize": 8,
        "baseModel": "yolov8n.yaml",  # built without network: no pretrained weights in this image
        "resources": {"gpus": 0, "cpu": "2", "memory": "6Gi"},
    }
    pod = job_pod(config, spec)
    (container,) = pod["spec"]["containers"]
    assert container["image"] == images.trainer
    env = resolve_env(
        pod,
        container,
        secrets={"waste-detection-db": {"database-url": dsn}},
        # The cluster's GCS is the emulator here: the one variable the Job does not set itself.
        service_env={"STORAGE_EMULATOR_HOST": gcs.endpoint},
    )
    launch = run_command(
        pod,
        "trainer",
        env=env,
        pod_dir=tmp_path,
        image_user=images.podman.image_user(images.trainer),
        network="host",  # only to reach PostgreSQL and the GCS emulator on 127.0.0.1
    )
    argv = launch.argv
    assert "--read-only" in argv and "--user" in argv and argv[argv.index("--cap-drop") + 1] == "ALL"
    running = images.podman.start(launch, tmp_path / "trainer.log")
    exit_ = running.wait(timeout=1800)
    log = running.log()
    assert exit_.exit_code == 0, f"{exit_}\n{log[-4000:]}"

    report = json.loads(
        (tmp_path / "volumes" / "kubernetes.io~empty-dir" / "tmp" / "report.json").read_text()
    )
    assert report["status"] == "Succeeded" and report["model"]["version"] == "v1"
    assert report["data"]["train"] + report["data"]["val"] == 16
    message = json.loads(exit_.message)  # what the operator reads from the Pod's termination message
    assert message["status"] == "Succeeded" and message["modelVersion"] == "v1"
    assert {"models/v1/yolov8n_waste.pt", "models/v1/metadata.json"} <= {
        b.name for b in gcs.client().list_blobs(models, prefix="models/")
    }
    assert psql(dsn, "SELECT name, state FROM model_versions") == "v1|registered"
    assert dsn not in log, "the database URL (a secret) reached the log"


class _OneFile(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_the_weights_stage_keeps_only_weights_with_the_pinned_digest(images, tmp_path):
    """FETCH_WEIGHTS=1 (the default) downloads yolov8n.pt and refuses bytes whose sha256 differs. Served
    here from 127.0.0.1, as GitHub is out of reach; only the weights stage is built."""
    body = b"not really weights " * 1000
    handler = type("Handler", (_OneFile,), {"body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/yolov8n.pt"
    tag = f"localhost/waste-weights-test:{uuid.uuid4().hex[:8]}"

    def build(sha: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [images.podman.binary, "build", "--layers=false", "--network", "host", "--target", "weights",
             "--build-arg", f"BASE={images.base}", "--build-arg", f"YOLOV8N_URL={url}",
             "--build-arg", f"YOLOV8N_SHA256={sha}", "-f", "Dockerfile.trainer", "-t", tag, "."],
            cwd=ROOT, env=images.podman.env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    try:
        wrong = build("0" * 64)
        assert wrong.returncode != 0
        assert (
            f"sha256 {hashlib.sha256(body).hexdigest()}, expected {'0' * 64}" in wrong.stdout + wrong.stderr
        )

        right = build(hashlib.sha256(body).hexdigest())
        assert right.returncode == 0, right.stderr[-3000:]
        stored = images.podman(
            "run", "--rm", "--network", "none", "--user", "10001:10001", "--read-only", tag,
            "python", "-c", "import hashlib; print(hashlib.sha256(open('/opt/weights/yolov8n.pt', 'rb').read()).hexdigest())",
        ).strip()  # fmt: skip
        assert stored == hashlib.sha256(body).hexdigest()
    finally:
        server.shutdown()
        images.podman("rmi", "--force", tag, check=False)
