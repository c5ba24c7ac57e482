"""The inference API restart after a promoted model, as `kubectl rollout restart` does it."""

from __future__ import annotations

from datetime import UTC, datetime

from waste_operator.rollout import (
    RESTARTED_AT,
    restart_due,
    restart_hint,
    restart_patch,
    restart_pending,
    restart_target,
    retry_delay,
    should_restart,
)

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
    done = {"name": "inference-api", "restartedAt": "2025-06-01T12:00:00Z"}
    run["status"] = {"phase": "Succeeded", "promoted": True, "deploymentRestart": done}
    assert not should_restart(run) and not restart_pending(run)
    assert restart_target(make_run()) is None
    other = make_run(spec={"restartDeployment": {"name": "api", "namespace": "serving"}})
    assert restart_target(other) == ("serving", "api")


def test_a_refused_restart_is_retried_with_bounded_back_off_until_it_gives_up():
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    run = make_run(spec={"restartDeployment": {"name": "inference-api"}})
    run["status"] = {"phase": "Succeeded", "promoted": True}
    assert restart_due(run, now)
    failed = {
        "name": "inference-api",
        "error": "HTTP 403",
        "attempts": 1,
        "nextAttemptAt": "2025-06-01T12:00:30Z",
    }
    run["status"]["deploymentRestart"] = failed
    assert restart_pending(run) and not restart_due(run, now)
    assert restart_due(run, datetime(2025, 6, 1, 12, 0, 30, tzinfo=UTC))
    run["status"]["deploymentRestart"] = failed | {"gaveUp": True, "nextAttemptAt": None}
    assert not restart_pending(run) and not restart_due(run, now)
    # a skipped restart (model not promoted) is decided, never retried
    run["status"]["deploymentRestart"] = {"name": "inference-api"}
    assert not restart_pending(run)
    assert [retry_delay(n, 30).total_seconds() for n in range(1, 8)] == [30, 60, 120, 240, 480, 600, 600]


def test_a_refused_restart_names_the_rbac_to_change():
    hint = restart_hint(403, "serving", "api")
    assert "resourceNames" in hint and "manifests/operator-rbac.yaml" in hint and "serving" in hint
    assert "does not exist" in restart_hint(404, "serving", "api")
