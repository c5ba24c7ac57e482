"""The operator as manifests/ deploys it: its Deployment comes up Ready on the process kubelet (the operator
runs as the Pod's process, with the Pod's ServiceAccount token and its ConfigMap's environment) and drives
a run end to end."""

from __future__ import annotations

import urllib.request

import pytest
import yaml

from tests.controlplane.server import free_port
from tests.controlplane.util import condition, wait_for
from tests.operator.harness import IMAGE, ROOT, phase_is, wait_run
from tests.operator.test_operator_run import create_run, plain

pytestmark = pytest.mark.controlplane


def operator_manifests(namespace: str, config: dict[str, str]) -> str:
    """manifests/operator-config.yaml and operator-deployment.yaml, moved into `namespace`, with `config`
    merged into the ConfigMap (as an overlay of the platform team would)."""
    docs = []
    for name in ("operator-config.yaml", "operator-deployment.yaml"):
        doc = yaml.safe_load((ROOT / "manifests" / name).read_text())
        doc["metadata"]["namespace"] = namespace
        if doc["kind"] == "ConfigMap":
            doc["data"] |= config
        docs.append(doc)
    return yaml.safe_dump_all(docs)


def test_the_operator_deployment_comes_up_ready_and_drives_a_run(
    control_plane, run_namespace, standin_runner, api
):
    ns = run_namespace
    # The process kubelet runs Pods on the host's network: a free port instead of 8080.
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    config = {"WATCH_NAMESPACES": ns, "TRAINER_IMAGE": IMAGE, "STUCK_SECONDS": "5", "RESYNC_SECONDS": "2",
              "LIVENESS_ENDPOINT": liveness}  # fmt: skip
    control_plane.kubectl("apply", "-f", "-", input=operator_manifests(ns, config))

    def available() -> dict | None:
        deployment = plain(api, api.apps.read_namespaced_deployment("waste-operator", ns))
        return (
            deployment
            if condition(deployment, "Available") and deployment["status"].get("readyReplicas")
            else None
        )

    wait_for(available, 60, "the operator Deployment Available")
    (pod,) = plain(
        api, api.core.list_namespaced_pod(ns, label_selector="app.kubernetes.io/name=waste-operator")
    )["items"]
    assert pod["spec"]["serviceAccountName"] == "waste-operator" and condition(pod, "Ready")
    wait_for(lambda: urllib.request.urlopen(liveness, timeout=2).status == 200, 30, "the operator's liveness",
             ignore=(OSError,))  # fmt: skip

    create_run(api, ns, "deployed", {"epochs": 2}, {"epochDelay": 0.2})
    status = wait_run(api.custom, ns, "deployed", phase_is("Succeeded", "Failed"), 60)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["modelVersion"] == "v7" and status["result"]["epochs"]["completed"] == 2

    trainer_log = control_plane.kubectl("logs", f"job/{status['jobName']}", "-n", ns).stdout
    assert trainer_log.startswith("stand-in trainer: succeed, 2 epochs"), trainer_log
    operator_log = control_plane.kubectl("logs", "deployment/waste-operator", "-n", ns).stdout
    assert f"[{ns}/deployed]" in operator_log and "created Job" in operator_log, operator_log
