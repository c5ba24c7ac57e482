"""A promoted model whose inference API restart is refused: visible, retried, and fixed by the RBAC named."""

from __future__ import annotations

import json

import pytest

from tests.controlplane.util import wait_for
from tests.operator.harness import OperatorProcess, wait_run
from tests.operator.test_operator_run import create_run, events_of, plain

pytestmark = pytest.mark.controlplane


def deployment(name: str) -> dict:
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "api", "image": "x:1"}]},
            },
        },
    }


def test_a_refused_restart_shows_as_the_runs_reason_is_retried_and_succeeds_once_the_rbac_allows_it(
    control_plane, run_namespace, standin_runner, api, tmp_path
):
    ns = run_namespace
    api.apps.create_namespaced_deployment(
        ns, deployment("ranker")
    )  # not in the operator Role's resourceNames
    operator = OperatorProcess(
        control_plane, ns, tmp_path, extra_env={"RESTART_RETRY_SECONDS": "0.5", "RESTART_ATTEMPTS": "30"}
    ).start()
    try:
        create_run(api, ns, "nightly", {"epochs": 1, "restartDeployment": {"name": "ranker"}})
        status = wait_run(api.custom, ns, "nightly", lambda s: s.get("reason") == "RestartFailed", 45)[
            "status"
        ]
        assert status["phase"] == "Succeeded" and status["promoted"] is True
        assert "HTTP 403" in status["message"] and "resourceNames" in status["message"], status["message"]
        assert "manifests/operator-rbac.yaml" in status["message"]
        restarted = next(c for c in status["conditions"] if c["type"] == "InferenceRestarted")
        assert (restarted["status"], restarted["reason"]) == ("False", "RestartFailed")
        wide = control_plane.kubectl("get", "tr", "nightly", "-n", ns, "-o", "wide").stdout
        assert "RestartFailed" in wide.splitlines()[1], wide
        wait_for(
            lambda: any(
                e["type"] == "Warning" and e["reason"] == "RestartFailed"
                for e in events_of(api, ns, "nightly")
            ),
            timeout=15,
            message="a Warning Event RestartFailed",
        )
        retried = wait_run(
            api.custom,
            ns,
            "nightly",
            lambda s: (s.get("deploymentRestart") or {}).get("attempts", 0) >= 3,
            30,
        )
        assert retried["status"]["deploymentRestart"]["nextAttemptAt"]

        # what the message says to do: add the Deployment to the Role's resourceNames
        rules = json.loads(
            control_plane.kubectl("get", "role", "waste-operator", "-n", ns, "-o", "json").stdout
        )["rules"]
        index = next(i for i, r in enumerate(rules) if "deployments" in r["resources"])
        patch = [{"op": "add", "path": f"/rules/{index}/resourceNames/-", "value": "ranker"}]
        control_plane.kubectl(
            "patch", "role", "waste-operator", "-n", ns, "--type=json", "-p", json.dumps(patch)
        )

        done = wait_run(
            api.custom, ns, "nightly", lambda s: (s.get("deploymentRestart") or {}).get("restartedAt"), 60
        )
        status = done["status"]
        assert status["reason"] == "Completed" and "promoted" in status["message"]
        assert (
            "error" not in status["deploymentRestart"] and "nextAttemptAt" not in status["deploymentRestart"]
        )
        restarted = next(c for c in status["conditions"] if c["type"] == "InferenceRestarted")
        assert (restarted["status"], restarted["reason"]) == ("True", "Restarted")
        template = plain(api, api.apps.read_namespaced_deployment("ranker", ns))["spec"]["template"]
        assert template["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
        reasons = wait_for(
            lambda: (
                [
                    e["reason"]
                    for e in events_of(api, ns, "nightly")
                    if e["reason"] in ("RestartFailed", "InferenceRestarted")
                ]
                if any(e["reason"] == "InferenceRestarted" for e in events_of(api, ns, "nightly"))
                else None
            ),
            timeout=15,
            message="the InferenceRestarted Event",
        )
        assert sorted(reasons) == ["InferenceRestarted", "RestartFailed"], "one Warning, not one per attempt"
    finally:
        operator.stop()
        print(operator.tail(60))
