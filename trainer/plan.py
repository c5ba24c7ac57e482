"""Which checked samples go into the dataset, and in which split: pure rules, no I/O.

- One image, one sample: records whose photos have the same bytes (the same photo under two inference ids)
  are one image; the first is kept, the others are skipped as `duplicate_image`.
- The split is decided per image, by a hash of its content: the same photo never lands in both train and val,
  and it keeps its split across runs. A given split wins (a dataset's own folder, a replayed image stays in
  training, a held-out one in validation; held-out wins when a photo is both).
- Background images (a label file with no boxes, accepted with `--min-detections 0`) are at most
  `background_share` of the images written; those beyond it, by content hash, are skipped as
  `background_over_cap`. Ultralytics' guidance is 0-10 % backgrounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from trainer.images import ImageInfo
from trainer.labels import LabelFile
from trainer.selection import Record, assign_splits

_SPLIT_PRIORITY = {"val": 2, "train": 1}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A record whose image and label both passed their checks."""

    record: Record
    image: ImageInfo
    label: LabelFile

    @property
    def background(self) -> bool:
        return not self.label.boxes


@dataclass
class Plan:
    kept: list[tuple[Candidate, str]] = field(default_factory=list)  # with its split, in input order
    skipped: list[tuple[Record, str, str]] = field(default_factory=list)  # record, reason, detail


def background_cap(boxed: int, share: float) -> int:
    """How many backgrounds may join `boxed` images so that they are at most `share` of the whole."""
    if share >= 1:
        return 1 << 62
    if share <= 0:
        return 0
    return math.floor(share / (1 - share) * boxed + 1e-9)


def plan_dataset(candidates: Sequence[Candidate], train_fraction: float, background_share: float) -> Plan:
    plan = Plan()
    groups: dict[str, list[Candidate]] = {}
    for c in candidates:
        groups.setdefault(c.image.sha256, []).append(c)

    hints: dict[str, str | None] = {}
    chosen: dict[str, Candidate] = {}
    for sha, members in groups.items():
        hint = max((m.record.split_hint for m in members), key=lambda h: _SPLIT_PRIORITY.get(h or "", 0))
        hints[sha] = hint if hint in _SPLIT_PRIORITY else None
        keep = next((m for m in members if m.record.split_hint == hints[sha]), members[0])
        chosen[sha] = keep
        for m in members:
            if m is not keep:
                plan.skipped.append(
                    (m.record, "duplicate_image", f"the same image as {keep.record.id}"[:200])
                )

    boxed = sum(1 for c in chosen.values() if not c.background)
    allowed = background_cap(boxed, background_share)
    backgrounds = sorted(sha for sha, c in chosen.items() if c.background)
    for sha in backgrounds[allowed:]:
        plan.skipped.append(
            (
                chosen.pop(sha).record,
                "background_over_cap",
                f"backgrounds are at most {background_share:.0%} of the images ({allowed} kept)",
            )
        )
        del hints[sha]

    splits = assign_splits(hints, train_fraction)
    plan.kept = [(c, splits[sha]) for sha, c in chosen.items()]
    return plan
