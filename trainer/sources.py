"""Where samples come from: the Inference API's table, or a YOLO dataset in a folder or a bucket."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from pathlib import PurePosixPath

from trainer.blobstore import BlobStore
from trainer.db import Database, as_datetime
from trainer.feedback import INFERENCES_SINCE_SQL
from trainer.registry import SampleLocation
from trainer.selection import Record

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def _record(r: dict) -> Record:
    return Record(
        id=str(r["id"]),
        image_object=r["image_object"],
        label_object=r["label_object"],
        status=r["status"],
        detections=int(r["detection_count"]),
        updated_at=as_datetime(r["updated_at"]),
    )


def inference_records(db: Database, since: datetime | None) -> list[Record]:
    """Inference API records updated after `since` (all when None), oldest first."""
    return [_record(r) for r in db.fetch(INFERENCES_SINCE_SQL, since)]


def inference_records_by_id(db: Database, ids: list[str]) -> list[Record]:
    """Earlier records picked for replay, still verified or corrected today (a record rejected since is dropped)."""
    if not ids:
        return []
    rows = db.fetch(
        "SELECT id, image_object, label_object, status, detection_count, updated_at FROM inferences "
        "WHERE id = ANY($1::text[]) AND status IN ('verified', 'corrected') ORDER BY id",
        ids,
    )
    return [_record(r) for r in rows]


def dataset_key(source: str) -> str:
    """A dataset's short, stable name in sample ids: its folder's name and a digest of its whole URI.

    Not the URI itself: file names in the training folder follow ids, so the order Ultralytics reads them
    in (and with it the trained model) must not depend on where the dataset happens to live.
    """
    name = PurePosixPath(source.rstrip("/")).name or "dataset"
    return f"{name}-{hashlib.sha256(source.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def dataset_records(store: BlobStore, prefix: str, source: str) -> list[Record]:
    """Pairs images/**/X.ext with labels/**/X.txt under prefix (Ultralytics' layout).

    A dataset's own train/val folders are kept as the split; an image without a label file is listed
    with no label and counted as skipped by the selection. source is the dataset's URI (an absolute folder
    or gs://bucket/prefix); ids are `dataset_key(source)/images/.../X`, unique across datasets, so a run can
    replay samples of earlier datasets next to a new one whose files have the same names.
    """
    prefix = prefix.strip("/")
    base = f"{prefix}/" if prefix else ""
    key = dataset_key(source)
    objects = {info.name for info in store.list(base)}
    records = []
    for name in sorted(objects):
        rel = PurePosixPath(name[len(base) :])
        if rel.suffix.lower() not in IMAGE_SUFFIXES or "images" not in rel.parts:
            continue
        parts = list(rel.parts)
        i = len(parts) - 1 - parts[::-1].index("images")
        label_rel = PurePosixPath(*parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt")
        label = base + label_rel.as_posix()
        sub = parts[i + 1 : -1]
        hint = sub[0] if sub and sub[0] in ("train", "val") else None
        records.append(
            Record(
                id=f"{key}/{rel.with_suffix('').as_posix()}",
                image_object=name,
                label_object=label if label in objects else None,
                split_hint=hint,
                source=source,
            )
        )
    return records


def dataset_records_by_id(samples: Mapping[str, SampleLocation], ids: list[str], split: str) -> list[Record]:
    """Earlier dataset samples picked for replay (split 'train') or validation history ('val')."""
    return [
        Record(
            id=i,
            image_object=samples[i].image_object,
            label_object=samples[i].label_object,
            split_hint=split,
            source=samples[i].source,
        )
        for i in ids
    ]
