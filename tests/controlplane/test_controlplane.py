"""The test control plane itself: kubectl, CRDs, RBAC, and Jobs run by the real Job controller, scheduled by
the real scheduler and run by the process kubelet."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.controlplane.fixtures import ControlPlane, Kubelet
from tests.controlplane.util import condition, wait_for

pytestmark = pytest.mark.controlplane

MANAGED = {"app.kubernetes.io/managed-by": "waste-detection-operator"}

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.test.waste-detection.io}
spec:
  group: test.waste-detection.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties: {size: {type: integer}}
"""


def job_body(name: str, code: str, *, backoff: int = 0, annotations: dict[str, str] | None = None,
             env: list[dict[str, Any]] | None = None, restart: str = "Never", **spec: Any) -> dict[str, Any]:  # fmt: skip
    container = {
        "name": "main",
        "image": "python:3.11",
        "command": ["python", "-c", code],
        "env": [{"name": "TERM_LOG", "value": "/dev/termination-log"}, *(env or [])],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    template = {"metadata": {"annotations": annotations or {}},
                "spec": {"restartPolicy": restart, "containers": [container]}}  # fmt: skip
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": MANAGED},
        "spec": {"backoffLimit": backoff, "template": template, **spec},
    }


class Cluster:
    """Raw-JSON reads for the assertions, and the kubelet."""

    def __init__(self, control_plane: ControlPlane, kubelet: Kubelet, namespace: str) -> None:
        self.api = control_plane.api_client()
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.kubelet = kubelet
        self.ns = namespace

    def create(self, body: dict[str, Any]) -> None:
        self.batch.create_namespaced_job(self.ns, body)

    def job(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(
                json.loads(self.batch.read_namespaced_job(name, self.ns, _preload_content=False).data)
            )
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise

    def finished(self, name: str, type_: str, timeout: float = 30) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            job = self.job(name)
            return job if job and condition(job, type_) else None

        return wait_for(done, timeout, f"Job {self.ns}/{name} {type_}")

    def pods(self, job_name: str) -> list[dict[str, Any]]:
        resp = self.core.list_namespaced_pod(
            self.ns, label_selector=f"job-name={job_name}", _preload_content=False
        )
        return sorted(json.loads(resp.data)["items"], key=lambda p: p["metadata"]["creationTimestamp"])

    def one_pod(self, job_name: str, pred: Any = bool, timeout: float = 20) -> dict[str, Any]:
        return wait_for(
            lambda: next((p for p in self.pods(job_name) if pred(p)), None), timeout, f"pod of {job_name}"
        )


@pytest.fixture
def cluster(control_plane: ControlPlane, kubelet: Kubelet, namespace: str) -> Iterator[Cluster]:
    c = Cluster(control_plane, kubelet, namespace)
    yield c
    c.api.close()


def unscheduled(pod: dict[str, Any]) -> dict[str, Any] | None:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "PodScheduled" and c["status"] == "False"), None)


def waiting_reason(pod: dict[str, Any]) -> str | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return (statuses[0].get("state", {}).get("waiting") or {}).get("reason")


