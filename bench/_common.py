"""Shared by the benchmarks: where the repository is, what machine ran them, and RESULTS.md sections."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    # Appended, not prepended: the repository's operator/ folder must not shadow the standard library.
    sys.path.append(str(REPO))
RESULTS = REPO / "bench" / "RESULTS.md"


def waste6_dev() -> Path:
    """../shared/data/waste6-dev next to the repository (or next to the folder of git worktrees), or the
    copy a GPU check carries in the ignored folder .gl/waste6-dev."""
    for candidate in (
        REPO / ".gl" / "waste6-dev",
        REPO.parent / "shared" / "data" / "waste6-dev",
        REPO.parent.parent / "shared" / "data" / "waste6-dev",
    ):
        if candidate.is_dir():
            return candidate
    return REPO.parent / "shared" / "data" / "waste6-dev"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    gpu = ""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            gpu = ", GPU " + "; ".join(out.stdout.split("\n")).strip("; ")
    except (OSError, subprocess.TimeoutExpired):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}){gpu}, load {load:.1f} at start"


def commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "trainer"], capture_output=True, text=True
        ).stdout.strip()
        return sha + ("+dirty(trainer)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def update_results(key: str, text: str) -> None:
    """Replaces (or appends) the section between <!-- key:start --> and <!-- key:end --> in RESULTS.md."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    current = (
        RESULTS.read_text()
        if RESULTS.exists()
        else "# Benchmark results\n\nWritten by the scripts in bench/; see bench/README.md.\n"
    )
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(current):
        current = pattern.sub(lambda _: block, current)
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(current)
