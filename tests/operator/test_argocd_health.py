"""The ArgoCD health check of TrainingRun, run with Lua (lupa) on ArgoCD's own test-case format."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

lupa = pytest.importorskip("lupa")

ARGOCD = Path(__file__).resolve().parents[2] / "manifests" / "argocd"
CASES = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]
SCRIPT = (ARGOCD / "health.lua").read_text()


def health(obj: dict) -> dict:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT)
    return dict(result)


@pytest.mark.parametrize("case", CASES, ids=[c["inputPath"] for c in CASES])
def test_health_case(case):
    obj = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    assert health(obj) == case["healthStatus"]


def test_argocd_cm_patch_carries_the_same_script():
    cm = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    assert cm["data"]["resource.customizations.health.training.wastedetection.io_TrainingRun"] == SCRIPT


# The TrainingSchedule's health check, in its own folder with its own cases.
SCHEDULE = ARGOCD / "trainingschedule"
SCHEDULE_CASES = yaml.safe_load((SCHEDULE / "health_test.yaml").read_text())["tests"]
SCHEDULE_SCRIPT = (SCHEDULE / "health.lua").read_text()


@pytest.mark.parametrize("case", SCHEDULE_CASES, ids=[c["inputPath"] for c in SCHEDULE_CASES])
def test_schedule_health_case(case):
    obj = yaml.safe_load((SCHEDULE / case["inputPath"]).read_text())
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    assert dict(lua.execute(SCHEDULE_SCRIPT)) == case["healthStatus"]


def test_argocd_cm_patch_carries_the_schedule_script():
    cm = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    key = "resource.customizations.health.training.wastedetection.io_TrainingSchedule"
    assert cm["data"][key] == SCHEDULE_SCRIPT
