"""Restarts, deletions and suspension: the run converges from what the API holds, with one Job at most."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.controlplane.util import condition, wait_for
from tests.operator.harness import OperatorProcess, phase_is, wait_run
from tests.operator.test_operator_run import create_run, events_of, jobs_of, plain, pods_of

pytestmark = pytest.mark.controlplane


def test_operator_killed_mid_run_converges_without_a_second_job(
    control_plane, run_namespace, operator, api, tmp_path
):
    ns = run_namespace
    # reportStatus false: the result exists only as the Pod's termination message
    create_run(api, ns, "slow", {"epochs": 5}, {"epochDelay": 0.6, "reportStatus": False})
    wait_run(api.custom, ns, "slow", lambda s: s.get("phase") == "Running" and s.get("progress"), 30)
    operator.stop(signal.SIGKILL)

    (job,) = jobs_of(api, ns)
    name = job["metadata"]["name"]
    wait_for(
        lambda: condition(plain(api, api.batch.read_namespaced_job(name, ns)), "Complete"),
        timeout=30,
        message="the Job to complete while the operator is down",
    )
    stale = wait_run(api.custom, ns, "slow", lambda s: True)["status"]
    assert stale["phase"] == "Running" and "result" not in stale

    restarted = OperatorProcess(control_plane, ns, tmp_path).start()
    try:
        status = wait_run(api.custom, ns, "slow", phase_is("Succeeded", "Failed"), 30)["status"]
    finally:
        restarted.stop()
    assert status["phase"] == "Succeeded", status
    assert status["modelVersion"] == "v7" and status["result"]["epochs"]["completed"] == 5
    assert [j["metadata"]["name"] for j in jobs_of(api, ns)] == [name]

    # deleting the run needs no operator: no finalizer holds it (ownerReferences clean the Job up)
    control_plane.kubectl("delete", "tr", "slow", "-n", ns, "--wait=true", "--timeout=10s")


def test_deleting_a_run_removes_its_job_pods_and_trainer(
    control_plane, run_namespace, operator, standin_runner, api
):
    """The garbage collector follows the ownerReferences: TrainingRun -> Job -> Pod; the kubelet stops the
    trainer. No finalizer of ours is involved."""
    ns = run_namespace
    create_run(api, ns, "doomed", {"epochs": 3}, {"outcome": "hang"})
    status = wait_run(
        api.custom, ns, "doomed", lambda s: s.get("phase") == "Running" and s.get("progress"), 30
    )["status"]
    pid = wait_for(lambda: standin_runner.pid(ns, status["jobName"]), 20, "the trainer's process")
    control_plane.kubectl("delete", "tr", "doomed", "-n", ns, "--wait=true", "--timeout=10s")
    wait_for(lambda: not jobs_of(api, ns, "doomed"), 20, "the Job deleted by the garbage collector")
    wait_for(lambda: not pods_of(api, ns, "doomed"), 40, "the Pod deleted and its trainer stopped")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_job_deleted_mid_run_fails_the_run_and_is_not_recreated(run_namespace, operator, api):
    ns = run_namespace
    create_run(api, ns, "orphaned", {"epochs": 3}, {"outcome": "hang"})
    status = wait_run(api.custom, ns, "orphaned", phase_is("Running"), 30)["status"]
    api.batch.delete_namespaced_job(status["jobName"], ns, propagation_policy="Background")

    status = wait_run(api.custom, ns, "orphaned", phase_is("Succeeded", "Failed"), 30)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "JobDeleted")
    assert status["jobName"] in status["message"]
    wait_for(
        lambda: any(
            e["reason"] == "JobDeleted" and e["type"] == "Warning" for e in events_of(api, ns, "orphaned")
        ),
        timeout=15,
        message="a Warning Event JobDeleted",
    )
    time.sleep(2)  # a few reconcile passes (watch events of the Job's deletion) must not bring it back
    assert jobs_of(api, ns) == [] or all(j["metadata"].get("deletionTimestamp") for j in jobs_of(api, ns))
    assert wait_run(api.custom, ns, "orphaned", lambda s: True)["status"]["phase"] == "Failed"


def test_a_suspended_run_waits_and_resumes(control_plane, run_namespace, operator, api):
    ns = run_namespace
    create_run(api, ns, "later", {"epochs": 2, "suspend": True}, {})
    status = wait_run(api.custom, ns, "later", phase_is("Suspended"), 30)["status"]
    (job,) = jobs_of(api, ns)
    assert job["spec"]["suspend"] is True and job["metadata"]["name"] == status["jobName"]

    control_plane.kubectl(
        "patch", "tr", "later", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    status = wait_run(api.custom, ns, "later", phase_is("Succeeded", "Failed"), 30)["status"]
    assert status["phase"] == "Succeeded", status
    assert len(jobs_of(api, ns)) == 1
