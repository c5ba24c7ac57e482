"""The test control plane itself: kubectl, CRDs, RBAC, and Jobs run by the JobRunner."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.controlplane.fixtures import ControlPlane
from tests.controlplane.jobrunner import JobRunner
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
             env: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:  # fmt: skip
    container = {
        "name": "main",
        "image": "python:3.11",
        "command": ["python", "-c", code],
        "env": [{"name": "TERM_LOG", "value": "/dev/termination-log"}, *(env or [])],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": MANAGED, "annotations": annotations or {}},
        "spec": {
            "backoffLimit": backoff,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
            **spec,
        },
    }


@pytest.fixture
def batch(job_runner: JobRunner) -> client.BatchV1Api:
    return job_runner.batch


def finished_job(runner: JobRunner, ns: str, name: str, type_: str, timeout: float = 30) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = runner.read("Job", ns, name)
        return job if job and condition(job, type_) else None

    try:
        return wait_for(done, timeout, f"Job {ns}/{name} {type_}")
    except AssertionError:
        print("runner errors:", runner.errors, "\njob:", runner.read("Job", ns, name))
        raise


def pods_of(runner: JobRunner, ns: str, name: str) -> list[dict[str, Any]]:
    from tests.controlplane.jobworker import read_json

    resp = runner.core.list_namespaced_pod(ns, label_selector=f"job-name={name}", _preload_content=False)
    return sorted(read_json(resp)["items"], key=lambda p: p["metadata"]["creationTimestamp"])


def one_pod(runner: JobRunner, ns: str, name: str, pred: Any = bool, timeout: float = 20) -> dict[str, Any]:
    return wait_for(
        lambda: next((p for p in pods_of(runner, ns, name) if pred(p)), None), timeout, f"pod of {name}"
    )


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


def test_job_completes_with_termination_message(
    control_plane: ControlPlane, job_runner: JobRunner, batch: client.BatchV1Api, namespace: str
) -> None:
    control_plane.service_account_kubeconfig(namespace, "trainer")
    code = (
        "import os; print('hello from', os.environ['HOSTNAME']);"
        "assert 'token' in open(os.environ['KUBECONFIG']).read();"
        "open(os.environ['TERM_LOG'], 'w').write(os.environ['SECRET'] + '|' + os.environ['POD_NS'])"
    )
    env = [
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    body = job_body("ok", code, env=env)
    body["spec"]["template"]["spec"]["serviceAccountName"] = "trainer"
    batch.create_namespaced_job(namespace, body)
    # The Secret is missing at first: the Pod waits with CreateContainerConfigError, as on a kubelet.
    pod = one_pod(job_runner, namespace, "ok", lambda p: "containerStatuses" in p.get("status", {}))
    waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
    assert (waiting["reason"], waiting["message"]) == ("CreateContainerConfigError", 'secret "db" not found')
    job_runner.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "db"}, "stringData": {"url": "pg://x"}}
    )

    job = finished_job(job_runner, namespace, "ok", "Complete")
    st = job["status"]
    assert st["succeeded"] == 1 and not st.get("active") and st["completionTime"] and st["startTime"]
    assert condition(job, "SuccessCriteriaMet")["reason"] == "CompletionsReached"  # type: ignore[index]
    [pod] = pods_of(job_runner, namespace, "ok")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["metadata"]["ownerReferences"][0]["controller"] is True
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"], term["message"]) == (0, "Completed", f"pg://x|{namespace}")
    assert f"hello from {pod['metadata']['name']}" in job_runner.logs(namespace, pod["metadata"]["name"])


def test_job_fails_at_backoff_limit(job_runner: JobRunner, batch: client.BatchV1Api, namespace: str) -> None:
    batch.create_namespaced_job(namespace, job_body("bad", "import sys; print('no samples'); sys.exit(3)"))
    job = finished_job(job_runner, namespace, "bad", "Failed")
    failed = condition(job, "Failed")
    assert failed and failed["reason"] == "BackoffLimitExceeded"
    assert failed["message"] == "Job has reached the specified backoff limit"
    assert condition(job, "FailureTarget") and job["status"]["failed"] == 1
    [pod] = pods_of(job_runner, namespace, "bad")
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (pod["status"]["phase"], term["exitCode"], term["reason"]) == ("Failed", 3, "Error")
    assert term["message"].strip() == "no samples"  # FallbackToLogsOnError


def test_killed_pod_is_retried_once(
    job_runner: JobRunner, batch: client.BatchV1Api, namespace: str, tmp_path: Path
) -> None:
    marker = tmp_path / "attempted"
    code = (
        f"import pathlib, sys, time; m = pathlib.Path({str(marker)!r})\n"
        "if m.exists(): sys.exit(0)\nm.touch(); time.sleep(60)"
    )
    batch.create_namespaced_job(namespace, job_body("retry", code, backoff=1))
    wait_for(marker.exists, 20, "first attempt started")
    assert job_runner.kill(namespace, "retry", signal.SIGKILL)
    job = finished_job(job_runner, namespace, "retry", "Complete")
    assert (job["status"]["succeeded"], job["status"]["failed"]) == (1, 1)
    pods = pods_of(job_runner, namespace, "retry")
    assert sorted(p["status"]["phase"] for p in pods) == ["Failed", "Succeeded"]
    [killed] = [p for p in pods if p["status"]["phase"] == "Failed"]
    assert killed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137


def test_deadline_exceeded(job_runner: JobRunner, batch: client.BatchV1Api, namespace: str) -> None:
    batch.create_namespaced_job(
        namespace, job_body("slow", "import time; time.sleep(60)", activeDeadlineSeconds=2)
    )
    job = finished_job(job_runner, namespace, "slow", "Failed")
    assert condition(job, "Failed")["reason"] == "DeadlineExceeded"  # type: ignore[index]
    assert job_runner.pid(namespace, "slow") is None


def test_deleted_job_kills_its_process(
    job_runner: JobRunner, batch: client.BatchV1Api, namespace: str
) -> None:
    batch.create_namespaced_job(namespace, job_body("doomed", "import time; time.sleep(60)"))
    pid = wait_for(lambda: job_runner.pid(namespace, "doomed"), 20, "process started")
    batch.delete_namespaced_job("doomed", namespace, propagation_policy="Background")

    def gone() -> bool:
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True

    wait_for(gone, 15, "process killed")
    wait_for(lambda: not pods_of(job_runner, namespace, "doomed"), 15, "pods deleted")


def test_job_deleted_with_orphan_policy_goes_away(
    job_runner: JobRunner, batch: client.BatchV1Api, namespace: str
) -> None:
    """Without a garbage collector the orphan finalizer would keep the Job forever; the runner drops it."""
    job_runner.simulate(f"{namespace}/stuck", "ImagePullBackOff")
    batch.create_namespaced_job(namespace, job_body("stuck", "pass"))
    one_pod(job_runner, namespace, "stuck")
    batch.delete_namespaced_job("stuck", namespace, propagation_policy="Orphan")
    wait_for(lambda: job_runner.read("Job", namespace, "stuck") is None, 15, "Job deleted")
    wait_for(lambda: not pods_of(job_runner, namespace, "stuck"), 15, "pods deleted")


@pytest.mark.parametrize("kind", ["OOMKilled", "Evicted", "ImagePullBackOff", "Unschedulable"])
def test_simulations(job_runner: JobRunner, batch: client.BatchV1Api, namespace: str, kind: str) -> None:
    annotations = {"test.waste-detection.io/simulate": kind}
    batch.create_namespaced_job(namespace, job_body("sim", "raise SystemExit(5)", annotations=annotations))
    if kind in ("OOMKilled", "Evicted"):
        job = finished_job(job_runner, namespace, "sim", "Failed")
        assert condition(job, "Failed")["reason"] == "BackoffLimitExceeded"  # type: ignore[index]
        [pod] = pods_of(job_runner, namespace, "sim")
        term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert pod["status"]["phase"] == "Failed" and term["exitCode"] == 137
        if kind == "OOMKilled":
            assert term["reason"] == "OOMKilled"
        else:
            assert pod["status"]["reason"] == "Evicted" and pod["status"]["message"]
        return
    pod = one_pod(job_runner, namespace, "sim", lambda p: p.get("status", {}).get("conditions"))
    assert pod["status"]["phase"] == "Pending"
    if kind == "ImagePullBackOff":
        waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
        assert waiting["reason"] == "ImagePullBackOff" and "python:3.11" in waiting["message"]
    else:
        [scheduled] = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
        assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
        assert "Insufficient nvidia.com/gpu" in scheduled["message"]
    job = job_runner.read("Job", namespace, "sim")
    assert job and job["status"]["active"] == 1 and not job["status"].get("conditions")


def test_simulate_first_pod_only(job_runner: JobRunner, batch: client.BatchV1Api, namespace: str) -> None:
    """`simulate(..., times=1)`: the first Pod is OOMKilled, the retry runs the real command."""
    job_runner.simulate(lambda job: job["metadata"]["namespace"] == namespace, "OOMKilled", times=1)
    batch.create_namespaced_job(namespace, job_body("oom-once", "print('ok')", backoff=1))
    job = finished_job(job_runner, namespace, "oom-once", "Complete")
    assert (job["status"]["succeeded"], job["status"]["failed"]) == (1, 1)
    reasons = sorted(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["reason"]
        for p in pods_of(job_runner, namespace, "oom-once")
    )
    assert reasons == ["Completed", "OOMKilled"]
