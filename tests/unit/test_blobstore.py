"""LocalBlobStore (the bucket in a folder), gs:// URIs, and the download cache over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.blobstore import LocalBlobStore, PreconditionFailed, check_object_name, parse_gs_uri
from trainer.errors import ConfigError, StorageError
from trainer.fetch import ObjectCache

BAD_NAMES = ["", "/etc/passwd", "../outside", "a/../../outside", "a/./b", ".", "..", "a/..", "./a", "a\x00b"]


@pytest.fixture
def store(tmp_path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "bucket")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_that_are_not_plain_relative_keys_are_refused(store, name, tmp_path):
    with pytest.raises(ConfigError):
        check_object_name(name)
    with pytest.raises(ConfigError):
        store.upload_bytes(b"x", name)
    with pytest.raises(ConfigError):
        store.stat(name)
    with pytest.raises(ConfigError):
        store.read_bytes(name)
    with pytest.raises(ConfigError):
        store.download(name, tmp_path / "dest")
    assert not (tmp_path / "outside").exists()


def test_a_symlink_leading_out_of_the_store_is_refused(store, tmp_path):
    (tmp_path / "secret").write_text("s")
    (store.root / "link").symlink_to(tmp_path)
    with pytest.raises(ConfigError):
        store.read_bytes("link/secret")


def test_plain_nested_names_are_accepted(store):
    info = store.upload_bytes(b"hello", "a/b/c.txt")
    assert (info.name, info.size) == ("a/b/c.txt", 5)
    assert store.read_bytes("a/b/c.txt") == b"hello"
    assert store.stat("a/b/missing") is None
    assert store.read_bytes("a/b/missing") is None


def test_create_only_upload_refuses_to_overwrite(store, tmp_path):
    store.upload_bytes(b"v1", "models/v1/model.pt", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        store.upload_bytes(b"v2", "models/v1/model.pt", if_generation_match=0)
    src = tmp_path / "f"
    src.write_bytes(b"v3")
    with pytest.raises(PreconditionFailed):
        store.upload_file(src, "models/v1/model.pt", if_generation_match=0)
    assert store.read_bytes("models/v1/model.pt") == b"v1"
    assert issubclass(PreconditionFailed, StorageError)
    assert [p.name for p in store.root.joinpath("models/v1").iterdir()] == ["model.pt"]  # no temp left


def test_compare_and_swap_upload_needs_the_current_generation(store):
    g1 = store.upload_bytes(b"one", "k").generation
    with pytest.raises(PreconditionFailed):
        store.upload_bytes(b"two", "k", if_generation_match=g1 + 12345)
    g2 = store.upload_bytes(b"two", "k", if_generation_match=g1).generation
    assert store.read_bytes("k") == b"two"
    assert g2 != g1


def test_the_generation_changes_on_every_rewrite(store):
    generations = [store.upload_bytes(b"same", "obj").generation for _ in range(20)]
    assert len(set(generations)) == 20
    assert generations == sorted(generations)
    assert store.stat("obj").generation == generations[-1]


def test_list_returns_only_objects_under_the_prefix(store):
    for name in ["images/a.jpg", "images/sub/b.jpg", "imagesX/c.jpg", "labels/a.txt"]:
        store.upload_bytes(b"x", name)
    assert [i.name for i in store.list("images/")] == ["images/a.jpg", "images/sub/b.jpg"]
    assert len(store.list("")) == 4
    assert store.list("nothing/") == []


def test_list_with_a_prefix_ending_inside_a_folder_and_a_limit(store):
    for name in (
        "images/day1/a.jpg",
        "images/day1/ab.jpg",
        "images/day10/c.jpg",
        "images/day2/d.jpg",
        "x.txt",
    ):
        store.upload_bytes(b"1", name)
    assert [i.name for i in store.list("images/day1")] == [
        "images/day1/a.jpg",
        "images/day1/ab.jpg",
        "images/day10/c.jpg",
    ]
    assert [i.name for i in store.list("images/day1/a")] == ["images/day1/a.jpg", "images/day1/ab.jpg"]
    assert len(store.list("images/", limit=1)) == 1 and len(store.list("", limit=2)) == 2
    assert store.list("nothing/here/") == []


def test_deleting_the_last_object_of_a_folder_leaves_no_empty_folder(store):
    store.upload_bytes(b"1", "preflight/abc")
    store.upload_bytes(b"1", "models/v1/a")
    store.delete("preflight/abc")
    assert not (store.root / "preflight").exists() and store.root.is_dir()
    assert (store.root / "models" / "v1" / "a").is_file()


def test_copy_and_delete(store):
    store.upload_bytes(b"data", "src")
    store.copy("src", "dst/copy")
    assert store.read_bytes("dst/copy") == b"data"
    store.delete("src")
    store.delete("src")  # deleting a missing object is fine
    assert store.stat("src") is None
    with pytest.raises(StorageError):
        store.copy("src", "again")


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("gs://bucket", ("bucket", "")),
        ("gs://bucket/", ("bucket", "")),
        ("gs://bucket/prefix/sub/", ("bucket", "prefix/sub")),
        ("gs://b/a", ("b", "a")),
    ],
)
def test_parse_gs_uri_splits_bucket_and_prefix(uri, expected):
    assert parse_gs_uri(uri) == expected


@pytest.mark.parametrize("uri", ["s3://bucket/x", "bucket/x", "gs://", "gs:///x", "/local/path"])
def test_parse_gs_uri_refuses_what_is_not_a_gs_uri_with_a_bucket(uri):
    with pytest.raises(ConfigError):
        parse_gs_uri(uri)


# ObjectCache -------------------------------------------------------------------------------------------


def fill(store: LocalBlobStore, n: int) -> list[str]:
    names = [f"images/{i % 3}/obj{i}.bin" for i in range(n)]
    for i, name in enumerate(names):
        store.upload_bytes(f"content {i}".encode(), name)
    return names


def test_the_first_fetch_downloads_everything_and_the_second_nothing(store, tmp_path):
    names = fill(store, 12)
    cache = ObjectCache(tmp_path / "cache", store)

    first = cache.fetch(names, concurrency=4)
    assert (first.downloaded, first.cached, first.missing) == (12, 0, {})
    assert first.bytes_downloaded == sum(len(store.read_bytes(n)) for n in names)
    assert all(first.paths[n].read_bytes() == store.read_bytes(n) for n in names)

    second = ObjectCache(tmp_path / "cache", store).fetch(names)
    assert (second.downloaded, second.cached, second.missing) == (0, 12, {})
    assert second.paths == first.paths


def test_cached_file_names_never_come_from_object_names(store, tmp_path):
    store.upload_bytes(b"x", "weird name/..hidden/file.jpg")
    result = ObjectCache(tmp_path / "cache", store).fetch(["weird name/..hidden/file.jpg"])
    path = result.paths["weird name/..hidden/file.jpg"]
    assert path.resolve().is_relative_to((tmp_path / "cache").resolve())
    assert "weird" not in str(path) and "hidden" not in str(path)


def test_a_changed_object_is_downloaded_again(store, tmp_path):
    names = fill(store, 4)
    cache = ObjectCache(tmp_path / "cache", store)
    cache.fetch(names)
    store.upload_bytes(b"content X", names[1])  # same size, new generation

    again = cache.fetch(names)
    assert (again.downloaded, again.cached) == (1, 3)
    assert again.paths[names[1]].read_bytes() == b"content X"


def test_missing_objects_and_bad_names_are_reported_not_raised(store, tmp_path):
    names = fill(store, 3)
    wanted = [*names, "images/0/missing.bin", "../escape", "/abs", "a/./b"]
    result = ObjectCache(tmp_path / "cache", store).fetch(wanted)
    assert result.downloaded == 3
    assert set(result.missing) == {"images/0/missing.bin", "../escape", "/abs", "a/./b"}
    assert result.missing["images/0/missing.bin"] == "object not found"
    assert set(result.paths) == set(names)


def test_many_folders_use_per_object_lookups_with_the_same_result(store, tmp_path):
    names = [f"f{i}/x.bin" for i in range(70)]  # more folders than LIST_PREFIX_LIMIT
    for name in names:
        store.upload_bytes(name.encode(), name)
    result = ObjectCache(tmp_path / "cache", store).fetch([*names, "f0/missing"])
    assert result.downloaded == 70
    assert set(result.missing) == {"f0/missing"}
    assert all(Path(result.paths[n]).read_bytes() == n.encode() for n in names)


def test_duplicate_names_are_fetched_once(store, tmp_path):
    names = fill(store, 2)
    result = ObjectCache(tmp_path / "cache", store).fetch(names + names)
    assert result.downloaded == 2


def test_a_bounded_cache_evicts_the_least_recently_used_never_this_runs_files(store, tmp_path):
    import os
    import time

    names = [f"images/0/obj{i}.bin" for i in range(10)]
    for name in names:
        store.upload_bytes(b"x" * 1000, name)
    cache = ObjectCache(tmp_path / "cache", store, track_use=True)
    old = cache.fetch(names[:6])
    # Age the first run's files, then use two of them again: they become recent.
    for i, name in enumerate(names[:6]):
        os.utime(old.paths[name], (time.time() - 3600 + i, time.time() - 3600 + i))
    leftover = next(iter(old.paths.values())).with_name(".part-crashed")
    leftover.write_bytes(b"y" * 500)
    os.utime(leftover, (time.time() - 2 * 86400,) * 2)
    in_flight = leftover.with_name(".part-in-flight")
    in_flight.write_bytes(b"z" * 500)
    verdict = old.paths[names[2]].with_name(old.paths[names[2]].name + ".ok")  # the dataset step's
    verdict.write_text(".jpg")
    orphan = leftover.with_name("gone.123.bad")
    orphan.write_text("corrupt")

    now = cache.fetch([names[0], names[1], *names[6:]])  # this run: 6 files
    trimmed = cache.trim(7000, keep=now.paths.values())
    # 10 files of 1,000 bytes, 7,000 allowed: the three least recently used of the others go.
    assert (trimmed.removed, trimmed.bytes_removed, trimmed.bytes_kept) == (3, 3000, 7000)
    assert all(p.is_file() for p in now.paths.values())
    assert [n for n in names[2:6] if old.paths[n].is_file()] == [names[5]]
    assert not leftover.exists() and in_flight.exists()  # another Job's download in progress is left alone
    assert not verdict.exists() and not orphan.exists()  # verdicts go with their files

    # Over the bound with nothing but this run's files: they all stay (the run needs them).
    assert cache.trim(1000, keep=now.paths.values()).removed == 1
    assert all(p.is_file() for p in now.paths.values())
