"""Maps a TrainingRun's Job, its Pods and the trainer's report to the run's status. Pure functions."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .queueing import job_queue, queue_status, waiting


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    # The Job waits in Kueue's queue (created suspended; Kueue unsuspends it when it admits it).
    QUEUED = "Queued"


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED})
# The status machine, in one place. A terminal phase is final: the run is never started again.
TRANSITIONS: dict[Phase | None, frozenset[Phase]] = {
    # A run first seen when its Job already runs or ended (the operator crashed right after creating the
    # Job, or was down all along) goes straight to where the Job is.
    None: frozenset(
        {Phase.PENDING, Phase.QUEUED, Phase.RUNNING, Phase.SUSPENDED, Phase.SUCCEEDED, Phase.FAILED}
    ),
    Phase.PENDING: frozenset({Phase.QUEUED, Phase.RUNNING, Phase.SUSPENDED, Phase.SUCCEEDED, Phase.FAILED}),
    # Running -> Pending: the Job retries after a failed Pod and its next Pod waits to start.
    # Running -> Queued: Kueue preempted the run; it waits to be admitted again.
    Phase.RUNNING: frozenset({Phase.PENDING, Phase.QUEUED, Phase.SUSPENDED, Phase.SUCCEEDED, Phase.FAILED}),
    Phase.QUEUED: frozenset({Phase.PENDING, Phase.RUNNING, Phase.SUSPENDED, Phase.SUCCEEDED, Phase.FAILED}),
    Phase.SUSPENDED: frozenset({Phase.PENDING, Phase.QUEUED, Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED}),
    Phase.SUCCEEDED: frozenset(),
    Phase.FAILED: frozenset(),
}


def can_move(old: Phase | None, new: Phase) -> bool:
    return old == new or new in TRANSITIONS[old]


def phase_of(run: dict) -> Phase | None:
    value = (run.get("status") or {}).get("phase")
    return Phase(value) if value in Phase._value2member_map_ else None


# Trainer exit codes (docs/CONTRACTS.md) for a Pod that died without writing its result.
EXIT_REASONS = {
    1: "InternalError",
    2: "InvalidInput",
    3: "EmptySelection",
    4: "StorageError",
    5: "RegistryError",
    6: "ModelUnavailable",
    7: "TrainingError",
    8: "DeviceUnavailable",  # --device asks for CUDA and the pod sees no (or too few) GPUs
}
# Pod states that never fix themselves without a person: reported at once, fatal after stuck_seconds.
STUCK_WAITING = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
MESSAGE_LIMIT = 512


def now_rfc3339(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# user:password@ in URLs (a DATABASE_URL in a traceback that the termination message took from the logs).
_URL_SECRET = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]+):[^\s@]+@", re.IGNORECASE)


def _one_line(text: str) -> str:
    """One line, at most MESSAGE_LIMIT characters, with credentials in URLs masked."""
    text = _URL_SECRET.sub(r"\1:***@", " ".join(str(text).split()))
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


one_line = _one_line


def _condition_true(job: dict, kind: str) -> dict | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def _sorted_pods(pods: list[dict]) -> list[dict]:
    return sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))


def _trainer_state(pod: dict) -> dict:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == "trainer":
            return status.get("state") or {}
    return {}


def _terminated(pod: dict) -> dict | None:
    return _trainer_state(pod).get("terminated")


def parse_result(text: str | None) -> dict | None:
    """The trainer's compact result from a termination message, or None if the message is not one."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and value.get("status") in ("Succeeded", "Failed") else None


def read_result(run: dict, pods: list[dict]) -> dict | None:
    """The trainer's result: from status.result, else from the newest Pod's termination message."""
    reported = (run.get("status") or {}).get("result")
    if reported:
        return reported
    for pod in reversed(_sorted_pods(pods)):
        terminated = _terminated(pod)
        if terminated:
            return parse_result(terminated.get("message"))
    return None


def pod_problem(pods: list[dict]) -> tuple[str, str, datetime | None] | None:
    """Why the newest unfinished Pod cannot run: (reason, message, since), or None."""
    for pod in reversed(_sorted_pods(pods)):
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        waiting = _trainer_state(pod).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            since = parse_time(status.get("startTime") or pod["metadata"].get("creationTimestamp"))
            # The kubelet says ErrImagePull at each pull attempt and ImagePullBackOff between them: one
            # reason for both, or the run's reason (and its Events) would flap with every attempt.
            reason = "ImagePullBackOff" if waiting["reason"] == "ErrImagePull" else waiting["reason"]
            return reason, _one_line(waiting.get("message") or waiting["reason"]), since
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                reason = cond.get("reason") or "Unschedulable"
                since = parse_time(cond.get("lastTransitionTime") or pod["metadata"].get("creationTimestamp"))
                return reason, _one_line(cond.get("message") or reason), since
        return None
    return None


