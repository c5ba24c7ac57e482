"""Each way a run fails shows its real reason in status, Events and `kubectl get -o wide`; seven runs at
once in one namespace also show that concurrent runs keep to their own Jobs. The Job controller, the
scheduler and the garbage collector are the real ones; node faults are simulated by the process kubelet."""

from __future__ import annotations

import pytest
from waste_operator import RUN_LABEL

from tests.controlplane.util import wait_for
from tests.operator.harness import phase_is, wait_run
from tests.operator.test_operator_run import create_run, events_of, jobs_of, pods_of

pytestmark = pytest.mark.controlplane

RUNS = {
    # name: (spec, stand-in behaviour, simulated cluster failure, expected reason, words in the message)
    "oom": ({"backoffLimit": 0}, {}, "OOMKilled", "OOMKilled", "spec.resources.memory"),
    "empty": ({}, {"outcome": "fail", "reason": "EmptySelection", "message": "no verified inferences"},
              None, "EmptySelection", "no verified inferences"),
    "crash": ({"backoffLimit": 1}, {"outcome": "crash"}, None, "InternalError", "KeyError"),
    "deadline": ({"activeDeadlineSeconds": 3}, {"outcome": "hang"}, None, "DeadlineExceeded", "activeDeadlineSeconds=3"),
    "pull": ({"image": "registry.example/nope:1"}, {}, "ImagePullBackOff", "ImagePullBackOff", "nope:1"),
    # More GPUs than the node has (8): the scheduler's own message.
    "unschedulable": ({"resources": {"gpus": 16}}, {}, None, "Unschedulable", "1 Insufficient nvidia.com/gpu"),
    # An input error (exit 2) fails the Job at once through its podFailurePolicy: no retry.
    "invalid": ({"backoffLimit": 3}, {"outcome": "fail", "reason": "InvalidInput", "message": "--dataset must be a gs:// URI",
                "reportStatus": False}, None, "InvalidInput", "--dataset must be a gs:// URI"),
}  # fmt: skip


def test_each_failure_shows_its_real_reason(control_plane, run_namespace, standin_runner, operator, api):
    ns = run_namespace
    for name, (spec, behaviour, simulation, *_) in RUNS.items():
        if simulation:
            standin_runner.simulate(
                lambda job, n=name: job["metadata"]["labels"].get(RUN_LABEL) == n, simulation
            )
        create_run(api, ns, name, {"epochs": 2, **spec}, behaviour)

    for name, (_, _, _, reason, words) in RUNS.items():
        status = wait_run(api.custom, ns, name, phase_is("Succeeded", "Failed"), 60)["status"]
        assert (status["phase"], status["reason"]) == ("Failed", reason), (name, status)
        assert words in status["message"], (name, status["message"])
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert failed["status"] == "True" and failed["reason"] == reason

    crash = wait_run(api.custom, ns, "crash", phase_is("Failed"))["status"]
    assert "BackoffLimitExceeded after 2 attempts" in crash["message"]
    invalid = jobs_of(api, ns, "invalid")
    assert [c["reason"] for c in invalid[0]["status"]["conditions"] if c["type"] == "Failed"] == [
        "PodFailurePolicy"
    ]
    assert invalid[0]["status"]["failed"] == 1, "an input error is not retried"
    unschedulable = wait_run(api.custom, ns, "unschedulable", phase_is("Failed"))["status"]
    assert "0/1 nodes are available" in unschedulable["message"], unschedulable

    for name, (_, _, _, reason, _) in RUNS.items():
        wait_for(
            lambda n=name, r=reason: any(
                e["type"] == "Warning" and e["reason"] == r for e in events_of(api, ns, n)
            ),
            timeout=15,
            message=f"a Warning Event {reason} on {name}",
        )

    # The kubelet alternates ErrImagePull (each attempt) and ImagePullBackOff (between): one reason for both.
    assert "ErrImagePull" not in {e["reason"] for e in events_of(api, ns, "pull")}

    wide = control_plane.kubectl("get", "trainingruns", "-n", ns, "-o", "wide").stdout
    rows = {line.split()[0]: line.split() for line in wide.splitlines()[1:]}
    for name, (_, _, _, reason, _) in RUNS.items():
        assert rows[name][1] == "Failed" and reason in rows[name], wide

    # one Job per run, each owned by its own run; the stuck ones were deleted
    owners = [job["metadata"]["labels"][RUN_LABEL] for job in jobs_of(api, ns)]
    assert sorted(owners) == sorted(set(RUNS) - {"pull", "unschedulable"})


def test_an_evicted_trainer_is_retried_without_using_the_backoff_limit(
    run_namespace, standin_runner, operator, api
):
    """What a real cluster does: the kubelet marks an evicted Pod with DisruptionTarget, the Job's
    podFailurePolicy ignores it, and the Job starts a new Pod even with backoffLimit 0."""
    ns = run_namespace
    standin_runner.simulate(
        lambda pod: pod["metadata"]["labels"].get(RUN_LABEL) == "evicted", "Evicted", times=1
    )
    create_run(api, ns, "evicted", {"epochs": 2, "backoffLimit": 0})
    status = wait_run(api.custom, ns, "evicted", phase_is("Succeeded", "Failed"), 60)["status"]
    assert status["phase"] == "Succeeded", status
    (job,) = jobs_of(api, ns)
    assert job["status"]["succeeded"] == 1 and not job["status"].get("failed")
    # creationTimestamp has one-second resolution and both Pods may share it: the evicted one is the Failed one
    first, second = sorted(pods_of(api, ns, "evicted"), key=lambda p: p["status"]["phase"] != "Failed")
    assert (first["status"]["phase"], first["status"]["reason"]) == ("Failed", "Evicted")
    assert any(
        c["type"] == "DisruptionTarget" and c["status"] == "True" for c in first["status"]["conditions"]
    )
    assert second["status"]["phase"] == "Succeeded"
