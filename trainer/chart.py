"""A PNG of mAP50 per class across versions, stored next to each model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from trainer import CLASS_NAMES


def class_series(versions: Sequence, name: str) -> list[float]:
    """AP50 of one class in each version; NaN (a gap in the line, not a point at 0) where a version's
    validation images held none of that class, so "not measured" never reads as "learned nothing"."""
    ys = []
    for v in versions:
        ap50 = (v.per_class.get(name) or {}).get("ap50")
        ys.append(math.nan if ap50 is None else float(ap50))
    return ys


def render_per_class_chart(versions: Sequence, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    xs = [v.name for v in versions]
    for name in CLASS_NAMES:
        ax.plot(xs, class_series(versions, name), marker="o", label=name)
    ax.plot(xs, [float(v.map50 or 0.0) for v in versions], color="black", linewidth=2.5, label="all (mAP50)")
    for i, v in enumerate(versions):
        if v.promoted:
            ax.axvline(i, color="grey", alpha=0.15, linewidth=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("AP50")
    ax.set_title("AP50 per class across versions (shaded: promoted; no point: class not validated)")
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
