"""The demo (scripts/demo.sh) tells the product's story, and this test holds it to what it claims: its first
run, on the demo's own generated images and settings (scripts/demo-settings.sh), learns from scratch on CPU
(mAP50 clearly above 0); the feedback run fine-tunes v1 with replay, the gate compares v2 with v1 on the same
validation images, v2 is better there (on Plastic above all, the class the feedback brings) and is promoted;
the output says so in one line per run and names files that exist.

The demo's time is measured in bench/demo.py (bench/RESULTS.md) and the README, not asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.demo import demo_settings
from tests.fixtures.inference_api import REPO

# v1 measured 0.641 on the 2-core development machine (bench/RESULTS.md, demo section; deterministic for a
# given machine). The bar leaves room for another CPU's arithmetic while still failing a model that learned
# nothing: the demo before issue 18 (60 images, 3 epochs) ended at mAP50 0.000.
V1_MAP50_BAR = 0.45


def _ap50(metrics: dict, name: str) -> float:
    return float(((metrics.get("per_class") or {}).get(name) or {}).get("ap50") or 0.0)


@pytest.mark.slow
def test_the_demo_learns_from_scratch_then_gets_better_with_feedback_and_says_so(tmp_path):
    s = demo_settings()
    assert "yolov8n.yaml" in s["TRAIN"] and "--incremental" in s["FEEDBACK_TRAIN"]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(REPO),
        "WD_SKIP_SETUP": "1",
        "TRAINER_LOCAL_DIR": str(tmp_path),
    }
    proc = subprocess.run(
        ["bash", REPO / "scripts" / "demo.sh"], env=env, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    reports = tmp_path / "demo-reports"
    v1 = json.loads((reports / "run1-v1.json").read_text())
    v2 = json.loads((reports / "run2-v2.json").read_text())
    print(
        f"demo: v1 mAP50 {v1['metrics']['map50']:.3f} (train {v1['timings']['train']:.0f} s); "
        f"{v2['promotion']['summary']} (train {v2['timings']['train']:.0f} s)"
    )

    # 1. v1 learned from scratch, and became latest.
    assert v1["model"]["version"] == "v1" and v1["model"]["base_version"] is None
    assert v1["promotion"]["promoted"] is True
    assert v1["metrics"]["map50"] >= V1_MAP50_BAR, v1["metrics"]

    # 2. v2: fine-tuned from v1 with v1's images replayed and v1's validation images kept, compared with v1 on
    # the same validation images, better there, and promoted by the gate (not forced).
    assert v2["model"]["version"] == "v2" and v2["model"]["base_version"] == "v1"
    assert v2["selection"]["replayed"] > 0 and v2["selection"]["history_val"] > 0, v2["selection"]
    assert v2["champion"]["version"] == "v1"
    assert v2["promotion"]["mode"] == "gate" and v2["promotion"]["promoted"] is True, v2["promotion"]
    assert v2["metrics"]["map50"] > v2["champion"]["map50"]
    assert _ap50(v2["metrics"], "Plastic") > _ap50(v2["champion"], "Plastic")

    # 3. One line per run says what was decided and why; the end of the output says where to look.
    assert v1["promotion"]["summary"].startswith("decision: promoted v1: first version")
    assert v2["promotion"]["summary"].startswith(
        f"decision: promoted v2 over v1: mAP50 {v2['champion']['map50']:.3f} -> {v2['metrics']['map50']:.3f} "
        f"on the same {v2['data']['val']} validation images"
    )
    assert v1["promotion"]["summary"] in out and v2["promotion"]["summary"] in out
    models = tmp_path / "models-bucket" / "models"
    for path in (models / "v2" / "map50_per_class.png", reports / "run1-v1.json", reports / "run2-v2.json"):
        assert str(path) in out and path.is_file(), path
    assert (models / "latest").is_dir()
    table = out.split("Registered versions", 1)[1]
    assert "v1" in table and "v2" in table
    assert "{" not in out  # a person reads lines, not JSON: the reports stay in their files


def test_the_demo_never_resets_a_folder_it_did_not_create(tmp_path):
    (tmp_path / "registry.sqlite").write_bytes(b"someone's registry")
    proc = subprocess.run(
        ["bash", REPO / "scripts" / "demo.sh"],
        env={"PATH": "/usr/bin:/bin", "WD_SKIP_SETUP": "1", "TRAINER_LOCAL_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert f"error: {tmp_path} holds a registry this demo did not create" in proc.stderr
    assert (tmp_path / "registry.sqlite").read_bytes() == b"someone's registry"
