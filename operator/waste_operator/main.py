"""The kopf entry point: handlers and settings only; the work happens in reconcile.py."""

from __future__ import annotations

import logging

import kopf

from . import GROUP, MANAGED_BY, PLURAL, RUN_LABEL, VERSION
from .config import OperatorConfig
from .kube import Kube
from .reconcile import Context, reconcile
from .status import TERMINAL

RESYNC_SECONDS = 10.0
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}


def _post_event(run: dict, type_: str, reason: str, message: str) -> None:
    kopf.event(run, type=type_, reason=reason, message=message)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    # Chosen once: switching storages later makes kopf re-run every handler on every run.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Named namespaces and the CRDs present at startup only: no cluster-wide list/watch of namespaces and
    # CRDs, so the operator needs no ClusterRole.
    settings.scanning.disabled = True
    # Watch streams can hang silently: ask the server to end them, and give up on our side a bit later.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # Events are posted explicitly (reconcile.py); kopf's own "handler succeeded" lines are not Events.
    settings.posting.level = logging.ERROR
    settings.execution.max_workers = 8
    config = memo.get("config") or OperatorConfig.from_env()
    memo.ctx = Context(config=config, kube=Kube.from_environment(), post_event=_post_event)


def _reconcile(memo: kopf.Memo, namespace: str, name: str) -> None:
    try:
        reconcile(memo.ctx, namespace, name)
    except Exception as error:  # the API may be busy or the network may blink: try again soon
        raise kopf.TemporaryError(f"reconcile failed: {error}", delay=5) from error


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec.suspend")
def run_changed(namespace: str, name: str, memo: kopf.Memo, **_) -> None:
    _reconcile(memo, namespace, name)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def resync(namespace: str, name: str, status: kopf.Status, spec: kopf.Spec, memo: kopf.Memo, **_) -> None:
    restart_pending = spec.get("restartDeployment") and not status.get("deploymentRestart")
    if status.get("phase") in TERMINAL and not restart_pending:
        return
    _reconcile(memo, namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
@kopf.on.event("", "v1", "pods", labels=MANAGED)
def child_changed(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_) -> None:
    run = labels.get(RUN_LABEL)
    if run:
        _reconcile(memo, namespace, run)


@kopf.on.probe(id="runs")
def runs_probe(memo: kopf.Memo, **_) -> str:
    return "ok" if getattr(memo, "ctx", None) else "starting"
