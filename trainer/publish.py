"""Model objects in the models bucket: versioned uploads, the latest/ pointer, epoch checkpoints."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from pathlib import Path

from trainer import MODEL_FILENAME
from trainer.blobstore import BlobStore, NotFound, PreconditionFailed
from trainer.errors import StorageError

LATEST_MODEL = f"models/latest/{MODEL_FILENAME}"
LATEST_METADATA = "models/latest/metadata.json"
CHECKPOINTS = "checkpoints/"
# A uid-like id: letters, digits and dashes, no dots (never "." or ".."), short.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")


def version_prefix(number: int) -> str:
    return f"models/v{number}/"


def _create_only(store: BlobStore, name: str, data: bytes, **kwargs) -> None:
    """Writes an object that must not exist yet. A precondition failure whose object holds exactly our
    bytes is our own write whose response was lost (the client retried and met it): that is success."""
    try:
        store.upload_bytes(data, name, if_generation_match=0, **kwargs)
    except PreconditionFailed:
        existing = store.read_bytes(name)
        if existing is None or hashlib.sha256(existing).digest() != hashlib.sha256(data).digest():
            raise StorageError(
                f"{store.uri(name)} already exists: refusing to overwrite a published version"
            ) from None


def upload_version(store: BlobStore, number: int, weights: Path, metadata: dict) -> tuple[str, str]:
    """Create-only uploads: an existing version is never overwritten. metadata.json goes last and marks
    the version complete; if it cannot be written, the weights are removed again, so nothing
    half-written stays under models/. Returns (model URI, metadata URI)."""
    prefix = version_prefix(number)
    model, meta = prefix + MODEL_FILENAME, prefix + "metadata.json"
    _create_only(store, model, weights.read_bytes(), metadata={"version": f"v{number}"})
    try:
        _create_only(
            store, meta, json.dumps(metadata, indent=2, default=str).encode(), content_type="application/json"
        )
    except StorageError:
        with contextlib.suppress(StorageError):
            store.delete(model)
        raise
    return store.uri(model), store.uri(meta)


def _retried(action, attempts: int = 4, delay: float = 0.5):
    """Copies are idempotent (the same source over the same target): retrying them is always safe."""
    for attempt in range(attempts):
        try:
            return action()
        except NotFound:
            raise
        except StorageError:
            if attempt == attempts - 1:
                raise
            time.sleep(delay * 2**attempt)
    return None


def move_latest(store: BlobStore, number: int, previous: int | None = None) -> None:
    """Copies a fully uploaded version to models/latest/. Each object is replaced atomically and the
    model carries its version in its own metadata. If the second copy fails for good, the first is put
    back to `previous`, so latest/ never mixes two versions."""
    prefix = version_prefix(number)
    if store.stat(prefix + MODEL_FILENAME) is None or store.stat(prefix + "metadata.json") is None:
        raise StorageError(f"{store.uri(prefix)} is incomplete: latest not moved")
    _retried(lambda: store.copy(prefix + MODEL_FILENAME, LATEST_MODEL, metadata={"version": f"v{number}"}))
    try:
        _retried(lambda: store.copy(prefix + "metadata.json", LATEST_METADATA))
    except StorageError:
        if previous is not None:
            back = version_prefix(previous)
            with contextlib.suppress(StorageError):
                _retried(
                    lambda: store.copy(
                        back + MODEL_FILENAME, LATEST_MODEL, metadata={"version": f"v{previous}"}
                    )
                )
        raise


def checkpoint_prefix(run_id: str) -> str:
    """The run's checkpoint folder: `checkpoints/<run id>/` for a safe id (a TrainingRun's uid), so the start
    sweep finds the run of each folder; any other id gets a sanitised name with a hash."""
    if _SAFE_ID.fullmatch(run_id):
        return f"checkpoints/{run_id}/"
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", run_id)[:80]
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"checkpoints/{safe}-{digest}/"
