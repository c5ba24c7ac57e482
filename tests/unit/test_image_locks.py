"""The images' lock files agree with pyproject.toml: pinned, hashed, and resolved from today's inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.images.fixtures import _script_module

ROOT = Path(__file__).resolve().parents[2]
lock_images = _script_module("lock_images")
IMAGES = {image.name: image for image in lock_images.IMAGES}
# The images' platform, for requirement markers: CPython 3.11 on linux x86_64.
TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}


def digest_line(text: str) -> str:
    line = next((x for x in text.splitlines() if x.startswith(lock_images.DIGEST_PREFIX)), "")
    return line.removeprefix(lock_images.DIGEST_PREFIX).strip()


@pytest.mark.parametrize("name", IMAGES)
def test_lock_was_resolved_from_todays_pyproject(name):
    image = IMAGES[name]
    assert image.path.exists(), f"{image.path} is missing: run python scripts/lock_images.py"
    assert digest_line(image.path.read_text()) == lock_images.inputs_digest(image), (
        f"{image.path.relative_to(ROOT)} was resolved from other requirements than pyproject.toml's: "
        "run python scripts/lock_images.py"
    )


def test_the_digest_changes_when_a_requirement_changes(tmp_path):
    """The check above can fail: editing one requirement of the image's extra changes the digest."""
    changed = (ROOT / "pyproject.toml").read_text().replace('"kopf==1.45.2"', '"kopf==1.45.1"')
    assert changed != (ROOT / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(changed)
    operator = IMAGES["operator"]
    assert lock_images.inputs_digest(operator, tmp_path / "pyproject.toml") != lock_images.inputs_digest(
        operator
    )
    assert lock_images.inputs_digest(
        IMAGES["trainer"], tmp_path / "pyproject.toml"
    ) == lock_images.inputs_digest(IMAGES["trainer"]), (
        "the trainer does not install kopf: its lock stays valid"
    )


@pytest.mark.parametrize("name", IMAGES)
def test_every_requirement_is_pinned_within_pyprojects_range_and_every_pin_is_hashed(name):
    image = IMAGES[name]
    locked = lock_images.parse_pins(image.path.read_text())
    assert locked, f"{image.path}: no pins found"
    for raw in lock_images.requirements(image):
        req = Requirement(raw)
        if req.marker is not None and not req.marker.evaluate(TARGET):
            continue
        key = canonicalize_name(req.name)
        assert key in locked, f"{image.path.name}: {req.name} (pyproject: {raw}) is not in the lock"
        version = locked[key][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"{image.path.name}: {req.name}=={version} is outside pyproject's {raw!r}"
        )
    for package, (version, hashes) in locked.items():
        assert hashes, f"{image.path.name}: {package}=={version} has no --hash"
        assert all(h.startswith("sha256:") and len(h) == 71 for h in hashes), f"{package}: malformed hash"
    for left_out in image.leave_out:
        assert canonicalize_name(left_out) not in locked, f"{image.path.name} installs {left_out}"


def test_trainer_lock_has_torch_without_cve_2025_32434_and_headless_opencv():
    locked = lock_images.parse_pins(IMAGES["trainer"].path.read_text())
    assert Version(locked["torch"][0]) >= Version("2.6"), "torch < 2.6: CVE-2025-32434"
    assert "opencv-python-headless" in locked and "opencv-python" not in locked
    # The CUDA runtime comes with PyPI's torch wheel through these packages.
    assert any(name.startswith("nvidia-cuda-runtime") for name in locked)


def test_locks_re_resolve_to_themselves_with_uv():
    """uv, with each lock as its preference, resolves pyproject again to exactly the lock (needs PyPI)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lock_images.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
