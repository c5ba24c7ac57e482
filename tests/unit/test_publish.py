"""Model objects: create-only versions, the latest/ copy, checkpoint prefixes; and the versions table."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from trainer import CLASS_NAMES, MODEL_FILENAME
from trainer.blobstore import LocalBlobStore, check_object_name
from trainer.cli import format_versions
from trainer.errors import StorageError
from trainer.publish import LATEST_METADATA, LATEST_MODEL, checkpoint_prefix, move_latest, upload_version
from trainer.registry import VersionRow


@pytest.fixture
def store(tmp_path):
    return LocalBlobStore(tmp_path / "models-bucket")


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "best.pt"
    path.write_bytes(b"weights v1")
    return path


def test_upload_version_writes_model_and_metadata(store, weights):
    model_uri, meta_uri = upload_version(store, 1, weights, {"version": "v1", "map50": 0.4})
    assert model_uri.endswith(f"models/v1/{MODEL_FILENAME}")
    assert store.read_bytes(f"models/v1/{MODEL_FILENAME}") == b"weights v1"
    assert json.loads(store.read_bytes("models/v1/metadata.json")) == {"version": "v1", "map50": 0.4}
    assert meta_uri.endswith("models/v1/metadata.json")


def test_upload_version_refuses_to_overwrite_an_existing_version(store, weights, tmp_path):
    upload_version(store, 1, weights, {"version": "v1"})
    other = tmp_path / "other.pt"
    other.write_bytes(b"different weights")
    with pytest.raises(StorageError, match="already exists"):
        upload_version(store, 1, other, {"version": "v1-again"})
    assert store.read_bytes(f"models/v1/{MODEL_FILENAME}") == b"weights v1"
    assert json.loads(store.read_bytes("models/v1/metadata.json")) == {"version": "v1"}


def test_move_latest_refuses_an_incomplete_version(store, weights):
    store.upload_file(weights, f"models/v2/{MODEL_FILENAME}")  # no metadata.json
    with pytest.raises(StorageError, match="incomplete"):
        move_latest(store, 2)
    with pytest.raises(StorageError):
        move_latest(store, 3)  # nothing at all
    assert store.stat(LATEST_MODEL) is None
    assert store.stat(LATEST_METADATA) is None


def test_move_latest_copies_model_and_metadata_of_a_complete_version(store, weights, tmp_path):
    upload_version(store, 1, weights, {"version": "v1"})
    move_latest(store, 1)
    assert store.read_bytes(LATEST_MODEL) == b"weights v1"
    assert json.loads(store.read_bytes(LATEST_METADATA)) == {"version": "v1"}

    second = tmp_path / "v2.pt"
    second.write_bytes(b"weights v2")
    upload_version(store, 2, second, {"version": "v2"})
    move_latest(store, 2)
    assert store.read_bytes(LATEST_MODEL) == b"weights v2"
    assert json.loads(store.read_bytes(LATEST_METADATA)) == {"version": "v2"}
    assert store.read_bytes(f"models/v1/{MODEL_FILENAME}") == b"weights v1"


@pytest.mark.parametrize(
    "key",
    ["default/nightly", "ns/../../etc", "ns/name with spaces", "ns/ünï/cødé", "ns/" + "x" * 500, "/", "ns/."],
)
def test_checkpoint_prefix_is_one_safe_folder_for_any_run_key(key):
    prefix = checkpoint_prefix(key)
    assert prefix.startswith("checkpoints/") and prefix.endswith("/")
    folder = prefix[len("checkpoints/") : -1]
    assert folder and "/" not in folder and folder not in (".", "..")
    check_object_name(prefix + "last.pt")
    assert len(prefix) < 120
    assert checkpoint_prefix(key) == prefix


def test_a_runs_checkpoint_folder_is_its_uid():
    uid = "0b6c3f1e-6f1a-4d2e-9a51-3c1f0d8e7a42"
    assert checkpoint_prefix(uid) == f"checkpoints/{uid}/"


def test_checkpoint_prefixes_of_different_run_keys_differ():
    keys = ["ns/a-b", "ns/a_b", "ns_a/b", "ns/a.b", "ns/" + "x" * 200, "ns/" + "x" * 199 + "y"]
    assert len({checkpoint_prefix(k) for k in keys}) == len(keys)


def version_row(number: int, promoted: bool) -> VersionRow:
    return VersionRow(
        number=number,
        name=f"v{number}",
        state="registered",
        promoted=promoted,
        map50=0.41,
        map50_95=0.29,
        precision=0.5,
        recall=0.4,
        per_class={"Glass": {"ap50": 0.7}},
        base_version=number - 1 or None,
        data={"train": 96, "val": 24},
        data_cutoff=None,
        created_at=datetime(2024, 6, 1, 12, 30, tzinfo=UTC),
        model_uri=None,
    )


def test_format_versions_shows_one_row_per_version_and_marks_latest():
    text = format_versions([version_row(1, True), version_row(2, True), version_row(3, False)], latest=2)
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].split()[:3] == ["VERSION", "BASE", "mAP50"]
    assert all(name[:5] in lines[0] for name in CLASS_NAMES)
    v1, v2, v3 = (line.split() for line in lines[1:])
    assert (v1[0], v1[1], v1[-3]) == ("v1", "-", "yes")
    assert (v2[0], v2[1], v2[-3]) == ("v2", "v1", "latest")
    assert v3[-3] == "no"
    assert "0.700" in lines[1] and "2024-06-01" in lines[1]


def test_format_versions_of_no_versions_is_the_header():
    assert format_versions([], None).splitlines()[0].startswith("VERSION")
