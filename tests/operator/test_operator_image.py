"""The operator image, run as manifests/ deploy it (its Deployment's Pod, ConfigMap and ServiceAccount),
through the podman runtime, against the real API server: it passes its liveness probe and makes a Job."""

from __future__ import annotations

import base64
import json
import urllib.request
from pathlib import Path

import pytest
import yaml
from waste_operator import GROUP, PLURAL, VERSION

from tests.controlplane.server import free_port
from tests.controlplane.util import wait_for
from tests.images.podman_args import run_command
from tests.images.podspec import (
    SERVICE_ACCOUNT_VOLUME,
    resolve_env,
    with_service_account_volume,
    write_service_account_files,
)
from tests.operator.harness import ROOT, wait_run

pytestmark = [pytest.mark.controlplane, pytest.mark.images, pytest.mark.timeout(3600)]


def manifest(name: str) -> dict:
    return yaml.safe_load((ROOT / "manifests" / name).read_text())


def deployment_pod(namespace: str, image: str) -> dict:
    """The Pod the Deployment controller makes from manifests/operator-deployment.yaml, in `namespace`,
    with the image under test: what kustomize's `images:` does in a user's overlay."""
    template = manifest("operator-deployment.yaml")["spec"]["template"]
    (container,) = template["spec"]["containers"]
    container["image"] = image
    return {
        "metadata": {
            **template["metadata"],
            "name": "waste-operator-7d9f-x2x",
            "namespace": namespace,
            "uid": "op-1",
        },
        "spec": template["spec"],
    }


def test_operator_image_passes_its_liveness_probe_and_makes_the_job_of_a_run(
    control_plane, run_namespace, api, images, tmp_path
):
    ns = run_namespace
    health = free_port()  # host network: the manifest's 8080 would collide between test runs
    config = manifest("operator-config.yaml")["data"] | {
        "WATCH_NAMESPACES": ns,
        "TRAINER_IMAGE": images.trainer,
        "LIVENESS_ENDPOINT": f"http://127.0.0.1:{health}/healthz",
        "RESYNC_SECONDS": "1",
    }
    pod = with_service_account_volume(deployment_pod(ns, images.operator))
    (container,) = pod["spec"]["containers"]
    env = resolve_env(
        pod,
        container,
        config_maps={"waste-operator-config": config},
        service_env={
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(control_plane.port),
        },
    )

    # The ServiceAccount's token and the cluster's CA, as the kubelet projects them into the Pod.
    kubeconfig = yaml.safe_load(
        Path(control_plane.service_account_kubeconfig(ns, "waste-operator")).read_text()
    )
    token = kubeconfig["users"][0]["user"]["token"]
    ca_pem = base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"])
    sa_dir = write_service_account_files(tmp_path / "sa", token, ca_pem, ns)

    launch = run_command(
        pod,
        "operator",
        env=env,
        pod_dir=tmp_path / "pod",
        image_user=images.podman.image_user(images.operator),
        volumes={SERVICE_ACCOUNT_VOLUME: sa_dir},
        network="host",  # to reach the API server on 127.0.0.1
    )
    argv = launch.argv
    assert "--read-only" in argv and argv[argv.index("--user") + 1] == "10001:10001"
    assert argv[argv.index("--memory") + 1] == str(256 * 2**20)
    running = images.podman.start(launch, tmp_path / "operator.log")
    try:
        probe = container["livenessProbe"]["httpGet"]["path"]

        def alive() -> bool:
            assert running.running(), f"the operator exited:\n{running.log()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}{probe}", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(alive, timeout=90, message=f"the operator image's liveness endpoint; log:\n{running.log()}")

        api.custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            PLURAL,
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingRun", "metadata": {"name": "from-image"},
             "spec": {"epochs": 1}},
        )  # fmt: skip
        status = wait_run(api.custom, ns, "from-image", lambda s: s.get("jobName"), 60)["status"]
        job = api.raw.sanitize_for_serialization(api.batch.read_namespaced_job(status["jobName"], ns))
        (job_container,) = job["spec"]["template"]["spec"]["containers"]
        assert job_container["image"] == images.trainer
        assert job["metadata"]["ownerReferences"][0]["name"] == "from-image"
        assert status["phase"] in ("Pending", "Running")
        assert alive()
    finally:
        exit_ = running.stop()
    log = running.log()
    assert token not in log, "the ServiceAccount token reached the log"
    assert exit_.exit_code == 0, f"the operator did not stop cleanly on SIGTERM ({exit_}):\n{log[-3000:]}"
    assert f"[{ns}/from-image]" in log
    print(json.dumps(exit_.state()))
