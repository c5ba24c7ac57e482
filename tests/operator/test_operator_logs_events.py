"""What a person reads about a run: one operator log line per decision, and Events once each, in order."""

from __future__ import annotations

import json
import re

import pytest

from tests.controlplane.util import wait_for
from tests.operator.harness import phase_is, wait_run
from tests.operator.test_operator_restart import deployment
from tests.operator.test_operator_run import create_run, events_of

pytestmark = pytest.mark.controlplane
ORDER = ["JobCreated", "Running", "Completed", "InferenceRestarted"]


def test_a_run_logs_one_line_per_decision_and_posts_each_event_once_in_order(
    control_plane, run_namespace, operator, api
):
    ns = run_namespace
    api.apps.create_namespaced_deployment(ns, deployment("inference-api"))
    create_run(api, ns, "nightly", {"epochs": 3, "restartDeployment": {"name": "inference-api"}})
    wait_run(api.custom, ns, "nightly", phase_is("Succeeded", "Failed"), 45)
    wait_for(
        lambda: "InferenceRestarted" in {e["reason"] for e in events_of(api, ns, "nightly")},
        timeout=15,
        message="the InferenceRestarted Event",
    )

    lines = [line for line in operator.log().splitlines() if line.strip()]
    print("\n".join(lines))
    assert not [line for line in lines if "Handler " in line or "aiohttp.access" in line], "kopf's chatter"
    run_lines = [re.sub(r"^.*\[[^\]]+/nightly\] ", "", line) for line in lines if "/nightly]" in line]
    decisions = [line.split(":")[0] for line in run_lines]
    assert decisions == [
        "created Job tr-nightly-" + decisions[0].rsplit("-", 1)[1],
        "phase Pending",
        "phase Running",
        "phase Succeeded (Completed)",
        "restarted Deployment " + ns + "/inference-api",
    ], run_lines

    events = events_of(api, ns, "nightly")
    reasons = [e["reason"] for e in events]
    assert sorted(reasons) == sorted(ORDER), "each Event once"
    # `kubectl get events` lists by name, `kubectl describe` sorts by time: both in the order things happened
    assert reasons == ORDER, reasons
    described = control_plane.kubectl("describe", "tr", "nightly", "-n", ns).stdout
    section = described.split("Events:")[1]
    rows = [line.split() for line in section.splitlines() if line.split()[:1] in (["Normal"], ["Warning"])]
    assert [row[1] for row in rows] == ORDER, section
    print(json.dumps([(e["reason"], e.get("eventTime")) for e in events]))
