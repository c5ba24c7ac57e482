"""Write a YOLO dataset folder from cached files: only valid samples, never a path outside the folder."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from trainer import CLASS_NAMES
from trainer.files import write_text_atomic
from trainer.images import ImageInfo, check_image
from trainer.labels import BadSample, read_label
from trainer.parallel import bounded_map
from trainer.plan import Candidate, plan_dataset
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
    backgrounds: dict[str, int] = field(default_factory=dict)  # split -> images written with no boxes
    altered: dict[str, int] = field(default_factory=dict)  # what Ultralytics' rules change, counted
    written: dict[str, tuple[str, int]] = field(default_factory=dict)  # "split/file" -> (id, boxes)


# Bumped whenever the image rules change: verdicts cached under older rules are checked again.
VERDICT_RULES = 2


def _image_verdict(path: Path) -> ImageInfo:
    """Checks an image once per cached file (the cache key includes the generation)."""
    ok, bad = path.with_name(path.name + ".ok"), path.with_name(path.name + ".bad")
    for side in (ok, bad):
        try:
            saved = json.loads(side.read_text())  # one open, not a stat and an open: once per image per run
        except (FileNotFoundError, ValueError):
            continue
        if not isinstance(saved, dict) or saved.pop("rules", None) != VERDICT_RULES:
            continue
        try:
            found = ImageInfo(**saved) if side is ok else BadSample(saved["reason"], saved["detail"])
        except (TypeError, KeyError):  # written by another version: check again
            continue
        if isinstance(found, BadSample):
            raise found
        return found
    try:
        info = check_image(path.read_bytes())
    except BadSample as exc:
        # Whole: Jobs may share the cache. The other verdict, if an older rule left one, goes.
        write_text_atomic(
            bad, json.dumps({"rules": VERDICT_RULES, "reason": exc.reason, "detail": exc.detail})
        )
        ok.unlink(missing_ok=True)
        raise
    write_text_atomic(ok, json.dumps({"rules": VERDICT_RULES, **asdict(info)}))
    bad.unlink(missing_ok=True)
    return info


def _place(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def write_dataset(
    root: Path,
    records: Sequence[Record],
    files: Mapping[str, Path],
    train_fraction: float,
    missing: Mapping[str, str] | None = None,
    *,
    allow_background: bool = False,
    background_share: float = 0.1,
) -> DatasetResult:
    """Build root/images/{train,val}, root/labels/{train,val} and root/data.yaml.

    files maps object names to local files. A record whose image or label is missing or invalid, or whose
    image is already in the dataset under another id, is skipped and counted under its reason; the split is
    decided per image (trainer/plan.py). No file name comes from an object name.
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
    altered: Counter[str] = Counter()
    backgrounds: Counter[str] = Counter()

    def skip(record: Record, reason: str, detail: str) -> None:
        skipped[reason] += 1
        if len(result.skipped_examples) < 20:
            result.skipped_examples.append(f"{record.id}: {reason}: {detail}"[:300])

    # Decoding every image is this step's main cost; PIL releases the GIL while decoding, so check them in
    # parallel first. Each verdict is also cached beside its file for the next run.
    def verdict(path: Path) -> ImageInfo | BadSample:
        try:
            return _image_verdict(path)
        except BadSample as exc:
            return exc

    images = list({files[r.image_object] for r in records if r.image_object in files})
    verdicts = dict(zip(images, bounded_map(verdict, images, min(8, os.cpu_count() or 1)), strict=True))

    candidates: list[Candidate] = []
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
            parsed = read_label(label.read_bytes(), allow_empty=allow_background)
            info = verdicts[image]
            if isinstance(info, BadSample):
                raise info
        except BadSample as exc:
            skip(record, exc.reason, exc.detail)
            continue
        candidates.append(Candidate(record, info, parsed))

    plan = plan_dataset(candidates, train_fraction, background_share)
    for record, reason, detail in plan.skipped:
        skip(record, reason, detail)
    for c, split in plan.kept:
        stem = safe_stem(c.record.id)
        image_name = f"{stem}{c.image.suffix}"
        _place(files[c.record.image_object], root / "images" / split / image_name)
        boxes = c.label.boxes
        # An empty file, not a missing one: Ultralytics counts both as background, the empty one explicitly.
        text = "".join(b.line() + "\n" for b in boxes)
        (root / "labels" / split / f"{stem}.txt").write_text(text)
        result.splits[c.record.id] = split
        result.classes[c.record.id] = sorted({b.cls for b in boxes})
        result.written[f"{split}/{image_name}"] = (c.record.id, len(boxes))
        instances[split].update(CLASS_NAMES[b.cls] for b in boxes)
        altered["duplicate_boxes_removed"] += c.label.duplicates_removed
        altered["segments_as_boxes"] += c.label.segments_as_boxes
        altered["jpeg_restored"] += c.image.jpeg_restored
        backgrounds[split] += not boxes

    result.counts = {s: sum(1 for v in result.splits.values() if v == s) for s in ("train", "val")}
    result.skipped = dict(skipped)
    result.instances = {s: dict(c) for s, c in instances.items()}
    result.altered = {k: v for k, v in altered.items() if v}
    result.backgrounds = {s: backgrounds[s] for s in ("train", "val")}
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
