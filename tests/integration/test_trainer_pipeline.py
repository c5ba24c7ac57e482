"""The trainer on real services: PostgreSQL, fake-gcs-server, Ultralytics on CPU. Nothing mocked."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest

from tests.fixtures.data import make_sample
from tests.fixtures.inference_api import psql, run_trainer
from tests.integration.conftest import FAST


def names(bucket, prefix: str) -> set[str]:
    return {b.name for b in bucket.client.list_blobs(bucket, prefix=prefix)}


@pytest.mark.slow
def test_incremental_story_first_run_then_only_new_inferences_then_nothing_new(hostile_world):
    # hostile_world: object names with '..' are uploaded, so the emulator keeps objects in memory.
    api, models, env, tmp = hostile_world
    api.add(14, "verified")
    api.add(4, "corrected")
    api.add(5, "pending")
    api.add(3, "rejected")
    # Bad input that must be skipped and counted, never crash the run or escape the dataset folder.
    api.add(1, "verified", label="6 0.5 0.5 0.2 0.2\n")
    api.add(1, "verified", label="0 nan 0.5 0.2 0.2\n")
    api.add(1, "verified", image=b"")
    api.add(1, "verified", image=make_sample(1).image[:700])
    api.add(1, "verified", image_object="../../etc/passwd")
    api.add(1, "verified", label_object="/abs/label.txt")

    code, report, err = run_trainer(
        ["--from-inferences", "--only-verified", "--base-model", "yolov8n.yaml", *FAST], env
    )
    assert code == 0, err
    assert report["status"] == "Succeeded"
    sel = report["selection"]
    assert sel["new"] == 24 and sel["not_verified"] == 5 and sel["rejected"] == 3 and sel["replayed"] == 0
    skipped = report["data"]["skipped"]
    assert skipped == {"bad_label": 2, "bad_image": 2, "missing_image": 1, "missing_label": 1}
    assert report["data"]["train"] + report["data"]["val"] == 18
    assert report["model"]["version"] == "v1" and report["promotion"]["promoted"] is True
    assert {
        "models/v1/yolov8n_waste.pt",
        "models/v1/metadata.json",
        "models/latest/yolov8n_waste.pt",
        "models/latest/metadata.json",
    } <= names(models, "models/")
    assert not any("passwd" in p for p in os.listdir(tmp / "work")), "object name escaped into the work dir"
    meta = json.loads(models.blob("models/v1/metadata.json").download_as_bytes())
    assert (
        meta["parameters"]["epochs"] == 1 and meta["data_cutoff"] and "database_url" not in json.dumps(meta)
    )
    row = psql(env["DATABASE_URL"], "SELECT name, state, promoted, map50 IS NOT NULL FROM model_versions")
    assert row == "v1|registered|t|t"
    compact = json.loads((tmp / "termination-log").read_text())
    assert compact["modelVersion"] == "v1" and compact["status"] == "Succeeded"

    # New feedback arrives: only it is selected, plus replay of earlier training images; base is v1.
    new_ids = api.add(6, "verified")
    api.add(2, "pending")
    # Forced: whether a one-epoch model passes the gate is chance, and what "new" means next depends on it
    # (a refused version's feedback is trained again next time; test_continual_learning covers that).
    code, report, err = run_trainer(
        ["--from-inferences", "--only-verified", "--promotion", "force", *FAST], env
    )
    assert code == 0, err
    assert report["selection"]["new"] == 6
    assert 1 <= report["selection"]["replayed"] <= 6
    assert report["model"] == {**report["model"], "version": "v2", "base_version": "v1"}
    assert report["champion"]["version"] == "v1"
    trained = psql(
        env["DATABASE_URL"],
        "SELECT sample_id FROM training_samples s JOIN model_versions v ON v.run_id = s.run_id "
        "WHERE v.name = 'v2' AND NOT s.replayed ORDER BY 1",
    ).split()
    assert set(trained) <= set(new_ids) and len(trained) == 6
    assert models.get_blob("models/latest/yolov8n_waste.pt").metadata["version"] == "v2"

    # Nothing new: a clear failure, nothing uploaded, latest unchanged.
    before = names(models, "models/")
    latest_gen = models.get_blob("models/latest/yolov8n_waste.pt").generation
    code, report, err = run_trainer(["--from-inferences", "--only-verified", *FAST], env)
    assert code == 3, err
    assert report["status"] == "Failed" and report["reason"] == "EmptySelection"
    assert "no new verified or corrected inferences since" in report["message"]
    assert err.strip().splitlines()[-1].startswith("error: EmptySelection: no new") and "Traceback" not in err
    assert names(models, "models/") == before
    assert models.get_blob("models/latest/yolov8n_waste.pt").generation == latest_gen
    assert (
        psql(env["DATABASE_URL"], "SELECT status, reason FROM training_runs ORDER BY started_at DESC LIMIT 1")
        == "failed|EmptySelection"
    )


def _select(env, args):
    """Runs only the selection step of the real pipeline against the real database."""
    from trainer.db import connect, migrate
    from trainer.pipeline import Job
    from trainer.registry import Registry
    from trainer.settings import load_settings

    job = Job(load_settings(args, env))
    job.db = connect(env["DATABASE_URL"], job.s.local_dir)
    migrate(job.db)
    job.registry = Registry(job.db)
    try:
        records, _, cutoff, _ = job._select()
        return records, job.report.selection, cutoff
    finally:
        job.db.close()


def _record_successful_training(env, cutoff) -> None:
    """What a finished, deployed training leaves in the registry: a succeeded run, its version (with the
    data cutoff) promoted to latest."""
    from trainer.db import connect, migrate
    from trainer.registry import Registry

    db = connect(env["DATABASE_URL"], None)
    migrate(db)
    reg = Registry(db)
    reg.start_run("r1", "inferences")
    n = reg.reserve_version("r1", None)
    reg.register(
        number=n,
        run_id="r1",
        model_uri="x",
        metadata_uri="y",
        metrics={},
        per_class={},
        confusion=None,
        params={},
        data={},
        data_cutoff=cutoff,
        report={},
        samples=[],
    )
    reg.promote(
        n, expected_current=None, run_id="r1", actor="test", reason="first", move_objects=lambda: None
    )
    db.close()


def test_selection_flags_only_verified_all_time_and_min_detections(world):
    api, _, env, _ = world
    api.add(3, "verified", classes=(1,))
    api.add(2, "corrected", classes=(2, 3))
    api.add(2, "pending", classes=(4,))
    api.add(1, "rejected")
    api.add(1, "verified", detections=0)
    records, sel, cutoff = _select(env, ["--from-inferences"])
    assert len(records) == 7 and sel["rejected"] == 1 and sel["too_few_detections"] == 1
    records, sel, _ = _select(env, ["--from-inferences", "--only-verified"])
    assert len(records) == 5 and sel["not_verified"] == 2
    records, sel, _ = _select(env, ["--from-inferences", "--only-verified", "--min-detections", "2"])
    assert [r.id for r in records] == ["inf-00004", "inf-00005"]
    # The cutoff is the newest selected record's time (inf-00007), not the newest record's (inf-00009).
    assert cutoff == api.clock - timedelta(seconds=2)

    # A successful run moves the cutoff: afterwards only newer records are candidates, unless --all-time.
    _record_successful_training(env, cutoff=api.clock)
    late = api.add(2, "verified")
    records, sel, _ = _select(env, ["--from-inferences", "--only-verified"])
    assert [r.id for r in records] == late and sel["since"] is not None
    records, _, _ = _select(env, ["--from-inferences", "--only-verified", "--all-time"])
    assert len(records) == 7


def test_records_verified_after_the_last_training_are_picked_up(world):
    api, _, env, _ = world
    pending = api.add(3, "pending")
    _record_successful_training(env, cutoff=api.clock)
    api.set_status(pending[:2], "verified")
    records, _, _ = _select(env, ["--from-inferences", "--only-verified"])
    assert [r.id for r in records] == pending[:2]


@pytest.mark.slow
def test_dataset_mode_from_a_folder_and_from_gcs(world, gcs):
    from tests.fixtures.data import write_yolo_folder

    _, models, env, tmp = world
    folder = write_yolo_folder(tmp / "ds", 12)
    env_local = {
        k: v for k, v in env.items() if k not in ("DATABASE_URL", "GCS_IMAGES_BUCKET", "GCS_MODELS_BUCKET")
    }
    code, report, err = run_trainer(
        ["--dataset", str(folder), "--base-model", "yolov8n.yaml", "--optimizer", "SGD", "--learning-rate",
         "0.02", *FAST],
        env_local,
    )  # fmt: skip
    assert code == 0, err
    assert report["model"]["version"] == "v1" and report["data"]["val"] == 3  # the folder's own val split
    latest = tmp / "models-bucket" / "models" / "latest" / "yolov8n_waste.pt"
    # The optimizer and learning rate reached Ultralytics (it records its training arguments in the model).
    import torch

    train_args = torch.load(latest, map_location="cpu", weights_only=False)["train_args"]
    assert (train_args["optimizer"], train_args["lr0"]) == ("SGD", 0.02)
    assert (tmp / "registry.sqlite").is_file()

    datasets = gcs.bucket()
    for path in folder.rglob("*"):
        if path.is_file():
            datasets.blob("waste/v3/" + path.relative_to(folder).as_posix()).upload_from_filename(str(path))
    # A download cache bounded below what it holds: the local run's 24 files are evicted, this run's stay.
    env_gcs = {**env, "GCS_DATASETS_BUCKET": datasets.name, "TRAINER_CACHE_MAX_GB": "0.000001"}
    env_gcs.pop("GCS_IMAGES_BUCKET")
    for uri, evicted, downloaded in ((f"gs://{datasets.name}/waste/v3", 24, 24), ("waste/v3", 0, 0)):
        code, report, err = run_trainer(["--dataset", uri, "--base-model", "yolov8n.yaml", *FAST], env_gcs)
        assert code == 0, err
        assert report["selection"]["selected"] == 12
        assert (report["data"]["cache_evicted"], report["data"]["downloaded"]) == (evicted, downloaded)
    assert {"models/v1/yolov8n_waste.pt", "models/v2/yolov8n_waste.pt"} <= names(models, "models/")


def test_missing_base_weights_fail_with_the_file_to_provide(world):
    api, models, env, tmp = world
    api.add(4, "verified")
    code, report, err = run_trainer(["--from-inferences", "--base-model", "yolov8n.pt", *FAST], env)
    assert code == 6
    assert report["reason"] == "ModelUnavailable" and "yolov8n.pt" in report["message"]
    assert "--base-model yolov8n.yaml" in report["message"]
    assert str(tmp / "weights" / "yolov8n.pt") in report["message"]  # on the CLI: where to put it
    assert names(models, "models/") == set()


def test_in_a_cluster_a_missing_base_model_names_only_what_a_user_can_change_there(world, gcs):
    api, models, env, tmp = world
    api.add(4, "verified")
    cluster = env | {"TRAININGRUN_NAME": "nightly", "TRAININGRUN_NAMESPACE": "wd", "TRAININGRUN_UID": "u-1",
                     "TRAINER_WEIGHTS_DIR": str(tmp / "empty-weights")}  # fmt: skip
    code, report, err = run_trainer(["--from-inferences", "--base-model", "yolov8n.pt", *FAST], cluster)
    assert code == 6 and report["reason"] == "ModelUnavailable", err
    message = report["message"]
    assert "spec.baseModel" in message and "gs://" in message and "yolov8n.yaml" in message
    # never a path inside the Job's throwaway /tmp or the trainer's local folder
    assert str(tmp) not in message.replace(str(tmp / "empty-weights"), "") and ".wd-local" not in message

    code, report, err = run_trainer(
        ["--from-inferences", "--base-model", f"gs://{models.name}/mine/nope.pt", *FAST], cluster
    )
    assert code == 6 and report["reason"] == "ModelUnavailable", err  # not a storage error to retry
    assert f"gs://{models.name}/mine/nope.pt does not exist" in report["message"]


@pytest.mark.slow
def test_the_first_run_fine_tunes_the_pretrained_weights_baked_into_the_trainer_image(world):
    """The trainer image sets TRAINER_WEIGHTS_DIR=/opt/weights and bakes yolov8n.pt there; the default
    spec.baseModel (yolov8n.pt) then works on a fresh install, where models/latest/ is empty."""
    from ultralytics import YOLO

    api, models, env, tmp = world
    api.add(8, "verified")
    baked = tmp / "opt-weights"
    baked.mkdir()
    YOLO("yolov8n.yaml").save(str(baked / "yolov8n.pt"))  # stands in for the COCO-pretrained file (offline)
    cluster = env | {"TRAININGRUN_NAME": "first", "TRAININGRUN_NAMESPACE": "wd", "TRAININGRUN_UID": "u-first",
                     "TRAINER_WEIGHTS_DIR": str(baked)}  # fmt: skip
    code, report, err = run_trainer(["--from-inferences", "--only-verified", *FAST], cluster)  # default base
    assert code == 0, err
    assert f"base={baked / 'yolov8n.pt'}" in err
    assert report["model"]["version"] == "v1" and report["promotion"]["promoted"] is True
    meta = json.loads(models.blob("models/v1/metadata.json").download_as_bytes())
    assert meta["base_model"] == "yolov8n.pt" and meta["base_version"] is None
