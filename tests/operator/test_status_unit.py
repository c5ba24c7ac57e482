"""status_from: the Job, its Pods and the trainer's result mapped to the run's status, without a cluster."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from waste_operator.status import TRANSITIONS, Phase, can_move, is_unchanged, set_condition, status_from

from tests.operator.conftest import make_run

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
STUCK = 900.0
RESULT = {
    "status": "Succeeded",
    "reason": "",
    "message": "trained",
    "modelVersion": "v3",
    "modelUri": "gs://m/models/v3/yolov8n_waste.pt",
    "baseVersion": "v2",
    "promoted": True,
    "promotionReason": "mAP50 0.41 > champion 0.39",
    "metrics": {"mAP50": 0.41, "mAP50_95": 0.29, "precision": 0.5, "recall": 0.4},
    "championMAP50": 0.39,
    "dataset": {"selected": 120, "new": 60, "replayed": 60, "train": 96, "val": 24, "skipped": 2},
    "epochs": {"completed": 12, "requested": 50, "earlyStopped": True, "resumedFromEpoch": None},
}


def job(conditions=(), suspend=False, **status):
    return {
        "metadata": {"name": "tr-nightly-12345678", "uid": "job-uid"},
        "spec": {"suspend": suspend, "activeDeadlineSeconds": 600},
        "status": {"startTime": "2025-06-01T11:00:00Z", "conditions": list(conditions), **status},
    }


def cond(kind, reason="", message=""):
    return {"type": kind, "status": "True", "reason": reason, "message": message}


def pod(phase="Running", state=None, created="2025-06-01T11:00:01Z", name="p1", **status):
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {
            "phase": phase,
            "startTime": created,
            "containerStatuses": [{"name": "trainer", "state": state or {"running": {}}}],
            **status,
        },
    }


def terminated(code, reason="Error", message=""):
    return {"terminated": {"exitCode": code, "reason": reason, "message": message}}


def test_running_pod_makes_the_run_running():
    new = status_from(job(), [pod()], make_run_with({"phase": "Pending"}), NOW, STUCK)
    assert new["phase"] == "Running" and new["jobName"] == "tr-nightly-12345678"
    assert new["startTime"] == "2025-06-01T11:00:00Z"
    progressing = next(c for c in new["conditions"] if c["type"] == "Progressing")
    assert progressing["status"] == "True" and progressing["reason"] == "Running"


def make_run_with(status):
    run = make_run()
    run["status"] = status
    return run


def test_success_copies_the_result_from_status_result():
    run = make_run_with({"phase": "Running", "result": RESULT, "jobName": "tr-nightly-12345678"})
    new = status_from(job([cond("Complete")], completionTime="2025-06-01T11:30:00Z"), [], run, NOW, STUCK)
    assert new["phase"] == "Succeeded" and new["reason"] == "Completed"
    assert new["modelVersion"] == "v3" and new["metrics"]["mAP50"] == 0.41
    assert new["promoted"] is True and new["championMAP50"] == 0.39 and new["dataset"]["train"] == 96
    assert new["completionTime"] == "2025-06-01T11:30:00Z"
    assert "result" not in new  # already there
    kinds = {c["type"]: c for c in new["conditions"]}
    assert kinds["Succeeded"]["status"] == "True" and kinds["Promoted"]["status"] == "True"
    assert kinds["Progressing"]["status"] == "False"


def test_success_from_the_termination_message_when_the_operator_missed_the_report():
    done = pod("Succeeded", terminated(0, "Completed", json.dumps(RESULT)))
    new = status_from(job([cond("Complete")]), [done], make_run_with({"phase": "Running"}), NOW, STUCK)
    assert new["phase"] == "Succeeded" and new["modelUri"] == RESULT["modelUri"]
    assert new["result"] == RESULT


def test_trainer_failure_reports_its_reason_and_message():
    failed = {**RESULT, "status": "Failed", "reason": "EmptySelection", "message": "no verified inferences"}
    p = pod("Failed", terminated(3, message=json.dumps(failed)))
    new = status_from(job([cond("Failed", "PodFailurePolicy")]), [p], make_run_with({}), NOW, STUCK)
    assert (new["phase"], new["reason"], new["message"]) == (
        "Failed",
        "EmptySelection",
        "no verified inferences",
    )
    assert next(c for c in new["conditions"] if c["type"] == "Failed")["reason"] == "EmptySelection"


def test_crash_without_result_maps_the_exit_code_and_keeps_the_log_tail():
    p = pod("Failed", terminated(1, message="Traceback ...\nKeyError: 'x'"))
    new = status_from(job([cond("Failed", "BackoffLimitExceeded")]), [p], make_run_with({}), NOW, STUCK)
    assert new["reason"] == "InternalError"
    assert "exited with code 1" in new["message"] and "KeyError" in new["message"]


def test_a_trainer_that_finds_no_gpu_fails_as_device_unavailable_from_its_exit_code():
    p = pod("Failed", terminated(8, message="error: DeviceUnavailable: preflight: --device 0 asks for CUDA"))
    new = status_from(job([cond("Failed", "BackoffLimitExceeded")]), [p], make_run_with({}), NOW, STUCK)
    assert new["reason"] == "DeviceUnavailable" and "exited with code 8" in new["message"]


def test_unknown_exit_code_keeps_the_job_reason():
    p = pod("Failed", terminated(139))
    new = status_from(job([cond("Failed", "BackoffLimitExceeded")]), [p], make_run_with({}), NOW, STUCK)
    assert new["reason"] == "BackoffLimitExceeded"


def test_oom_kill_wins_over_the_job_reason():
    p = pod("Failed", terminated(137, "OOMKilled"))
    run = make_run(spec={"resources": {"memory": "16Gi"}})
    new = status_from(job([cond("Failed", "BackoffLimitExceeded")]), [p], run, NOW, STUCK)
    assert new["reason"] == "OOMKilled" and "16Gi" in new["message"]


def test_deadline_exceeded():
    new = status_from(job([cond("Failed", "DeadlineExceeded")]), [], make_run_with({}), NOW, STUCK)
    assert new["reason"] == "DeadlineExceeded" and "600" in new["message"]


def test_evicted_pod():
    p = pod("Failed", terminated(137), reason="Evicted", message="The node was low on resource: memory.")
    new = status_from(job([cond("Failed", "BackoffLimitExceeded")]), [p], make_run_with({}), NOW, STUCK)
    assert new["reason"] == "Evicted" and "low on resource" in new["message"]


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "CreateContainerConfigError"])
def test_a_pod_that_cannot_start_is_reported_then_fails_the_run_after_the_stuck_timeout(reason):
    waiting = pod(
        "Pending", {"waiting": {"reason": reason, "message": "cannot"}}, created="2025-06-01T11:59:00Z"
    )
    new = status_from(job(), [waiting], make_run_with({"phase": "Pending"}), NOW, STUCK)
    assert (new["phase"], new["reason"]) == ("Pending", reason)
    later = NOW + timedelta(hours=1)
    new = status_from(job(), [waiting], make_run_with({"phase": "Pending"}), later, STUCK)
    assert (new["phase"], new["reason"]) == ("Failed", reason)


def test_failing_image_pulls_keep_one_reason_while_the_kubelet_alternates():
    """The kubelet says ErrImagePull at each pull attempt and ImagePullBackOff in between: the run's reason
    must not flap (each change of reason is a status write and a Warning Event)."""
    reasons = set()
    for waiting in ("ErrImagePull", "ImagePullBackOff", "ErrImagePull"):
        stuck = pod("Pending", {"waiting": {"reason": waiting, "message": 'image "x:1" not found'}})
        reasons.add(status_from(job(), [stuck], make_run_with({"phase": "Pending"}), NOW, STUCK)["reason"])
    assert reasons == {"ImagePullBackOff"}


def test_unschedulable_pod():
    unscheduled = pod("Pending", {})
    unscheduled["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
            "lastTransitionTime": "2025-06-01T11:59:00Z",
        }
    ]
    new = status_from(job(), [unscheduled], make_run_with({}), NOW, STUCK)
    assert (new["phase"], new["reason"]) == ("Pending", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in new["message"]


def test_deleted_job_fails_a_started_run_but_never_a_finished_one():
    started = make_run_with({"phase": "Running", "jobName": "tr-x"})
    new = status_from(None, [], started, NOW, STUCK)
    assert (new["phase"], new["reason"]) == ("Failed", "JobDeleted")
    reported = make_run_with({"phase": "Running", "jobName": "tr-x", "result": RESULT})
    assert status_from(None, [], reported, NOW, STUCK)["phase"] == "Succeeded"
    for phase in ("Succeeded", "Failed"):
        assert status_from(None, [], make_run_with({"phase": phase, "jobName": "tr-x"}), NOW, STUCK) == {}


def test_suspended_job():
    new = status_from(job(suspend=True), [], make_run_with({"phase": "Running"}), NOW, STUCK)
    assert new["phase"] == "Suspended"


def test_transitions_terminal_phases_are_final():
    assert not TRANSITIONS[Phase.SUCCEEDED] and not TRANSITIONS[Phase.FAILED]
    assert can_move(None, Phase.PENDING) and can_move(Phase.RUNNING, Phase.SUCCEEDED)
    assert not can_move(Phase.FAILED, Phase.RUNNING)


def test_conditions_keep_their_transition_time_while_status_stays():
    first = set_condition([], "Progressing", True, "Pending", "", 1, NOW)
    later = set_condition(first, "Progressing", True, "Running", "", 1, NOW + timedelta(minutes=5))
    assert later[0]["lastTransitionTime"] == first[0]["lastTransitionTime"]
    done = set_condition(later, "Progressing", False, "Succeeded", "", 1, NOW + timedelta(minutes=9))
    assert done[0]["lastTransitionTime"] != first[0]["lastTransitionTime"]


def test_the_same_observation_twice_changes_nothing():
    run = make_run_with({"phase": "Pending"})
    first = status_from(job(), [pod()], run, NOW, STUCK)
    run["status"] = {**run["status"], **first}
    second = status_from(job(), [pod()], run, NOW + timedelta(seconds=10), STUCK)
    assert is_unchanged(run["status"], second)


def test_a_pod_that_just_ended_keeps_the_run_running_until_the_job_concludes():
    ended = pod("Succeeded", terminated(0, "Completed"))
    assert status_from(job(), [ended], make_run_with({"phase": "Running"}), NOW, STUCK)["phase"] == "Running"
    retry = pod(
        "Pending", {"waiting": {"reason": "ContainerCreating"}}, created="2025-06-01T11:30:00Z", name="p2"
    )
    failed = pod("Failed", terminated(7))
    new = status_from(job(), [failed, retry], make_run_with({"phase": "Running"}), NOW, STUCK)
    assert new["phase"] == "Pending"


def test_credentials_in_a_crash_log_never_reach_the_status():
    log = "asyncpg.exceptions: cannot connect to postgresql://trainer:s3cret@db:5432/waste"
    p = pod("Failed", terminated(5, message=log))
    new = status_from(job([cond("Failed", "BackoffLimitExceeded")]), [p], make_run_with({}), NOW, STUCK)
    assert new["reason"] == "RegistryError"
    assert "s3cret" not in json.dumps(new) and "postgresql://trainer:***@db:5432/waste" in new["message"]
