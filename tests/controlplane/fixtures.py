"""Pytest plugin: a real control plane (`control_plane`), fresh namespaces and the Job runner.

Loaded from tests/conftest.py. The control plane starts lazily, once per session, on the first test that
asks for it; the binaries are built by build.sh on first use (10-20 min) and cached outside the repo.
"""

from __future__ import annotations

import re
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.controlplane.jobrunner import JobRunner
from tests.controlplane.server import ControlPlane, build_binaries

__all__ = ["ControlPlane", "JobRunner", "control_plane", "job_runner", "namespace"]

_started: list[ControlPlane] = []


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


def _sigterm_to_exit() -> None:
    """Turn SIGTERM into an interrupt, so pytest stops and fixture teardown stops the processes."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    workdir = tmp_path_factory.mktemp("controlplane")
    t0 = time.monotonic()
    wall0 = time.time()
    bin_dir = build_binaries(workdir / "build.log")
    build_seconds = time.monotonic() - t0
    _sigterm_to_exit()
    cp = ControlPlane(bin_dir, workdir)
    cp.build_seconds = build_seconds
    cp.binaries_were_cached = (bin_dir / "kube-apiserver").stat().st_mtime < wall0
    try:
        cp.start()
        _started.append(cp)
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test. Not deleted afterwards: without the namespace controller a deleted
    namespace would stay Terminating forever; the whole etcd goes away with the session."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-") or "t"
    name = f"{base}-{secrets.token_hex(3)}"
    with control_plane.api_client() as api:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def job_runner(control_plane: ControlPlane) -> Iterator[JobRunner]:
    """Plays the Job controller and kubelet for Jobs labelled managed-by=waste-detection-operator."""
    runner = JobRunner(control_plane, cwd=Path(__file__).resolve().parents[2])
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()
    if runner.errors:  # a bug in the emulation, not in the code under test
        raise RuntimeError("JobRunner worker errors:\n" + "\n".join(runner.errors))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for cp in _started:
        cached = "cached binaries" if cp.binaries_were_cached else "binaries built this session"
        terminalreporter.write_line(
            f"control plane: started in {cp.start_seconds:.2f} s ({cached}; build.sh took "
            f"{cp.build_seconds:.1f} s; binaries in {cp.bin_dir})"
        )
