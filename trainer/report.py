"""The run report: structured step logs, the full JSON report and the compact result for Kubernetes."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.db import redact
from trainer.files import write_text_atomic

log = logging.getLogger("trainer")
TERMINATION_LIMIT = 4096


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    for noisy in ("ultralytics", "urllib3", "google", "asyncio", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def logfmt(**fields: Any) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        s = str(v)
        return json.dumps(s) if (" " in s or "=" in s or not s) else s

    return " ".join(f"{k}={fmt(v)}" for k, v in fields.items())


@dataclass
class RunReport:
    run_id: str
    mode: str
    status: str = "Running"
    reason: str = ""
    message: str = ""
    preflight: dict[str, float] = field(default_factory=dict)  # check -> seconds
    selection: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    champion: dict[str, Any] | None = None
    promotion: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    @contextmanager
    def step(self, name: str, **fields: Any):
        """Times a step and logs one line for it with the counts it adds to `fields`."""
        t0 = time.perf_counter()
        extra: dict[str, Any] = dict(fields)
        try:
            yield extra
        finally:
            seconds = time.perf_counter() - t0
            self.timings[name] = round(self.timings.get(name, 0.0) + seconds, 3)
            log.info(logfmt(step=name, run=self.run_id, seconds=round(seconds, 3), **extra))

    def fail(self, reason: str, message: str) -> None:
        self.status, self.reason, self.message = "Failed", reason, " ".join(redact(message).split())

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "started"}
        d["timings"]["total"] = round(time.time() - self.started, 3)
        return d

    def decision_line(self) -> str:
        """What the gate decided and why, in one line: the version, champion and challenger on the same
        validation images, and the per-class change, e.g. `decision: promoted v2 over v1: mAP50 0.612 ->
        0.724 on the same 48 validation images (24 from earlier runs); Plastic +0.62, Glass -0.02`."""
        p, m, champ = self.promotion, self.metrics, self.champion or {}
        version, old = self.model.get("version") or "?", champ.get("version")
        new_map = _num(m.get("map50"))
        val, history = self.data.get("val", 0), self.selection.get("history_val", 0)
        images = f"{val} validation images" + (f" ({history} from earlier runs)" if history else "")
        outcome = p.get("outcome") or ("promoted" if p.get("promoted") else "refused")
        reason = " ".join(str(p.get("reason", "")).split())
        if outcome == "promoted":
            head = f"promoted {version}" + (f" over {old}" if old else "")
        elif outcome == "refused":
            head = f"refused {version}, {p.get('latest') or 'nothing'} stays latest"
        else:
            head = f"{version} not promoted, latest is {p.get('latest') or 'nothing'}"
        if not old:
            return f"decision: {head}: {reason}; mAP50 {new_map:.3f} on {images}"
        figures = f"mAP50 {_num(champ.get('map50')):.3f} -> {new_map:.3f} on the same {images}"
        # A promotion by the gate is explained by its figures; any other outcome also by its reason.
        why = "" if outcome == "promoted" and p.get("mode") == "gate" else f"{reason}; "
        return f"decision: {head}: {why}{figures}; {class_changes(champ, m)}"

    def compact(self) -> dict[str, Any]:
        """The contract's result (docs/CONTRACTS.md): what the operator copies into status."""
        m = self.metrics
        ds = self.data
        result = {
            "status": self.status,
            "reason": self.reason,
            "message": self.message[:512],
            "modelVersion": self.model.get("version"),
            "modelUri": self.model.get("uri"),
            "baseVersion": self.model.get("base_version"),
            "promoted": bool(self.promotion.get("promoted", False)),
            "promotionReason": " ".join(str(self.promotion.get("reason", "")).split())[:256],
            "metrics": {
                "mAP50": m.get("map50"),
                "mAP50_95": m.get("map50_95"),
                "precision": m.get("precision"),
                "recall": m.get("recall"),
            }
            if m
            else None,
            "championMAP50": (self.champion or {}).get("map50"),
            "dataset": {
                "selected": self.selection.get("selected", 0),
                "new": self.selection.get("new", 0),
                "replayed": self.selection.get("replayed", 0),
                "historyVal": self.selection.get("history_val", 0),
                "train": ds.get("train", 0),
                "val": ds.get("val", 0),
                "skipped": sum((ds.get("skipped") or {}).values()),
            },
            "epochs": {
                "completed": self.training.get("epochs_completed", 0),
                "requested": self.training.get("epochs", 0),
                "earlyStopped": bool(self.training.get("early_stopped", False)),
                "resumedFromEpoch": self.training.get("resumed_from_epoch"),
            },
        }
        return result

    def write(self, report_path: Path | None, termination_log: Path | None) -> None:
        full = json.dumps(self.as_dict(), default=str, sort_keys=True)
        print(full, flush=True)
        if report_path:
            write_text_atomic(report_path, full)
        if termination_log:
            compact = json.dumps(self.compact(), default=str, separators=(",", ":"))
            if len(compact.encode()) > TERMINATION_LIMIT:
                compact = json.dumps(
                    {
                        "status": self.status,
                        "reason": self.reason,
                        "message": self.message[:300],
                        "modelVersion": self.model.get("version"),
                    }
                )
            try:
                termination_log.write_text(compact)
            except OSError as exc:
                log.warning(logfmt(event="termination_log_unwritable", path=termination_log, error=exc))


def _num(value: Any) -> float:
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0


def class_changes(before: dict, after: dict, quiet: float = 0.01) -> str:
    """AP50 change per class, largest first: `Plastic +0.62, Glass -0.02, others within 0.01`."""
    old, new = before.get("per_class") or {}, after.get("per_class") or {}
    deltas = {
        name: _num((new.get(name) or {}).get("ap50")) - _num((old.get(name) or {}).get("ap50"))
        for name in sorted(set(old) | set(new))
    }
    moved = sorted((d for d in deltas.items() if abs(d[1]) >= quiet), key=lambda d: (-abs(d[1]), d[0]))
    parts = [f"{name} {delta:+.2f}" for name, delta in moved]
    if len(moved) < len(deltas):
        parts.append(f"{'others' if moved else 'every class'} within {quiet}")
    return "AP50 per class: " + (", ".join(parts) if parts else "no classes measured")
