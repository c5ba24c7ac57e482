"""Kueue queueing, pure parts: the Job a queued run gets, its status from Kueue's Workload, the Events."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from waste_operator.config import ConfigError, OperatorConfig
from waste_operator.jobs import build_job
from waste_operator.queueing import PRIORITY_LABEL, QUEUE_LABEL, queue_events, queue_status, waiting
from waste_operator.status import status_from

from tests.operator.conftest import make_run

NOW = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)
QUOTA = (
    "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor a100, "
    "1 more needed"
)


def workload(*conditions: tuple[str, str, str, str], preempted: int = 0, cq: str | None = None) -> dict:
    status: dict = {
        "conditions": [
            {"type": t, "status": s, "reason": r, "message": m, "lastTransitionTime": "2026-12-03T01:59:00Z"}
            for t, s, r, m in conditions
        ]
    }
    if preempted:
        status["schedulingStats"] = {
            "evictions": [{"reason": "Preempted", "underlyingCause": "", "count": preempted}]
        }
    if cq:
        status["admission"] = {"clusterQueue": cq}
    return {"metadata": {"name": "job-tr-a-1"}, "spec": {"active": True}, "status": status}


def queued_job(run: dict, config: OperatorConfig, suspended: bool = True) -> dict:
    job = build_job(run, config)
    job["metadata"]["uid"] = "job-uid"
    job["spec"]["suspend"] = suspended
    return job


def test_a_run_with_a_queue_gets_a_suspended_job_with_kueues_labels(config):
    run = make_run(spec={"queueName": "gpu", "priorityClassName": "training-urgent"})
    job = build_job(run, config)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"][QUEUE_LABEL] == "gpu"
    assert job["metadata"]["labels"][PRIORITY_LABEL] == "training-urgent"
    # Kueue's priority, not also the scheduler's (which would preempt behind Kueue's back).
    assert "priorityClassName" not in job["spec"]["template"]["spec"]
    assert QUEUE_LABEL not in job["spec"]["template"]["metadata"]["labels"]


def test_the_operators_default_queue_applies_and_without_any_queue_nothing_changes(config):
    plain = build_job(make_run(spec={"priorityClassName": "high"}), config)
    assert plain["spec"]["suspend"] is False and QUEUE_LABEL not in plain["metadata"]["labels"]
    assert plain["spec"]["template"]["spec"]["priorityClassName"] == "high"
    defaulted = build_job(make_run(), dataclasses.replace(config, default_queue_name="shared"))
    assert defaulted["metadata"]["labels"][QUEUE_LABEL] == "shared" and defaulted["spec"]["suspend"] is True


@pytest.mark.parametrize("value", ["GPU", "a b", "-x", "x" * 64])
def test_a_bad_default_queue_name_is_refused_with_the_setting_named(value):
    env = {
        "TRAINER_IMAGE": "t",
        "GCS_MODELS_BUCKET": "m",
        "GCS_IMAGES_BUCKET": "i",
        "GCS_DATASETS_BUCKET": "d",
    }
    with pytest.raises(ConfigError, match="DEFAULT_QUEUE_NAME"):
        OperatorConfig.from_env(env | {"DEFAULT_QUEUE_NAME": value})


def test_a_queued_job_makes_the_run_queued_with_kueues_message(config):
    run = make_run(spec={"queueName": "gpu"}, labels={})
    job = queued_job(run, config)
    wl = workload(("QuotaReserved", "False", "Pending", QUOTA))
    new = status_from(job, [], run, NOW, 900, wl)
    assert new["phase"] == "Queued" and new["reason"] == "WaitingForQuota"
    assert new["message"] == f"LocalQueue gpu: {QUOTA}"
    assert new["queue"] == {"name": "gpu", "workload": "job-tr-a-1", "admitted": False, "preemptions": 0}
    progressing = next(c for c in new["conditions"] if c["type"] == "Progressing")
    assert progressing["status"] == "True" and progressing["reason"] == "WaitingForQuota"


def test_the_runs_own_suspend_and_kueues_hold_are_separate_reasons(config):
    run = make_run(spec={"queueName": "gpu", "suspend": True})
    job = queued_job(run, config)
    wl = workload(("QuotaReserved", "False", "Pending", QUOTA)) | {"spec": {"active": False}}
    new = status_from(job, [], run, NOW, 900, wl)
    assert new["phase"] == "Suspended" and new["reason"] == "Suspended"
    assert "LocalQueue gpu" in new["message"]
    assert waiting("gpu", wl)[0] == "Deactivated"  # what Kueue says, kept in status.queue's terms


def test_no_workload_yet_and_an_unreadable_one_say_so():
    assert waiting("gpu", None) == (
        "WaitingForWorkload",
        "LocalQueue gpu: Kueue has not created the Job's Workload yet",
    )
    reason, message = waiting("gpu", None, "the operator may not read Kueue Workloads (HTTP 403)")
    assert reason == "WorkloadUnreadable" and "HTTP 403" in message


def test_preemption_is_counted_from_kueues_statistics_and_never_goes_down(config):
    run = make_run(spec={"queueName": "gpu"})
    job = queued_job(run, config)
    evicted = workload(
        ("QuotaReserved", "True", "QuotaReserved", ""),
        (
            "Evicted",
            "True",
            "Preempted",
            "Preempted to accommodate a workload (UID: 1) due to prioritization",
        ),
        preempted=1,
        cq="pool",
    )
    record = queue_status("gpu", job, evicted, {"admitted": True, "preemptions": 0})
    assert record["preemptions"] == 1 and record["admitted"] is False
    assert record["lastPreemptionMessage"].startswith("Preempted to accommodate")
    assert waiting("gpu", evicted)[0] == "Preempted"
    assert queue_status("gpu", job, workload(), {"preemptions": 2})["preemptions"] == 2
    assert queue_events({"admitted": True, "preemptions": 0}, record) == [
        ("Warning", "Preempted", f"preempted by Kueue (1 so far): {record['lastPreemptionMessage']}")
    ]


def test_admission_is_one_event_and_the_run_follows_the_unsuspended_job(config):
    run = make_run(spec={"queueName": "gpu"})
    admitted = workload(
        ("QuotaReserved", "True", "QuotaReserved", ""), ("Admitted", "True", "Admitted", ""), cq="pool"
    )
    record = queue_status("gpu", queued_job(run, config), admitted, {"admitted": False})
    assert queue_events({"admitted": False}, record) == [
        ("Normal", "Admitted", "admitted by ClusterQueue pool (LocalQueue gpu)")
    ]
    assert queue_events(record, record) == []
    # Kueue unsuspended the Job: from here the run is Pending, then Running, as without a queue.
    new = status_from(queued_job(run, config, suspended=False), [], run, NOW, 900, admitted)
    assert new["phase"] == "Pending" and new["queue"]["admitted"] is True


def test_the_workload_watch_is_off_unless_asked_for_and_a_typo_is_refused():
    from waste_operator.config import watch_workloads

    assert watch_workloads({}) is False and watch_workloads({"KUEUE_WORKLOADS": "watch"}) is True
    with pytest.raises(ConfigError, match="KUEUE_WORKLOADS"):
        watch_workloads({"KUEUE_WORKLOADS": "yes"})
