"""The champion's evaluation, done once per (champion weights, validation set, settings) and reused.

Every run that finds models/latest/ evaluates it on its own validation set before the gate decides. When
latest has not moved and the validation set is the same (a retried Job, a run whose challenger the gate
refused, several runs with other settings on one prepared dataset), that evaluation gives the same numbers
again: the result is kept next to the champion's version in the models bucket,
models/vN/evaluations/<key>.json, and read back instead of validating again.

The key covers everything the numbers depend on: the weights' bytes, every validation image and label
(name and bytes), the image size and validation batch (the val loader pads per batch), and the Ultralytics
version.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from trainer.blobstore import BlobStore
from trainer.errors import StorageError
from trainer.publish import version_prefix
from trainer.report import logfmt

log = logging.getLogger("trainer")
_CHUNK = 1 << 20


def _file_digest(path: Path, h) -> None:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)


def validation_digest(dataset_root: Path) -> str:
    """sha256 over the validation split's files: relative name and bytes, in name order."""
    h = hashlib.sha256()
    for sub in ("images/val", "labels/val"):
        folder = dataset_root / sub
        for path in sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []:
            h.update(str(path.relative_to(dataset_root)).encode() + b"\0")
            _file_digest(path, h)
            h.update(b"\0")
    return h.hexdigest()


def evaluation_key(weights: Path, val_digest: str, imgsz: int, batch: int, ultralytics_version: str) -> str:
    h = hashlib.sha256()
    _file_digest(weights, h)
    h.update(f"\0{val_digest}\0{imgsz}\0{batch}\0{ultralytics_version}".encode())
    return h.hexdigest()[:32]


def cache_object(version: int, key: str) -> str:
    return f"{version_prefix(version)}evaluations/{key}.json"


def load(store: BlobStore, version: int, key: str) -> dict | None:
    """The stored metrics, or None (absent, unreadable or not ours: then the champion is evaluated)."""
    try:
        raw = store.read_bytes(cache_object(version, key))
    except StorageError as exc:
        log.warning(logfmt(event="champion_cache_unreadable", error=str(exc)[:200]))
        return None
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if doc.get("key") != key or not isinstance(doc.get("metrics"), dict):
        return None
    return doc["metrics"]


def save(store: BlobStore, version: int, key: str, metrics: dict) -> None:
    """Best effort: a cache that cannot be written only costs the next run an evaluation."""
    body = json.dumps({"key": key, "version": version, "metrics": metrics}, default=str).encode()
    try:
        store.upload_bytes(body, cache_object(version, key), content_type="application/json")
    except StorageError as exc:
        log.warning(logfmt(event="champion_cache_not_written", error=str(exc)[:200]))
