"""What a TrainingSchedule does now, and why: pure decisions from its spec, status, runs, the clock and the
new-sample count. The I/O around it is in scheduling.py.

A tick (a firing of spec.schedule) is handled once: a run is created for it, or it is skipped for a reason
(too few new samples, suspended, too late). Ticks after `status.lastTickTime` are due; only the latest due
tick is considered (at most one catch-up run after the operator was down, like a CronJob). A tick that
cannot run yet is held, not skipped: while a run is active under concurrencyPolicy Forbid, and while the
database cannot be read. `status.lastTickTime` is written only after the run exists, and the run's name is
fixed by its tick, so a crash between creating the run and writing the status creates nothing twice.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from . import API_VERSION, GROUP, KIND, MANAGED_BY
from .cron import Cron, CronError, parse
from .status import now_rfc3339, parse_time, set_condition

SCHEDULE_PLURAL = "trainingschedules"
SCHEDULE_KIND = "TrainingSchedule"
SCHEDULE_LABEL = f"{GROUP}/trainingschedule"
SCHEDULED_AT = f"{GROUP}/scheduled-at"  # the tick a run was created for (RFC 3339, UTC)
TRIGGER = f"{GROUP}/trigger"  # why it was created ("212 new samples (at least 200)")
MAX_NAME = 63
TERMINAL_PHASES = ("Succeeded", "Failed")
DEFAULT_SUCCESS_HISTORY = 3
DEFAULT_FAILED_HISTORY = 1
# The reasons of a Warning Event; every other reason is Normal.
WARNINGS = frozenset(
    {
        "InvalidSchedule",
        "DatabaseUnavailable",
        "DatabaseNotConfigured",
        "MissedStartingDeadline",
        "RunNameTaken",
    }
)
_DURATION = re.compile(r"(\d+)([dhm])")


@dataclass(frozen=True)
class SampleCount:
    """The new samples counted for a schedule: `new` (at most `limit`), or why they could not be counted."""

    new: int | None = None
    cutoff: datetime | None = None
    limit: int = 0
    problem: str | None = None  # DatabaseUnavailable, DatabaseError, DatabaseNotConfigured
    detail: str = ""


@dataclass
class Decision:
    status: dict  # merge patch of the schedule's status; written after `create` exists
    create: dict | None = None  # the TrainingRun to create
    delete: list[str] = field(default_factory=list)  # runs to delete: Replace, then history limits
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    tick: datetime | None = None


def parse_duration(text: str) -> timedelta:
    """'7d', '36h', '1d12h', '90m' (the CRD's pattern guarantees the shape)."""
    parts = _DURATION.findall(text or "")
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"maxInterval {text!r} is not a duration such as 7d, 36h or 1d12h")
    unit = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}
    return sum((int(n) * unit[u] for n, u in parts), timedelta())


def run_name(schedule: str, tick: datetime) -> str:
    """`<schedule>-<yyyymmddhhmm>` (the tick in UTC, never ambiguous); at most 63 characters: a longer
    schedule name is cut and a hash of the whole name keeps two long names apart."""
    stamp = tick.astimezone(UTC).strftime("%Y%m%d%H%M")
    name = f"{schedule}-{stamp}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(schedule.encode()).hexdigest()[:8]
    stem = schedule[: MAX_NAME - len(stamp) - len(digest) - 2].rstrip("-.")
    return f"{stem}-{digest}-{stamp}"


def needed(spec: dict) -> int:
    return int(spec.get("minNewSamples", 1))


def counts_samples(schedule: dict) -> bool:
    """Whether a pass needs the new-sample count (a clock-only or suspended schedule reads no database)."""
    spec = schedule.get("spec") or {}
    return needed(spec) > 0 and not spec.get("suspend", False)


def count_limit(spec: dict) -> int:
    """How many new samples are worth counting: the threshold, and 1 for maxInterval's "anything new"."""
    return max(needed(spec), 1)


def min_detections(spec: dict) -> int:
    return int((spec.get("template") or {}).get("minDetections", 1))


def owned_runs(schedule: dict, runs: list[dict]) -> list[dict]:
    uid = schedule["metadata"].get("uid")
    return [
        r
        for r in runs
        if any(ref.get("uid") == uid for ref in r["metadata"].get("ownerReferences") or [])
        and not r["metadata"].get("deletionTimestamp")
    ]


def _phase(run: dict) -> str:
    return (run.get("status") or {}).get("phase") or "Pending"


def _when(run: dict) -> datetime:
    meta = run["metadata"]
    return (
        parse_time((meta.get("annotations") or {}).get(SCHEDULED_AT))
        or parse_time(meta.get("creationTimestamp"))
        or datetime.min.replace(tzinfo=UTC)
    )


