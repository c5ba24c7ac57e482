"""The trainer's GCS paths under injected faults: fake-gcs-server behind a fault-injecting proxy.

Each test asserts what really happens, including where the trainer is not atomic, and checks that every
injected fault was actually used (so a test cannot pass because the fault never hit).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from tests.fixtures.data import make_sample
from tests.fixtures.gcs_proxy import GCSProxy
from trainer import MODEL_FILENAME
from trainer.blobstore import GCSBlobStore, gcs_client
from trainer.errors import StorageError
from trainer.fetch import ObjectCache
from trainer.publish import LATEST_METADATA, LATEST_MODEL, move_latest, upload_version

pytestmark = pytest.mark.timeout(120)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def proxy(gcs):
    with GCSProxy(upstream=gcs.endpoint) as p:
        yield p


@pytest.fixture
def store(gcs, proxy, monkeypatch) -> GCSBlobStore:
    """A store whose client talks to the emulator only through the proxy."""
    bucket = gcs.bucket()  # created directly on the emulator
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.endpoint)
    return GCSBlobStore(bucket.name, client=gcs_client())


def _objects(gcs, bucket: str, prefix: str) -> dict[str, bytes]:
    """What the emulator holds, read directly (not through the proxy)."""
    client = gcs.client()
    return {b.name: b.download_as_bytes() for b in client.list_blobs(bucket, prefix=prefix)}


def test_fetch_survives_download_fault_bursts_and_second_fetch_downloads_nothing(gcs, proxy, store, tmp_path):
    bucket = gcs.client().bucket(store.bucket_name)
    expected: dict[str, str] = {}
    for i in range(24):
        s = make_sample(1000 + i, size=160)
        for name, data in ((f"images/day1/s{i}.jpg", s.image), (f"labels/day1/s{i}.txt", s.label.encode())):
            bucket.blob(name).upload_from_string(data)
            expected[name] = sha(data)

    proxy.inject("503", 3, method="GET", path_contains="alt=media")
    proxy.inject("429", 3, method="GET", path_contains="alt=media")
    proxy.inject("reset", 3, method="GET", path_contains="alt=media")
    proxy.inject("truncate", 3, method="GET", path_contains="alt=media")
    proxy.inject("503", 2, method="GET", path_contains="prefix=")  # the listings that give generations
    cache = ObjectCache(tmp_path / "cache", store)
    first = cache.fetch(sorted(expected), concurrency=8)

    assert first.missing == {}
    assert first.downloaded == len(expected)
    assert {n: sha(p.read_bytes()) for n, p in first.paths.items()} == expected
    assert not list((tmp_path / "cache").rglob(".part-*")), "a partial download was left in the cache"
    assert proxy.pending() == 0, "every injected fault was used"
    stats = proxy.stats
    assert stats["faults"] == 14
    print("\nfaults injected:", {k: v for k, v in stats.items() if k.startswith("fault")})

    downloads_before = stats.get("downloads", 0)
    second = ObjectCache(tmp_path / "cache", store).fetch(sorted(expected))
    assert second.downloaded == 0 and second.cached == len(expected) and second.missing == {}
    assert proxy.stats.get("downloads", 0) == downloads_before, "the second fetch downloaded something"


def _weights(tmp_path: Path, size: int = 300_000) -> tuple[Path, bytes]:
    data = uuid.uuid4().bytes * (size // 16)
    path = tmp_path / "best.pt"
    path.write_bytes(data)
    return path, data


def test_upload_version_retries_through_503_bursts(gcs, proxy, store, tmp_path):
    weights, data = _weights(tmp_path)
    proxy.inject("503", 2, method="POST", path_contains="/upload/")
    proxy.inject("429", 1, method="POST", path_contains="/upload/", body_contains="metadata.json")
    upload_version(store, 1, weights, {"version": "v1"})

    assert proxy.pending() == 0 and proxy.stats["faults"] == 3
    objects = _objects(gcs, store.bucket_name, "models/v1/")
    assert objects[f"models/v1/{MODEL_FILENAME}"] == data
    assert json.loads(objects["models/v1/metadata.json"]) == {"version": "v1"}


def test_upload_version_failing_on_metadata_removes_the_weights_again(gcs, proxy, store, tmp_path):
    """The two create-only uploads are not one transaction: a lasting failure of the second removes the
    first, so nothing half-written stays under models/vN/ (and move_latest would refuse it anyway)."""
    weights, _ = _weights(tmp_path)
    # 403 is not retried: it stands for a lasting failure
    proxy.inject("403", 1, method="POST", path_contains="/upload/", body_contains="metadata.json")
    with pytest.raises(StorageError):
        upload_version(store, 2, weights, {"version": "v2"})
    assert _objects(gcs, store.bucket_name, "models/v2/") == {}
    with pytest.raises(StorageError, match="incomplete"):
        move_latest(store, 2)
    assert _objects(gcs, store.bucket_name, "models/latest/") == {}


def test_lost_response_to_create_only_upload_is_recognised_as_our_own_write(gcs, proxy, store, tmp_path):
    """The emulator writes the object, the response is lost (reset), the client's retry gets 412: the
    object holds exactly our bytes, so the upload succeeded."""
    weights, data = _weights(tmp_path)
    proxy.inject("reset_after", 1, method="POST", path_contains="/upload/", body_contains=MODEL_FILENAME)
    upload_version(store, 3, weights, {"version": "v3"})
    assert proxy.pending() == 0 and proxy.stats["faults"] == 1
    objects = _objects(gcs, store.bucket_name, "models/v3/")
    assert objects[f"models/v3/{MODEL_FILENAME}"] == data
    assert json.loads(objects["models/v3/metadata.json"]) == {"version": "v3"}


def test_a_different_object_at_the_version_is_never_overwritten(gcs, proxy, store, tmp_path):
    weights, _ = _weights(tmp_path)
    gcs.client().bucket(store.bucket_name).blob(f"models/v4/{MODEL_FILENAME}").upload_from_string(b"other")
    with pytest.raises(StorageError, match="already exists"):
        upload_version(store, 4, weights, {"version": "v4"})
    assert _objects(gcs, store.bucket_name, "models/v4/") == {f"models/v4/{MODEL_FILENAME}": b"other"}


def _publish(store: GCSBlobStore, tmp_path: Path, number: int) -> bytes:
    weights, data = _weights(tmp_path)
    upload_version(store, number, weights, {"version": f"v{number}"})
    return data


def test_move_latest_retries_a_passing_copy_failure(gcs, proxy, store, tmp_path):
    _publish(store, tmp_path, 1)
    move_latest(store, 1)
    v2 = _publish(store, tmp_path, 2)
    proxy.inject("503", 2, method="POST", path_contains="copyTo")
    move_latest(store, 2, previous=1)
    assert proxy.pending() == 0
    latest = _objects(gcs, store.bucket_name, "models/latest/")
    assert latest[LATEST_MODEL] == v2 and json.loads(latest[LATEST_METADATA]) == {"version": "v2"}


def test_move_latest_lasting_copy_failure_leaves_latest_unchanged(gcs, proxy, store, tmp_path):
    v1 = _publish(store, tmp_path, 1)
    move_latest(store, 1)
    v2 = _publish(store, tmp_path, 2)
    assert v1 != v2

    proxy.inject("503", 10, method="POST", path_contains="copyTo")
    with pytest.raises(StorageError):
        move_latest(store, 2, previous=1)
    latest = _objects(gcs, store.bucket_name, "models/latest/")
    assert latest[LATEST_MODEL] == v1
    assert json.loads(latest[LATEST_METADATA]) == {"version": "v1"}


def test_move_latest_failing_for_good_on_metadata_puts_the_previous_model_back(gcs, proxy, store, tmp_path):
    """The model is copied first; if metadata.json cannot follow, the previous version's weights are
    copied back, so models/latest/ never holds v2's weights with v1's metadata."""
    v1 = _publish(store, tmp_path, 1)
    move_latest(store, 1)
    _publish(store, tmp_path, 2)

    proxy.inject("503", 10, method="POST", path_contains="metadata.json/copyTo")
    with pytest.raises(StorageError):
        move_latest(store, 2, previous=1)
    latest = _objects(gcs, store.bucket_name, "models/latest/")
    assert latest[LATEST_MODEL] == v1
    assert json.loads(latest[LATEST_METADATA]) == {"version": "v1"}
    blob = gcs.client().bucket(store.bucket_name).get_blob(LATEST_MODEL)
    assert blob.metadata == {"version": "v1"}
