"""The test kubelet with its podman runtime: a Pod of the built operator image, created through the API and
bound by the real scheduler, runs as a cluster runs it (securityContext, env from a ConfigMap, an emptyDir,
the ServiceAccount token, the termination message path) and its status says so."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from tests.controlplane.kubelet import NamespaceView
from tests.controlplane.kubelet.podman_runtime import PodmanRuntime
from tests.controlplane.util import wait_for

pytestmark = [pytest.mark.controlplane, pytest.mark.images, pytest.mark.timeout(600)]

PROBE = r"""
import json, os, pathlib
def writes(path):
    try:
        pathlib.Path(path).write_text("x")
        return True
    except OSError:
        return False
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
result = {
    "uid": os.getuid(), "gid": os.getgid(), "capEff": status["CapEff"].strip(),
    "noNewPrivs": status["NoNewPrivs"].strip(), "rootWritable": writes("/probe"),
    "tmpWritable": writes("/tmp/probe"), "greeting": os.environ.get("GREETING"),
    "tokenFiles": sorted(os.listdir(sa)), "namespace": open(sa + "/namespace").read(),
}
open("/run/probe/result", "w").write(json.dumps(result))
print("probe done")
"""


def test_a_pod_runs_in_its_image_with_its_security_context_env_volumes_and_termination_message(
    control_plane, kubelet, namespace, images, tmp_path
):
    core = client.CoreV1Api(control_plane.api_client())
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"greeting": "hello"}})
    pod = {
        "metadata": {"name": "probe"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": images.operator, "command": ["python", "-c", PROBE],
                "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}}],
                "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
                "terminationMessagePath": "/run/probe/result",
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}],
        },
    }  # fmt: skip
    view = NamespaceView(kubelet, namespace, runtime=PodmanRuntime(images.podman))
    try:
        core.create_namespaced_pod(namespace, pod)

        def finished():
            found = core.read_namespaced_pod("probe", namespace)
            return found if found.status.phase in ("Succeeded", "Failed") else None

        found = wait_for(finished, timeout=120, message="the probe Pod to finish", interval=0.5)
    finally:
        view.close()
    (cs,) = found.status.container_statuses
    assert found.status.phase == "Succeeded", (cs.state, kubelet.logs_of(namespace, "probe"))
    assert cs.container_id.startswith("podman://k8s_probe_probe_")
    assert cs.image_id.startswith(images.operator.rsplit(":", 1)[0] + "@sha256:")
    result = json.loads(cs.state.terminated.message)
    assert result == {
        "uid": 10001,
        "gid": 10001,
        "capEff": "0000000000000000",
        "noNewPrivs": "1",
        "rootWritable": False,
        "tmpWritable": True,
        "greeting": "hello",
        "tokenFiles": ["ca.crt", "namespace", "token"],
        "namespace": namespace,
    }
    assert "probe done" in kubelet.logs_of(namespace, "probe")
    assert not images.podman("ps", "--all", "--filter", "label=io.kubernetes.pod.name=probe", "-q").strip()


def test_the_pod_status_shows_an_oom_kill_and_a_deleted_pod_gets_sigterm(
    control_plane, kubelet, namespace, images
):
    core = client.CoreV1Api(control_plane.api_client())

    def pod(name: str, code: str, **container) -> dict:
        return {
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 20,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                "containers": [{"name": "c", "image": images.operator, "command": ["python", "-c", code]}
                               | container],
            },
        }  # fmt: skip

    hog = "blocks = []\nwhile True: blocks.append(bytearray(16 * 2**20))"
    polite = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)"
    )
    view = NamespaceView(kubelet, namespace, runtime=PodmanRuntime(images.podman))
    try:
        core.create_namespaced_pod(namespace, pod("hog", hog, resources={"limits": {"memory": "96Mi"}}))
        core.create_namespaced_pod(namespace, pod("polite", polite))

        def terminated(name: str):
            found = core.read_namespaced_pod(name, namespace)
            statuses = found.status.container_statuses or []
            return statuses[0].state.terminated if statuses and statuses[0].state.terminated else None

        oom = wait_for(lambda: terminated("hog"), timeout=120, message="the hog to be killed", interval=0.5)
        assert (oom.reason, oom.exit_code) == ("OOMKilled", 137)

        wait_for(lambda: "ready" in kubelet.logs_of(namespace, "polite"), 120, "the polite Pod to start")
        core.delete_namespaced_pod("polite", namespace)

        def gone() -> bool:
            return not core.list_namespaced_pod(namespace, field_selector="metadata.name=polite").items

        wait_for(gone, timeout=60, message="the deleted Pod to be removed", interval=0.5)
    finally:
        view.close()
    # SIGTERM reached the container (its handler exits 42, not 137 after the grace period), and the
    # containers are removed.
    (worker,) = [w for w in kubelet.workers(namespace) if w.name == "polite"]
    assert worker.handle.exit.exit_code == 42
    assert not images.podman("ps", "--all", "--filter", f"label=io.kubernetes.pod.namespace={namespace}",
                             "-q").strip()  # fmt: skip
