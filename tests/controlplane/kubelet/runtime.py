"""Container runtimes of the process kubelet: the interface, and a runtime that runs containers as local
processes.

A runtime gets a `ContainerSpec` the kubelet resolved (command, env, mounts, securityContext) and only
starts, signals and waits. `ProcessRuntime` has no images: an image's entrypoint comes from a table
(`IMAGES`, the ENTRYPOINTs of our Dockerfiles) and its "filesystem" is a host folder (the repository, or
one set per namespace with `configure`, e.g. the stand-in trainer). What a process cannot do as a container
does, it approximates: container paths under a mount (the termination message file, /tmp, the
ServiceAccount token) are rewritten to their host folders wherever they appear in the environment or the
arguments; the ServiceAccount token is handed over as $KUBECONFIG (the Kubernetes client's in-cluster
config reads fixed paths under /var/run); `python` is the test interpreter; the process runs as the
kubelet's user (securityContext is resolved, not enforced); no resource limits. The podman runtime
(`podman_runtime.py`) runs the real image from the same spec and mounts instead of rewriting.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tests.controlplane import certs
from tests.controlplane.kubelet.spec import SERVICE_ACCOUNT_DIR, ContainerSpec, Mount
from tests.controlplane.server import die_with_parent

ROOT = Path(__file__).resolve().parents[3]
# Image repository (no tag) -> ENTRYPOINT, from Dockerfile.operator and Dockerfile.trainer.
IMAGES: dict[str, tuple[str, ...]] = {
    "ghcr.io/waste-detection/operator": ("python", "-m", "waste_operator"),
    "ghcr.io/waste-detection/trainer": ("python", "-m", "trainer"),
}
INHERITED_ENV = (
    "PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE", "PYTHONDONTWRITEBYTECODE", "XDG_CACHE_HOME",
)  # fmt: skip


class CreateContainerError(Exception):
    """The runtime cannot create the container (the kubelet's CreateContainerError)."""


class Container(Protocol):
    id: str  # containerID as the Pod status shows it
    pid: int | None

    def wait(self, timeout: float | None) -> int | None:
        """The exit code (128+N for signal N), or None when still running after `timeout` seconds."""

    def signal(self, sig: int) -> bool:
        """Sends `sig` to the container's processes; False when it is not running."""


class Runtime(Protocol):
    name: str

    def image_id(self, image: str) -> str:
        """The imageID the status shows once the image is present."""

    def start(self, spec: ContainerSpec) -> Container:
        """Creates and starts the container; raises CreateContainerError."""


def image_repository(image: str) -> str:
    """The image name without tag or digest."""
    name = image.split("@", 1)[0]
    head, _, tail = name.rpartition(":")
    return head if head and "/" not in tail else name


def rewrite(value: str, mounts: tuple[Mount, ...]) -> str:
    """`value` with a leading container path under one of `mounts` replaced by its host path."""
    for m in sorted(mounts, key=lambda m: len(m.container_path), reverse=True):
        cp = m.container_path.rstrip("/")
        if value == cp or value.startswith(cp + "/"):
            return str(m.host_path) + value[len(cp) :]
    return value


@dataclass
class Profile:
    """What the process runtime treats as the images' contents in one namespace."""

    cwd: Path = ROOT
    env: dict[str, str] = field(default_factory=dict)


class Process:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid: int | None = proc.pid
        self.id = f"process://{proc.pid}"
        self._lock = threading.Lock()

    def wait(self, timeout: float | None) -> int | None:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return code if code >= 0 else 128 - code

    def signal(self, sig: int) -> bool:
        with self._lock:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)  # the whole process group, as a container's cgroup
            return True


class ProcessRuntime:
    name = "process"

    def __init__(
        self, python: str = sys.executable, images: dict[str, tuple[str, ...]] | None = None
    ) -> None:
        self.python = python
        self.images = dict(IMAGES if images is None else images)
        self.profiles: dict[str, Profile] = {}

    def configure(self, namespace: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        """Run this namespace's containers from `cwd` (the images' contents) with `env` added."""
        self.profiles[namespace] = Profile(Path(cwd or ROOT), dict(env or {}))

    def forget(self, namespace: str) -> None:
        self.profiles.pop(namespace, None)

    def image_id(self, image: str) -> str:
        return f"process://{image_repository(image)}"

    def argv(self, spec: ContainerSpec) -> list[str]:
        command = list(spec.command or ())
        if not command:
            entrypoint = self.images.get(image_repository(spec.image))
            if entrypoint is None:
                raise CreateContainerError(
                    f'the process runtime has no entrypoint for image "{spec.image}" (known: '
                    f"{', '.join(sorted(self.images))}): give the container a command"
                )
            command = list(entrypoint)
        argv = [rewrite(a, spec.mounts) for a in (*command, *(spec.args or ()))]
        if argv[0] in ("python", "python3"):
            argv[0] = self.python
        return argv

    def environment(self, spec: ContainerSpec, profile: Profile) -> dict[str, str]:
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        env |= profile.env
        env |= {k: rewrite(v, spec.mounts) for k, v in spec.env.items()}
        tmp = next((m for m in spec.mounts if m.container_path.rstrip("/") == "/tmp"), None)
        if tmp is not None:
            env["TMPDIR"] = str(tmp.host_path)
        token = next((m for m in spec.mounts if m.container_path.rstrip("/") == SERVICE_ACCOUNT_DIR), None)
        if token is not None and "KUBECONFIG" not in spec.env:
            env["KUBECONFIG"] = str(self._kubeconfig(spec, token.host_path))
        return env

    @staticmethod
    def _kubeconfig(spec: ContainerSpec, token_dir: Path) -> Path:
        """What a client's in-cluster configuration reads, as a kubeconfig: the API server from the
        `kubernetes` Service variables, the projected CA and token files (the token file is read, not
        copied, so a refreshed token is used)."""
        server = f"https://{spec.env['KUBERNETES_SERVICE_HOST']}:{spec.env['KUBERNETES_SERVICE_PORT']}"
        namespace = (token_dir / "namespace").read_text() if (token_dir / "namespace").exists() else None
        return certs.write_kubeconfig(
            spec.log_path.parent / "kubeconfig",
            server,
            token_dir / "ca.crt",
            "pod",
            token_file=token_dir / "token",
            namespace=namespace,
        )

    def start(self, spec: ContainerSpec) -> Process:
        namespace = spec.pod.split("/", 1)[0]
        profile = self.profiles.get(namespace) or Profile()
        argv = self.argv(spec)
        cwd = rewrite(spec.working_dir, spec.mounts) if spec.working_dir else None
        if cwd is None or cwd == spec.working_dir:  # not under a mount: the "image" folder
            cwd = str(profile.cwd)
        env = self.environment(spec, profile)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_path.open("ab") as out:
            try:
                proc = subprocess.Popen(
                    die_with_parent(argv),
                    cwd=cwd,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as e:
                raise CreateContainerError(f"failed to start {argv[0]}: {e}") from e
        return Process(proc)


def stop(container: Container, grace: float) -> int:
    """SIGTERM, then SIGKILL after `grace` seconds, as the kubelet stops a container; the exit code."""
    container.signal(signal.SIGTERM)
    code = container.wait(grace)
    if code is None:
        container.signal(signal.SIGKILL)
        code = container.wait(10)
    return 137 if code is None else code
