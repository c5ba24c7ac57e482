"""Level-based reconciliation of one TrainingRun: read everything from the API, then act.

Every entry point (create, resume, suspend change, the resync timer, Job and Pod events) calls
``reconcile``; it is idempotent, so running it twice or after an operator restart does no harm.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from . import RUN_LABEL
from .config import OperatorConfig, image_allowed
from .failpoints import crash_point
from .jobs import build_job, is_owned_by
from .kube import Kube
from .queueing import active, job_queue, queue_events, queue_name
from .rollout import (
    restart_deployment,
    restart_due,
    restart_hint,
    restart_pending,
    restart_target,
    retry_delay,
    should_restart,
)
from .status import (
    TERMINAL,
    Phase,
    is_unchanged,
    map50_column,
    now_rfc3339,
    one_line,
    phase_of,
    set_condition,
    status_from,
    success_fields,
)

# kopf.event, or a stand-in in tests: (run, type, reason, message).
EventSink = Callable[[dict, str, str, str], None]
log = logging.getLogger("waste_operator")


class RunLog(logging.LoggerAdapter):
    """Prefixes every line with the run it is about."""

    def process(self, msg, kwargs):
        return f"[{self.extra['run']}] {msg}", kwargs


@dataclass
class Context:
    config: OperatorConfig
    kube: Kube
    post_event: EventSink
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def lock(self, namespace: str, name: str) -> threading.Lock:
        """One run is reconciled by one thread at a time (the timer and watch events may overlap)."""
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())


def _finished(job: dict) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


def _complete(job: dict) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions)


def _job_pods(ctx: Context, namespace: str, name: str, job: dict) -> list[dict]:
    uid = job["metadata"].get("uid")
    pods = ctx.kube.list_pods(namespace, f"{RUN_LABEL}={name}")

    def belongs(pod: dict) -> bool:
        meta = pod["metadata"]
        owners = [ref.get("uid") for ref in meta.get("ownerReferences") or []]
        if owners:
            return uid in owners
        job_label = (meta.get("labels") or {}).get("batch.kubernetes.io/job-name")
        return job_label in (None, job["metadata"]["name"])

    return [pod for pod in pods if belongs(pod)]


def needs_attention(run: dict) -> bool:
    """Unfinished, or succeeded with the inference API restart still to do."""
    if phase_of(run) not in TERMINAL:
        return True
    return phase_of(run) == Phase.SUCCEEDED and restart_pending(run)


def resync(ctx: Context) -> None:
    """One pass over every run of the watched namespaces: what watch events may have missed."""
    for namespace in ctx.config.namespaces:
        for run in ctx.kube.list_runs(namespace):
            if needs_attention(run):
                try:
                    reconcile(ctx, namespace, run["metadata"]["name"])
                except Exception:  # one broken run must not starve the others
                    log.exception("[%s/%s] resync failed", namespace, run["metadata"]["name"])


def refresh_columns(ctx: Context, run: dict) -> None:
    """Copies the trainer's best mAP50 so far into status.mAP50 (the MAP50 column) while a run trains.

    One merge patch of one field, no read: the trainer's progress patches do not start a reconcile pass.
    """
    status = run.get("status") or {}
    column = map50_column(status)
    if phase_of(run) in TERMINAL or column is None or column == status.get("mAP50"):
        return
    meta = run["metadata"]
    with ctx.lock(meta["namespace"], meta["name"]):
        ctx.kube.patch_run_status(meta["namespace"], meta["name"], {"mAP50": column})


def reconcile(
    ctx: Context, namespace: str, name: str, run: dict | None = None, job: dict | None = None
) -> None:
    """One level-based pass over a run. `run` or `job` may be given when the caller holds a fresh copy
    (from the watch event that triggered the pass): each saves a read."""
    with ctx.lock(namespace, name):
        _reconcile(ctx, namespace, name, RunLog(log, {"run": f"{namespace}/{name}"}), run, job)


def _reconcile(
    ctx: Context,
    namespace: str,
    name: str,
    rlog: RunLog,
    run: dict | None = None,
    seen_job: dict | None = None,
) -> None:
    run = run if run is not None else ctx.kube.get_run(namespace, name)
    if run is None or run["metadata"].get("deletionTimestamp"):
        return
    status = run.get("status") or {}
    if phase_of(run) in TERMINAL:
        generation = run["metadata"].get("generation", 1)
        if status.get("observedGeneration") != generation:  # seen, even if a finished run has nothing to do
            run = ctx.kube.patch_run_status(namespace, name, {"observedGeneration": generation})
        _after_success(ctx, run, rlog)
        return

    created = False
    image = (run.get("spec") or {}).get("image")
    if not status.get("jobName") and not image_allowed(image, ctx.config):
        # The admission policy refuses this already; the check here holds where it is not installed.
        allowed = " or ".join((ctx.config.trainer_image, *(f"{p}*" for p in ctx.config.image_prefixes)))
        message = f"spec.image {image} is not an allowed trainer image ({allowed}; TRAINER_IMAGE_PREFIXES)"
        _write(ctx, run, _failed(run, "ImageNotAllowed", message, ctx.clock()), rlog)
        return
    queue = queue_name(run, ctx.config.default_queue_name)
    if not status.get("jobName") and queue and (run.get("spec") or {}).get("suspend"):
        # A queued run enters its queue when it is resumed: Kueue would admit (unsuspend) a Job created now.
        job = None
    elif not status.get("jobName"):
        # Never recorded (status.jobName is written right after creation): create it now, or find the one
        # an earlier pass created before it could record it (409). A Job that existed and is gone is not
        # recreated: status_from ends the run instead.
        job, created = ctx.kube.create_job(build_job(run, ctx.config))
        if created:
            crash_point("after-job-create")
            rlog.info("created Job %s", job["metadata"]["name"])
            ctx.post_event(run, "Normal", "JobCreated", f"created Job {job['metadata']['name']}")
    elif seen_job is not None and seen_job["metadata"]["name"] == status["jobName"]:
        job = seen_job
    else:
        job = ctx.kube.get_job(namespace, status["jobName"])
    if job is not None and not is_owned_by(job, run):
        _write(ctx, run, _conflict(run, job, ctx.clock()), rlog)
        return
    workload, workload_problem = None, None
    if job is not None and job_queue(job):
        workload, workload_problem = _workload(ctx, namespace, job)
    if job is not None and not _finished(job):
        wanted = bool((run.get("spec") or {}).get("suspend"))
        if job_queue(job):
            # Kueue owns this Job's spec.suspend (it would undo any change): the run's suspend takes the
            # Workload out of the queue instead, and Kueue stops or starts the Job.
            if workload is not None and active(workload) == wanted:
                ctx.kube.set_workload_active(namespace, workload["metadata"]["name"], not wanted)
                workload["spec"]["active"] = not wanted
                rlog.info(
                    "%s Workload %s", "deactivated" if wanted else "activated", workload["metadata"]["name"]
                )
        elif bool((job.get("spec") or {}).get("suspend")) != wanted:
            job = ctx.kube.set_job_suspend(namespace, job["metadata"]["name"], wanted)
            rlog.info("%s Job %s", "suspended" if wanted else "resumed", job["metadata"]["name"])

    # Pods tell why a Job is stuck or failed; a completed Job whose trainer reported its result needs none.
    done = job is not None and _complete(job) and bool(status.get("result"))
    pods = _job_pods(ctx, namespace, name, job) if job is not None and not created and not done else []
    new = status_from(job, pods, run, ctx.clock(), ctx.config.stuck_seconds, workload, workload_problem)
    if not new:
        return
    previous_queue = status.get("queue")
    run = _write(ctx, run, new, rlog)
    if "queue" in new:
        for event in queue_events(previous_queue, new["queue"]):
            rlog.info(event[2])
            ctx.post_event(run, *event)
    if new.get("phase") == Phase.FAILED and job is not None and not _finished(job):
        # Failed while the Job still runs (a Pod stuck unschedulable or unable to pull its image).
        ctx.kube.delete_job(namespace, job["metadata"]["name"])
        rlog.info("deleted Job %s of the failed run", job["metadata"]["name"])
    if new.get("phase") == Phase.SUCCEEDED:
        _after_success(ctx, run, rlog)


def _workload(ctx: Context, namespace: str, job: dict) -> tuple[dict | None, str | None]:
    """Kueue's Workload of a queued Job, or why it cannot be read (no RBAC for it, Kueue not installed)."""
    try:
        return ctx.kube.get_workload(namespace, job["metadata"]["uid"]), None
    except ApiException as error:
        if error.status == 403:
            return None, (
                "the operator may not read Kueue Workloads (HTTP 403): apply the kueue component's RBAC "
                "(manifests/components/kueue)"
            )
        if error.status == 404:
            return None, "Kueue's Workload API is not installed (HTTP 404): is Kueue installed?"
        raise


