"""One Job's life in `JobRunner`: Pods, the local process, retries, deadline, deletion."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import secrets
import signal
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kubernetes import client

from tests.controlplane import kubelet
from tests.controlplane.kubelet import Obj, now
from tests.controlplane.server import die_with_parent

if TYPE_CHECKING:
    from tests.controlplane.jobrunner import JobRunner

log = logging.getLogger(__name__)

NODE_NAME = "local-node"
UNSCHEDULABLE_MESSAGE = (
    "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: "
    "3 No preemption victims found for incoming pod."
)
EVICTED_MESSAGE = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. "
BACKOFF_MESSAGE = "Job has reached the specified backoff limit"
DEADLINE_MESSAGE = "Job was active longer than specified deadline"
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of the API server's generateName


def read_json(resp: Any) -> Obj:
    return dict(json.loads(resp.data))


class _Stop(Exception):
    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome  # "Cancelled" (Job deleted, runner stopping) or "Deadline"


def _condition(type_: str, reason: str, message: str) -> Obj:
    t = now()
    return {"type": type_, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": t, "lastTransitionTime": t}  # fmt: skip


class JobWorker(threading.Thread):
    def __init__(self, runner: JobRunner, job: Obj) -> None:
        meta = job["metadata"]
        super().__init__(name=f"job {meta['namespace']}/{meta['name']}", daemon=True)
        self.runner = runner
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.cancel = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.pod: Obj | None = None
        self._deadline: float | None = None
        self._proc_lock = threading.Lock()

    # -- process control (also called from other threads) ------------------------------------------
    def signal_process(self, sig: int) -> bool:
        with self._proc_lock:
            proc = self.proc
            if proc is None or proc.poll() is not None:
                return False
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            return True

    def kill_process(self) -> None:
        """SIGTERM the process group, SIGKILL after the grace period (as the kubelet does)."""
        proc = self.proc
        if proc is None:
            return
        if self.signal_process(signal.SIGTERM):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(self.runner.kill_grace_seconds)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)

    # -- main ----------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except _Stop:
            pass
        except Exception:
            self.runner.errors.append(f"{self.name}: {traceback.format_exc()}")
            log.exception("jobrunner: %s/%s", self.namespace, self.name)
        finally:
            self.kill_process()
            if self.cancel.is_set():
                with contextlib.suppress(Exception):
                    self.runner.delete_pods(self.namespace, self.uid)

    def _run(self) -> None:
        spec = self.runner.read("Job", self.namespace, self.name) or {}
        spec = spec.get("spec") or {}
        backoff = int(spec.get("backoffLimit", 6))
        if spec.get("activeDeadlineSeconds") is not None:
            self._deadline = time.monotonic() + float(spec["activeDeadlineSeconds"])
        started = now()
        self._job_status(lambda s: s.update(startTime=s.get("startTime") or started, active=1, ready=0))
        failures = 0
        attempt = 0
        while True:
            try:
                phase = self._run_pod(attempt)
            except _Stop as stop:
                if stop.outcome == "Deadline":
                    self.runner.delete_pods(self.namespace, self.uid)  # the controller deletes active Pods
                    self._finish_failed(failures + 1, "DeadlineExceeded", DEADLINE_MESSAGE)
                raise
            attempt += 1
            if phase == "Succeeded":
                self._finish_succeeded(failures)
                return
            failures += 1
            if failures > backoff:
                self._finish_failed(failures, "BackoffLimitExceeded", BACKOFF_MESSAGE)
                return
            self._job_status(lambda s, n=failures: s.update(failed=n, active=1, ready=0))

    def _check(self) -> None:
        if self.cancel.is_set() or self.runner._stopping.is_set():
            raise _Stop("Cancelled")
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise _Stop("Deadline")

    def _wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            self._check()
            left = end - time.monotonic()
            if left <= 0:
                return
            self.cancel.wait(min(left, 0.1))

    def _hang(self) -> None:
        """Stay as is until the Job is deleted or its deadline passes (the Pod never progresses)."""
        while True:
            self._wait(1.0)

    # -- one Pod ---------------------------------------------------------------------------------------
    def _run_pod(self, attempt: int) -> str:
        job = self.runner.read("Job", self.namespace, self.name)
        if job is None or job["metadata"]["uid"] != self.uid:
            raise _Stop("Cancelled")
        sim = self.runner._simulation_for(job, attempt)
        template = job["spec"]["template"]
        pod_spec = copy.deepcopy(template["spec"])
        container = pod_spec["containers"][0]
        sa = pod_spec.get("serviceAccountName")
        while sa and self.runner.require_service_account:
            if self.runner.read("ServiceAccount", self.namespace, sa) is not None:
                break
            self._wait(1.0)  # the real Job controller reports FailedCreate and retries
        self.pod = self._create_pod(job, template, pod_spec, scheduled=sim != "Unschedulable")
        started = now()
        if sim == "Unschedulable":
            self._pod_status("Pending", started, scheduled=False, message=UNSCHEDULABLE_MESSAGE)
            self._hang()
        image = container.get("image", "")
        if sim == "ImagePullBackOff":
            message = (
                f'Back-off pulling image "{image}": ErrImagePull: failed to pull image "{image}": not found'
            )
            waiting = {"waiting": {"reason": "ImagePullBackOff", "message": message}}
            self._pod_status("Pending", started, kubelet.container_status(container, waiting))
            self._hang()
        if sim in ("OOMKilled", "Evicted"):
            running = {"running": {"startedAt": started}}
            self._pod_status("Running", started, kubelet.container_status(container, running, ready=True))
            self._wait(0.2)
            terminated = {"exitCode": 137, "reason": "OOMKilled" if sim == "OOMKilled" else "Error",
                          "startedAt": started, "finishedAt": now()}  # fmt: skip
            cs = kubelet.container_status(container, {"terminated": terminated})
            if sim == "OOMKilled":
                self._pod_status("Failed", started, cs)
            else:
                self._pod_status("Failed", started, cs, reason="Evicted", message=EVICTED_MESSAGE)
            return "Failed"
        return self._run_process(container, started)

    def _create_pod(self, job: Obj, template: Obj, pod_spec: Obj, *, scheduled: bool) -> Obj:
        tmeta = template.get("metadata") or {}
        suffix = "".join(secrets.choice(_NAME_CHARS) for _ in range(5))
        labels = dict(tmeta.get("labels") or {})
        labels.update({"batch.kubernetes.io/controller-uid": self.uid, "controller-uid": self.uid,
                       "batch.kubernetes.io/job-name": self.name, "job-name": self.name})  # fmt: skip
        if scheduled:
            pod_spec["nodeName"] = NODE_NAME
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{self.name[:57]}-{suffix}",
                "namespace": self.namespace,
                "labels": labels,
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": self.name,
                        "uid": self.uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },  # fmt: skip
            "spec": pod_spec,
        }
        resp = self.runner.core.create_namespaced_pod(self.namespace, body, _preload_content=False)
        return read_json(resp)

    def _run_process(self, container: Obj, started: str) -> str:
        assert self.pod is not None
        pod_name = self.pod["metadata"]["name"]
        term_file = self.runner.logdir / f"{self.namespace}_{pod_name}.termination-log"
        term_file.write_text("")
        log_path = self.runner.log_path(self.namespace, pod_name)
        env = self._resolve_env(container, started)
        term_path = container.get("terminationMessagePath") or kubelet.DEFAULT_TERMINATION_PATH
        env = {k: str(term_file) if v == term_path else v for k, v in env.items()}
        cmd = [
            kubelet.expand(a, env) for a in (container.get("command") or []) + (container.get("args") or [])
        ]
        cmd = [str(term_file) if a == term_path else a for a in cmd]
        if not container.get("command"):
            waiting = {"reason": "CreateContainerError", "message": "the job runner needs a command"}
            self._pod_status("Pending", started, kubelet.container_status(container, {"waiting": waiting}))
            self._hang()
        if cmd[0] in ("python", "python3"):
            cmd[0] = self.runner.python
        with log_path.open("ab") as out, self._proc_lock:
            self._check()
            self.proc = proc = subprocess.Popen(
                die_with_parent(cmd), cwd=container.get("workingDir") or self.runner.cwd, env=env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        run_start = now()
        running = {"running": {"startedAt": run_start}}
        self._pod_status(
            "Running",
            started,
            kubelet.container_status(container, running, ready=True, pid=proc.pid),
            ready=True,
        )
        self._job_status(lambda s: s.update(ready=1))
        while proc.poll() is None:
            try:
                self._check()
            except _Stop as stop:
                self.kill_process()
                if stop.outcome == "Deadline":
                    self._terminated(container, started, run_start, proc, term_file, log_path)
                    self.runner.delete_pods(self.namespace, self.uid)
                raise
            time.sleep(0.05)
        return self._terminated(container, started, run_start, proc, term_file, log_path)

    def _terminated(self, container: Obj, started: str, run_start: str, proc: subprocess.Popen[bytes],
                    term_file: Any, log_path: Any) -> str:  # fmt: skip
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        message = kubelet.termination_message(
            term_file.read_text(errors="replace"),
            log_path.read_text(errors="replace") if log_path.exists() else "",
            container.get("terminationMessagePolicy"),
            code,
        )
        terminated: Obj = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                           "startedAt": run_start, "finishedAt": now(), "containerID": f"local://{proc.pid}"}  # fmt: skip
        if message:
            terminated["message"] = message
        phase = "Succeeded" if code == 0 else "Failed"
        self._pod_status(
            phase, started, kubelet.container_status(container, {"terminated": terminated}, pid=proc.pid)
        )
        return phase

    def _resolve_env(self, container: Obj, started: str) -> dict[str, str]:
        assert self.pod is not None
        r = self.runner
        while True:
            try:
                cenv = kubelet.container_env(
                    self.pod,
                    container,
                    lambda ns, n: r.read("Secret", ns, n),
                    lambda ns, n: r.read("ConfigMap", ns, n),
                )
                break
            except kubelet.ContainerConfigError as e:
                waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
                self._pod_status("Pending", started, kubelet.container_status(container, waiting))
                self._wait(1.0)  # the kubelet retries
        env = {k: os.environ[k] for k in r.inherit_env if k in os.environ}
        env["HOSTNAME"] = self.pod["metadata"]["name"]
        env.update(r.extra_env)
        spec = self.pod["spec"]
        sa = spec.get("serviceAccountName")
        if sa and spec.get("automountServiceAccountToken") is not False:
            env["KUBECONFIG"] = r.control_plane.service_account_kubeconfig(self.namespace, sa)
        env.update(cenv)
        return env

    # -- status writes ----------------------------------------------------------------------------------
    def _pod_status(self, phase: str, started: str, container: Obj | None = None, **kw: Any) -> None:
        assert self.pod is not None

        def change(pod: Obj) -> None:
            # The API server sets qosClass when the Pod is created and refuses to change it: keep it.
            qos = (pod.get("status") or {}).get("qosClass")
            pod["status"] = kubelet.pod_status(phase, start_time=started, container=container, **kw)
            if qos:
                pod["status"]["qosClass"] = qos

        self._replace_status(
            "Pod", self.pod["metadata"]["name"], change, self.runner.core.replace_namespaced_pod_status
        )

    def _job_status(self, mutate: Callable[[Obj], Any]) -> None:
        self._replace_status(
            "Job",
            self.name,
            lambda job: mutate(job.setdefault("status", {})),
            self.runner.batch.replace_namespaced_job_status,
        )

    def _replace_status(
        self, kind: str, name: str, change: Callable[[Obj], Any], replace: Callable[..., Any]
    ) -> None:
        """Read, change and replace an object's status, again on a conflict; a vanished object (or a Job
        of the same name but another uid) cancels this worker."""
        for _ in range(10):
            obj = self.runner.read(kind, self.namespace, name)
            if obj is None or (kind == "Job" and obj["metadata"]["uid"] != self.uid):
                raise _Stop("Cancelled")
            change(obj)
            try:
                replace(name, self.namespace, obj, _preload_content=False)
                return
            except client.ApiException as e:
                if e.status == 404:
                    raise _Stop("Cancelled") from e
                if e.status != 409:
                    raise
        raise RuntimeError(f"could not update {kind} {name} status")

    def _finish_succeeded(self, failures: int) -> None:
        def mutate(s: Obj) -> None:
            msg = "Reached expected number of succeeded pods"
            s.update(active=0, ready=0, succeeded=1, completionTime=now())
            if failures:
                s["failed"] = failures
            conditions = s.setdefault("conditions", [])
            conditions.append(_condition("SuccessCriteriaMet", "CompletionsReached", msg))
            conditions.append(_condition("Complete", "CompletionsReached", msg))

        self._job_status(mutate)

    def _finish_failed(self, failures: int, reason: str, message: str) -> None:
        def mutate(s: Obj) -> None:
            s.update(active=0, ready=0, failed=failures)
            conditions = s.setdefault("conditions", [])
            conditions.append(_condition("FailureTarget", reason, message))
            conditions.append(_condition("Failed", reason, message))

        self._job_status(mutate)
