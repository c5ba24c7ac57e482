"""The promotion gate: a new version replaces the deployed one only if it is not worse. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide_promotion(
    mode: str, champion: dict | None, challenger: dict, *, map50_tolerance: float, class_ap_drop: float
) -> Decision:
    """champion and challenger hold 'map50' and 'per_class' {name: {'ap50': x}} on the same validation set."""
    if mode == "skip":
        return Decision(False, "promotion skipped by request (--promotion skip)")
    if mode == "force":
        return Decision(True, "promotion forced by request (--promotion force)")
    if champion is None:
        return Decision(True, "first version: nothing deployed to compare with")
    new, old = float(challenger.get("map50") or 0.0), float(champion.get("map50") or 0.0)
    if not math.isfinite(new):
        return Decision(False, f"the new model's mAP50 is not a number ({new})")
    if new < old - map50_tolerance:
        return Decision(
            False,
            f"mAP50 {new:.4f} is below the deployed model's {old:.4f} minus the tolerance {map50_tolerance}",
        )
    drops = []
    new_pc, old_pc = challenger.get("per_class") or {}, champion.get("per_class") or {}
    for name in sorted(old_pc):
        before = float(old_pc[name].get("ap50", 0.0))
        after = float(new_pc.get(name, {}).get("ap50", 0.0))
        if before - after > class_ap_drop:
            drops.append(f"{name} {before:.3f}->{after:.3f}")
    if drops:
        return Decision(False, f"class AP50 dropped by more than {class_ap_drop}: " + ", ".join(drops))
    return Decision(True, f"mAP50 {new:.4f} vs deployed {old:.4f}: not worse within {map50_tolerance}")
