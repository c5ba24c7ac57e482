"""Restarts the inference API's Deployment the way `kubectl rollout restart` does."""

from __future__ import annotations

from datetime import datetime, timedelta

from .status import now_rfc3339, parse_time

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def restart_patch(now: datetime) -> dict:
    """A strategic-merge patch that changes the Pod template, so the Deployment rolls its Pods."""
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now_rfc3339(now)}}}}}


def restart_target(run: dict) -> tuple[str, str] | None:
    """(namespace, name) of the Deployment to restart after success, or None."""
    target = (run.get("spec") or {}).get("restartDeployment") or {}
    if not target.get("name"):
        return None
    return target.get("namespace") or run["metadata"]["namespace"], target["name"]


# A refused restart is tried again after 30 s, 60 s, 120 s, ... (RESTART_RETRY_SECONDS), at most 10 minutes
# apart, RESTART_ATTEMPTS times in all: long enough for a person to fix the RBAC, never forever.
MAX_DELAY = 600.0


def should_restart(run: dict) -> bool:
    """Only a promoted model moves models/latest/, so only then is the inference API restarted, once."""
    status = run.get("status") or {}
    return (
        restart_target(run) is not None
        and status.get("phase") == "Succeeded"
        and status.get("promoted") is True
        and not (status.get("deploymentRestart") or {}).get("restartedAt")
    )


def restart_pending(run: dict) -> bool:
    """The restart has not been decided yet, or failed and will be tried again."""
    if restart_target(run) is None:
        return False
    record = (run.get("status") or {}).get("deploymentRestart")
    if not record:
        return True
    return bool(record.get("error")) and not record.get("restartedAt") and not record.get("gaveUp")


def restart_due(run: dict, now: datetime) -> bool:
    """Pending, and the back-off after the last failed attempt (if any) is over."""
    if not restart_pending(run):
        return False
    next_at = parse_time(((run.get("status") or {}).get("deploymentRestart") or {}).get("nextAttemptAt"))
    return next_at is None or now >= next_at


def retry_delay(attempts: int, base: float) -> timedelta:
    return timedelta(seconds=min(MAX_DELAY, base * 2 ** max(0, attempts - 1)))


def restart_hint(status: int | None, namespace: str, name: str) -> str:
    """What a person changes so that the next attempt succeeds."""
    if status == 403:
        return (
            f"the operator's ServiceAccount may not patch Deployment {namespace}/{name}: add {name!r} to the "
            "resourceNames of the deployments rule in its Role (manifests/operator-rbac.yaml) in namespace "
            f"{namespace}, or bind such a Role there"
        )
    if status == 404:
        return f"Deployment {namespace}/{name} does not exist: fix spec.restartDeployment or create it"
    return "the API server refused or did not answer; it is tried again"


def restart_deployment(kube, namespace: str, name: str, now: datetime) -> str:
    """Patches the Deployment; returns the restartedAt stamp. Raises the client's ApiException."""
    patch = restart_patch(now)
    kube.patch_deployment(namespace, name, patch)
    return patch["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