def build_run(schedule: dict, tick: datetime, trigger: str) -> dict:
    """The TrainingRun of one tick: the template as its spec, owned by the schedule (the garbage collector
    removes it with the schedule), labelled to be found. The schedule's own labels are not copied: ArgoCD's
    tracking label would make ArgoCD prune the run as not in git."""
    meta = schedule["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": run_name(meta["name"], tick),
            "namespace": meta["namespace"],
            "labels": {
                SCHEDULE_LABEL: meta["name"],
                "app.kubernetes.io/part-of": "waste-detection",
                "app.kubernetes.io/managed-by": MANAGED_BY,
            },
            "annotations": {SCHEDULED_AT: now_rfc3339(tick), TRIGGER: trigger[:256]},
            "ownerReferences": [
                {
                    "apiVersion": schedule.get("apiVersion") or f"{GROUP}/v1alpha1",
                    "kind": SCHEDULE_KIND,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": copy.deepcopy((schedule.get("spec") or {}).get("template") or {}),
    }


def prune(spec: dict, runs: list[dict]) -> list[str]:
    """Finished runs beyond the history limits, oldest first; active runs are never pruned."""
    doomed: list[str] = []
    for phase, key, default in (
        ("Succeeded", "successfulRunsHistoryLimit", DEFAULT_SUCCESS_HISTORY),
        ("Failed", "failedRunsHistoryLimit", DEFAULT_FAILED_HISTORY),
    ):
        done = sorted((r for r in runs if _phase(r) == phase), key=_when)
        keep = max(int(spec.get(key, default)), 0)
        doomed += [r["metadata"]["name"] for r in done[: max(len(done) - keep, 0)]]
    return doomed


def pending_text(spec: dict, count: SampleCount | None) -> str:
    if needed(spec) == 0:
        return "-"
    if count is None or count.new is None:
        return f"?/{needed(spec)}"
    return f"{count.new}/{needed(spec)}"


def decide(schedule: dict, runs: list[dict], now: datetime, count: SampleCount | None) -> Decision:
    """The whole decision of one pass. `runs` are the TrainingRuns labelled with this schedule; `count` is
    None when counts_samples() is false."""
    meta = schedule["metadata"]
    spec = schedule.get("spec") or {}
    old = schedule.get("status") or {}
    generation = meta.get("generation", 1)
    mine = owned_runs(schedule, runs)
    active = sorted((r for r in mine if _phase(r) not in TERMINAL_PHASES), key=_when)
    status: dict = {
        "observedGeneration": generation,
        "active": [r["metadata"]["name"] for r in active],
        "lastRun": _last_run(mine),
        "pending": pending_text(spec, count),
    }
    if count is None and needed(spec) > 0:
        status["pending"] = old.get("pending") or status["pending"]  # suspended: the last count stands
    if count is not None:
        status |= {
            "newSamples": count.new,
            "dataCutoff": now_rfc3339(count.cutoff) if count.cutoff else None,
        }
    decision = Decision(status=status, delete=prune(spec, mine))

    try:
        cron = parse(spec.get("schedule", ""), spec.get("timeZone"))
        interval = parse_duration(spec["maxInterval"]) if spec.get("maxInterval") else None
    except (CronError, ValueError) as error:
        status["nextScheduleTime"] = None
        invalid = ("InvalidSchedule", str(error))
        return _finish(decision, old, generation, now, invalid, invalid)

    status["nextScheduleTime"] = now_rfc3339(cron.next_after(now))
    anchor = _anchor(schedule, now)
    tick = cron.latest_at_or_before(now)
    problem = (count.problem, count.detail) if count is not None and count.problem else None
    outcome: tuple[str, str] | None = None  # a tick handled now: (reason, message)

    if spec.get("suspend", False):
        if tick is not None and tick > anchor:
            status["lastTickTime"] = now_rfc3339(tick)
        outcome = ("Suspended", "spec.suspend is true: no run is created")
    elif tick is not None and tick > anchor:
        outcome = _tick(decision, schedule, cron, tick, now, active, mine, count, interval)
    elif old.get("observedGeneration") not in (None, generation):
        # The spec changed: ticks that were due before the change are not caught up (anchor moved to now).
        status["lastTickTime"] = now_rfc3339(anchor)
    if outcome is None and not old.get("reason"):
        outcome = ("Waiting", f"the first tick is at {status['nextScheduleTime']}")
    return _finish(decision, old, generation, now, problem, outcome)


def tick_due(schedule: dict, now: datetime) -> bool:
    """Whether a pass at `now` handles a tick (its count should then be fresh, not a recent one reused)."""
    spec = schedule.get("spec") or {}
    try:
        tick = parse(spec.get("schedule", ""), spec.get("timeZone")).latest_at_or_before(now)
    except CronError:
        return False
    return tick is not None and tick > _anchor(schedule, now)


def _anchor(schedule: dict, now: datetime) -> datetime:
    """Ticks after this instant are due: the last handled tick, the schedule's creation, or, after a change
    of the spec, the moment the operator saw it."""
    meta, status = schedule["metadata"], schedule.get("status") or {}
    anchor = parse_time(status.get("lastTickTime")) or parse_time(meta.get("creationTimestamp")) or now
    if (
        status.get("observedGeneration") is not None
        and meta.get("generation") != status["observedGeneration"]
    ):
        anchor = max(anchor, now)
    return anchor


def _tick(
    decision: Decision,
    schedule: dict,
    cron: Cron,
    tick: datetime,
    now: datetime,
    active: list[dict],
    mine: list[dict],
    count: SampleCount | None,
    interval: timedelta | None,
) -> tuple[str, str]:
    spec, status = schedule.get("spec") or {}, decision.status
    old = schedule.get("status") or {}
    at = now_rfc3339(tick)
    name = run_name(schedule["metadata"]["name"], tick)
    if any(r["metadata"]["name"] == name for r in mine):
        # Created by an earlier pass that could not record it (a crash, a lost status write).
        status |= {"lastTickTime": at, "lastScheduleTime": at}
        return "Scheduled", f"created TrainingRun {name} for the tick at {at}"
    deadline = spec.get("startingDeadlineSeconds")
    if deadline is not None and (now - tick).total_seconds() > deadline:
        status["lastTickTime"] = at
        late = int((now - tick).total_seconds())
        return "MissedStartingDeadline", (
            f"the tick at {at} is {late}s old, past startingDeadlineSeconds={deadline}: skipped"
        )
    policy = spec.get("concurrencyPolicy", "Forbid")
    if active and policy == "Forbid":
        run = active[-1]
        return "RunActive", (
            f"the tick at {at} waits: TrainingRun {run['metadata']['name']} is {_phase(run)} "
            "(concurrencyPolicy Forbid)"
        )
    trigger = "on the clock (minNewSamples 0)"
    if needed(spec) > 0:
        if count is None or count.new is None:
            return (count.problem if count else None) or "DatabaseUnavailable", (
                f"the tick at {at} waits until new samples can be counted"
                + (f": {count.detail}" if count and count.detail else "")
            )
        want = needed(spec)
        last = parse_time(old.get("lastScheduleTime")) or parse_time(
            schedule["metadata"].get("creationTimestamp")
        )
        if count.new >= want:
            # The count stops at the threshold: it says "at least", never a number it did not read.
            trigger = f"at least {want} new samples (minNewSamples {want})"
        elif interval is not None and count.new >= 1 and last is not None and tick - last >= interval:
            trigger = (
                f"maxInterval {spec['maxInterval']} reached with {count.new} new samples (fewer than {want})"
            )
        else:
            status["lastTickTime"] = at
            since = (
                f" since the deployed model's data cutoff {now_rfc3339(count.cutoff)}" if count.cutoff else ""
            )
            return "NotEnoughSamples", f"{count.new} of {want} new samples{since} at the tick at {at}"
    if policy == "Replace":
        decision.delete = [r["metadata"]["name"] for r in active] + decision.delete
    decision.create = build_run(schedule, tick, trigger)
    decision.tick = tick
    status |= {
        "lastTickTime": at,
        "lastScheduleTime": at,
        "active": [r["metadata"]["name"] for r in active if policy != "Replace"] + [name],
        "lastRun": {"name": name, "phase": "Pending", "scheduledTime": at, "text": f"{name} Pending"},
    }
    replaced = (
        f", replacing {', '.join(r['metadata']['name'] for r in active)}"
        if policy == "Replace" and active
        else ""
    )
    return "Scheduled", f"created TrainingRun {name}: {trigger}{replaced}"


def _last_run(runs: list[dict]) -> dict | None:
    if not runs:
        return None
    run = max(runs, key=_when)
    name, phase = run["metadata"]["name"], _phase(run)
    return {"name": name, "phase": phase, "scheduledTime": now_rfc3339(_when(run)), "text": f"{name} {phase}"}


def name_taken(schedule: dict, tick: datetime, now: datetime) -> Decision:
    """The run name of a tick belongs to a TrainingRun this schedule does not own: skip that tick."""
    at = now_rfc3339(tick)
    name = run_name(schedule["metadata"]["name"], tick)
    old = schedule.get("status") or {}
    generation = schedule["metadata"].get("generation", 1)
    decision = Decision(status={"observedGeneration": generation, "lastTickTime": at})
    message = f"TrainingRun {name} exists and is not owned by this schedule: the tick at {at} is skipped"
    return _finish(decision, old, generation, now, None, ("RunNameTaken", message))


def _finish(
    decision: Decision,
    old: dict,
    generation: int,
    now: datetime,
    problem: tuple[str, str] | None,
    outcome: tuple[str, str] | None,
) -> Decision:
    """Ready condition, reason and message, and one Event per change of reason (no Event storm)."""
    status = decision.status
    if outcome is not None:
        status["reason"], status["message"] = outcome
    ready = problem is None
    ready_reason, ready_message = problem or ("Scheduling", "the schedule is valid and its inputs readable")
    status["conditions"] = set_condition(
        old.get("conditions") or [], "Ready", ready, ready_reason, ready_message, generation, now
    )
    before = next((c for c in old.get("conditions") or [] if c.get("type") == "Ready"), None)
    reason = status.get("reason", old.get("reason"))
    if reason and reason != old.get("reason"):
        message = status.get("message", "")
        decision.events.append(("Warning" if reason in WARNINGS else "Normal", reason, message))
    if (before or {}).get("reason", "Scheduling") != ready_reason and ready_reason != reason:
        kind = "Warning" if not ready else "Normal"
        decision.events.append((kind, ready_reason if not ready else "Ready", ready_message))
    return decision
