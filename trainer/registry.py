"""The model registry: versions, runs, samples, promotions and the latest pointer, in one database."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from trainer.db import Database, as_datetime, utcnow
from trainer.feedback import LATEST_SQL, VERSIONS_SQL, deployed_cutoff

VERSION_LOCK = 727275  # serialises version numbering and promotions across concurrent runs


@dataclass(frozen=True)
class VersionRow:
    number: int
    name: str
    state: str
    promoted: bool
    map50: float | None
    map50_95: float | None
    precision: float | None
    recall: float | None
    per_class: dict
    base_version: int | None
    data: dict
    data_cutoff: datetime | None
    created_at: datetime | None
    model_uri: str | None


@dataclass(frozen=True)
class SampleLocation:
    """Where a dataset-mode sample lives: a dataset URI and object names in that dataset's store."""

    source: str
    image_object: str
    label_object: str | None
    classes: tuple[int, ...] = ()


@dataclass(frozen=True)
class RunRow:
    id: str
    status: str
    reason: str | None
    namespace: str | None
    name: str | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None


def _run_row(r: dict) -> RunRow:
    return RunRow(
        id=r["id"],
        status=r["status"],
        reason=r["reason"],
        namespace=r["run_namespace"],
        name=r["run_name"],
        started_at=as_datetime(r["started_at"]),
        heartbeat_at=as_datetime(r["heartbeat_at"]),
        finished_at=as_datetime(r["finished_at"]),
    )


def version_name(number: int) -> str:
    return f"v{number}"