def terminated(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(pod["status"]["containerStatuses"][0]["state"]["terminated"])


def test_warm_start(control_plane: ControlPlane) -> None:
    print(
        f"control plane start: {control_plane.start_seconds:.2f} s, cached={control_plane.binaries_were_cached}"
    )
    limit = float(os.environ.get("WD_CONTROLPLANE_MAX_START_SECONDS", "10"))
    if control_plane.binaries_were_cached:
        assert control_plane.start_seconds < limit


def test_crd_and_custom_resource(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-f", "-", input=CRD)
    control_plane.kubectl("wait", "--for=condition=Established", "crd/widgets.test.waste-detection.io")
    cr = f"apiVersion: test.waste-detection.io/v1\nkind: Widget\nmetadata: {{name: w1, namespace: {namespace}}}\nspec: {{size: 3}}\n"
    wait_for(lambda: control_plane.kubectl("apply", "-f", "-", input=cr, check=False).returncode == 0, 20,
             "Widget create (discovery may lag)")  # fmt: skip
    out = control_plane.kubectl("get", "widgets", "-n", namespace, "-o", "jsonpath={.items[*].spec.size}")
    assert out.stdout == "3"
    control_plane.kubectl("delete", "widget", "w1", "-n", namespace)
    assert control_plane.kubectl("get", "widgets", "-n", namespace, "-o", "name").stdout.strip() == ""


def test_rbac_for_service_account(control_plane: ControlPlane, namespace: str) -> None:
    kubeconfig = control_plane.service_account_kubeconfig(namespace, "reader")
    control_plane.kubectl(
        "create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", namespace
    )
    control_plane.kubectl("create", "rolebinding", "reader", "--role=pod-reader",
                          f"--serviceaccount={namespace}:reader", "-n", namespace)  # fmt: skip
    who = f"--as=system:serviceaccount:{namespace}:reader"
    yes = control_plane.kubectl("auth", "can-i", "list", "pods", who, "-n", namespace, check=False)
    no = control_plane.kubectl("auth", "can-i", "delete", "pods", who, "-n", namespace, check=False)
    assert (yes.stdout.strip(), yes.returncode) == ("yes", 0)
    assert (no.stdout.strip(), no.returncode) == ("no", 1)
    # The SA's own kubeconfig: allowed what the Role grants, refused the rest.
    mine = control_plane.kubectl(
        "auth", "can-i", "list", "pods", "-n", namespace, kubeconfig=kubeconfig, check=False
    )
    assert mine.stdout.strip() == "yes"
    control_plane.kubectl("get", "pods", "-n", namespace, kubeconfig=kubeconfig)
    refused = control_plane.kubectl("get", "secrets", "-n", namespace, kubeconfig=kubeconfig, check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()
    with control_plane.api_client(kubeconfig) as api, pytest.raises(client.ApiException) as e:
        client.CoreV1Api(api).list_namespaced_config_map(namespace)
    assert e.value.status == 403


# A container's view: its ServiceAccount token (a JWT bound to its Pod), the Secret and the namespace.
WHO_AM_I = """
import base64, json, os, yaml
user = yaml.safe_load(open(os.environ["KUBECONFIG"]))["users"][0]["user"]
claims = json.loads(base64.urlsafe_b64decode(open(user["tokenFile"]).read().split(".")[1] + "=="))
print("hello from", os.environ["HOSTNAME"], "as", claims["sub"])
assert claims["kubernetes.io"]["pod"]["name"] == os.environ["HOSTNAME"]
open(os.environ["TERM_LOG"], "w").write(os.environ["SECRET"] + "|" + os.environ["POD_NS"])
"""


def test_job_completes_with_termination_message_and_logs(
    control_plane: ControlPlane, cluster: Cluster
) -> None:
    ns = cluster.ns
    control_plane.service_account_kubeconfig(ns, "trainer")
    env = [
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    body = job_body("ok", WHO_AM_I, env=env)
    body["spec"]["template"]["spec"]["serviceAccountName"] = "trainer"
    cluster.create(body)
    # The Secret is missing at first: the Pod waits with CreateContainerConfigError, as on a kubelet.
    pod = cluster.one_pod("ok", lambda p: waiting_reason(p) not in (None, "ContainerCreating"))
    waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
    assert (waiting["reason"], waiting["message"]) == ("CreateContainerConfigError", 'secret "db" not found')
    assert pod["spec"]["nodeName"] == cluster.kubelet.node_name  # bound by the scheduler
    cluster.core.create_namespaced_secret(ns, {"metadata": {"name": "db"}, "stringData": {"url": "pg://x"}})

    job = cluster.finished("ok", "Complete")
    st = job["status"]
    assert st["succeeded"] == 1 and not st.get("active") and st["completionTime"] and st["startTime"]
    assert condition(job, "SuccessCriteriaMet")["reason"] == "CompletionsReached"  # type: ignore[index]
    [pod] = cluster.pods("ok")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["metadata"]["ownerReferences"][0]["controller"] is True
    term = terminated(pod)
    assert (term["exitCode"], term["reason"], term["message"]) == (0, "Completed", f"pg://x|{ns}")
    name = pod["metadata"]["name"]
    # `kubectl logs` goes through the API server to the kubelet's log endpoint.
    logs = control_plane.kubectl("logs", "job/ok", "-n", ns).stdout
    assert logs.strip() == f"hello from {name} as system:serviceaccount:{ns}:trainer"
    assert control_plane.kubectl("logs", name, "-n", ns, "--tail=1").stdout == logs


def test_job_fails_at_backoff_limit(cluster: Cluster) -> None:
    cluster.create(job_body("bad", "import sys; print('no samples'); sys.exit(3)"))
    job = cluster.finished("bad", "Failed")
    failed = condition(job, "Failed")
    assert failed and failed["reason"] == "BackoffLimitExceeded"
    assert failed["message"] == "Job has reached the specified backoff limit"
    assert condition(job, "FailureTarget") and job["status"]["failed"] == 1
    [pod] = cluster.pods("bad")
    term = terminated(pod)
    assert (pod["status"]["phase"], term["exitCode"], term["reason"]) == ("Failed", 3, "Error")
    assert term["message"].strip() == "no samples"  # FallbackToLogsOnError


def test_killed_pod_is_retried_once(cluster: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "attempted"
    code = (
        f"import pathlib, sys, time; m = pathlib.Path({str(marker)!r})\n"
        "if m.exists(): sys.exit(0)\nm.touch(); time.sleep(60)"
    )
    cluster.create(job_body("retry", code, backoff=1))
    wait_for(marker.exists, 20, "first attempt started")
    wait_for(lambda: cluster.kubelet.kill(cluster.ns, "retry", signal.SIGKILL), 10, "the container to kill")
    job = cluster.finished("retry", "Complete")
    assert (job["status"]["succeeded"], job["status"]["failed"]) == (1, 1)
    pods = cluster.pods("retry")
    assert sorted(p["status"]["phase"] for p in pods) == ["Failed", "Succeeded"]
    [killed] = [p for p in pods if p["status"]["phase"] == "Failed"]
    assert terminated(killed)["exitCode"] == 137


def test_on_failure_restarts_the_container_in_place(cluster: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "attempted"
    code = (
        f"import pathlib, sys; m = pathlib.Path({str(marker)!r})\nif not m.exists(): m.touch(); sys.exit(1)"
    )
    cluster.create(job_body("again", code, backoff=3, restart="OnFailure"))
    job = cluster.finished("again", "Complete")
    [pod] = cluster.pods("again")
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1 and status["lastState"]["terminated"]["exitCode"] == 1
    assert job["status"]["succeeded"] == 1


def test_deadline_exceeded(cluster: Cluster) -> None:
    cluster.create(job_body("slow", "import time; time.sleep(60)", activeDeadlineSeconds=2))
    job = cluster.finished("slow", "Failed")
    assert condition(job, "Failed")["reason"] == "DeadlineExceeded"  # type: ignore[index]
    assert cluster.kubelet.pid(cluster.ns, "slow") is None


def test_deleted_job_kills_its_process(cluster: Cluster) -> None:
    cluster.create(job_body("doomed", "import time; time.sleep(60)"))
    pid = wait_for(lambda: cluster.kubelet.pid(cluster.ns, "doomed"), 20, "process started")
    cluster.batch.delete_namespaced_job("doomed", cluster.ns, propagation_policy="Background")

    def gone() -> bool:
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True

    wait_for(gone, 15, "process killed")
    wait_for(lambda: not cluster.pods("doomed"), 15, "pods deleted by the garbage collector")


def test_orphan_deletion_leaves_the_pod_running(cluster: Cluster) -> None:
    cluster.create(job_body("parent", "import time; time.sleep(60)"))
    wait_for(lambda: cluster.kubelet.pid(cluster.ns, "parent"), 20, "process started")
    cluster.batch.delete_namespaced_job("parent", cluster.ns, propagation_policy="Orphan")
    wait_for(lambda: cluster.job("parent") is None, 15, "Job deleted")
    [pod] = wait_for(lambda: [p for p in cluster.pods("parent") if not p["metadata"].get("ownerReferences")],
                     15, "the Pod released by the garbage collector")  # fmt: skip
    assert pod["status"]["phase"] == "Running" and cluster.kubelet.pid(cluster.ns, "parent")


def test_ttl_after_finished_removes_the_job_and_its_pods(cluster: Cluster) -> None:
    cluster.create(job_body("brief", "print('done')", ttlSecondsAfterFinished=1))
    cluster.finished("brief", "Complete")
    wait_for(lambda: cluster.job("brief") is None, 20, "the ttl-after-finished controller to delete the Job")
    wait_for(lambda: not cluster.pods("brief"), 15, "its Pod deleted by the garbage collector")


def test_oom_kill(cluster: Cluster) -> None:
    cluster.kubelet.simulate(f"{cluster.ns}/oom", "OOMKilled")
    cluster.create(job_body("oom", "import time; time.sleep(60)"))
    job = cluster.finished("oom", "Failed")
    assert condition(job, "Failed")["reason"] == "BackoffLimitExceeded"  # type: ignore[index]
    [pod] = cluster.pods("oom")
    term = terminated(pod)
    assert (pod["status"]["phase"], term["exitCode"], term["reason"]) == ("Failed", 137, "OOMKilled")


def test_eviction_is_a_disruption(cluster: Cluster) -> None:
    """An evicted Pod carries the DisruptionTarget condition the kubelet's eviction manager writes; without a
    podFailurePolicy it counts against backoffLimit like any failure."""
    annotations = {"test.waste-detection.io/simulate": "Evicted"}
    cluster.create(job_body("evicted", "import time; time.sleep(60)", annotations=annotations))
    job = cluster.finished("evicted", "Failed")
    assert condition(job, "Failed")["reason"] == "BackoffLimitExceeded"  # type: ignore[index]
    [pod] = cluster.pods("evicted")
    status = pod["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "Evicted")
    assert status["message"].startswith("The node was low on resource: memory.")
    disruption = condition(pod, "DisruptionTarget")
    assert disruption and disruption["reason"] == "TerminationByKubelet"
    assert terminated(pod)["exitCode"] == 137


def test_an_eviction_ignored_by_the_pod_failure_policy_is_retried_without_counting(cluster: Cluster) -> None:
    cluster.kubelet.simulate(f"{cluster.ns}/spared", "Evicted", times=1)
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    cluster.create(job_body("spared", "print('second pod')", podFailurePolicy=policy))
    job = cluster.finished("spared", "Complete")
    assert job["status"]["succeeded"] == 1 and not job["status"].get("failed")
    # creationTimestamp has one-second resolution: both Pods may share it, so compare without order
    assert sorted(str(p["status"].get("reason")) for p in cluster.pods("spared")) == ["Evicted", "None"]


def test_non_retryable_exit_code_fails_the_job_at_once(cluster: Cluster) -> None:
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In",
                                                                "values": [2]}}]}  # fmt: skip
    cluster.create(job_body("invalid", "raise SystemExit(2)", backoff=5, podFailurePolicy=policy))
    job = cluster.finished("invalid", "Failed")
    failed = condition(job, "Failed")
    assert failed and failed["reason"] == "PodFailurePolicy"
    assert len(cluster.pods("invalid")) == 1


def test_image_pull_failure(cluster: Cluster) -> None:
    cluster.kubelet.simulate("pull", "ImagePullBackOff")
    cluster.create(job_body("pull", "pass"))

    pod = cluster.one_pod("pull", lambda p: waiting_reason(p) == "ImagePullBackOff")
    waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
    assert (
        pod["status"]["phase"] == "Pending" and 'Back-off pulling image "python:3.11"' in waiting["message"]
    )
    job = cluster.job("pull")
    assert job and job["status"]["active"] == 1 and not job["status"].get("conditions")


def test_more_gpus_than_the_node_has_is_unschedulable(cluster: Cluster) -> None:
    body = job_body("greedy", "pass")
    gpus = str(cluster.kubelet.capacity.gpus + 1)
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    cluster.create(body)
    pod = cluster.one_pod("greedy", lambda p: unscheduled(p) is not None)
    [scheduled] = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
    assert "1 Insufficient nvidia.com/gpu" in scheduled["message"]
    assert not pod["spec"].get("nodeName")


def test_simulate_first_pod_only(cluster: Cluster) -> None:
    """`simulate(..., times=1)`: the first Pod is OOMKilled, the retry runs the real command."""
    ns = cluster.ns
    cluster.kubelet.simulate(lambda pod: pod["metadata"]["namespace"] == ns, "OOMKilled", times=1)
    cluster.create(job_body("oom-once", "print('ok')", backoff=1))
    job = cluster.finished("oom-once", "Complete")
    assert (job["status"]["succeeded"], job["status"]["failed"]) == (1, 1)
    assert sorted(terminated(p)["reason"] for p in cluster.pods("oom-once")) == ["Completed", "OOMKilled"]
