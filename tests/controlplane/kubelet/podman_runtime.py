"""A runtime of the test kubelet that runs the real images with podman, as a cluster's container runtime
runs them.

The kubelet does its part as for any runtime (volumes as host folders, the ServiceAccount token, the
environment with Secrets and ConfigMaps resolved, the termination-message file it reads back); the Pod's
mapping to `podman run` is tests/images/podman_args.run_command, the one the image tests use:
securityContext (--user, --read-only, capabilities, no-new-privileges, seccomp, the runAsNonRoot check
against the image's USER), emptyDir as a 0777 folder (or tmpfs; medium Memory at /dev/shm sizes
--shm-size), the termination message path, resources.limits (--memory, --cpus). Nothing is pulled
(--pull never): an image that is not built here cannot start. The network is the host's, so containers
reach the test API server, PostgreSQL and the GCS emulator on 127.0.0.1 (as the process runtime does).
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from tests.controlplane.kubelet.runtime import CreateContainerError, image_repository
from tests.controlplane.kubelet.spec import ContainerSpec
from tests.images.podman import Container as PodmanContainer
from tests.images.podman import Exit, Podman
from tests.images.podman_args import run_command
from tests.images.podspec import PodSpecError


class Running:
    """A podman container as the kubelet's `Container`: exit codes, signals, and whether it was OOM-killed."""

    def __init__(self, container: PodmanContainer) -> None:
        self.container = container
        self.id = f"podman://{container.launch.name}"
        self.pid: int | None = None  # its processes live in podman's namespaces, not the test's
        self._lock = threading.Lock()

    @property
    def exit(self) -> Exit | None:
        return self.container.exit

    @property
    def oom_killed(self) -> bool:
        return bool(self.exit and self.exit.oom_killed)

    def wait(self, timeout: float | None) -> int | None:
        proc = self.container.proc
        assert proc is not None
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        with self._lock:  # the exit is read (and the container removed) once, whoever waits
            return self.container.wait(0).exit_code

    def signal(self, sig: int) -> bool:
        if self.container.proc is None or self.container.proc.poll() is not None:
            return False
        # `podman kill`, not a signal to `podman run`: SIGKILL cannot be forwarded to the container.
        self.container.podman("kill", "--signal", str(int(sig)), self.container.launch.name, check=False)
        return True


class PodmanRuntime:
    name = "podman"

    def __init__(self, podman: Podman, disk_backing: str = "folder") -> None:
        self.podman = podman
        self.disk_backing = disk_backing
        self.env: dict[str, dict[str, str]] = {}  # by namespace: what the cluster adds

    def configure(self, namespace: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        """Add `env` to this namespace's containers (`cwd` is the process runtime's; an image has its own)."""
        self.env[namespace] = dict(env or {})

    def forget(self, namespace: str) -> None:
        self.env.pop(namespace, None)

    def image_id(self, image: str) -> str:
        found = self.podman("image", "inspect", "--format", "{{.Id}}", image, check=False).strip()
        return f"{image_repository(image)}@sha256:{found}" if found else ""

    def start(self, spec: ContainerSpec) -> Running:
        if not spec.pod_object or spec.pod_dir is None:
            raise CreateContainerError("the podman runtime needs the Pod (ContainerSpec.pod_object, pod_dir)")
        if not self.podman.image_exists(spec.image):
            raise CreateContainerError(
                f'image "{spec.image}" is not present and nothing is pulled here: build it with '
                "scripts/build-images.sh (ErrImageNeverPull)"
            )
        namespace = spec.pod.split("/", 1)[0]
        term = spec.mounts[-1].host_path  # spec.mounts ends with the termination message file
        try:
            launch = run_command(
                spec.pod_object,
                spec.name,
                env=self.env.get(namespace, {}) | spec.env,
                pod_dir=spec.pod_dir,
                image_user=self.podman.image_user(spec.image),
                volumes=spec.volume_dirs,
                disk_backing=self.disk_backing,
                network="host",
                attempt=spec.restarts,
                termination_file=term,
            )
        except PodSpecError as e:
            raise CreateContainerError(str(e)) from e
        try:
            return Running(self.podman.start(launch, spec.log_path))
        except OSError as e:
            raise CreateContainerError(f"podman run failed: {e}") from e