def as_datetime(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _conflict(run: dict, job: dict, now: datetime) -> dict:
    message = f"Job {job['metadata']['name']} exists and is not owned by this TrainingRun"
    return _failed(run, "JobConflict", message, now)


def _failed(run: dict, reason: str, message: str, now: datetime) -> dict:
    """A run failed before any Job ran for it."""
    generation = run["metadata"].get("generation", 1)
    conditions = set_condition(
        (run.get("status") or {}).get("conditions") or [], "Failed", True, reason, message, generation, now
    )
    return {
        "phase": "Failed",
        "reason": reason,
        "message": message,
        "conditions": conditions,
        "observedGeneration": generation,
        "completionTime": now_rfc3339(now),
    }


def _write(ctx: Context, run: dict, new: dict, rlog: RunLog) -> dict:
    """Patches the status when it changes, with an Event when the phase or the reason changes."""
    old = run.get("status") or {}
    if is_unchanged(old, new):
        return run
    meta = run["metadata"]
    crash_point("before-status-write")
    patched = ctx.kube.patch_run_status(meta["namespace"], meta["name"], new)
    phase, reason, message = new.get("phase"), new.get("reason") or "", new.get("message") or ""
    if (phase, reason) != (old.get("phase"), old.get("reason") or ""):
        rlog.info("phase %s%s%s", phase, f" ({reason})" if reason else "", f": {message}" if message else "")
        if phase == Phase.PENDING and not reason and not old.get("phase"):
            return patched  # a run waiting for its Pod: the JobCreated Event already says so
        if phase == Phase.QUEUED and reason in ("Preempted", "Admitted"):
            return patched  # the queue's own Events (queue_events) say so, once
        queued = phase == Phase.QUEUED and reason != "WorkloadUnreadable"
        warning = phase == Phase.FAILED or (
            reason and reason not in ("Suspended", "Completed") and not queued
        )
        ctx.post_event(run, "Warning" if warning else "Normal", reason or str(phase), message or str(phase))
    return patched


def _after_success(ctx: Context, run: dict, rlog: RunLog) -> None:
    """Restarts spec.restartDeployment once, and only when the new model was promoted; a refused restart is
    retried with back-off and shown as the run's reason (RestartFailed) until it succeeds or gives up."""
    target = restart_target(run)
    status = run.get("status") or {}
    now = ctx.clock()
    if target is None or status.get("phase") != Phase.SUCCEEDED or not restart_due(run, now):
        return
    namespace, name = target
    previous = status.get("deploymentRestart") or {}
    record: dict = {"namespace": namespace, "name": name}
    top: dict = {}
    if not should_restart(run):
        condition = (False, "NotPromoted", f"the model was not promoted: {name} keeps its model")
        event = ("Normal", "RestartSkipped", condition[2])
    else:
        attempts = int(previous.get("attempts") or 0) + 1
        record["attempts"] = attempts
        try:
            # The stamp is the run's completion time, not now: a pass repeated after a crash writes the same
            # template again, which rolls nothing a second time.
            stamp = as_datetime(status.get("completionTime")) or now
            record["restartedAt"] = restart_deployment(ctx.kube, namespace, name, stamp)
            crash_point("after-rollout-restart")
            condition = (True, "Restarted", f"restarted Deployment {namespace}/{name}")
            event = ("Normal", "InferenceRestarted", condition[2])
            if previous.get("error"):  # a retry that worked: the run's reason is its own again
                top = {"reason": "Completed", "message": success_fields(status.get("result"))["message"]}
                record["error"] = None
                record["nextAttemptAt"] = None
        except (ApiException, HTTPError, OSError) as error:
            code = getattr(error, "status", None)
            what = f"HTTP {code} {getattr(error, 'reason', '')}".strip() if code else type(error).__name__
            message = f"could not restart Deployment {namespace}/{name} ({what}): {restart_hint(code, namespace, name)}"
            if attempts >= ctx.config.restart_attempts:
                record["gaveUp"] = True
                record["nextAttemptAt"] = None
                message += f"; gave up after {attempts} attempts (kubectl rollout restart it by hand)"
            else:
                delay = retry_delay(attempts, ctx.config.restart_retry_seconds)
                record["nextAttemptAt"] = now_rfc3339(now + delay)
                message += f"; attempt {attempts} of {ctx.config.restart_attempts}, next in {int(delay.total_seconds())}s"
            message = one_line(message)
            record["error"] = message
            top = {"reason": "RestartFailed", "message": message}
            condition = (False, "RestartFailed", message)
            # One Warning when it first fails and one when it gives up; the attempts between are logged.
            first_or_last = attempts == 1 or record.get("gaveUp")
            event = ("Warning", "RestartFailed", message) if first_or_last else None
            rlog.warning(message)
    conditions = set_condition(
        status.get("conditions") or [],
        "InferenceRestarted",
        *condition,
        run["metadata"].get("generation", 1),
        now,
    )
    record["at"] = now_rfc3339(now)
    meta = run["metadata"]
    ctx.kube.patch_run_status(
        meta["namespace"], meta["name"], {"deploymentRestart": record, "conditions": conditions, **top}
    )
    if event is not None:
        if event[0] == "Normal":
            rlog.info(event[2])
        ctx.post_event(run, *event)
