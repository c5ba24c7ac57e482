"""Kueue: where a queued run stands, read from its Job and its Workload. Pure functions.

A run with a queue name (spec.queueName, or the operator's DEFAULT_QUEUE_NAME) gets a Job created suspended
with Kueue's queue label; Kueue creates a Workload for it, reserves quota in the LocalQueue's ClusterQueue,
unsuspends the Job when admitted, and suspends it again when it preempts it. The operator never writes the
Job's spec.suspend of such a Job (Kueue would undo it); the run's own suspend deactivates the Workload
instead (spec.active, Kueue's way to take a workload out of its queue).
"""

from __future__ import annotations

from typing import Any

KUEUE_GROUP = "kueue.x-k8s.io"
# v1beta1 is the version Kueue v0.15 stores: reading it needs no conversion webhook round trip.
WORKLOAD_VERSION = "v1beta1"
WORKLOAD_PLURAL = "workloads"
QUEUE_LABEL = f"{KUEUE_GROUP}/queue-name"
PRIORITY_LABEL = f"{KUEUE_GROUP}/priority-class"
JOB_UID_LABEL = f"{KUEUE_GROUP}/job-uid"
PREEMPTED = "Preempted"


def queue_name(run: dict, default: str | None) -> str | None:
    """The LocalQueue the run's Job goes to: spec.queueName, else the operator's default, else None."""
    return (run.get("spec") or {}).get("queueName") or default or None


def job_queue(job: dict | None) -> str | None:
    """The queue a Job was created for (its label), or None for a Job that Kueue does not manage."""
    if job is None:
        return None
    return (job["metadata"].get("labels") or {}).get(QUEUE_LABEL) or None


def _condition(obj: dict | None, kind: str) -> dict | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def _true(obj: dict | None, kind: str) -> dict | None:
    cond = _condition(obj, kind)
    return cond if cond is not None and cond.get("status") == "True" else None


def admitted(workload: dict | None) -> bool:
    """Admitted and not being evicted (Kueue keeps Admitted true until the evicted Job has stopped)."""
    return _true(workload, "Admitted") is not None and _true(workload, "Evicted") is None


def active(workload: dict | None) -> bool:
    """A Workload is active unless spec.active is false (deactivated: out of the queue)."""
    return (workload or {}).get("spec", {}).get("active", True) is not False


def preemptions(workload: dict | None) -> int:
    """How many times Kueue preempted this Workload (its scheduling statistics, kept across re-admissions)."""
    stats = ((workload or {}).get("status") or {}).get("schedulingStats") or {}
    return sum(int(e.get("count") or 0) for e in stats.get("evictions") or [] if e.get("reason") == PREEMPTED)


def last_preemption(workload: dict | None) -> dict | None:
    """Kueue's condition that says the Workload was preempted (Evicted or Preempted, reason Preempted)."""
    for kind in ("Evicted", "Preempted"):
        cond = _condition(workload, kind)
        if (
            cond is not None
            and (cond.get("reason") == PREEMPTED or kind == "Preempted")
            and cond.get("status") == "True"
        ):
            return cond
    return None


def waiting(queue: str, workload: dict | None, problem: str | None = None) -> tuple[str, str]:
    """Why a queued Job is not admitted: (reason, message), the message in Kueue's words. `problem`: why the
    Workload could not be read, if it could not."""
    if problem:
        return "WorkloadUnreadable", f"LocalQueue {queue}: {problem}"
    if workload is None:
        return "WaitingForWorkload", f"LocalQueue {queue}: Kueue has not created the Job's Workload yet"
    if not active(workload):
        return "Deactivated", f"LocalQueue {queue}: the Workload is deactivated (spec.active is false)"
    evicted = _true(workload, "Evicted")
    reserved = _condition(workload, "QuotaReserved")
    if evicted is not None and (reserved is None or reserved.get("status") != "False"):
        # Preempted and not yet back in the queue: Kueue is still stopping the Job.
        message = evicted.get("message") or "evicted"
        return evicted.get("reason") or "Evicted", f"LocalQueue {queue}: {message}"
    if admitted(workload):
        where = ((workload.get("status") or {}).get("admission") or {}).get("clusterQueue") or "?"
        return "Admitted", f"LocalQueue {queue}: admitted by ClusterQueue {where}; the Job starts"
    if reserved is not None and reserved.get("status") == "True":
        return "WaitingForAdmissionChecks", f"LocalQueue {queue}: quota reserved, admission checks pending"
    if reserved is None:
        return "Queued", f"LocalQueue {queue}: Kueue has not tried to reserve quota yet"
    return "WaitingForQuota", f"LocalQueue {queue}: {reserved.get('message') or 'waiting for quota'}"


def queue_status(queue: str, job: dict, workload: dict | None, previous: dict | None) -> dict[str, Any]:
    """status.queue: the LocalQueue, the Workload, whether it is admitted and where, and the preemptions."""
    previous = previous or {}
    status = (workload or {}).get("status") or {}
    admission = status.get("admission") or {}
    labels = job["metadata"].get("labels") or {}
    record: dict[str, Any] = {
        "name": queue,
        "workload": (workload or {}).get("metadata", {}).get("name"),
        "clusterQueue": admission.get("clusterQueue") or previous.get("clusterQueue"),
        "priorityClass": labels.get(PRIORITY_LABEL),
        # Kueue releases a finished Workload's quota (Admitted turns false): the run keeps what it was.
        "admitted": bool(previous.get("admitted")) if _true(workload, "Finished") else admitted(workload),
        # Never lower than what was seen: a Workload created again (its Job changed) starts from zero.
        "preemptions": max(preemptions(workload), int(previous.get("preemptions") or 0)),
    }
    preempted = last_preemption(workload)
    if preempted is not None:
        record["lastPreemptionTime"] = preempted.get("lastTransitionTime")
        record["lastPreemptionMessage"] = preempted.get("message")
    else:
        for key in ("lastPreemptionTime", "lastPreemptionMessage"):
            if previous.get(key):
                record[key] = previous[key]
    return {k: v for k, v in record.items() if v is not None}


def queue_events(previous: dict | None, current: dict) -> list[tuple[str, str, str]]:
    """The Events for a change of status.queue: (type, reason, message)."""
    previous = previous or {}
    events: list[tuple[str, str, str]] = []
    if current.get("preemptions", 0) > int(previous.get("preemptions") or 0):
        message = current.get("lastPreemptionMessage") or "preempted by Kueue"
        events.append(
            ("Warning", "Preempted", f"preempted by Kueue ({current['preemptions']} so far): {message}")
        )
    if current.get("admitted") and not previous.get("admitted"):
        where = current.get("clusterQueue") or "?"
        events.append(
            ("Normal", "Admitted", f"admitted by ClusterQueue {where} (LocalQueue {current.get('name')})")
        )
    return events
