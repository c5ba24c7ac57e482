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
