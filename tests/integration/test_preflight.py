"""Preflight: a run that cannot finish fails before selection, downloads or training, with its own line and
exit code. The trainer runs as the Job does, on PostgreSQL and the GCS emulator."""

from __future__ import annotations

import pytest

from tests.fixtures.gcs_proxy import GCSProxy
from tests.fixtures.inference_api import psql, run_trainer
from tests.integration.conftest import FAST

SCRATCH = ["--base-model", "yolov8n.yaml", *FAST]
WORK_STEPS = {"select", "download", "dataset", "train", "publish"}


def assert_failed_before_any_work(code, report, err, *, exit_code, reason, message):
    assert code == exit_code, err
    assert report["status"] == "Failed" and report["reason"] == reason
    assert report["message"].startswith(message), report["message"]
    assert not WORK_STEPS & set(report["timings"]), report["timings"]  # nothing selected, fetched, trained
    last = err.strip().splitlines()[-1]
    assert last == f"error: {reason}: {report['message']}" and "Traceback" not in err


def names(bucket, prefix: str = "") -> set[str]:
    return {b.name for b in bucket.client.list_blobs(bucket, prefix=prefix)}


def test_a_models_bucket_that_does_not_exist_fails_before_training_not_at_publish(world):
    api, _, env, _ = world
    api.add(6, "verified")
    env = {**env, "GCS_MODELS_BUCKET": "no-such-models-bucket"}
    code, report, err = run_trainer(["--from-inferences", *SCRATCH], env)
    assert_failed_before_any_work(
        code,
        report,
        err,
        exit_code=4,
        reason="StorageError",
        message="preflight: models bucket gs://no-such-models-bucket/ does not exist",
    )
    row = psql(env["DATABASE_URL"], "SELECT status, reason FROM training_runs")
    assert row == "failed|StorageError"
    assert psql(env["DATABASE_URL"], "SELECT count(*) FROM model_versions") == "0"  # no version abandoned


def test_a_models_bucket_that_refuses_writes_fails_before_training(world, gcs, monkeypatch):
    api, models, env, _ = world
    api.add(6, "verified")
    with GCSProxy(upstream=gcs.endpoint) as proxy:
        # Reads pass, every upload to the models bucket is refused, as with a read-only service account.
        proxy.inject("403", 100, method="POST", path_contains=f"/b/{models.name}/o")
        code, report, err = run_trainer(
            ["--from-inferences", *SCRATCH], {**env, "STORAGE_EMULATOR_HOST": proxy.endpoint}
        )
        assert proxy.pending() == 99  # exactly one write was tried: the probe
    assert_failed_before_any_work(
        code,
        report,
        err,
        exit_code=4,
        reason="StorageError",
        message=f"preflight: models bucket gs://{models.name}/ cannot be written:",
    )
    assert "403" in report["message"]


def test_an_images_bucket_that_does_not_exist_fails_before_selection(world):
    api, _, env, _ = world
    api.add(3, "verified")
    code, report, err = run_trainer(
        ["--from-inferences", *SCRATCH], {**env, "GCS_IMAGES_BUCKET": "no-images-here"}
    )
    assert_failed_before_any_work(
        code,
        report,
        err,
        exit_code=4,
        reason="StorageError",
        message="preflight: images bucket gs://no-images-here/ does not exist",
    )


def test_an_unreadable_inferences_table_fails_with_the_columns_it_needs(world):
    _, _, env, _ = world
    psql(env["DATABASE_URL"], "ALTER TABLE inferences RENAME COLUMN detection_count TO boxes")
    code, report, err = run_trainer(["--from-inferences", *SCRATCH], env)
    assert_failed_before_any_work(
        code,
        report,
        err,
        exit_code=5,
        reason="RegistryError",
        message="preflight: the Inference API's table 'inferences' cannot be read (id, image_object,",
    )
    assert "detection_count" in report["message"] and "does not exist" in report["message"]


def test_a_base_model_that_cannot_be_had_fails_before_any_download(world):
    api, models, env, _ = world
    api.add(4, "verified")
    code, report, err = run_trainer(["--from-inferences", "--base-model", "yolov8s.pt", *FAST], env)
    assert_failed_before_any_work(
        code,
        report,
        err,
        exit_code=6,
        reason="ModelUnavailable",
        message="preflight: base model 'yolov8s.pt'",
    )
    assert "--base-model yolov8n.yaml" in report["message"]


@pytest.mark.parametrize("device", ["63", "cuda:63", "0,63"])
def test_a_cuda_device_that_is_not_there_fails_before_any_download(world, device):
    api, models, env, _ = world
    api.add(4, "verified")
    code, report, err = run_trainer(["--from-inferences", "--device", device, *SCRATCH], env)
    assert_failed_before_any_work(
        code,
        report,
        err,
        exit_code=8,
        reason="DeviceUnavailable",
        message=f"preflight: --device {device} asks for CUDA device(s)",
    )
    # Every check before it passed, and the models bucket's write probe left nothing behind.
    assert set(report["preflight"]) == {
        "inferences_table",
        "images_bucket",
        "models_bucket",
        "base_model",
        "device",
    }
    assert names(models) == set()


def test_a_passing_preflight_costs_well_under_a_second_and_leaves_no_probe(world):
    api, models, env, _ = world
    api.add(6, "verified")
    code, report, err = run_trainer(["--from-inferences", *SCRATCH], env)
    assert code == 0, err
    assert set(report["preflight"]) == {"inferences_table", "images_bucket", "models_bucket", "base_model"}
    assert not names(models, "preflight/")
    print(f"preflight seconds: {report['timings']['preflight']} {report['preflight']}")
