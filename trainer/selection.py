"""Which records a run trains on: pure rules, no I/O."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from trainer.feedback import VERIFIED_STATUSES


@dataclass(frozen=True, slots=True)  # one per record: no __dict__ each (20,000 of them in a large run)
class Record:
    """One Inference API record (or one dataset sample) as the trainer sees it."""

    id: str
    image_object: str
    label_object: str | None
    status: str = "verified"
    detections: int = 1
    updated_at: datetime | None = None
    split_hint: str | None = None  # a dataset's own train/val folder, kept when present
    source: str | None = None  # dataset mode: the dataset URI whose store holds the objects


@dataclass
class SelectionResult:
    selected: list[Record]
    counts: dict[str, int] = field(default_factory=dict)
    cutoff: datetime | None = None


def select(records: Iterable[Record], *, only_verified: bool, min_detections: int) -> SelectionResult:
    """Keep the records to train on and count each reason a record was left out.

    Rejected and pending records never train: with --only-verified only verified or corrected ones do;
    without it, pending (unreviewed) ones are allowed too, as the original job did. With --only-verified,
    what is selected from the records since the cutoff is what trainer.feedback counts as new samples (the
    operator's TrainingSchedule counts with the same rule; tests/integration/test_feedback_rule.py).
    """
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    selected: list[Record] = []
    for r in records:
        counts["candidates"] += 1
        if r.id in seen:
            counts["duplicate_id"] += 1
            continue
        seen.add(r.id)
        if r.status == "rejected":
            counts["rejected"] += 1
        elif only_verified and r.status not in VERIFIED_STATUSES:
            counts["not_verified"] += 1
        elif r.detections < min_detections:
            counts["too_few_detections"] += 1
        elif not r.label_object:
            counts["no_label"] += 1
        else:
            selected.append(r)
    counts["selected"] = len(selected)
    stamps = [r.updated_at for r in selected if r.updated_at is not None]
    return SelectionResult(selected=selected, counts=dict(counts), cutoff=max(stamps) if stamps else None)


def split_of(record_id: str, train_fraction: float) -> str:
    """A stable split: the same id lands in the same split on every run, whatever else is selected."""
    digest = hashlib.sha256(record_id.encode("utf-8", "surrogateescape")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "train" if u < train_fraction else "val"


def assign_splits(hints: Mapping[str, str | None], train_fraction: float) -> dict[str, str]:
    """key -> 'train'|'val' for keys (image content hashes) with an optional split hint each.

    A hint wins (a dataset's own folder, a replayed or held-out image); otherwise the hash of the key decides,
    so an image keeps its split across runs whatever else is selected. Guarantees one validation sample
    when there are at least two keys, so a run can always be evaluated.
    """
    splits = {k: (h if h in ("train", "val") else split_of(k, train_fraction)) for k, h in hints.items()}
    # The fallbacks move a hashed key, never one whose split was given (a held-out one stays held out).
    movable = [k for k, h in hints.items() if h not in ("train", "val")] or list(splits)
    if len(splits) >= 2 and "val" not in splits.values():
        first = min(movable, key=lambda k: hashlib.sha256(k.encode("utf-8", "surrogateescape")).digest())
        splits[first] = "val"
    if len(splits) >= 2 and "train" not in splits.values():
        last = max(movable, key=lambda k: hashlib.sha256(k.encode("utf-8", "surrogateescape")).digest())
        splits[last] = "train"
    return splits


def fill(order: Sequence[str], want: int, fetch: Callable[[list[str]], Iterable[Record]]) -> list[Record]:
    """The first `want` ids of `order` that `fetch` still returns (a record rejected since it was trained on
    is not), in order. Fetches in batches, so a pool of 100,000 costs a few queries, not one per id."""
    got: list[Record] = []
    pos = 0
    while len(got) < want and pos < len(order):
        need = want - len(got)
        batch = list(order[pos : pos + max(2 * need, 100)])
        pos += len(batch)
        found = {r.id: r for r in fetch(batch)}
        got += [found[i] for i in batch if i in found][:need]
    return got


def sample_replay(
    pool: Sequence[tuple[str, Sequence[int]]], count: int, seed: int, exclude: set[str]
) -> list[str]:
    """Pick `count` earlier samples, stratified by class so rare classes stay represented.

    pool holds (id, classes present). Classes take turns, rarest first; each turn draws one not yet
    chosen sample that contains the class. Deterministic for a given seed.
    """
    rng = random.Random(seed)
    candidates = [(i, tuple(sorted(set(c)))) for i, c in pool if i not in exclude]
    if count <= 0 or not candidates:
        return []
    by_class: dict[int, list[str]] = {}
    for i, classes in candidates:
        for c in classes or (-1,):
            by_class.setdefault(c, []).append(i)
    for ids in by_class.values():
        rng.shuffle(ids)
    order = sorted(by_class, key=lambda c: (len(by_class[c]), c))
    chosen: list[str] = []
    taken: set[str] = set()
    while len(chosen) < count and any(by_class.values()):
        for c in order:
            ids = by_class[c]
            while ids and ids[-1] in taken:
                ids.pop()
            if ids and len(chosen) < count:
                pick = ids.pop()
                taken.add(pick)
                chosen.append(pick)
    return chosen
