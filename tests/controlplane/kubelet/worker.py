"""One Pod's life on the process kubelet: volumes, environment, the container through the runtime,
restarts by restartPolicy, deletion with its grace period, and the status a kubelet writes at each step."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes import client

from tests.controlplane.kubelet import spec as specs
from tests.controlplane.kubelet import status as st
from tests.controlplane.kubelet.runtime import Container, CreateContainerError, stop
from tests.controlplane.kubelet.volumes import VolumeNotReady, prepare_volumes

if TYPE_CHECKING:
    from tests.controlplane.kubelet.kubelet import Kubelet

log = logging.getLogger(__name__)
Obj = dict[str, Any]
FAULT_DELAY = 0.3  # seconds a container runs before a simulated OOM kill or eviction
PULL_BACKOFF = (1.0, 8.0)  # first and longest wait between failing image pulls


class _Terminating(Exception):
    """The Pod is being deleted (or is gone): stop the container and finish."""


class _Stopping(Exception):
    """The kubelet itself stops: leave the Pod as it is."""


class PodWorker(threading.Thread):
    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod {meta['namespace']}/{meta['name']}", daemon=True)
        self.kubelet = kubelet
        self.pod = pod
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.dir = kubelet.root / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.container: Obj = pod["spec"]["containers"][0]
        self.runtime = kubelet.runtime_for(self.namespace)  # chosen once: a Pod keeps its runtime
        self.handle: Container | None = None
        self.restarts = 0
        self.last_state: Obj = {}
        self.image_id = ""
        self.started_at = st.now()
        self._container_started: str | None = None  # the running container's startedAt
        self.gone = threading.Event()  # the Pod object is deleted
        self._changed = threading.Event()
        self._lock = threading.Lock()

    # -- called from the kubelet's watch and from tests -------------------------------------------
    def update(self, pod: Obj) -> None:
        with self._lock:
            if _rv(pod) >= _rv(self.pod):
                self.pod = pod
        self._changed.set()

    def deleted(self) -> None:
        self.gone.set()
        self._changed.set()

    def wake(self) -> None:
        self._changed.set()

    def running(self) -> bool:
        return self.handle is not None and self.handle.wait(0) is None

    def log_path(self, container: str, previous: bool = False) -> Path | None:
        n = self.restarts - 1 if previous else self.restarts
        return self.dir / container / f"{n}.log" if n >= 0 and container == self.container["name"] else None

    def job_name(self) -> str | None:
        return (self.pod["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name")

    # -- main -----------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except _Terminating:
            self._finish_deleted()
        except _Stopping:
            pass
        except Exception:
            self.kubelet.errors.append(f"{self.namespace}/{self.name}: {traceback.format_exc()}")
            log.exception("kubelet: pod %s/%s", self.namespace, self.name)
        finally:
            if self.handle is not None and self.handle.wait(0) is None:
                self.handle.signal(signal.SIGKILL)
                self.handle.wait(10)

    def _run(self) -> None:
        pod = self.pod
        c = self.container
        if len(pod["spec"]["containers"]) != 1 or pod["spec"].get("initContainers"):
            self._write(
                "Pending",
                st.waiting("CreateContainerError", "the process kubelet runs Pods of one container"),
            )
            self._idle()
        self._write("Pending", st.waiting("ContainerCreating"))
        fault = self.kubelet.fault_for(pod)
        if fault in ("ImagePullBackOff", "ErrImagePull"):
            self._failing_pulls(c.get("image", ""))
        volumes = self._volumes()
        self.image_id = self.runtime.image_id(c.get("image", ""))
        backoff, max_backoff = self.kubelet.restart_backoff
        while True:
            self.handle = handle = self._start(volumes)
            self._container_started = started = st.now()
            self._write("Running", {"running": {"startedAt": started}}, ready=True)
            if fault in ("OOMKilled", "Evicted"):
                self._sleep(FAULT_DELAY)
                handle.signal(signal.SIGKILL)
                handle.wait(10)
                # The fault decides the outcome: a short command may have exited on its own within
                # FAULT_DELAY, but the node it simulates killed it first (SIGKILL: exit code 137).
                code = 137
                if fault == "Evicted":
                    reason, message, disruption = st.eviction(c)
                    term = st.terminated(code, "Error", started, cid=handle.id)
                    self._write("Failed", term, reason=reason, message=message, extra=(disruption,))
                    return
                term = st.terminated(code, "OOMKilled", started, cid=handle.id)
            else:
                code = self._wait(handle)
                # A runtime that enforces memory limits (podman) says whether the kernel OOM-killed it.
                reason = "OOMKilled" if getattr(handle, "oom_killed", False) else st.exit_reason(code)
                term = st.terminated(code, reason, started, self._message(code), handle.id)
            policy = pod["spec"].get("restartPolicy", "Always")
            if policy == "Always" or (policy == "OnFailure" and code != 0):
                self.last_state = term
                self.restarts += 1
                text = f"back-off {backoff:g}s restarting failed container={c['name']} pod={self.name}_{self.namespace}({self.uid})"
                self._write("Running", st.waiting("CrashLoopBackOff", text))
                self._sleep(backoff)
                backoff = min(backoff * 2, max_backoff)
                continue
            self._write("Succeeded" if code == 0 else "Failed", term)
            return

    # -- steps -----------------------------------------------------------------------------------------
    def _check(self) -> None:
        if self.kubelet.stopping.is_set():
            raise _Stopping
        if self.gone.is_set() or self.pod["metadata"].get("deletionTimestamp"):
            raise _Terminating

    def _sleep(self, seconds: float) -> None:
        """Waits `seconds`, or less when the Pod is deleted meanwhile (every change of the Pod wakes it)."""
        deadline = time.monotonic() + seconds
        while True:
            self._check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._changed.wait(left)
            self._changed.clear()

    def _failing_pulls(self, image: str) -> None:
        """Pull attempts that fail, as for an image the registry lacks: ErrImagePull at each attempt,
        ImagePullBackOff in between, the back-off doubling (a real kubelet: 10 s up to 5 min)."""
        backoff = PULL_BACKOFF[0]
        while True:
            self._write("Pending", st.pull_failure(image, backoff=False))
            self._sleep(0.5)
            self._write("Pending", st.pull_failure(image, backoff=True))
            self._sleep(backoff)
            backoff = min(backoff * 2, PULL_BACKOFF[1])

    def _idle(self) -> None:
        """The Pod cannot progress: stay until it is deleted."""
        while True:
            self._sleep(3600)

    def _volumes(self) -> dict[str, Path]:
        while True:
            try:
                return prepare_volumes(self.kubelet, self.pod, self.dir / "volumes")
            except VolumeNotReady as e:  # the kubelet retries the mount (Event FailedMount)
                self.kubelet.note(f"{self.namespace}/{self.name}: MountVolume.SetUp failed: {e}")
                self._sleep(1.0)

    def _start(self, volumes: dict[str, Path]) -> Container:
        c = self.container
        while True:
            try:
                env = specs.container_env(self.pod, c, self.kubelet.secret, self.kubelet.config_map)
                break
            except specs.ContainerConfigError as e:
                self._write("Pending", st.waiting("CreateContainerConfigError", str(e)))
                self._sleep(1.0)
        term_file = self.dir / c["name"] / "termination-log"
        term_file.parent.mkdir(parents=True, exist_ok=True)
        term_file.write_text("")
        spec = specs.ContainerSpec(
            pod=f"{self.namespace}/{self.name}",
            name=c["name"],
            image=c.get("image", ""),
            command=tuple(specs.expand(a, env) for a in c["command"]) if c.get("command") else None,
            args=tuple(specs.expand(a, env) for a in c["args"]) if c.get("args") else None,
            env=self.kubelet.service_env() | {"HOSTNAME": self.name} | env,
            working_dir=c.get("workingDir"),
            mounts=specs.mounts(c, volumes, term_file),
            security=specs.security(self.pod, c),
            log_path=self.log_path(c["name"]) or self.dir / "log",
            limits=dict((c.get("resources") or {}).get("limits") or {}),
            pod_object=self.pod,
            volume_dirs=volumes,
            pod_dir=self.dir,
            restarts=self.restarts,
        )
        while True:
            self._check()
            try:
                return self.runtime.start(spec)
            except CreateContainerError as e:
                self._write(
                    "Pending" if not self.restarts else "Running", st.waiting("CreateContainerError", str(e))
                )
                self._sleep(2.0)

    def _wait(self, handle: Container) -> int:
        """The container's exit code (a deletion meanwhile raises _Terminating)."""

        def exited() -> None:
            handle.wait(None)
            self._changed.set()

        threading.Thread(target=exited, name=f"{self.name} exit", daemon=True).start()
        while True:
            code = handle.wait(0)
            if code is not None:
                return code
            self._check()
            self._changed.wait(5.0)
            self._changed.clear()

    def _message(self, code: int) -> str:
        c = self.container
        term_file = self.dir / c["name"] / "termination-log"
        log = self.log_path(c["name"])
        return specs.termination_message(
            term_file.read_text(errors="replace") if term_file.exists() else "",
            log.read_text(errors="replace") if log and log.exists() else "",
            c.get("terminationMessagePolicy"),
            code,
        )

    def _finish_deleted(self) -> None:
        """What the kubelet does with a Pod being deleted: stop its container within the grace period, write
        a terminal phase, then the final delete (grace 0, uid precondition) that removes the object."""
        handle = self.handle
        if handle is not None and handle.wait(0) is None:
            grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
            if grace is None:
                grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
            code = stop(handle, 0 if self.gone.is_set() else float(grace))
            state = st.terminated(
                code, st.exit_reason(code), self._container_started, self._message(code), handle.id
            )
        else:
            state = (self.pod.get("status", {}).get("containerStatuses") or [{}])[0].get("state") or {}
        if self.gone.is_set():
            return
        if self.pod.get("status", {}).get("phase") not in st.TERMINAL:
            code = (state.get("terminated") or {}).get("exitCode")
            with contextlib.suppress(_Terminating):
                self._write(
                    "Succeeded" if code == 0 else "Failed",
                    state or st.waiting("ContainerCreating"),
                    force=True,
                )
        with contextlib.suppress(client.ApiException):
            self.kubelet.core.delete_namespaced_pod(
                self.name,
                self.namespace,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=self.uid)
                ),
                _preload_content=False,
            )

    # -- status -----------------------------------------------------------------------------------------
    def _write(
        self,
        phase: str,
        state: Obj,
        *,
        ready: bool = False,
        reason: str | None = None,
        message: str | None = None,
        extra: tuple[Obj, ...] = (),
        force: bool = False,
    ) -> None:
        """Replaces the Pod's status (again on a conflict, with a fresh read). `force`: also while the Pod
        is being deleted."""
        if not force:
            self._check()
        cs = st.container_status(
            self.container,
            state,
            ready=ready,
            restarts=self.restarts,
            last_state=self.last_state,
            container_id=self.handle.id if self.handle else "",
            image_id=self.image_id if "waiting" not in state else "",
        )
        core = self.kubelet.core
        for _ in range(10):
            pod = dict(self.pod)
            pod["status"] = st.pod_status(
                pod.get("status") or {}, phase, cs, start_time=self.started_at, reason=reason,
                message=message, extra_conditions=extra,
            )  # fmt: skip
            try:
                resp = core.replace_namespaced_pod_status(
                    self.name, self.namespace, pod, _preload_content=False
                )
                self.update(json.loads(resp.data))
                return
            except client.ApiException as e:
                if e.status == 404:
                    self.deleted()
                    raise _Terminating from e
                if e.status != 409:
                    raise
            fresh = self.kubelet.read_pod(self.namespace, self.name)
            if fresh is None or fresh["metadata"]["uid"] != self.uid:
                self.deleted()
                raise _Terminating
            self.update(fresh)
        raise RuntimeError(f"could not write the status of Pod {self.namespace}/{self.name}")


def _rv(pod: Obj) -> int:
    try:
        return int(pod["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0
