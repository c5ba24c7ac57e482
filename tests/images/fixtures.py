"""Pytest plugin: the operator and trainer images, built (or reused) by scripts/build-images.sh.

Loaded from tests/conftest.py. The build runs once per session, on the first test that asks for `images`;
how long it took, and which images it built, is printed at the end of the run. A cold build takes minutes
(the trainer's locked wheels: torch with CUDA), a warm one seconds.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.images.podman import Podman

ROOT = Path(__file__).resolve().parents[2]
BUILD_SH = ROOT / "scripts" / "build-images.sh"
CACHE = Path(
    os.environ.get("WD_IMAGES_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "waste-detection" / "images"
)


def _script_module(name: str):
    """A module of scripts/ (not a package), loaded once."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


lock_images = _script_module("lock_images")
# Cold builds download the trainer's ~4 GB of wheels: the first test using the images gets this long.
BUILD_TIMEOUT = 3600


@dataclass
class Images:
    base: str
    operator: str
    trainer: str
    podman: Podman
    build_seconds: float
    # "base", "operator", "trainer": seconds each took, for those (re)built this session
    built: dict[str, float] = field(default_factory=dict)
    log: str = ""

    def size(self, image: str) -> int:
        return self.podman.image_size(image)


_built: list[Images] = []


@pytest.fixture(scope="session")
def images() -> Iterator[Images]:
    t0 = time.monotonic()
    result = subprocess.run(
        ["bash", str(BUILD_SH)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env={**os.environ, "WD_IMAGES_CACHE": str(CACHE)},
    )
    seconds = time.monotonic() - t0
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-40:])
        raise RuntimeError(f"{BUILD_SH} failed (exit {result.returncode}) after {seconds:.0f} s:\n{tail}")
    refs = dict(line.split("=", 1) for line in result.stdout.split() if "=" in line)
    (CACHE / "last-build.log").write_text(result.stderr)
    built = {
        name: float(match.group(1))
        for name, pattern in (("base", r"base built in (\d+) s"), ("operator", r"waste-operator:\S+ built in (\d+) s"),
                              ("trainer", r"waste-trainer:\S+ built in (\d+) s"))
        if (match := re.search(pattern, result.stderr))
    }  # fmt: skip
    podman = Podman(CACHE)
    found = Images(refs["base"], refs["operator"], refs["trainer"], podman, seconds, built, result.stderr)
    _built.append(found)
    try:
        yield found
    finally:
        podman.remove_all()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for found in _built:
        what = ", ".join(f"{name} built in {s:.0f} s" for name, s in found.built.items()) or "all cached"
        sizes = ", ".join(
            f"{name} {found.size(ref) / 1e6:,.0f} MB"
            for name, ref in (("operator", found.operator), ("trainer", found.trainer))
        )
        terminalreporter.write_line(
            f"images: scripts/build-images.sh took {found.build_seconds:.1f} s ({what}); {sizes}"
        )
