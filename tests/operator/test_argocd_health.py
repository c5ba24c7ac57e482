"""The ArgoCD health check of TrainingRun on ArgoCD's own test-case format: in ArgoCD's Lua engine (gopher-lua
set up as argo-cd's util/lua sets it up, tests/argocd/luahealth) and with lupa (C Lua, all libraries)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import lupa
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "manifests" / "argocd"
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


@pytest.fixture(scope="module")
def luahealth() -> str:
    """The Go program, built from the module proxy on first use and cached (tests/argocd/build.sh)."""
    out = subprocess.run(
        ["bash", str(ROOT / "tests" / "argocd" / "build.sh")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def run_cases(luahealth: str, folder: Path) -> tuple[int, list[dict]]:
    out = subprocess.run([luahealth, str(folder)], capture_output=True, text=True, timeout=60)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, [json.loads(line) for line in out.stdout.splitlines()]


def test_every_case_passes_in_argocds_lua_engine(luahealth):
    code, results = run_cases(luahealth, ARGOCD)
    assert code == 0, [r for r in results if not r["ok"]]
    assert [r["inputPath"] for r in results] == [c["inputPath"] for c in CASES]
    assert all(r["got"] == c["healthStatus"] for r, c in zip(results, CASES, strict=True))


def test_argocds_engine_lacks_the_string_library_that_plain_lua_has(luahealth, tmp_path):
    """Why the check runs in ArgoCD's engine too: a script that works in plain Lua (lupa) can fail there."""
    folder = tmp_path / "argocd"
    shutil.copytree(ARGOCD, folder)
    script = SCRIPT.replace('hs.message = "Training " .. status.progress.text',
                            'hs.message = string.format("Training %s", status.progress.text)')  # fmt: skip
    assert script != SCRIPT
    (folder / "health.lua").write_text(script)
    running = yaml.safe_load((ARGOCD / "testdata" / "running.yaml").read_text())
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(running, recursive=True)
    assert dict(lua.execute(script))["message"] == "Training 12/50"

    code, results = run_cases(luahealth, folder)
    assert code == 1
    [broken] = [r for r in results if not r["ok"]]
    assert broken["inputPath"] == "testdata/running.yaml"
    assert "attempt to index a non-table object(nil) with key 'format'" in broken["error"]


def test_every_schedule_case_passes_in_argocds_lua_engine(luahealth):
    code, results = run_cases(luahealth, SCHEDULE)
    assert code == 0, [r for r in results if not r["ok"]]
    assert [r["got"] for r in results] == [c["healthStatus"] for c in SCHEDULE_CASES]
