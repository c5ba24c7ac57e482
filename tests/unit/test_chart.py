"""The per-class chart never draws a class a version was not validated on as AP50 0."""

from __future__ import annotations

import math
from types import SimpleNamespace

from trainer.chart import class_series, render_per_class_chart


def _version(name: str, per_class: dict, map50: float = 0.5) -> SimpleNamespace:
    return SimpleNamespace(name=name, per_class=per_class, map50=map50, promoted=True)


def test_a_class_missing_from_a_versions_validation_is_a_gap_and_a_measured_zero_stays_zero(tmp_path):
    v1 = _version("v1", {"Biodegradable": {"ap50": 0.0}, "Glass": {"ap50": 0.96}})  # no Plastic in its val
    v2 = _version("v2", {"Biodegradable": {"ap50": 0.83}, "Glass": {"ap50": 0.85}, "Plastic": {"ap50": 0.72}})
    plastic = class_series([v1, v2], "Plastic")
    assert math.isnan(plastic[0]) and plastic[1] == 0.72
    assert class_series([v1, v2], "Biodegradable") == [0.0, 0.83]
    out = render_per_class_chart([v1, v2], tmp_path / "chart.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
