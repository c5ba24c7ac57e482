"""Pytest plugin: the real control plane (`control_plane`), the process kubelet (`kubelet`), Kueue's
manager (`kueue`), fresh namespaces.

Loaded from tests/conftest.py. The control plane and the kubelet start lazily, once per session, on the
first test that asks for them; the binaries are built by build.sh on first use (20-25 min) and cached
outside the repo.
"""

from __future__ import annotations

import re
import secrets
import signal
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.controlplane.kubelet import Kubelet
from tests.controlplane.kueue import KueueManager
from tests.controlplane.kueue import build as build_kueue
from tests.controlplane.server import ControlPlane, build_binaries
from tests.controlplane.util import wait_for

__all__ = ["ControlPlane", "KueueManager", "Kubelet", "control_plane", "kubelet", "kueue", "namespace"]

_started: list[ControlPlane] = []
_kueues: list[KueueManager] = []


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


@pytest.fixture(scope="session")
def kubelet(control_plane: ControlPlane) -> Iterator[Kubelet]:
    """The process kubelet of the cluster's one Node (see tests/controlplane/kubelet)."""
    node = Kubelet(control_plane, root=control_plane.workdir / "kubelet").start()
    try:
        yield node
    finally:
        node.stop()
    if node.errors:  # a bug of the kubelet, not of the code under test
        raise RuntimeError("process kubelet errors:\n" + "\n".join(node.errors))


@pytest.fixture(scope="session")
def kueue(control_plane: ControlPlane) -> Iterator[KueueManager]:
    """Kueue's real manager (tests/controlplane/kueue) with its CRDs, against the control plane; built by
    kueue/build.sh on first use (about 4 min) and cached beside the control plane's binaries."""
    workdir = control_plane.workdir / "kueue"
    workdir.mkdir(exist_ok=True)
    manager = KueueManager(control_plane, build_kueue(workdir / "build.log"), workdir)
    try:
        manager.start()
        _kueues.append(manager)
        yield manager
    finally:
        manager.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, ready for Pods (its "default" ServiceAccount and root CA ConfigMap exist).
    Deleted afterwards: the namespace controller removes what is left, and the kubelet stops its Pods."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-") or "t"
    name = f"{base}-{secrets.token_hex(3)}"
    with control_plane.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name}})

        def ready() -> bool:
            sas = core.list_namespaced_service_account(name, field_selector="metadata.name=default").items
            cms = core.list_namespaced_config_map(name, field_selector="metadata.name=kube-root-ca.crt").items
            return bool(sas and cms)

        wait_for(ready, 30, f"namespace {name}: the default ServiceAccount and kube-root-ca.crt")
        yield name
        core.delete_namespace(name, propagation_policy="Background")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for cp in _started:
        cached = "cached binaries" if cp.binaries_were_cached else "binaries built this session"
        terminalreporter.write_line(
            f"control plane: started in {cp.start_seconds:.2f} s ({cached}; build.sh took "
            f"{cp.build_seconds:.1f} s; binaries in {cp.bin_dir})"
        )
    for manager in _kueues:
        terminalreporter.write_line(
            f"kueue: started in {manager.start_seconds:.2f} s (the manager ready {manager.ready_seconds:.2f} s "
            f"after its spawn, the rest installing its CRDs; {manager.folder})"
        )