def failure_of(job: dict | None, pods: list[dict], result: dict | None, spec: dict) -> tuple[str, str]:
    """The real reason a finished Job failed: the most specific of what the Pods and the trainer say."""
    failed_cond = _condition_true(job, "Failed") if job else None
    job_reason = (failed_cond or {}).get("reason") or "JobFailed"
    job_message = (failed_cond or {}).get("message") or ""
    if job_reason == "DeadlineExceeded":
        deadline = (job or {}).get("spec", {}).get("activeDeadlineSeconds")
        return job_reason, f"the Job ran longer than activeDeadlineSeconds={deadline}"
    newest = _sorted_pods(pods)[-1] if pods else None
    terminated = _terminated(newest) if newest else None
    if terminated and terminated.get("reason") == "OOMKilled":
        memory = (spec.get("resources") or {}).get("memory", "the memory limit")
        return "OOMKilled", (
            f"the trainer ran out of memory ({memory}): raise spec.resources.memory or lower spec.batchSize"
        )
    if newest and (newest.get("status") or {}).get("reason") == "Evicted":
        return "Evicted", _one_line(newest["status"].get("message") or "the Pod was evicted")
    if result and result.get("status") == "Failed":
        return result.get("reason") or "TrainerError", _one_line(result.get("message") or "")
    if terminated:
        code = terminated.get("exitCode")
        text = terminated.get("message") or terminated.get("reason") or ""
        reason = EXIT_REASONS.get(code, job_reason)
        attempts = int(((job or {}).get("status") or {}).get("failed") or 0)
        after = f" ({job_reason} after {attempts} attempts)" if failed_cond and attempts > 1 else ""
        return reason, _one_line(f"trainer exited with code {code}{after}: {text}".rstrip(": "))
    return job_reason, _one_line(job_message or "the Job failed")


SUCCESS_FIELDS = (
    "modelVersion",
    "modelUri",
    "baseVersion",
    "promoted",
    "promotionReason",
    "metrics",
    "championMAP50",
    "dataset",
)


# Status shows metrics to 3 places (0.056, not 0.05583333333333334); the registry keeps them exact.
PLACES = 3


def rounded(value: Any) -> Any:
    return (
        round(float(value), PLACES)
        if isinstance(value, int | float) and not isinstance(value, bool)
        else value
    )


def map50_column(status: dict) -> float | None:
    """What the MAP50 column shows (status.mAP50): the final model's mAP50 once the run has one, else the
    best validation mAP50 the trainer has reported so far, to 3 places."""
    final = (status.get("metrics") or {}).get("mAP50")
    value = final if final is not None else (status.get("progress") or {}).get("bestMAP50")
    return rounded(value) if value is not None else None


def success_fields(result: dict | None) -> dict:
    if not result:
        return {"message": "the trainer exited 0 without a result"}
    fields = {key: result[key] for key in SUCCESS_FIELDS if result.get(key) is not None}
    if isinstance(fields.get("metrics"), dict):
        fields["metrics"] = {k: rounded(v) for k, v in fields["metrics"].items()}
    if "championMAP50" in fields:
        fields["championMAP50"] = rounded(fields["championMAP50"])
    metrics = result.get("metrics") or {}
    version = result.get("modelVersion") or "?"
    summary = f"model {version}"
    if metrics.get("mAP50") is not None:
        summary += f", mAP50 {metrics['mAP50']:.3f}"
    summary += ", promoted" if result.get("promoted") else ", not promoted"
    if result.get("promotionReason"):
        summary += f" ({result['promotionReason']})"
    return fields | {"message": _one_line(summary)}


