"""The kopf entry point: handlers and settings only; the work happens in reconcile.py."""

from __future__ import annotations

import logging
import threading

import kopf
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from . import GROUP, MANAGED_BY, PLURAL, RUN_LABEL, VERSION
from .config import OperatorConfig, watch_workloads
from .kube import Kube
from .queueing import KUEUE_GROUP, WORKLOAD_PLURAL, WORKLOAD_VERSION
from .reconcile import Context, reconcile, refresh_columns, resync
from .samples import SampleCounter
from .schedule import SCHEDULE_LABEL, SCHEDULE_PLURAL
from .scheduling import Scheduler, clock_from_env

MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    # No handler keeps state today (all are event handlers); should one be added, its storage is chosen
    # here once: switching storages later makes kopf re-run every handler on every run.
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
    settings.execution.max_workers = 16
    config = memo.get("config") or OperatorConfig.from_env()
    kube = Kube.from_environment()
    memo.ctx = Context(config=config, kube=kube, post_event=_logged(kube.post_event))
    memo.scheduler = Scheduler(
        kube=kube,
        namespaces=config.namespaces,
        post_event=memo.ctx.post_event,
        counter=SampleCounter(config.database_url),
        clock=clock_from_env(),
        count_ttl=config.resync_seconds,
    )
    _start_resync(memo)


def _reconcile(
    memo: kopf.Memo, namespace: str, name: str, run: dict | None = None, job: dict | None = None
) -> None:
    try:
        reconcile(memo.ctx, namespace, name, run, job)
    except Exception as error:  # the API may be busy or the network may blink: try again soon
        raise kopf.TemporaryError(f"reconcile failed: {error}", delay=5) from error


@kopf.on.event(GROUP, VERSION, PLURAL)
def run_event(type: str | None, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_) -> None:
    """A run seen for the first time (created, or listed at start-up) or whose spec changed (suspend).

    Plain event handlers, not kopf's create/update handlers: those store their progress in annotations,
    a PATCH of every run per change, and the reconcile is level-based anyway. Status writes (ours and
    the trainer's progress) do not trigger a pass; Job and Pod events and the resync do the rest.
    """
    if type == "DELETED":
        return
    status = body.get("status") or {}
    fresh = type in (None, "ADDED")
    if fresh or body["metadata"].get("generation") != status.get("observedGeneration"):
        # A run just created is as fresh as a read would be: save that round trip.
        _reconcile(memo, namespace, name, dict(body) if type == "ADDED" and not status else None)
    else:
        try:
            refresh_columns(memo.ctx, dict(body))  # the trainer's progress: the MAP50 column follows it
        except (ApiException, HTTPError, OSError) as error:  # the next progress patch tries again
            logging.getLogger("waste_operator").warning(
                "[%s/%s] MAP50 column not updated: %s", namespace, name, error
            )


def _logged(post):
    def post_event(run: dict, type_: str, reason: str, message: str) -> None:
        try:
            post(run, type_, reason, message)
        except (ApiException, HTTPError, OSError) as error:  # an Event is worth a try, not a failed pass
            logging.getLogger("waste_operator").warning("could not post Event %s: %s", reason, error)

    return post_event


def _start_resync(memo: kopf.Memo) -> None:
    # A thread rather than @kopf.timer: kopf puts a finalizer on every object that has a timer or daemon,
    # and a finalizer would block deleting a TrainingRun while the operator is down.
    memo.stop_resync = threading.Event()
    interval = memo.ctx.config.resync_seconds

    def loop() -> None:
        while not memo.stop_resync.wait(interval):
            try:
                resync(memo.ctx)
            except Exception:
                logging.getLogger("waste_operator").exception("resync failed")

    def schedules() -> None:  # the schedules' clock: ticks are found by looking, not by events
        while not memo.stop_resync.wait(memo.ctx.config.schedule_seconds):
            try:
                memo.scheduler.resync()
            except Exception:
                logging.getLogger("waste_operator").exception("schedule resync failed")

    threading.Thread(target=loop, name="resync", daemon=True).start()
    threading.Thread(target=schedules, name="schedules", daemon=True).start()


@kopf.on.cleanup()
def stop_resync(memo: kopf.Memo, **_) -> None:
    memo.stop_resync.set()
    memo.scheduler.counter.close()


def _schedule(memo: kopf.Memo, namespace: str, name: str) -> None:
    try:
        memo.scheduler.reconcile(namespace, name)
    except Exception as error:  # the API may be busy: try again soon (the schedule clock also retries)
        raise kopf.TemporaryError(f"schedule pass failed: {error}", delay=5) from error


@kopf.on.event(GROUP, VERSION, SCHEDULE_PLURAL)
def schedule_event(
    type: str | None, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_
) -> None:
    """A schedule seen for the first time or whose spec changed; its own status writes are not a trigger."""
    if type == "DELETED":
        return
    status = body.get("status") or {}
    if type in (None, "ADDED") or body["metadata"].get("generation") != status.get("observedGeneration"):
        _schedule(memo, namespace, name)


@kopf.on.event(GROUP, VERSION, PLURAL, labels={SCHEDULE_LABEL: kopf.PRESENT})
def scheduled_run_event(type: str | None, labels: kopf.Labels, namespace: str, memo: kopf.Memo, **_) -> None:
    """A run of a schedule changed or went away: its LAST RUN, active runs and a tick held by Forbid."""
    if type is not None:  # the initial listing: the schedule's own listing covers it
        _schedule(memo, namespace, labels[SCHEDULE_LABEL])


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
@kopf.on.event("", "v1", "pods", labels=MANAGED)
def child_changed(
    namespace: str, labels: kopf.Labels, type: str | None, body: kopf.Body, memo: kopf.Memo, **_
) -> None:
    run = labels.get(RUN_LABEL)
    if type == "ADDED" and not body.get("status"):
        return  # a Job or Pod just made, with nothing to report yet (the operator's own create)
    if run:
        _reconcile(memo, namespace, run, job=dict(body) if body.get("kind") == "Job" else None)


def workload_changed(namespace: str, type: str | None, body: kopf.Body, memo: kopf.Memo, **_) -> None:
    """Kueue admitted, preempted or re-queued a Workload: the run of the Job it belongs to follows.

    Kueue writes the Workload, not the Job, while a Job waits (its reason) or is being preempted, so a watch
    on Jobs alone would see these only at the next resync."""
    if type is None or type == "DELETED":
        return  # the initial listing: the runs' own listing covers it
    owners = [
        ref["name"]
        for ref in body["metadata"].get("ownerReferences") or []
        if ref.get("kind") == "Job" and ref.get("apiVersion") == "batch/v1"
    ]
    for job_name in owners:
        job = memo.ctx.kube.get_job(namespace, job_name)
        labels = ((job or {}).get("metadata") or {}).get("labels") or {}
        if labels.get("app.kubernetes.io/managed-by") == MANAGED_BY and labels.get(RUN_LABEL):
            # The pass reads the Job again under the run's lock: this copy may be older than what a pass
            # for the Job's own event (Kueue unsuspending it) has seen meanwhile.
            _reconcile(memo, namespace, labels[RUN_LABEL])


# Registered only where the operator may read Workloads (manifests/components/kueue): a watch it may not
# make would fail and retry for ever.
if watch_workloads():
    kopf.on.event(KUEUE_GROUP, WORKLOAD_VERSION, WORKLOAD_PLURAL)(workload_changed)


@kopf.on.probe(id="runs")
def runs_probe(memo: kopf.Memo, **_) -> str:
    return "ok" if getattr(memo, "ctx", None) else "starting"
