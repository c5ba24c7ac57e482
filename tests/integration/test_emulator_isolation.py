"""Tests that upload hostile object names never write outside the emulator's own folder.

fake-gcs-server's filesystem backend joins the bucket folder and the object name without refusing '..':
the trainer refuses such names itself, but the test that uploads them must not plant files on this machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.fixtures.services import start_gcs


def escaping_name(target: Path) -> str:
    """An object name that, joined under any folder less than 64 levels deep, resolves to `target`."""
    return "images/" + "../" * 64 + str(target).lstrip("/")


def files_under(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}


def test_hostile_names_uploaded_to_the_memory_emulator_write_nothing_to_disk(gcs_memory, tmp_path):
    target = tmp_path / "planted" / "x.jpg"
    names = [escaping_name(target), "../../etc/x.jpg", "/abs/label.txt", "images/./a/../../b.txt"]
    before = files_under(gcs_memory.root)
    bucket = gcs_memory.bucket()
    for name in names:
        bucket.blob(name).upload_from_string(b"hostile")

    assert {b.name for b in gcs_memory.client().list_blobs(bucket.name)} >= set(names) - {"/abs/label.txt"}
    assert not target.exists() and not (tmp_path / "planted").exists()
    assert files_under(gcs_memory.root) == before  # the memory backend keeps objects off the disk


def test_the_filesystem_backend_would_write_outside_its_folder(tmp_path):
    """Why the hostile tests use the memory backend: the same name on the filesystem backend escapes.

    The escape is aimed at this test's own folder, so the proof plants nothing elsewhere."""
    emulator = start_gcs(backend="filesystem")
    try:
        target = tmp_path / "planted" / "x.jpg"
        emulator.bucket().blob(escaping_name(target)).upload_from_string(b"escaped")
        assert target.read_bytes() == b"escaped"
        assert not target.resolve().is_relative_to(emulator.root.resolve())
    finally:
        emulator.stop()
