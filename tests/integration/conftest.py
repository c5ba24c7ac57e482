"""Shared by the trainer's integration tests: a fresh database, buckets and environment per test."""

from __future__ import annotations

import pytest

from tests.fixtures.inference_api import InferenceAPI, create_inference_table

# The smallest training that still runs every step: one epoch at 64 px on CPU.
FAST = ["--epochs", "1", "--img-size", "64", "--batch-size", "8", "--workers", "0"]


@pytest.fixture
def world(postgres, gcs, tmp_path):
    """(Inference API stand-in, models bucket, the trainer's environment, tmp_path) on a fresh database."""
    return _world(postgres, gcs, tmp_path)


@pytest.fixture
def hostile_world(postgres, gcs_memory, tmp_path):
    """The same on the memory-backed emulator, for tests that upload object names with '..' in them."""
    return _world(postgres, gcs_memory, tmp_path)


def _world(postgres, gcs, tmp_path):
    dsn = postgres.new_database()
    create_inference_table(dsn)
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
    }
    api = InferenceAPI(dsn=dsn, bucket=images)
    return api, models, env, tmp_path
