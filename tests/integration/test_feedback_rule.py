"""One rule for "new samples", on a real PostgreSQL: what the operator's TrainingSchedule counts is what the
trainer's incremental selection selects as new, from the same deployed-model cutoff."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from importlib import resources

import asyncpg
import pytest
from waste_operator.samples import SampleCounter

from tests.fixtures.inference_api import create_inference_table, execute_many
from trainer.db import PostgresDatabase, migrate
from trainer.feedback import INDEX_SQL, deployed_cutoff, is_new_sample
from trainer.registry import Registry
from trainer.selection import select
from trainer.sources import inference_records

C1 = datetime(2026, 11, 10, tzinfo=UTC)
C2 = datetime(2026, 11, 20, tzinfo=UTC)


def registry_with_lineage(db) -> None:
    """v1 (cutoff C1) <- v2 (fine-tuned on a dataset: no cutoff) <- latest; v3 (cutoff C2) was refused."""
    migrate(db)
    for number, base, cutoff in ((1, None, C1), (2, 1, None), (3, 2, C2)):
        db.execute(
            "INSERT INTO model_versions (number, name, state, run_id, base_version, data_cutoff, created_at) "
            "VALUES ($1, $2, 'registered', $3, $4, $5, $6)",
            number,
            f"v{number}",
            f"run-{number}",
            base,
            cutoff,
            C1,
        )
    db.execute("UPDATE latest_model SET version = 2 WHERE id = 1")


def test_the_schedule_counts_exactly_what_the_trainer_selects_as_new(postgres):
    dsn = postgres.new_database()
    create_inference_table(dsn)
    rng = random.Random(3)
    rows = []
    for i in range(600):
        status = rng.choice(["verified", "corrected", "pending", "rejected"])
        label = None if rng.random() < 0.1 else f"labels/{i}.txt"
        updated = C1 + timedelta(hours=rng.randint(-200, 400), microseconds=rng.randint(0, 999999))
        rows.append((f"r{i}", f"images/{i}.jpg", label, status, rng.randint(0, 3), updated))
    rows.append(("at-cutoff", "images/x.jpg", "labels/x.txt", "verified", 2, C1))  # not after it: not new
    execute_many(
        dsn,
        "INSERT INTO inferences (id, image_object, label_object, status, detection_count, created_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $6)",
        rows,
    )
    db = PostgresDatabase(dsn)
    counter = SampleCounter(dsn)
    try:
        registry_with_lineage(db)
        since = Registry(db).last_cutoff()
        assert since == C1  # latest is v2; its lineage holds v1's cutoff, not the refused v3's
        for min_detections in (0, 1, 2):
            trainer_new = select(
                inference_records(db, since), only_verified=True, min_detections=min_detections
            )
            python_new = [
                r
                for r in rows
                if is_new_sample(r[3], r[2], r[4], r[5], since=since, min_detections=min_detections)
            ]
            counted = counter.count(min_detections, limit=10**9)
            assert counted.problem is None and counted.cutoff == since
            assert counted.new == len(trainer_new.selected) == len(python_new) > 0, min_detections
        capped = counter.count(1, limit=7)
        assert capped.new == 7  # reads no further than the threshold
    finally:
        counter.close()
        db.close()


def test_without_a_registry_every_verified_record_is_new(postgres):
    dsn = postgres.new_database()
    create_inference_table(dsn)
    execute_many(
        dsn,
        "INSERT INTO inferences (id, image_object, label_object, status, detection_count, updated_at) "
        "VALUES ($1, 'i', 'l', $2, 1, $3)",
        [("a", "verified", C1), ("b", "corrected", C2), ("c", "pending", C2)],
    )
    counter = SampleCounter(dsn)
    try:
        counted = counter.count(1, limit=100)
        assert (counted.new, counted.cutoff, counted.problem) == (2, None, None)
    finally:
        counter.close()


def test_the_count_is_read_only(postgres):
    dsn = postgres.new_database()
    create_inference_table(dsn)
    counter = SampleCounter(dsn)
    try:
        counter.count(1, limit=1)
        # The counter's own session refuses writes (default_transaction_read_only), not only its transactions.
        insert = counter._conn.execute(
            "INSERT INTO inferences (id, image_object, status) VALUES ('x', 'i', 'verified')"
        )
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            asyncio.run_coroutine_threadsafe(insert, counter._loop).result(10)
    finally:
        counter.close()


def test_the_index_the_inference_api_needs_is_in_its_schema():
    schema = resources.files("trainer.sql").joinpath("inference_api.sql").read_text()
    assert " ".join(INDEX_SQL.split()) in " ".join(schema.split())
    assert deployed_cutoff(None, []) is None
