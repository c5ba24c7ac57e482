"""Each way a run fails shows its real reason in status, Events and `kubectl get -o wide`; seven runs at
once in one namespace also show that concurrent runs keep to their own Jobs."""

from __future__ import annotations

import pytest
from waste_operator import RUN_LABEL

from tests.controlplane.util import wait_for
from tests.operator.harness import phase_is, wait_run
from tests.operator.test_operator_run import create_run, events_of, jobs_of

pytestmark = pytest.mark.controlplane

RUNS = {
    # name: (spec, stand-in behaviour, simulated cluster failure, expected reason, words in the message)
    "oom": ({"backoffLimit": 0}, {}, "OOMKilled", "OOMKilled", "spec.resources.memory"),
    "empty": ({}, {"outcome": "fail", "reason": "EmptySelection", "message": "no verified inferences"},
              None, "EmptySelection", "no verified inferences"),
    "crash": ({"backoffLimit": 1}, {"outcome": "crash"}, None, "InternalError", "KeyError"),
    "deadline": ({"activeDeadlineSeconds": 3}, {"outcome": "hang"}, None, "DeadlineExceeded", "activeDeadlineSeconds=3"),
    "pull": ({"image": "registry.example/nope:1"}, {}, "ImagePullBackOff", "ImagePullBackOff", "nope:1"),
    "unschedulable": ({}, {}, "Unschedulable", "Unschedulable", "Insufficient nvidia.com/gpu"),
    "evicted": ({"backoffLimit": 0}, {}, "Evicted", "Evicted", "low on resource"),
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

    for name, (_, _, _, reason, _) in RUNS.items():
        wait_for(
            lambda n=name, r=reason: any(
                e["type"] == "Warning" and e["reason"] == r for e in events_of(api, ns, n)
            ),
            timeout=15,
            message=f"a Warning Event {reason} on {name}",
        )

    wide = control_plane.kubectl("get", "trainingruns", "-n", ns, "-o", "wide").stdout
    rows = {line.split()[0]: line.split() for line in wide.splitlines()[1:]}
    for name, (_, _, _, reason, _) in RUNS.items():
        assert rows[name][1] == "Failed" and reason in rows[name], wide

    # one Job per run, each owned by its own run; the stuck ones were deleted
    owners = [job["metadata"]["labels"][RUN_LABEL] for job in jobs_of(api, ns)]
    assert sorted(owners) == sorted(set(RUNS) - {"pull", "unschedulable"})
