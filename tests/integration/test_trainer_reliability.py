"""Faults the trainer must survive without losing data or pointing latest at a bad model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.inference_api import REPO, InferenceAPI, create_inference_table, psql, run_trainer
from tests.fixtures.services import start_postgres

FAST = ["--img-size", "64", "--batch-size", "8", "--workers", "0"]


def _env(dsn, images, models, gcs, tmp: Path, **extra) -> dict[str, str]:
    return {
        "DATABASE_URL": dsn,
        "GCS_IMAGES_BUCKET": images.name,
        "GCS_MODELS_BUCKET": models.name,
        "STORAGE_EMULATOR_HOST": gcs.endpoint,
        "TRAINER_WORK_DIR": str(tmp / "work"),
        "TRAINER_LOCAL_DIR": str(tmp),
        "TRAINER_REPORT_PATH": str(tmp / "report.json"),
        **extra,
    }


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", *args],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        cwd=env["TRAINER_LOCAL_DIR"],
        start_new_session=True,
    )


def _wait_log(log: Path, text: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"trainer exited early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in the log within {timeout} s"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_killed_trainer_resumes_from_its_last_checkpoint_and_only_its_own_run_does(postgres, gcs, tmp_path):
    """SIGKILL mid-training (a preempted spot node); the Job's retry resumes instead of starting over. A
    TrainingRun deleted and created again under the same name (another uid) is another run: it starts afresh
    with its own spec, and the old run's checkpoint is not its to resume."""
    dsn = postgres.new_database()
    create_inference_table(dsn)
    images, models = gcs.bucket(), gcs.bucket()
    InferenceAPI(dsn=dsn, bucket=images).add(16, "verified")
    run = {"TRAININGRUN_NAME": "spot-run", "TRAININGRUN_NAMESPACE": "ml"}
    env = _env(dsn, images, models, gcs, tmp_path, **run, TRAININGRUN_UID="uid-first")
    args = ["--from-inferences", "--only-verified", "--base-model", "yolov8n.yaml", "--epochs", "3", *FAST]

    first = _start(args, env, tmp_path / "first.log")
    deadline = time.monotonic() + 300
    while not [
        b for b in models.client.list_blobs(models, prefix="checkpoints/") if b.name.endswith("last.pt")
    ]:
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint was uploaded"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not [b for b in models.client.list_blobs(models, prefix="models/")], (
        "a killed run published a model"
    )
    assert [b.name for b in models.client.list_blobs(models, prefix="checkpoints/")] == [
        "checkpoints/uid-first/last.pt"
    ]

    # The same name, created again with another spec: a new run, trained afresh.
    again_env = _env(dsn, images, models, gcs, tmp_path, **run, TRAININGRUN_UID="uid-second")
    # skip: latest stays empty, so the first run's retry below still has all the records to train on
    again_args = ["--from-inferences", "--only-verified", "--base-model", "yolov8n.yaml", "--epochs", "1",
                  "--promotion", "skip", *FAST]  # fmt: skip
    code, other, err = run_trainer(again_args, again_env)
    assert code == 0, err
    assert other["training"]["resumed_from_epoch"] is None, "resumed another run's checkpoint"
    assert (other["training"]["epochs"], other["training"]["epochs_completed"]) == (1, 1)
    assert other["model"]["version"] == "v1" and other["run_id"] == "uid-second"

    code, report, err = run_trainer(args, env)  # the first run's Job retries
    assert code == 0, err
    assert report["training"]["resumed_from_epoch"] in (1, 2)
    assert report["training"]["epochs_completed"] == 3
    assert report["model"]["version"] == "v2"
    assert not [b.name for b in models.client.list_blobs(models, prefix="checkpoints/")], (
        "checkpoint left behind"
    )
    # The retry of an already-succeeded run does not train again.
    t0 = time.monotonic()
    code, again, err = run_trainer(args, env)
    assert code == 0 and again["model"]["version"] == "v2", err
    assert "train" not in again["timings"] and time.monotonic() - t0 < 60
    assert psql(dsn, "SELECT count(*) FROM model_versions") == "2"
    assert psql(dsn, "SELECT id, run_namespace, run_name, status FROM training_runs ORDER BY id") == (
        "uid-first|ml|spot-run|succeeded\nuid-second|ml|spot-run|succeeded"
    )


@pytest.mark.slow
def test_two_runs_at_once_get_distinct_versions_and_a_consistent_latest(postgres, gcs, tmp_path):
    dsn = postgres.new_database()
    create_inference_table(dsn)
    images, models = gcs.bucket(), gcs.bucket()
    InferenceAPI(dsn=dsn, bucket=images).add(12, "verified")
    procs = []
    for i in (1, 2):
        d = tmp_path / f"r{i}"
        d.mkdir()
        env = _env(dsn, images, models, gcs, d)
        procs.append(
            (
                _start(
                    [
                        "--from-inferences",
                        "--all-time",
                        "--base-model",
                        "yolov8n.yaml",
                        "--epochs",
                        "1",
                        *FAST,
                    ],
                    env,
                    d / "log",
                ),
                d,
            )
        )
    for proc, d in procs:
        assert proc.wait(600) == 0, (d / "log").read_text()[-3000:]
    versions = sorted(json.loads((d / "report.json").read_text())["model"]["version"] for _, d in procs)
    assert versions == ["v1", "v2"]
    latest_db = psql(dsn, "SELECT version FROM latest_model")
    latest_obj = models.get_blob("models/latest/yolov8n_waste.pt").metadata["version"]
    assert latest_obj == f"v{latest_db}"
    promotions = psql(dsn, "SELECT count(*) FROM promotions")
    assert promotions in ("1", "2")  # the second may find latest moved since it started: no lost update