class Registry:
    def __init__(self, db: Database):
        self.db = db

    def _lock(self) -> None:
        if self.db.dialect == "postgresql":
            self.db.execute("SELECT pg_advisory_xact_lock($1)", VERSION_LOCK)

    # Runs ---------------------------------------------------------------------------------------------
    def start_run(
        self, run_id: str, mode: str, namespace: str | None = None, name: str | None = None
    ) -> dict | None:
        """Records a run as running; returns the earlier row when this run id already succeeded.

        run_id is the TrainingRun's uid: a retried Job of the same run finds its row, a run created again
        under the same name does not.
        """
        now = utcnow()
        with self.db.transaction():
            rows = self.db.fetch("SELECT status, report FROM training_runs WHERE id = $1 FOR UPDATE", run_id)
            if rows and rows[0]["status"] == "succeeded":
                return json.loads(rows[0]["report"] or "{}")
            self.db.execute(
                "INSERT INTO training_runs (id, status, mode, started_at, run_namespace, run_name, heartbeat_at) "
                "VALUES ($1, 'running', $2, $3, $4, $5, $3) "
                "ON CONFLICT (id) DO UPDATE SET status = 'running', reason = NULL, message = NULL, "
                "finished_at = NULL, heartbeat_at = $3",
                run_id,
                mode,
                now,
                namespace,
                name,
            )
        return None

    def heartbeat(self, run_id: str) -> None:
        """The run's trainer is alive (called at each checkpoint): a row without one for long is dead."""
        self.db.execute("UPDATE training_runs SET heartbeat_at = $2 WHERE id = $1", run_id, utcnow())

    def fail_run(self, run_id: str, reason: str, message: str, report: dict) -> None:
        self.db.execute(
            "UPDATE training_runs SET status = 'failed', reason = $2, message = $3, report = $4, finished_at = $5 "
            "WHERE id = $1",
            run_id,
            reason,
            message[:2000],
            json.dumps(report),
            utcnow(),
        )

    def running_runs(self) -> list[RunRow]:
        rows = self.db.fetch(
            "SELECT id, status, reason, run_namespace, run_name, started_at, heartbeat_at, finished_at "
            "FROM training_runs WHERE status = 'running'"
        )
        return [_run_row(r) for r in rows]

    def runs_by_id(self, ids: Iterable[str]) -> dict[str, RunRow]:
        ids = list(ids)
        if not ids:
            return {}
        rows = self.db.fetch(
            "SELECT id, status, reason, run_namespace, run_name, started_at, heartbeat_at, finished_at "
            "FROM training_runs WHERE id = ANY($1::text[])"
            if self.db.dialect == "postgresql"
            else "SELECT id, status, reason, run_namespace, run_name, started_at, heartbeat_at, finished_at "
            "FROM training_runs WHERE id IN (SELECT value FROM json_each($1))",
            ids if self.db.dialect == "postgresql" else json.dumps(ids),
        )
        return {r["id"]: _run_row(r) for r in rows}

    def end_run(self, run_id: str, reason: str, message: str) -> bool:
        """Marks a run whose trainer is gone as failed, unless its row moved on meanwhile (compare-and-set
        on 'running'). Returns whether it was marked."""
        with self.db.transaction():
            rows = self.db.fetch("SELECT status FROM training_runs WHERE id = $1 FOR UPDATE", run_id)
            if not rows or rows[0]["status"] != "running":
                return False
            self.db.execute(
                "UPDATE training_runs SET status = 'failed', reason = $2, message = $3, finished_at = $4 "
                "WHERE id = $1",
                run_id,
                reason,
                message[:2000],
                utcnow(),
            )
        return True

    def last_cutoff(self) -> datetime | None:
        """The deployed model's data cutoff (trainer.feedback.deployed_cutoff, the rule the operator's
        TrainingSchedule counts new samples with)."""
        return deployed_cutoff(self.latest(), self.db.fetch(VERSIONS_SQL))

    def replay_pool(self) -> list[tuple[str, list[int]]]:
        """Inference records earlier successful runs trained on (train split only), with their classes."""
        return self._samples_of_succeeded_runs("train")

    def validation_pool(self) -> list[tuple[str, list[int]]]:
        """Inference records earlier successful runs validated on, with their classes: the held-out history."""
        return self._samples_of_succeeded_runs("val")

    def _samples_of_succeeded_runs(self, split: str) -> list[tuple[str, list[int]]]:
        rows = self.db.fetch(
            "SELECT DISTINCT s.sample_id, s.classes FROM training_samples s "
            "JOIN training_runs r ON r.id = s.run_id "
            "WHERE r.status = 'succeeded' AND r.mode = 'inferences' AND s.split = $1 "
            "ORDER BY s.sample_id",
            split,
        )
        return [(r["sample_id"], json.loads(r["classes"])) for r in rows]

    def dataset_samples(self, split: str) -> dict[str, SampleLocation]:
        """Dataset samples earlier successful dataset-mode runs used in `split` ('train': the replay pool,
        'val': the held-out history), by id, with where they live and their classes."""
        rows = self.db.fetch(
            "SELECT DISTINCT s.sample_id, s.source, s.image_object, s.label_object, s.classes "
            "FROM training_samples s JOIN training_runs r ON r.id = s.run_id "
            "WHERE r.status = 'succeeded' AND r.mode = 'dataset' AND s.split = $1 "
            "AND s.source IS NOT NULL AND s.image_object IS NOT NULL ORDER BY s.sample_id",
            split,
        )
        return {
            r["sample_id"]: SampleLocation(
                r["source"], r["image_object"], r["label_object"], tuple(json.loads(r["classes"]))
            )
            for r in rows
        }

    # Versions -----------------------------------------------------------------------------------------
    def reserve_version(self, run_id: str, base_version: int | None) -> int:
        """The next version number, held by this run: two runs at once never get the same one."""
        with self.db.transaction():
            self._lock()
            rows = self.db.fetch("SELECT coalesce(max(number), 0) + 1 AS n FROM model_versions")
            number = int(rows[0]["n"])
            self.db.execute(
                "INSERT INTO model_versions (number, name, state, run_id, base_version, created_at) "
                "VALUES ($1, $2, 'reserved', $3, $4, $5)",
                number,
                version_name(number),
                run_id,
                base_version,
                utcnow(),
            )
        return number

    def abandon_version(self, number: int) -> None:
        self.db.execute(
            "UPDATE model_versions SET state = 'abandoned' WHERE number = $1 AND state = 'reserved'", number
        )

    def register(
        self,
        *,
        number: int,
        run_id: str,
        model_uri: str,
        metadata_uri: str,
        metrics: dict,
        per_class: dict,
        confusion: list | None,
        params: dict,
        data: dict,
        data_cutoff: datetime | None,
        report: dict,
        samples: Iterable[tuple[str, str, bool, list[int]]],
        locations: Mapping[str, SampleLocation] | None = None,
    ) -> None:
        """Version, run and samples in one transaction: all of it is registered, or none.

        samples holds (id, split, replayed, classes); locations, for dataset samples, where each one lives.
        """
        locations = locations or {}
        with self.db.transaction():
            self.db.execute(
                "UPDATE model_versions SET state = 'registered', model_uri = $2, metadata_uri = $3, map50 = $4, "
                "map50_95 = $5, precision_ = $6, recall = $7, per_class = $8, confusion = $9, params = $10, "
                "data = $11, data_cutoff = $12, registered_at = $13 WHERE number = $1",
                number,
                model_uri,
                metadata_uri,
                metrics.get("map50"),
                metrics.get("map50_95"),
                metrics.get("precision"),
                metrics.get("recall"),
                json.dumps(per_class),
                json.dumps(confusion) if confusion is not None else None,
                json.dumps(params),
                json.dumps(data),
                data_cutoff,
                utcnow(),
            )
            self.db.execute(
                "UPDATE training_runs SET status = 'succeeded', data_cutoff = $2, model_version = $3, "
                "report = $4, finished_at = $5 WHERE id = $1",
                run_id,
                data_cutoff,
                number,
                json.dumps(report),
                utcnow(),
            )
            self.db.execute("DELETE FROM training_samples WHERE run_id = $1", run_id)
            for sample_id, split, replayed, classes in samples:
                where = locations.get(sample_id)
                self.db.execute(
                    "INSERT INTO training_samples (run_id, sample_id, split, replayed, classes, source, "
                    "image_object, label_object) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    run_id,
                    sample_id,
                    split,
                    replayed,
                    json.dumps(classes),
                    where.source if where else None,
                    where.image_object if where else None,
                    where.label_object if where else None,
                )

    def update_run_report(self, run_id: str, report: dict) -> None:
        self.db.execute("UPDATE training_runs SET report = $2 WHERE id = $1", run_id, json.dumps(report))

    def latest(self) -> int | None:
        rows = self.db.fetch(LATEST_SQL)
        return rows[0]["version"] if rows else None

    def promote(
        self,
        number: int,
        *,
        expected_current: int | None,
        run_id: str,
        actor: str,
        reason: str,
        move_objects: Callable[[], None],
    ) -> tuple[bool, int | None]:
        """Moves latest to `number` if it still is `expected_current` (compare-and-swap).

        move_objects copies the files to models/latest/ inside the locked transaction: if it fails the
        pointer does not move. Returns (promoted, the version latest was at).
        """
        with self.db.transaction():
            self._lock()
            current = self.db.fetch("SELECT version FROM latest_model WHERE id = 1 FOR UPDATE")[0]["version"]
            if current != expected_current:
                return False, current
            move_objects()
            now = utcnow()
            self.db.execute("UPDATE latest_model SET version = $1, updated_at = $2 WHERE id = 1", number, now)
            self.db.execute("UPDATE model_versions SET promoted = TRUE WHERE number = $1", number)
            next_id = self.db.fetch("SELECT coalesce(max(id), 0) + 1 AS n FROM promotions")[0]["n"]
            self.db.execute(
                "INSERT INTO promotions (id, version, previous, run_id, actor, reason, promoted_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                int(next_id),
                number,
                current,
                run_id,
                actor,
                reason,
                now,
            )
        return True, current

    def versions(self) -> list[VersionRow]:
        rows = self.db.fetch("SELECT * FROM model_versions WHERE state = 'registered' ORDER BY number")
        return [
            VersionRow(
                number=r["number"],
                name=r["name"],
                state=r["state"],
                promoted=bool(r["promoted"]),
                map50=r["map50"],
                map50_95=r["map50_95"],
                precision=r["precision_"],
                recall=r["recall"],
                per_class=json.loads(r["per_class"] or "{}"),
                base_version=r["base_version"],
                data=json.loads(r["data"] or "{}"),
                data_cutoff=as_datetime(r["data_cutoff"]),
                created_at=as_datetime(r["created_at"]),
                model_uri=r["model_uri"],
            )
            for r in rows
        ]

    def promotions(self) -> list[dict]:
        return self.db.fetch("SELECT * FROM promotions ORDER BY id")
