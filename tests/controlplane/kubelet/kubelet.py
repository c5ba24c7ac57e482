"""`Kubelet`: registers a Node, watches the Pods the scheduler binds to it, runs each through a runtime
(`PodWorker`), and serves their logs to the API server. Node faults can be simulated on chosen Pods
(`simulate`), and look as a real kubelet writes them."""

from __future__ import annotations

import contextlib
import json
import logging
import signal as _signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import urllib3
from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from tests.controlplane.kubelet import spec as specs
from tests.controlplane.kubelet.logs import LogServer
from tests.controlplane.kubelet.node import Capacity, register
from tests.controlplane.kubelet.runtime import ProcessRuntime, Runtime
from tests.controlplane.kubelet.worker import PodWorker

if TYPE_CHECKING:
    from tests.controlplane.server import ControlPlane

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Match = str | Callable[[Obj], bool]
NODE_NAME = "local-node"
SIMULATE_ANNOTATION = "test.waste-detection.io/simulate"
SIMULATIONS = ("OOMKilled", "ImagePullBackOff", "ErrImagePull", "Evicted")


class Kubelet:
    """The process kubelet of one Node; see the package docstring."""

    def __init__(
        self,
        control_plane: ControlPlane,
        *,
        runtime: Runtime | None = None,
        node_name: str = NODE_NAME,
        capacity: Capacity | None = None,
        root: Path | None = None,
        restart_backoff: tuple[float, float] = (1.0, 10.0),
    ) -> None:
        self.control_plane = control_plane
        self.runtime: Runtime = runtime or ProcessRuntime()
        self.node_name = node_name
        self.capacity = capacity or Capacity()
        self.root = Path(root or tempfile.mkdtemp(prefix="kubelet-"))
        self.restart_backoff = restart_backoff
        self.errors: list[
            str
        ] = []  # tracebacks of pod workers: bugs of this kubelet, not of the code under test
        self.notes: list[str] = []  # what a kubelet would post as Events (mount retries)
        self.stopping = threading.Event()
        self._api = control_plane.api_client()
        self.core = client.CoreV1Api(self._api)
        self._workers: dict[str, PodWorker] = {}  # by Pod uid
        self._runtimes: dict[str, Runtime] = {}  # by namespace, where it is not `runtime`
        self._sims: list[list[Any]] = []  # [namespace or None, match, kind, remaining or None]
        self._lock = threading.Lock()
        self._watch: Any = None
        self._thread: threading.Thread | None = None
        c = control_plane.certs
        self.logs = LogServer(self._find_log, c.kubelet_serving_cert, c.kubelet_serving_key, c.ca_cert)

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> Kubelet:
        self.logs.start()
        register(self.core, self.node_name, self.logs.port, self.capacity, self.runtime.name)
        self._thread = threading.Thread(target=self._watch_loop, name="kubelet-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops the containers (SIGTERM, SIGKILL after 5 s) and leaves the Pods as they are."""
        self.stopping.set()
        with contextlib.suppress(Exception):
            if self._watch is not None:
                self._watch.shutdown()
        if self._thread:
            self._thread.join(10)
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            if w.handle is not None:
                w.handle.signal(_signal.SIGTERM)
            w.wake()
        for w in workers:
            w.join(5)
        self.logs.stop()
        self._api.close()

    # -- for tests -------------------------------------------------------------------------------------
    def use_runtime(self, namespace: str, runtime: Runtime | None) -> None:
        """Run the Pods that start in `namespace` from now on through `runtime` (None: the default one).
        Pods already running keep theirs."""
        # No lock: single dict operations are atomic, and runtime_for runs under self._lock (_dispatch).
        if runtime is None:
            self._runtimes.pop(namespace, None)
        else:
            self._runtimes[namespace] = runtime

    def runtime_for(self, namespace: str) -> Runtime:
        return self._runtimes.get(namespace, self.runtime)

    def simulate(
        self, match: Match, kind: str, times: int | None = None, namespace: str | None = None
    ) -> None:
        """Make matching Pods fail as a node would: "OOMKilled" (the container is OOM-killed shortly after
        it starts), "ImagePullBackOff" or "ErrImagePull" (the same: ErrImagePull at each pull attempt,
        ImagePullBackOff between them) or "Evicted" (memory-pressure
        eviction: Failed, reason Evicted, a DisruptionTarget condition). `match`: a Job name or Pod name,
        optionally "namespace/name", or a predicate on the Pod dict. `times`: only the next N Pods.
        Unschedulable is not simulated: the scheduler says it, for a Pod that asks more than the node has."""
        if kind not in SIMULATIONS:
            hint = " (the scheduler reports it: ask for more nvidia.com/gpu than the node has)"
            raise ValueError(
                f"unknown simulation {kind!r}; one of {SIMULATIONS}"
                + (hint if kind == "Unschedulable" else "")
            )
        with self._lock:
            self._sims.append([namespace, match, kind, times])

    def clear_simulations(self, namespace: str) -> None:
        with self._lock:
            self._sims = [s for s in self._sims if s[0] != namespace]

    def fault_for(self, pod: Obj) -> str | None:
        meta = pod["metadata"]
        ns = meta["namespace"]
        names = {
            n for n in (meta["name"], (meta.get("labels") or {}).get("batch.kubernetes.io/job-name")) if n
        }
        with self._lock:
            for sim in self._sims:
                scope, match, kind, remaining = sim
                if scope not in (None, ns) or remaining == 0:
                    continue
                hit = match(pod) if callable(match) else match in names | {f"{ns}/{n}" for n in names}
                if hit:
                    if remaining is not None:
                        sim[3] = remaining - 1
                    return str(kind)
        kind = (meta.get("annotations") or {}).get(SIMULATE_ANNOTATION)
        return kind if kind in SIMULATIONS else None

    def workers(self, namespace: str, job_name: str | None = None) -> list[PodWorker]:
        with self._lock:
            found = [w for w in self._workers.values() if w.namespace == namespace]
        return [w for w in found if job_name is None or w.job_name() == job_name]

    def kill(self, namespace: str, job_name: str, signal: int = _signal.SIGKILL) -> bool:
        """Send `signal` to the running container of the Job's Pod. False if none runs."""
        return any(
            w.handle.signal(signal) for w in self.workers(namespace, job_name) if w.running() and w.handle
        )

    def pid(self, namespace: str, job_name: str) -> int | None:
        """The pid of the Job's running container process, or None."""
        running = [w for w in self.workers(namespace, job_name) if w.running() and w.handle]
        return running[-1].handle.pid if running else None  # type: ignore[union-attr]

    def log_path(self, namespace: str, pod_name: str, container: str | None = None) -> Path | None:
        with self._lock:
            found = [w for w in self._workers.values() if (w.namespace, w.name) == (namespace, pod_name)]
        if not found:
            return None
        w = found[-1]
        return w.log_path(container or w.container["name"])

    def logs_of(self, namespace: str, pod_name: str) -> str:
        path = self.log_path(namespace, pod_name)
        return path.read_text(errors="replace") if path and path.exists() else ""

    def note(self, text: str) -> None:
        self.notes.append(text)

    # -- used by the pod workers -------------------------------------------------------------------------
    def service_env(self) -> dict[str, str]:
        return specs.service_env("127.0.0.1", self.control_plane.port)

    def _read(self, fn: Callable[..., Any], namespace: str, name: str) -> Obj | None:
        try:
            return dict(json.loads(fn(name, namespace, _preload_content=False).data))
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise

    def secret(self, namespace: str, name: str) -> Obj | None:
        return self._read(self.core.read_namespaced_secret, namespace, name)

    def config_map(self, namespace: str, name: str) -> Obj | None:
        return self._read(self.core.read_namespaced_config_map, namespace, name)

    def read_pod(self, namespace: str, name: str) -> Obj | None:
        return self._read(self.core.read_namespaced_pod, namespace, name)

    def _find_log(
        self, namespace: str, pod: str, container: str, previous: bool
    ) -> tuple[Path | None, Callable[[], bool]]:
        with self._lock:
            found = [w for w in self._workers.values() if (w.namespace, w.name) == (namespace, pod)]
        if not found:
            return None, lambda: False
        w = found[-1]
        return w.log_path(container, previous), w.running

    # -- the watch ---------------------------------------------------------------------------------------
    def _events(self, resource_version: str) -> Iterator[Obj]:
        resp = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={self.node_name}",
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=30,
            _preload_content=False,
            _request_timeout=(5, 40),
        )
        self._watch = resp
        try:
            for line in iter_resp_lines(resp):
                if self.stopping.is_set():
                    return
                yield json.loads(line)
        finally:
            resp.release_conn()

    def _watch_loop(self) -> None:
        rv: str | None = None
        while not self.stopping.is_set():
            try:
                if rv is None:
                    listing = json.loads(
                        self.core.list_pod_for_all_namespaces(
                            field_selector=f"spec.nodeName={self.node_name}", _preload_content=False
                        ).data
                    )
                    rv = listing["metadata"]["resourceVersion"]
                    listed = {p["metadata"]["uid"] for p in listing["items"]}
                    for pod in listing["items"]:
                        self._dispatch("ADDED", pod)
                    with self._lock:
                        vanished = [w for uid, w in self._workers.items() if uid not in listed]
                    for w in vanished:
                        w.deleted()
                for event in self._events(rv):
                    if event["type"] == "ERROR":
                        rv = None  # 410 Gone: list again
                        break
                    rv = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self._dispatch(event["type"], event["object"])
            except (client.ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                if not self.stopping.is_set():
                    log.warning("kubelet: watching Pods failed: %s", e)
                    self.stopping.wait(0.5)

    def _dispatch(self, kind: str, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if worker is None and kind != "DELETED":
                if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    return  # finished before this kubelet started: nothing to run
                worker = self._workers[uid] = PodWorker(self, pod)
                worker.start()
                return
        if worker is None:
            return
        if kind == "DELETED":
            worker.deleted()
        else:
            worker.update(pod)


class NamespaceView:
    """The kubelet as one namespace's tests see it: its containers get `env` added (what the cluster
    provides, such as the route to the GCS emulator) and run from `cwd` (process runtime) or through
    `runtime` (e.g. `PodmanRuntime`: the real images) instead of the kubelet's default; simulations stay
    within the namespace."""

    def __init__(
        self,
        kubelet: Kubelet,
        namespace: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        self.kubelet = kubelet
        self.namespace = namespace
        self._errors_before = len(kubelet.errors)
        if runtime is not None:
            kubelet.use_runtime(namespace, runtime)
        self.runtime = kubelet.runtime_for(namespace)
        configure = getattr(self.runtime, "configure", None)
        if configure is not None:
            configure(namespace, cwd, env)

    def simulate(self, match: Match, kind: str, times: int | None = None) -> None:
        self.kubelet.simulate(match, kind, times, namespace=self.namespace)

    def kill(self, namespace: str, job_name: str, signal: int = _signal.SIGKILL) -> bool:
        return self.kubelet.kill(namespace, job_name, signal)

    def pid(self, namespace: str, job_name: str) -> int | None:
        return self.kubelet.pid(namespace, job_name)

    def logs(self, namespace: str, pod_name: str) -> str:
        return self.kubelet.logs_of(namespace, pod_name)

    def close(self) -> None:
        self.kubelet.clear_simulations(self.namespace)
        forget = getattr(self.runtime, "forget", None)
        if forget is not None:
            forget(self.namespace)
        self.kubelet.use_runtime(self.namespace, None)
        errors = self.kubelet.errors[self._errors_before :]
        if errors:
            raise RuntimeError("process kubelet errors:\n" + "\n".join(errors))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kubelet, name)
