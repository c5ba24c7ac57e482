"""What a trainer tidies when it starts: registry rows of runs that ended without their trainer, and
checkpoints that no run will resume. Pure decisions; the pipeline reads and writes.

The rules (README, "Checkpoints and dead runs"):
- A run's row still `running` is marked `failed` when its TrainingRun, seen in the starting trainer's own
  namespace, is gone (RunDeleted) or has failed (the operator's reason: JobDeleted, DeadlineExceeded,
  OOMKilled, ...), and in any namespace when no trainer of it gave a sign of life for MAX_AGE (Abandoned).
- A checkpoint folder `checkpoints/<uid>/` is removed when its run succeeded, when its run failed more than
  RETRY_GRACE ago (a failed Pod's retry starts within minutes and resumes from it), when the sweep above
  just ended its run, and when nothing was written to it for MAX_AGE (this also removes the folders of
  runs that predate uid keys).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from trainer.registry import RunRow

# Longer than a TrainingRun's longest activeDeadlineSeconds (7 days, the CRD's maximum).
MAX_AGE = timedelta(days=8)
# The Job controller retries a failed Pod after at most 6 minutes; an hour leaves room for scheduling.
RETRY_GRACE = timedelta(hours=1)
TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class ClusterRun:
    """A TrainingRun as the trainer's ServiceAccount can read it (its own namespace only)."""

    uid: str
    name: str
    phase: str | None = None
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Ending:
    run_id: str
    reason: str
    message: str


def _where(row: RunRow) -> tuple[str | None, str | None, bool]:
    """(namespace, name, keyed by name) of a row; rows written before uid keys have id namespace/name."""
    if row.namespace is None and "/" in row.id:
        namespace, name = row.id.split("/", 1)
        return namespace, name, True
    return row.namespace, row.name, False


def ended_runs(
    rows: Iterable[RunRow],
    cluster: Iterable[ClusterRun] | None,
    namespace: str | None,
    now: datetime,
    current: str | None = None,
    max_age: timedelta = MAX_AGE,
) -> list[Ending]:
    """The `running` rows whose run is over. `cluster` is None when the API could not be read: then only
    the age rule applies."""
    seen = list(cluster) if cluster is not None else None
    by_uid = {r.uid: r for r in seen or []}
    by_name = {r.name: r for r in seen or []}
    out: list[Ending] = []
    for row in rows:
        if row.id == current or row.status != "running":
            continue
        run_ns, run_name, legacy = _where(row)
        label = f"{run_ns}/{run_name}"
        if seen is not None and namespace is not None and run_ns == namespace:
            run = by_name.get(run_name) if legacy else by_uid.get(row.id)
            if run is None:
                out.append(
                    Ending(
                        row.id, "RunDeleted", f"TrainingRun {label} was deleted before its trainer finished"
                    )
                )
                continue
            if run.phase == "Failed" or (legacy and run.phase in TERMINAL_PHASES):
                reason = run.reason or "RunEnded"
                text = f"TrainingRun {label} ended {run.phase}" + (f": {run.message}" if run.message else "")
                out.append(Ending(row.id, reason, text))
                continue
        last = row.heartbeat_at or row.started_at
        if last is not None and now - last >= max_age:
            days = max_age.total_seconds() / 86400
            out.append(
                Ending(
                    row.id,
                    "Abandoned",
                    f"no sign of the trainer of {label if run_name else row.id} since "
                    f"{last:%Y-%m-%d %H:%M} UTC (more than {days:g} days)",
                )
            )
    return out


def checkpoint_folders(names: Iterable[tuple[str, datetime | None]], root: str = "checkpoints/") -> dict:
    """{folder: newest write (None if unknown)} from the object names (with their update times) under root."""
    folders: dict[str, datetime | None] = {}
    for name, updated in names:
        rest = name[len(root) :] if name.startswith(root) else ""
        folder = rest.split("/", 1)[0]
        if not folder or "/" not in rest:
            continue
        before = folders.get(folder)
        if folder not in folders or (updated is not None and (before is None or updated > before)):
            folders[folder] = updated
    return folders


def stale_checkpoints(
    folders: Mapping[str, datetime | None],
    rows: Mapping[str, RunRow],
    now: datetime,
    current: str | None = None,
    ended: Iterable[str] = (),
    max_age: timedelta = MAX_AGE,
    grace: timedelta = RETRY_GRACE,
) -> list[str]:
    """The checkpoint folders (named by run id) nobody will resume, by the rules of this module."""
    ended = set(ended)
    out = []
    for folder, newest in sorted(folders.items()):
        if folder == current:
            continue
        row = rows.get(folder)
        if folder in ended or (row is not None and row.status == "succeeded"):
            out.append(folder)
        elif (
            row is not None
            and row.status == "failed"
            and (row.finished_at is None or now - row.finished_at >= grace)
        ):
            out.append(folder)
        elif newest is not None and now - newest >= max_age:
            out.append(folder)
    return out
