"""`JobRunner`: plays the Job controller, the scheduler and the kubelet for selected Jobs.

Each Job matching the label selector (and not suspended) gets a Pod object owned by it; the Pod's first
container runs as a local subprocess (command + args; `python`/`python3` map to the test interpreter) in
`cwd`, with the container's env resolved as the kubelet would. Pod and Job status follow the real
controllers closely enough for an operator to read them. Supported: completions=1/parallelism=1,
backoffLimit (a new Pod per retry, no back-off delay), activeDeadlineSeconds, Job deletion (process
killed, Pods deleted, deletion finalizers removed: no garbage collector runs here), and simulated
cluster failures (see `simulate` and the `test.waste-detection.io/simulate` Job annotation:
"OOMKilled", "ImagePullBackOff", "Unschedulable" or "Evicted", optionally ":N" for the first N Pods only).
Not emulated: restartPolicy OnFailure in-place restarts (treated like Never), podFailurePolicy, indexed
or parallel Jobs, init/sidecar containers, volumes.
"""

from __future__ import annotations

import contextlib
import logging
import signal as _signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import urllib3
from kubernetes import client

from tests.controlplane.jobworker import JobWorker, read_json
from tests.controlplane.kubelet import Obj

if TYPE_CHECKING:
    from tests.controlplane.server import ControlPlane

log = logging.getLogger(__name__)

MANAGED_BY = "app.kubernetes.io/managed-by=waste-detection-operator"
SIMULATE_ANNOTATION = "test.waste-detection.io/simulate"
SIMULATIONS = ("OOMKilled", "ImagePullBackOff", "Unschedulable", "Evicted")
INHERITED_ENV = (
    "PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "SSL_CERT_FILE",
    "PYTHONDONTWRITEBYTECODE", "XDG_CACHE_HOME",
)  # fmt: skip

Match = str | Callable[[Obj], bool]


