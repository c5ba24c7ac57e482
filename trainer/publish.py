"""Model objects in the models bucket: versioned uploads, the latest/ pointer, epoch checkpoints."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from trainer import MODEL_FILENAME
from trainer.blobstore import BlobStore, PreconditionFailed
from trainer.errors import StorageError

LATEST_MODEL = f"models/latest/{MODEL_FILENAME}"
LATEST_METADATA = "models/latest/metadata.json"


def version_prefix(number: int) -> str:
    return f"models/v{number}/"


def upload_version(store: BlobStore, number: int, weights: Path, metadata: dict) -> tuple[str, str]:
    """Create-only uploads: an existing version is never overwritten. Returns (model URI, metadata URI)."""
    prefix = version_prefix(number)
    try:
        store.upload_file(
            weights, prefix + MODEL_FILENAME, if_generation_match=0, metadata={"version": f"v{number}"}
        )
        store.upload_bytes(
            json.dumps(metadata, indent=2, default=str).encode(),
            prefix + "metadata.json",
            if_generation_match=0,
            content_type="application/json",
        )
    except PreconditionFailed:
        raise StorageError(
            f"{store.uri(prefix)} already exists: refusing to overwrite a published version"
        ) from None
    return store.uri(prefix + MODEL_FILENAME), store.uri(prefix + "metadata.json")


def move_latest(store: BlobStore, number: int) -> None:
    """Copies a fully uploaded version to models/latest/. Each object is replaced atomically; the model
    carries its version in its own metadata, so a reader never mistakes which version it has."""
    prefix = version_prefix(number)
    if store.stat(prefix + MODEL_FILENAME) is None or store.stat(prefix + "metadata.json") is None:
        raise StorageError(f"{store.uri(prefix)} is incomplete: latest not moved")
    store.copy(prefix + MODEL_FILENAME, LATEST_MODEL, metadata={"version": f"v{number}"})
    store.copy(prefix + "metadata.json", LATEST_METADATA)


def checkpoint_prefix(run_key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", run_key)[:80]
    digest = hashlib.sha256(run_key.encode()).hexdigest()[:8]
    return f"checkpoints/{safe}-{digest}/"
