"""The real trainer against the real API server (as its ServiceAccount), PostgreSQL and the GCS emulator:
what it reads and writes in the cluster besides training."""

from __future__ import annotations

import json

import pytest
from waste_operator import GROUP, PLURAL, VERSION

from tests.fixtures.inference_api import create_inference_table, run_trainer
from tests.operator.test_operator_run import create_run
from trainer.db import PostgresDatabase, migrate
from trainer.registry import Registry

pytestmark = pytest.mark.controlplane


def set_status(api, namespace: str, name: str, status: dict) -> None:
    api.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status}
    )


def get_run(api, namespace: str, name: str) -> dict:
    return api.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


@pytest.fixture
def trainer_env(control_plane, run_namespace, postgres, gcs, tmp_path):
    dsn = postgres.new_database()
    create_inference_table(dsn)  # empty: every trainer here ends with EmptySelection after its start
    images, models = gcs.bucket(), gcs.bucket()
    env = {
        "DATABASE_URL": dsn,
        "GCS_IMAGES_BUCKET": images.name,
        "GCS_MODELS_BUCKET": models.name,
        "STORAGE_EMULATOR_HOST": gcs.endpoint,
        "TRAINER_WORK_DIR": str(tmp_path / "work"),
        "TRAINER_LOCAL_DIR": str(tmp_path),
        "TRAINER_REPORT_PATH": str(tmp_path / "report.json"),
        "TRAINER_TERMINATION_LOG": str(tmp_path / "termination-log"),
        "KUBECONFIG": control_plane.service_account_kubeconfig(run_namespace, "waste-trainer"),
        "TRAININGRUN_NAMESPACE": run_namespace,
    }
    return env, dsn, models


ARGS = ["--from-inferences", "--only-verified", "--epochs", "1"]


def test_a_starting_trainer_ends_the_rows_and_checkpoints_of_runs_that_died_without_it(
    run_namespace, api, trainer_env
):
    ns = run_namespace
    env, dsn, models = trainer_env
    uids = {}
    for name in ("alive", "oom", "nightly"):
        uids[name] = create_run(api, ns, name, {"epochs": 3})["metadata"]["uid"]
    set_status(api, ns, "alive", {"phase": "Running"})
    set_status(api, ns, "oom", {"phase": "Failed", "reason": "OOMKilled", "message": "out of memory (16Gi)"})

    db = PostgresDatabase(dsn)
    migrate(db)
    reg = Registry(db)
    reg.start_run(uids["alive"], "inferences", ns, "alive")
    reg.start_run(uids["oom"], "inferences", ns, "oom")
    reg.start_run("uid-of-a-deleted-run", "inferences", ns, "deleted")
    reg.start_run("uid-elsewhere", "inferences", "another-namespace", "x")
    reg.start_run("uid-done", "inferences", ns, "done")
    reg.reserve_version("uid-done", None)
    reg.register(number=1, run_id="uid-done", model_uri="u", metadata_uri="m", metrics={}, per_class={},
                 confusion=None, params={}, data={}, data_cutoff=None, report={}, samples=[])  # fmt: skip
    for uid in (uids["alive"], uids["oom"], "uid-of-a-deleted-run", "uid-elsewhere", "uid-done"):
        models.blob(f"checkpoints/{uid}/last.pt").upload_from_string(b"weights")

    code, report, err = run_trainer(
        ARGS, env | {"TRAININGRUN_NAME": "nightly", "TRAININGRUN_UID": uids["nightly"]}
    )
    assert code == 3 and report["reason"] == "EmptySelection", err

    rows = {r["id"]: r for r in db.fetch("SELECT id, status, reason, message FROM training_runs")}
    db.close()
    assert (rows["uid-of-a-deleted-run"]["status"], rows["uid-of-a-deleted-run"]["reason"]) == (
        "failed",
        "RunDeleted",
    )
    assert (rows[uids["oom"]]["status"], rows[uids["oom"]]["reason"]) == ("failed", "OOMKilled")
    assert "out of memory" in rows[uids["oom"]]["message"]
    assert rows[uids["alive"]]["status"] == "running"
    assert rows["uid-elsewhere"]["status"] == "running", (
        "another namespace's runs are not this trainer's to see"
    )
    assert rows[uids["nightly"]]["status"] == "failed"  # its own row, recorded by itself
    left = sorted(b.name.split("/")[1] for b in models.client.list_blobs(models, prefix="checkpoints/"))
    assert left == sorted([uids["alive"], "uid-elsewhere"])

    # the run's own status: where it stopped, not "Done"
    status = get_run(api, ns, "nightly")["status"]
    assert status["result"]["reason"] == "EmptySelection"
    assert (status["progress"]["stage"], status["progress"]["text"]) == ("Selecting", "Selecting")


def test_a_trainer_never_writes_into_a_run_created_again_under_its_runs_name(run_namespace, api, trainer_env):
    ns = run_namespace
    env, _, _ = trainer_env
    create_run(api, ns, "nightly", {"epochs": 3})  # the new run; the trainer below is the deleted one's
    code, report, err = run_trainer(
        ARGS, env | {"TRAININGRUN_NAME": "nightly", "TRAININGRUN_UID": "uid-of-the-deleted-run"}
    )
    assert code == 3, err
    status = get_run(api, ns, "nightly").get("status") or {}
    assert "progress" not in status and "result" not in status, json.dumps(status)
    assert err.count("event=status_not_reported") == 1, err  # said once, and the run went on