class JobRunner:
    """Runs selected Jobs to completion as local processes; see the module docstring."""

    def __init__(
        self,
        control_plane: ControlPlane,
        *,
        selector: str = MANAGED_BY,
        namespace: str | None = None,
        cwd: str | Path | None = None,
        python: str = sys.executable,
        poll_interval: float = 0.2,
        inherit_env: tuple[str, ...] = INHERITED_ENV,
        extra_env: dict[str, str] | None = None,
        require_service_account: bool = True,
        kill_grace_seconds: float = 5.0,
    ) -> None:
        self.control_plane = control_plane
        self.selector = selector
        self.namespace = namespace
        self.cwd = str(cwd or Path(__file__).resolve().parents[2])
        self.python = python
        self.poll_interval = poll_interval
        self.inherit_env = inherit_env
        self.extra_env = dict(extra_env or {})
        self.require_service_account = require_service_account
        self.kill_grace_seconds = kill_grace_seconds
        self.errors: list[str] = []  # tracebacks from worker threads, for test diagnostics
        self.logdir = Path(tempfile.mkdtemp(prefix="jobrunner-"))
        self._api = control_plane.api_client()
        self.core = client.CoreV1Api(self._api)
        self.batch = client.BatchV1Api(self._api)
        self._workers: dict[str, JobWorker] = {}  # by Job uid
        self._sims: list[list[Any]] = []  # [match, kind, remaining or None]
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- public API -------------------------------------------------------------------------------
    def start(self) -> JobRunner:
        self._thread = threading.Thread(target=self._loop, name="jobrunner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread:
            self._thread.join(10)
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w.cancel.set()
        for w in workers:
            w.join(15)
            w.kill_process()
        self._api.close()

    def simulate(self, match: Match, kind: str, times: int | None = None) -> None:
        """Make Pods of matching Jobs (by name, "namespace/name", or predicate on the Job dict) fail
        like a cluster would: one of SIMULATIONS. `times`: only the next N Pods (None: all)."""
        if kind not in SIMULATIONS:
            raise ValueError(f"unknown simulation {kind!r}; one of {SIMULATIONS}")
        with self._lock:
            self._sims.append([match, kind, times])

    def kill(self, namespace: str, job_name: str, signal: int = _signal.SIGKILL) -> bool:
        """Send `signal` to the process group of the Job's running Pod. False if nothing runs."""
        w = self._worker(namespace, job_name)
        return bool(w and w.signal_process(signal))

    def pid(self, namespace: str, job_name: str) -> int | None:
        """The pid of the Job's running process, or None."""
        w = self._worker(namespace, job_name)
        proc = w.proc if w else None
        return proc.pid if proc and proc.poll() is None else None

    def logs(self, namespace: str, pod_name: str) -> str:
        path = self.log_path(namespace, pod_name)
        return path.read_text(errors="replace") if path.exists() else ""

    def log_path(self, namespace: str, pod_name: str) -> Path:
        return self.logdir / f"{namespace}_{pod_name}.log"

    # -- internals --------------------------------------------------------------------------------
    def _worker(self, namespace: str, job_name: str) -> JobWorker | None:
        with self._lock:
            found = [w for w in self._workers.values() if (w.namespace, w.name) == (namespace, job_name)]
        alive = [w for w in found if w.is_alive()]
        return (alive or found or [None])[-1]

    def _simulation_for(self, job: Obj, attempt: int) -> str | None:
        meta = job["metadata"]
        with self._lock:
            for sim in self._sims:
                match, kind, remaining = sim
                if callable(match):
                    hit = match(job)
                else:
                    hit = match in (meta["name"], f"{meta['namespace']}/{meta['name']}")
                if hit and remaining != 0:
                    if remaining is not None:
                        sim[2] = remaining - 1
                    return str(kind)
        value = (meta.get("annotations") or {}).get(SIMULATE_ANNOTATION, "")
        if value:
            kind, _, count = value.partition(":")
            if kind in SIMULATIONS and (not count or attempt < int(count)):
                return kind
        return None

    def _list_jobs(self) -> list[Obj]:
        if self.namespace:
            resp = self.batch.list_namespaced_job(
                self.namespace, label_selector=self.selector, _preload_content=False
            )
        else:
            resp = self.batch.list_job_for_all_namespaces(
                label_selector=self.selector, _preload_content=False
            )
        return list(read_json(resp).get("items") or [])

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._sync(self._list_jobs())
            except (client.ApiException, urllib3.exceptions.HTTPError, OSError) as e:  # keep going
                log.warning("jobrunner: listing Jobs failed: %s", e)
            self._stopping.wait(self.poll_interval)

    def _sync(self, jobs: list[Obj]) -> None:
        seen = set()
        for job in jobs:
            meta = job["metadata"]
            uid = meta["uid"]
            seen.add(uid)
            with self._lock:
                worker = self._workers.get(uid)
            if meta.get("deletionTimestamp"):
                if worker:
                    worker.cancel.set()
                self._collect_garbage(job, worker)
                continue
            if worker or (job.get("spec") or {}).get("suspend"):
                continue
            if (job.get("status") or {}).get("startTime"):
                continue  # started by an earlier runner (another test): its process is gone, not adopted
            worker = JobWorker(self, job)
            with self._lock:
                self._workers[uid] = worker
            worker.start()
        with self._lock:
            gone = [w for uid, w in self._workers.items() if uid not in seen]
        for w in gone:
            w.cancel.set()

    def _collect_garbage(self, job: Obj, worker: JobWorker | None) -> None:
        """What the garbage collector would do for a Job being deleted: remove its Pods, then drop the
        orphan/foregroundDeletion finalizers so the deletion completes."""
        meta = job["metadata"]
        if worker and worker.is_alive():
            return  # the worker deletes the Pods once its process is dead
        self.delete_pods(meta["namespace"], meta["uid"])
        finalizers = meta.get("finalizers") or []
        keep = [f for f in finalizers if f not in ("orphan", "foregroundDeletion")]
        if keep != finalizers:
            with contextlib.suppress(client.ApiException):
                self.batch.patch_namespaced_job(
                    meta["name"],
                    meta["namespace"],
                    [{"op": "replace", "path": "/metadata/finalizers", "value": keep}],
                )

    def delete_pods(self, namespace: str, job_uid: str) -> None:
        pods = read_json(
            self.core.list_namespaced_pod(
                namespace, label_selector=f"controller-uid={job_uid}", _preload_content=False
            )
        )
        for pod in pods.get("items") or []:
            with contextlib.suppress(client.ApiException):
                self.core.delete_namespaced_pod(pod["metadata"]["name"], namespace, grace_period_seconds=0)

    def read(self, kind: str, namespace: str, name: str) -> Obj | None:
        fn = {
            "Secret": self.core.read_namespaced_secret,
            "ConfigMap": self.core.read_namespaced_config_map,
            "ServiceAccount": self.core.read_namespaced_service_account,
            "Job": self.batch.read_namespaced_job,
            "Pod": self.core.read_namespaced_pod,
        }[kind]
        try:
            return read_json(fn(name, namespace, _preload_content=False))
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise
