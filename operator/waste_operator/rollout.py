"""Restarts the inference API's Deployment the way `kubectl rollout restart` does."""

from __future__ import annotations

from datetime import datetime

from .status import now_rfc3339

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


def should_restart(run: dict) -> bool:
    """Only a promoted model moves models/latest/, so only then is the inference API restarted, once."""
    status = run.get("status") or {}
    return (
        restart_target(run) is not None
        and status.get("phase") == "Succeeded"
        and status.get("promoted") is True
        and not status.get("deploymentRestart")
    )


def restart_deployment(kube, namespace: str, name: str, now: datetime) -> str:
    """Patches the Deployment; returns the restartedAt stamp. Raises the client's ApiException."""
    patch = restart_patch(now)
    kube.patch_deployment(namespace, name, patch)
    return patch["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
