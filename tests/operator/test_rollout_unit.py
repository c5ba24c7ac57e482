"""The inference API restart after a promoted model, as `kubectl rollout restart` does it."""

from __future__ import annotations

from datetime import UTC, datetime

from waste_operator.rollout import RESTARTED_AT, restart_patch, restart_target, should_restart

from tests.operator.conftest import make_run


def test_patch_changes_only_the_pod_template_annotation():
    patch = restart_patch(datetime(2025, 6, 1, 12, 0, tzinfo=UTC))
    assert patch == {
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: "2025-06-01T12:00:00Z"}}}}
    }


def test_restart_only_after_a_promoted_success_and_only_once():
    run = make_run(spec={"restartDeployment": {"name": "inference-api"}})
    assert restart_target(run) == ("waste-detection", "inference-api")
    run["status"] = {"phase": "Succeeded", "promoted": True}
    assert should_restart(run)
    run["status"]["promoted"] = False
    assert not should_restart(run)
    run["status"] = {"phase": "Succeeded", "promoted": True, "deploymentRestart": {"name": "inference-api"}}
    assert not should_restart(run)
    assert restart_target(make_run()) is None
    other = make_run(spec={"restartDeployment": {"name": "api", "namespace": "serving"}})
    assert restart_target(other) == ("serving", "api")
