"""Shared helpers of the operator tests."""

from __future__ import annotations

import pytest
from waste_operator.config import OperatorConfig


@pytest.fixture
def config() -> OperatorConfig:
    return OperatorConfig(
        trainer_image="registry.example/waste-trainer:1.0",
        models_bucket="wd-models",
        images_bucket="wd-images",
        datasets_bucket="wd-datasets",
    )


def make_run(name: str = "nightly", spec: dict | None = None, **meta) -> dict:
    return {
        "apiVersion": "training.wastedetection.io/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {
            "name": name,
            "namespace": "waste-detection",
            "uid": "uid-1234",
            "generation": 1,
            **meta,
        },
        "spec": spec or {},
    }
