"""The model registry on the embedded SQLite database, and password redaction."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from trainer.db import SqliteDatabase, migrate, migrations, redact
from trainer.errors import RegistryError
from trainer.registry import Registry

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db_path(tmp_path):
    path = tmp_path / "registry.sqlite"
    db = SqliteDatabase(path)
    migrate(db)
    db.close()
    return path


@pytest.fixture
def reg(db_path):
    db = SqliteDatabase(db_path)
    yield Registry(db)
    db.close()


def register(
    reg: Registry, number: int, run_id: str, *, cutoff=None, report=None, samples=(), locations=None
) -> None:
    reg.register(
        number=number,
        run_id=run_id,
        model_uri=f"/m/v{number}/model.pt",
        metadata_uri=f"/m/v{number}/metadata.json",
        metrics={"map50": 0.5, "map50_95": 0.3, "precision": 0.6, "recall": 0.4},
        per_class={"Glass": {"ap50": 0.5}},
        confusion=None,
        params={"epochs": 1},
        data={"train": 8, "val": 2},
        data_cutoff=cutoff,
        report=report or {"status": "Succeeded"},
        samples=samples,
        locations=locations,
    )


def test_migrate_is_idempotent(tmp_path):
    db = SqliteDatabase(tmp_path / "r.sqlite")
    first = migrate(db)
    assert first == [v for v, _, _ in migrations()] and first
    assert migrate(db) == []
    assert migrate(SqliteDatabase(tmp_path / "r.sqlite")) == []
    assert Registry(db).latest() is None
    db.close()


def test_reserved_versions_are_numbered_1_2_3(reg):
    assert [reg.reserve_version(f"run-{i}", None) for i in range(3)] == [1, 2, 3]


def test_concurrent_reservations_from_two_connections_never_collide(db_path):
    got: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2)

    def worker(tag: str) -> None:
        db = SqliteDatabase(db_path)
        try:
            r = Registry(db)
            barrier.wait()
            for i in range(15):
                n = r.reserve_version(f"{tag}-{i}", None)
                with lock:
                    got.append(n)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(got) == list(range(1, 31))


def test_register_and_promote_move_latest_and_log_a_promotion(reg):
    reg.start_run("run-1", "dataset")
    n = reg.reserve_version("run-1", None)
    register(reg, n, "run-1")
    moved = []

    ok, previous = reg.promote(
        n,
        expected_current=None,
        run_id="run-1",
        actor="trainer",
        reason="first",
        move_objects=lambda: moved.append(n),
    )

    assert (ok, previous) == (True, None)
    assert moved == [1]
    assert reg.latest() == 1
    [promotion] = reg.promotions()
    assert (promotion["version"], promotion["previous"], promotion["reason"]) == (1, None, "first")
    [version] = reg.versions()
    assert (version.name, version.promoted, version.map50, version.data) == (
        "v1",
        True,
        0.5,
        {"train": 8, "val": 2},
    )


def test_a_second_promotion_records_the_previous_version(reg):
    for i in (1, 2):
        reg.start_run(f"r{i}", "dataset")
        reg.reserve_version(f"r{i}", None)
        register(reg, i, f"r{i}")
    reg.promote(1, expected_current=None, run_id="r1", actor="t", reason="a", move_objects=lambda: None)
    assert reg.promote(
        2, expected_current=1, run_id="r2", actor="t", reason="b", move_objects=lambda: None
    ) == (
        True,
        1,
    )
    assert reg.latest() == 2
    assert [(p["version"], p["previous"]) for p in reg.promotions()] == [(1, None), (2, 1)]


def test_promote_with_a_stale_expected_current_does_not_move_anything(reg):
    for i in (1, 2):
        reg.reserve_version(f"r{i}", None)
        register(reg, i, f"r{i}")
    reg.promote(1, expected_current=None, run_id="r1", actor="t", reason="a", move_objects=lambda: None)
    called = []

    result = reg.promote(
        2, expected_current=None, run_id="r2", actor="t", reason="b", move_objects=lambda: called.append(1)
    )

    assert result == (False, 1)
    assert called == []
    assert reg.latest() == 1
    assert len(reg.promotions()) == 1


def test_a_failure_inside_move_objects_leaves_latest_unchanged(reg):
    reg.reserve_version("r1", None)
    register(reg, 1, "r1")

    def boom() -> None:
        raise OSError("copy failed")

    with pytest.raises(OSError):
        reg.promote(1, expected_current=None, run_id="r1", actor="t", reason="a", move_objects=boom)
    assert reg.latest() is None
    assert reg.promotions() == []
    assert reg.versions()[0].promoted is False
    # The database is usable afterwards (the transaction was rolled back, not left open).
    assert reg.reserve_version("r2", None) == 2


def test_last_cutoff_is_the_newest_data_the_deployed_model_learned_from(reg):
    def promote(number):
        reg.promote(
            number,
            expected_current=reg.latest(),
            run_id="r",
            actor="t",
            reason="x",
            move_objects=lambda: None,
        )

    assert reg.last_cutoff() is None
    reg.start_run("r1", "inferences")
    reg.reserve_version("r1", None)
    register(reg, 1, "r1", cutoff=T0)
    assert reg.last_cutoff() is None  # trained, not deployed: the next run still trains from scratch on all
    promote(1)
    assert reg.last_cutoff() == T0

    # v2 (from v1, newer data) is refused by the gate: its data was never deployed, so it is not consumed.
    reg.start_run("r2", "inferences")
    reg.reserve_version("r2", 1)
    register(reg, 2, "r2", cutoff=T0 + timedelta(days=1))
    assert reg.last_cutoff() == T0

    # A failed run and a running one consume nothing either.
    reg.start_run("r-failed", "inferences")
    reg.fail_run("r-failed", "TrainingError", "boom", {})
    reg.db.execute("UPDATE training_runs SET data_cutoff = $1 WHERE id = 'r-failed'", T0 + timedelta(days=2))
    assert reg.last_cutoff() == T0

    # v3 from v1 with everything since is deployed; then a curated dataset (no cutoff) is fine-tuned from v3
    # and deployed: the lineage still says the deployed model knows the feedback up to v3's cutoff.
    reg.start_run("r3", "inferences")
    reg.reserve_version("r3", 1)
    register(reg, 3, "r3", cutoff=T0 + timedelta(days=3))
    promote(3)
    reg.start_run("ds", "dataset")
    reg.reserve_version("ds", 3)
    register(reg, 4, "ds", cutoff=None)
    promote(4)
    assert reg.last_cutoff() == T0 + timedelta(days=3)


def test_start_run_returns_the_stored_report_of_an_already_succeeded_run(reg):
    assert reg.start_run("ns/nightly", "inferences") is None
    reg.reserve_version("ns/nightly", None)
    register(reg, 1, "ns/nightly", report={"status": "Succeeded", "model": {"version": "v1"}})
    assert reg.start_run("ns/nightly", "inferences") == {"status": "Succeeded", "model": {"version": "v1"}}


def test_start_run_restarts_a_failed_run(reg):
    reg.start_run("r", "dataset")
    reg.fail_run("r", "StorageError", "bucket gone", {"status": "Failed"})
    assert reg.start_run("r", "dataset") is None
    [row] = reg.db.fetch("SELECT status, reason FROM training_runs WHERE id = $1", "r")
    assert row == {"status": "running", "reason": None}


def test_replay_pool_holds_train_samples_of_succeeded_inference_runs(reg):
    reg.start_run("r1", "inferences")
    reg.reserve_version("r1", None)
    samples = [("a", "train", False, [0, 5]), ("b", "val", False, [1]), ("c", "train", True, [])]
    register(reg, 1, "r1", cutoff=T0, samples=samples)
    reg.start_run("r2", "inferences")
    reg.fail_run("r2", "TrainingError", "x", {})
    assert reg.replay_pool() == [("a", [0, 5]), ("c", [])]


def test_dataset_samples_say_where_each_earlier_dataset_sample_lives(reg):
    from trainer.registry import SampleLocation

    a, b = "/data/a/images/train/x", "/data/a/images/val/y"
    reg.start_run("ds1", "dataset")
    reg.reserve_version("ds1", None)
    register(
        reg,
        1,
        "ds1",
        samples=[(a, "train", False, [5]), (b, "val", False, [0, 2])],
        locations={
            a: SampleLocation("/data/a", "images/train/x.jpg", "labels/train/x.txt"),
            b: SampleLocation("/data/a", "images/val/y.png", "labels/val/y.txt"),
        },
    )
    # An inference run's samples and a failed dataset run's are not a dataset's history.
    reg.start_run("inf", "inferences")
    reg.reserve_version("inf", None)
    register(reg, 2, "inf", samples=[("42", "train", False, [1])])
    reg.start_run("ds2", "dataset")
    reg.fail_run("ds2", "TrainingError", "x", {})

    assert reg.dataset_samples("train") == {
        a: SampleLocation("/data/a", "images/train/x.jpg", "labels/train/x.txt", (5,))
    }
    assert reg.dataset_samples("val") == {
        b: SampleLocation("/data/a", "images/val/y.png", "labels/val/y.txt", (0, 2))
    }
    assert reg.replay_pool() == [("42", [1])]


def test_sql_errors_become_registry_errors(reg):
    with pytest.raises(RegistryError):
        reg.db.fetch("SELECT * FROM no_such_table")


@pytest.mark.parametrize(
    "text, secret",
    [
        ("postgresql://user:secret@host/db", "secret"),
        ("could not connect to postgres://trainer:s3cr:et@10.0.0.1:5432/inferences: timeout", "s3cr:et"),
    ],
)
def test_redact_hides_the_password_in_a_database_url(text, secret):
    out = redact(text)
    assert secret not in out
    assert "***" in out


def test_redact_keeps_user_host_and_database():
    assert redact("postgresql://user:secret@host/db") == "postgresql://user:***@host/db"
    assert redact("postgresql://host/db") == "postgresql://host/db"


def test_redact_hides_passwords_with_empty_user_or_at_signs():
    from trainer.db import redact

    assert "secret" not in redact("postgresql://:secret@db:5432/x")
    assert "ss" not in redact("postgresql://u:p@ss@db/x").split("@")[0]


def test_a_run_row_keeps_its_namespace_and_name_beside_its_uid(reg):
    assert reg.start_run("uid-1", "inferences", "wd", "nightly") is None
    [row] = reg.running_runs()
    assert (row.id, row.namespace, row.name, row.status) == ("uid-1", "wd", "nightly", "running")
    assert row.heartbeat_at is not None and row.started_at is not None
    # the same name created again is another run, with its own row
    assert reg.start_run("uid-2", "inferences", "wd", "nightly") is None
    assert {r.id for r in reg.running_runs()} == {"uid-1", "uid-2"}
    assert set(reg.runs_by_id(["uid-2", "nope"])) == {"uid-2"}


def test_ending_a_dead_run_only_touches_a_row_still_running(reg):
    reg.start_run("dead", "inferences", "wd", "a")
    reg.start_run("done", "inferences", "wd", "b")
    reg.reserve_version("done", None)
    register(reg, 1, "done")
    assert reg.end_run("dead", "RunDeleted", "TrainingRun wd/a was deleted") is True
    assert reg.end_run("done", "RunDeleted", "x") is False
    assert reg.end_run("missing", "RunDeleted", "x") is False
    rows = reg.runs_by_id(["dead", "done"])
    assert (rows["dead"].status, rows["dead"].reason) == ("failed", "RunDeleted")
    assert rows["dead"].finished_at is not None and rows["done"].status == "succeeded"
    # a retried Job of the run marked dead (it was only suspended) takes its row back
    assert reg.start_run("dead", "inferences", "wd", "a") is None
    assert reg.runs_by_id(["dead"])["dead"].status == "running"