def set_condition(
    conditions: list[dict], kind: str, status: bool, reason: str, message: str, generation: int, now: datetime
) -> list[dict]:
    """Conditions in the metav1.Condition shape; lastTransitionTime moves only when status changes."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.get("type") == kind), None)
    changed = previous is None or previous.get("status") != value
    updated = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": _one_line(message),
        "observedGeneration": generation,
        "lastTransitionTime": now_rfc3339(now) if changed else previous["lastTransitionTime"],
    }
    return [c for c in conditions if c.get("type") != kind] + [updated]


def status_from(
    job: dict | None,
    pods: list[dict],
    run: dict,
    now: datetime,
    stuck_seconds: float,
    workload: dict | None = None,
    workload_problem: str | None = None,
) -> dict:
    """The operator's part of the run's status (phase, reason, conditions, results...) as a merge patch.

    ``job`` is None when the run's Job does not exist (not created yet, or deleted). ``workload`` is Kueue's
    Workload of a queued Job (None when Kueue has not made one, or the Job is not queued). A run already in a
    terminal phase keeps its status: the result is {}.
    """
    status = run.get("status") or {}
    spec = run.get("spec") or {}
    current = phase_of(run)
    if current in TERMINAL:
        return {}
    result = read_result(run, pods)
    reason, message = "", ""
    new: dict[str, Any] = {}

    if job is None:
        if not status.get("jobName"):
            phase = Phase.SUSPENDED if spec.get("suspend") else Phase.PENDING
        elif result and result.get("status") == "Succeeded":
            phase = Phase.SUCCEEDED
        elif result:
            phase = Phase.FAILED
            reason, message = failure_of(None, pods, result, spec)
        else:
            phase = Phase.FAILED
            reason, message = "JobDeleted", f"Job {status['jobName']} was deleted before it finished"
    elif _condition_true(job, "Complete"):
        phase = Phase.FAILED if result and result.get("status") == "Failed" else Phase.SUCCEEDED
        if phase == Phase.FAILED:
            reason, message = failure_of(job, pods, result, spec)
    elif _condition_true(job, "Failed"):
        phase = Phase.FAILED
        reason, message = failure_of(job, pods, result, spec)
    elif (job.get("spec") or {}).get("suspend"):
        queue = job_queue(job)
        if spec.get("suspend"):
            phase = Phase.SUSPENDED
            reason, message = "Suspended", "spec.suspend is true"
            if queue:
                message += f" (its Workload is out of LocalQueue {queue} until the run is resumed)"
        elif queue:
            # Kueue holds the Job: its own reason, in its own words.
            phase = Phase.QUEUED
            reason, message = waiting(queue, workload, workload_problem)
        else:
            phase = Phase.SUSPENDED
            reason, message = "Suspended", "spec.suspend is true"
    else:
        problem = pod_problem(pods)
        running = any((p.get("status") or {}).get("phase") == "Running" for p in pods)
        newest = _sorted_pods(pods)[-1] if pods else None
        # A Pod that just ended while the Job controller has not concluded yet: still Running.
        ending = newest is not None and (newest.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        phase = Phase.RUNNING if running or (ending and current == Phase.RUNNING) else Phase.PENDING
        if problem:
            reason, message, since = problem
            if since is not None and (now - since).total_seconds() >= stuck_seconds:
                phase = Phase.FAILED
                message = f"{message} (for more than {int(stuck_seconds)}s)"

    if not can_move(current, phase):
        return {}
    if phase == Phase.SUCCEEDED:
        new |= success_fields(result)
        reason = "Completed"
        message = new.pop("message")
    new |= {"phase": str(phase), "reason": reason, "message": message}
    column = map50_column(status | {k: new[k] for k in ("metrics",) if k in new})
    if column is not None:
        new["mAP50"] = column
    new["observedGeneration"] = run["metadata"].get("generation", 1)
    if job is not None:
        new["jobName"] = job["metadata"]["name"]
        job_status = job.get("status") or {}
        if job_status.get("startTime") or status.get("startTime"):
            new["startTime"] = status.get("startTime") or job_status["startTime"]
        new["attempts"] = (
            int(job_status.get("failed") or 0)
            + int(job_status.get("succeeded") or 0)
            + int(job_status.get("active") or 0)
        )
        queue = job_queue(job)
        if queue:
            new["queue"] = queue_status(queue, job, workload, status.get("queue"))
    if result and not status.get("result"):
        new["result"] = {**result, "message": _one_line(result.get("message") or "")}
    if phase in TERMINAL:
        finished = (job or {}).get("status", {}).get("completionTime")
        new["completionTime"] = finished or now_rfc3339(now)
    new["conditions"] = _conditions(status.get("conditions") or [], phase, reason, message, new, run, now)
    return new


def _conditions(
    conditions: list[dict], phase: Phase, reason: str, message: str, new: dict, run: dict, now: datetime
) -> list[dict]:
    gen = run["metadata"].get("generation", 1)
    progressing = phase in (Phase.PENDING, Phase.RUNNING, Phase.QUEUED)
    conditions = set_condition(
        conditions,
        "Progressing",
        progressing,
        reason or str(phase),
        message or f"the run is {phase}",
        gen,
        now,
    )
    if phase == Phase.SUCCEEDED:
        conditions = set_condition(conditions, "Succeeded", True, "Completed", message, gen, now)
        promoted = bool(new.get("promoted"))
        conditions = set_condition(
            conditions,
            "Promoted",
            promoted,
            "Promoted" if promoted else "NotPromoted",
            new.get("promotionReason") or "",
            gen,
            now,
        )
    if phase == Phase.FAILED:
        conditions = set_condition(conditions, "Failed", True, reason or "Failed", message, gen, now)
    return conditions


def is_unchanged(status: dict, patch: dict) -> bool:
    """True when applying ``patch`` would not change ``status`` (so no write and no Event is needed)."""
    return all(status.get(key) == value for key, value in patch.items())
