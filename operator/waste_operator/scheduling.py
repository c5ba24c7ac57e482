"""TrainingSchedules against the API: read the schedule, its runs and the new-sample count, let schedule.py
decide, then act in a crash-safe order: delete (Replace, history), create the run, and only then write the
status that records its tick. Level-based like reconcile.py: every pass starts from what the API says."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .failpoints import crash_point
from .kube import Kube
from .samples import SampleCounter
from .schedule import (
    SCHEDULE_LABEL,
    SampleCount,
    count_limit,
    counts_samples,
    decide,
    min_detections,
    name_taken,
    tick_due,
)
from .status import is_unchanged

log = logging.getLogger("waste_operator")
# Test hook: a file holding the schedules' notion of now (RFC 3339), so tests drive ticks in seconds.
CLOCK_FILE = "WD_OPERATOR_CLOCK_FILE"


def clock_from_env(env: dict[str, str] | None = None) -> Callable[[], datetime]:
    path = (os.environ if env is None else env).get(CLOCK_FILE, "").strip()
    if not path:
        return lambda: datetime.now(UTC)

    def now() -> datetime:
        return datetime.fromisoformat(Path(path).read_text().strip().replace("Z", "+00:00"))

    return now


@dataclass
class Scheduler:
    kube: Kube
    namespaces: tuple[str, ...]
    post_event: Callable[[dict, str, str, str], None]
    counter: SampleCounter
    clock: Callable[[], datetime]
    # A count this recent is reused between ticks (runs' status changes trigger passes often); a pass
    # that handles a tick always counts afresh.
    count_ttl: float = 30.0
    _counts: dict[tuple, tuple[float, SampleCount]] = field(default_factory=dict)
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def resync(self) -> None:
        """One pass over every schedule of the watched namespaces: ticks come from the clock, not events."""
        for namespace in self.namespaces:
            for schedule in self.kube.list_schedules(namespace):
                try:
                    # Read again under the schedule's lock, not the listed copy: a pass triggered by an event
                    # may have written the status since the list, and a stale status repeats its Event.
                    self.reconcile(namespace, schedule["metadata"]["name"])
                except Exception:  # one broken schedule must not starve the others
                    log.exception("[%s/%s] schedule pass failed", namespace, schedule["metadata"]["name"])

    def reconcile(self, namespace: str, name: str) -> None:
        with self._lock(namespace, name):
            schedule = self.kube.get_schedule(namespace, name)
            if schedule is None or schedule["metadata"].get("deletionTimestamp"):
                return
            self._pass(schedule)

    def _count(self, schedule: dict, fresh: bool) -> SampleCount | None:
        if not counts_samples(schedule):
            return None
        spec, meta = schedule["spec"], schedule["metadata"]
        key = (meta["namespace"], meta["name"], min_detections(spec), count_limit(spec))
        cached = self._counts.get(key)
        if not fresh and cached and time.monotonic() - cached[0] < self.count_ttl:
            return cached[1]
        result = self.counter.count(min_detections(spec), count_limit(spec))
        self._counts[key] = (time.monotonic(), result)
        return result

    def _pass(self, schedule: dict) -> None:
        meta = schedule["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        now = self.clock()
        runs = self.kube.list_runs_labelled(namespace, f"{SCHEDULE_LABEL}={name}")
        decision = decide(schedule, runs, now, self._count(schedule, fresh=tick_due(schedule, now)))
        for doomed in decision.delete:
            self.kube.delete_run(namespace, doomed)
            log.info("[%s/%s] deleted TrainingRun %s", namespace, name, doomed)
        if decision.create is not None:
            run, created = self.kube.create_run(decision.create)
            owners = [
                ref.get("uid") for ref in ((run or {}).get("metadata") or {}).get("ownerReferences") or []
            ]
            if run is None:  # conflicted, then vanished: the next pass decides again
                raise RuntimeError(
                    f"TrainingRun {decision.create['metadata']['name']} conflicted and vanished"
                )
            if meta["uid"] not in owners:
                decision = name_taken(schedule, decision.tick, now)
            elif created:
                crash_point("after-schedule-run-create")
                log.info("[%s/%s] created TrainingRun %s", namespace, name, run["metadata"]["name"])
        if not is_unchanged(schedule.get("status") or {}, decision.status):
            self.kube.patch_schedule_status(namespace, name, decision.status)
        for kind, reason, message in decision.events:
            log.info("[%s/%s] %s: %s", namespace, name, reason, message)
            self.post_event(schedule, kind, reason, message)
