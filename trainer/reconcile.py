"""Ultralytics' own verdicts, read back from its label cache after training and reconciled with ours.

The dataset step applies Ultralytics' rules first (trainer/labels.py, trainer/images.py), so this normally finds
nothing. It is the proof: if a future Ultralytics drops an image or a box that passed our checks, the report
counts it (`ultralytics_rejected`) and the registry does not list it as trained on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ultralytics colours its log prefixes


@dataclass(frozen=True)
class CacheSplit:
    """One split's label cache: the images Ultralytics kept, with their box counts, and its messages."""

    boxes: dict[str, int]  # image file name -> boxes
    messages: tuple[str, ...] = ()


@dataclass
class Reconciliation:
    checked: int = 0  # images whose verdict was read back
    dropped: list[tuple[str, str, str]] = field(default_factory=list)  # (id, split, Ultralytics' message)
    boxes_changed: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (written, trained)
    unavailable: list[str] = field(default_factory=list)  # splits without a readable cache

    def summary(self) -> dict:
        out: dict = {"images_checked": self.checked, "dropped": len(self.dropped)}
        if self.boxes_changed:
            out["boxes_changed"] = len(self.boxes_changed)
        if self.unavailable:
            out["unavailable"] = self.unavailable
        return out


def reconcile(
    written: Mapping[str, tuple[str, int]], caches: Mapping[str, CacheSplit | None]
) -> Reconciliation:
    """written: "split/file name" -> (id, boxes) as the dataset step wrote them."""
    result = Reconciliation()
    for key, (record_id, boxes) in written.items():
        split, _, name = key.partition("/")
        cache = caches.get(split)
        if cache is None:
            if split not in result.unavailable:
                result.unavailable.append(split)
            continue
        result.checked += 1
        if name not in cache.boxes:
            why = next((m for m in cache.messages if name in m), "not in Ultralytics' label cache")
            result.dropped.append((record_id, split, why[:300]))
        elif cache.boxes[name] != boxes:
            result.boxes_changed[record_id] = (boxes, cache.boxes[name])
    return result


def read_label_caches(dataset_root: Path) -> dict[str, CacheSplit | None]:
    """Ultralytics writes labels/<split>.cache beside the label folders when it scans a split."""
    from ultralytics.data.utils import load_dataset_cache_file

    out: dict[str, CacheSplit | None] = {}
    for split in ("train", "val"):
        path = Path(dataset_root) / "labels" / f"{split}.cache"
        try:
            cache = load_dataset_cache_file(path)
            boxes = {Path(lb["im_file"]).name: len(lb["cls"]) for lb in cache["labels"]}
            # Messages name files by absolute path: relative to the dataset folder is what a person can use.
            root = f"{Path(dataset_root).absolute()}/"
            messages = tuple(_ANSI.sub("", str(m)).replace(root, "") for m in cache.get("msgs") or ())
            out[split] = CacheSplit(boxes=boxes, messages=messages)
        except Exception:  # noqa: BLE001 - no cache (nothing to scan) or an unreadable one: say so, not fail
            out[split] = None
    return out
