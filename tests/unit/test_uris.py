"""The accepted forms of a dataset URI and a base model: the CRD's patterns are the trainer's."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trainer.errors import ConfigError
from trainer.uris import BASE_MODEL, DATASET_URI, dataset_source

ROOT = Path(__file__).resolve().parents[2]


def crd_spec() -> dict:
    crd = yaml.safe_load((ROOT / "crds" / "trainingrun.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]


def test_the_crd_enforces_the_trainers_own_patterns():
    spec = crd_spec()
    assert spec["source"]["properties"]["dataset"]["properties"]["uri"]["pattern"] == DATASET_URI
    assert spec["baseModel"]["pattern"] == BASE_MODEL


@pytest.mark.parametrize(
    ("uri", "read_as"),
    [
        ("gs://waste-datasets/2025-06", "gs://waste-datasets/2025-06"),
        ("2025-06", "gs://wd-datasets/2025-06"),
        ("city/2025.06/", "gs://wd-datasets/city/2025.06"),
    ],
)
def test_a_job_reads_gs_uris_and_names_in_the_datasets_bucket(uri, read_as):
    assert dataset_source(uri, "wd-datasets", local_allowed=False) == read_as


@pytest.mark.parametrize(
    "uri", ["file:///data/x", "s3://b/x", "/data/x", "../up", "a/../b", "./x", "gs://", "a b"]
)
def test_a_job_refuses_what_it_cannot_read_with_the_accepted_forms(uri):
    with pytest.raises(ConfigError, match="gs://BUCKET"):
        dataset_source(uri, "wd-datasets", local_allowed=False)


def test_the_command_line_also_reads_local_folders(tmp_path):
    assert dataset_source(str(tmp_path), None, local_allowed=True) == str(tmp_path)
    with pytest.raises(ConfigError, match="GCS_DATASETS_BUCKET"):
        dataset_source("not-here", None, local_allowed=True)
    with pytest.raises(ConfigError, match="file:///x"):
        dataset_source("file:///x", "b", local_allowed=True)  # never gs://b/file:///x
