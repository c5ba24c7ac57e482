"""A Pod's container run with podman, as a kubelet runs it through its container runtime.

For the test kubelet (it plugs in as a runtime) and the image tests. The kubelet's side stays with the
caller: it reads the Pod, resolves Secrets and ConfigMaps (`podspec.resolve_env` does the rest of the env
rules), prepares the non-emptyDir volumes as host folders (`podspec.write_service_account_files` for the
token), builds the command (`podman_args.run_command`), starts it here, and writes the container's status
from `Exit.state()`: exit code, OOMKilled, start and finish times, the termination message (policy File or
FallbackToLogsOnError, with the kubelet's limits). `Container.stop` sends SIGTERM, then SIGKILL after the
grace period (terminationGracePeriodSeconds by default).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.images.podman_args import Launch, podman_reads
from tests.images.podspec import termination_message

OWNER_LABEL = "io.waste-detection.podman.owner"  # which Podman() started it: clean-up leaves others' alone


@dataclass(frozen=True)
class Exit:
    """How the container ended, as the kubelet reports it in containerStatuses[].state.terminated."""

    exit_code: int
    oom_killed: bool
    started_at: str
    finished_at: str
    message: str

    @property
    def reason(self) -> str:
        if self.oom_killed:
            return "OOMKilled"
        return "Completed" if self.exit_code == 0 else "Error"

    def state(self) -> dict[str, Any]:
        terminated = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }
        if self.message:
            terminated["message"] = self.message
        return {"terminated": terminated}


class Podman:
    """The podman command with the storage and settings scripts/build-images.sh made."""

    def __init__(self, cache_dir: Path, binary: str | None = None, owner: str | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.owner = owner or f"pid-{os.getpid()}"
        self.binary = binary or shutil.which("podman") or "podman"
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(self.cache_dir / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.cache_dir / "storage.conf"),
        }

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        result = subprocess.run(
            [self.binary, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"podman {' '.join(args[:3])} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result.stdout

    def image_exists(self, image: str) -> bool:
        """False means the kubelet's ErrImageNeverPull: nothing is pulled here (--pull never)."""
        result = subprocess.run(
            [self.binary, "image", "exists", image],
            env=self.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        return result.returncode == 0

    def image_user(self, image: str) -> str:
        return self("image", "inspect", "--format", "{{.Config.User}}", image).strip()

    def image_size(self, image: str) -> int:
        return int(self("image", "inspect", "--format", "{{.Size}}", image).strip())

    def start(self, launch: Launch, log_path: Path) -> Container:
        return Container(self, launch, Path(log_path)).start()

    def remove_all(self) -> None:
        """Force-removes every container this Podman started (after a crashed test, for one)."""
        names = self(
            "ps",
            "--all",
            "--filter",
            f"label={OWNER_LABEL}={self.owner}",
            "--format",
            "{{.Names}}",
            check=False,
        ).split()
        for name in names:
            self("rm", "--force", "--time", "0", name, check=False)


class Container:
    """One started container: wait for it, stop it, read its exit; removed once its exit is read."""

    def __init__(self, podman: Podman, launch: Launch, log_path: Path) -> None:
        self.podman, self.launch, self.log_path = podman, launch, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit: Exit | None = None
        self.started_at = ""  # for containerStatuses[].state.running.startedAt

    def start(self) -> Container:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**self.podman.env}
        env.update((k, v) for k, v in self.launch.env.items() if not podman_reads(k))
        argv = list(self.launch.argv)
        argv[1:1] = ["--label", f"{OWNER_LABEL}={self.podman.owner}"]  # after "run"
        self.started_at = _rfc3339(None)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.podman.binary, *argv],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> Exit:
        """Blocks until the container exits (subprocess.TimeoutExpired after `timeout` seconds)."""
        if self.exit is not None:
            return self.exit
        assert self.proc is not None, "start() first"
        self.proc.wait(timeout)
        return self._read_exit()

    def stop(self, grace: float | None = None) -> Exit:
        """SIGTERM, then SIGKILL after `grace` seconds (the pod's terminationGracePeriodSeconds by default)."""
        if self.exit is not None:
            return self.exit
        grace = self.launch.grace_seconds if grace is None else grace
        self.podman("stop", "--time", str(int(grace)), self.launch.name, check=False, timeout=grace + 60)
        return self.wait(timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _read_exit(self) -> Exit:
        raw = self.podman("inspect", "--type", "container", self.launch.name, check=False)
        state: dict[str, Any] = {}
        container_id = ""
        with contextlib.suppress(ValueError, IndexError, KeyError):
            found = json.loads(raw)[0]
            state, container_id = found["State"], found["Id"]
        exit_code = int(state.get("ExitCode", self.proc.returncode if self.proc else -1))
        oom_killed = bool(state.get("OOMKilled"))
        if not oom_killed and exit_code == 128 + 9 and container_id:
            oom_killed = oom_killed_in_kernel_log(container_id)
        file_bytes = self.launch.termination_log.read_bytes() if self.launch.termination_log.exists() else b""
        self.exit = Exit(
            exit_code=exit_code,
            oom_killed=oom_killed,
            started_at=_rfc3339(state.get("StartedAt")),
            finished_at=_rfc3339(state.get("FinishedAt")),
            message=termination_message(file_bytes, self.launch.termination_policy, exit_code, self.log()),
        )
        self.podman("rm", "--force", "--time", "0", self.launch.name, check=False)
        return self.exit


def oom_killed_in_kernel_log(container_id: str) -> bool:
    """Whether the kernel's OOM killer killed a process of this container's memory cgroup. podman misses
    these under cgroup v1 on newer kernels (conmon's event registration); the kubelet's OOM watcher
    (cAdvisor) reads the same kernel log."""
    try:
        kernel_log = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(
        "oom-kill:" in line and "oom_memcg=" in line and container_id in line.split("oom_memcg=", 1)[1]
        for line in kernel_log.splitlines()
    )


def _rfc3339(stamp: str | None) -> str:
    """podman's "2026-12-02T10:11:12.123456789Z" (or with an offset) as the API's second-precision UTC."""
    if not stamp:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?", stamp)
    if not match:
        return stamp
    moment = datetime.fromisoformat(match.group(1) + (match.group(2) or "Z").replace("Z", "+00:00"))
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
