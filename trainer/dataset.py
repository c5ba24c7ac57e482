"""Write a YOLO dataset folder from cached files: only valid samples, never a path outside the folder."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from trainer import CLASS_NAMES
from trainer.files import write_text_atomic
from trainer.labels import BadSample, check_image, parse_label_file
from trainer.selection import Record

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def safe_stem(record_id: str) -> str:
    """A file name from an id: readable where possible, always unique, never a path."""
    digest = hashlib.sha256(record_id.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    readable = _UNSAFE.sub("_", record_id)[-60:].strip("_") or "sample"
    return f"{readable}-{digest}"


@dataclass
class DatasetResult:
    root: Path
    data_yaml: Path
    counts: dict[str, int] = field(default_factory=dict)  # train / val
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    skipped_examples: list[str] = field(default_factory=list)
    classes: dict[str, list[int]] = field(default_factory=dict)  # id -> classes present
    splits: dict[str, str] = field(default_factory=dict)  # id -> split, only the samples written
    instances: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class name -> boxes


def _image_verdict(path: Path) -> str:
    """Checks an image once per cached file (the cache key includes the generation)."""
    ok, bad = path.with_name(path.name + ".ok"), path.with_name(path.name + ".bad")
    try:
        return ok.read_text()  # one open, not a stat and an open: this runs once per image per run
    except FileNotFoundError:
        pass
    if bad.exists():
        reason, _, detail = bad.read_text().partition("\n")
        raise BadSample(reason, detail)
    try:
        suffix = check_image(path.read_bytes())
    except BadSample as exc:
        write_text_atomic(bad, f"{exc.reason}\n{exc.detail}")  # whole: Jobs may share the cache
        raise
    write_text_atomic(ok, suffix)
    return suffix


def _place(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def write_dataset(
    root: Path,
    records: Sequence[Record],
    files: Mapping[str, Path],
    splits: Mapping[str, str],
    missing: Mapping[str, str] | None = None,
) -> DatasetResult:
    """Build root/images/{train,val}, root/labels/{train,val} and root/data.yaml.

    files maps object names to local files. A record whose image or label is missing or invalid is
    skipped and counted under its reason; no file name comes from an object name.
    """
    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    missing = missing or {}
    skipped: Counter[str] = Counter()
    result = DatasetResult(root=root, data_yaml=root / "data.yaml")
    instances = {"train": Counter(), "val": Counter()}

    def skip(record: Record, reason: str, detail: str) -> None:
        skipped[reason] += 1
        if len(result.skipped_examples) < 20:
            result.skipped_examples.append(f"{record.id}: {reason}: {detail}"[:300])

    # Decoding every image is this step's main cost; PIL releases the GIL while decoding, so check them in
    # parallel first. Each verdict is also cached beside its file for the next run.
    def verdict(path: Path) -> str | BadSample:
        try:
            return _image_verdict(path)
        except BadSample as exc:
            return exc

    images = list({files[r.image_object] for r in records if r.image_object in files})
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        verdicts = dict(zip(images, pool.map(verdict, images), strict=True))

    for record in records:
        image = files.get(record.image_object)
        label = files.get(record.label_object or "")
        if image is None:
            skip(record, "missing_image", missing.get(record.image_object, "not downloaded"))
            continue
        if label is None:
            skip(record, "missing_label", missing.get(record.label_object or "", "no label object"))
            continue
        try:
            boxes = parse_label_file(label.read_bytes())
            suffix = verdicts[image]
            if isinstance(suffix, BadSample):
                raise suffix
        except BadSample as exc:
            skip(record, exc.reason, exc.detail)
            continue
        split = splits[record.id]
        stem = safe_stem(record.id)
        _place(image, root / "images" / split / f"{stem}{suffix}")
        (root / "labels" / split / f"{stem}.txt").write_text("\n".join(b.line() for b in boxes) + "\n")
        result.splits[record.id] = split
        result.classes[record.id] = sorted({b.cls for b in boxes})
        instances[split].update(CLASS_NAMES[b.cls] for b in boxes)

    result.counts = {s: sum(1 for v in result.splits.values() if v == s) for s in ("train", "val")}
    result.skipped = dict(skipped)
    result.instances = {s: dict(c) for s, c in instances.items()}
    result.data_yaml.write_text(
        yaml.safe_dump(
            {
                "path": str(root.absolute()),
                "train": "images/train",
                "val": "images/val",
                "nc": len(CLASS_NAMES),
                "names": dict(enumerate(CLASS_NAMES)),
            },
            sort_keys=False,
        )
    )
    return result