@pytest.mark.slow
def test_postgres_restarted_mid_run_is_survived_and_unreachable_fails_cleanly(gcs, tmp_path):
    server = start_postgres(durable=True)
    try:
        dsn = server.new_database()
        create_inference_table(dsn)
        images, models = gcs.bucket(), gcs.bucket()
        InferenceAPI(dsn=dsn, bucket=images).add(10, "verified")
        env = _env(dsn, images, models, gcs, tmp_path)
        log = tmp_path / "log"
        proc = _start(["--from-inferences", "--base-model", "yolov8n.yaml", "--epochs", "2", *FAST], env, log)
        _wait_log(log, "step=base_model", proc)
        server.stop()
        server.start()  # a restart while the model trains: the trainer reconnects to register
        assert proc.wait(600) == 0, log.read_text()[-3000:]
        assert psql(dsn, "SELECT name, state FROM model_versions") == "v1|registered"

        # Unreachable for good: a clean failure with a reason, nothing published, latest unchanged.
        server.stop()
        gen = models.get_blob("models/latest/yolov8n_waste.pt").generation
        code, report, err = run_trainer(
            ["--from-inferences", "--base-model", "yolov8n.yaml", "--epochs", "1", *FAST], env
        )
        assert code == 5, err
        assert "RegistryError: cannot reach PostgreSQL" in err.strip().splitlines()[-1]
        assert "Traceback" not in err
        assert report["reason"] == "RegistryError"
        assert [b.name for b in models.client.list_blobs(models, prefix="models/v2")] == []
        assert models.get_blob("models/latest/yolov8n_waste.pt").generation == gen
    finally:
        server.stop()


def test_secrets_never_reach_logs_reports_or_metadata(postgres, gcs, tmp_path):
    """A recognisable password in DATABASE_URL, and a failure that quotes the URL: nothing leaks."""
    secret = "s3cr3t-Planted-Canary-8842"
    dsn = postgres.new_database()
    create_inference_table(dsn)
    psql(dsn, f"CREATE ROLE canary LOGIN PASSWORD '{secret}' SUPERUSER")
    images, models = gcs.bucket(), gcs.bucket()
    InferenceAPI(dsn=dsn, bucket=images).add(4, "verified")
    good = dsn.replace("postgres@", f"canary:{secret}@")
    env = _env(good, images, models, gcs, tmp_path, TRAINER_TERMINATION_LOG=str(tmp_path / "term"))
    code, report, err = run_trainer(
        ["--from-inferences", "--base-model", "missing.pt", *FAST, "--epochs", "1"], env
    )
    assert code == 6
    port = good.split("127.0.0.1:")[1].split("/")[0]
    unreachable = _env(good.replace(f":{port}/", ":1/"), images, models, gcs, tmp_path)
    code2, report2, err2 = run_trainer(["--from-inferences", *FAST], unreachable)
    assert code2 == 5 and "cannot reach PostgreSQL" in err2
    malformed = _env(good.replace(f":{port}/", ":99999/"), images, models, gcs, tmp_path)
    code3, _, err3 = run_trainer(["--from-inferences", *FAST], malformed)
    assert code3 == 2 and "DATABASE_URL is malformed" in err3
    for text in (err, err2, err3, json.dumps(report), json.dumps(report2), (tmp_path / "term").read_text()):
        assert secret not in text
    assert psql(dsn, "SELECT count(*) FROM training_runs WHERE report LIKE '%Canary%'") == "0"


def test_concurrent_first_migrations_of_a_fresh_database_all_succeed(postgres):
    """Two Jobs starting together against a new registry database (the CI failure of 2026-11-26:
    `CREATE TABLE IF NOT EXISTS` raced on PostgreSQL's catalog index). Every migrator succeeds, each
    migration is applied exactly once."""
    import threading

    from trainer.db import PostgresDatabase, migrate, migrations

    for _ in range(3):  # the race window is small: several fresh databases, eight migrators each
        dsn = postgres.new_database()
        barrier = threading.Barrier(8)
        results: list[object] = []

        def one(dsn=dsn, barrier=barrier, results=results) -> None:
            db = PostgresDatabase(dsn)
            try:
                barrier.wait()
                results.append(migrate(db))
            except Exception as exc:  # noqa: BLE001 - the assertion below reports it
                results.append(exc)
            finally:
                db.close()

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        errors = [r for r in results if isinstance(r, Exception)]
        assert not errors, errors
        applied = sorted(v for r in results for v in r)
        assert applied == sorted(v for v, _, _ in migrations())
        assert psql(dsn, "SELECT count(*) FROM trainer_schema_migrations") == str(len(applied))
