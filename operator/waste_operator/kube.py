"""A thin adapter over the Kubernetes client: plain dicts in and out, None for "not found"."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from . import API_VERSION, GROUP, KIND, PLURAL, VERSION
from .queueing import JOB_UID_LABEL, KUEUE_GROUP, WORKLOAD_PLURAL, WORKLOAD_VERSION

SCHEDULE_PLURAL = "trainingschedules"

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
TIMEOUT = 30
COMPONENT = "waste-detection-operator"
INSTANCE = f"{COMPONENT}-{socket.gethostname()}"[:128]


def _missing(error: ApiException) -> bool:
    return error.status == 404


class Kube:
    def __init__(self, api_client: client.ApiClient):
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)

    @classmethod
    def from_environment(cls) -> Kube:
        """In the cluster: the Pod's ServiceAccount; elsewhere: $KUBECONFIG or ~/.kube/config."""
        configuration = client.Configuration()
        if os.environ.get("KUBECONFIG") or Path("~/.kube/config").expanduser().exists():
            config.load_kube_config(client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)
        # One kept-alive connection per handler thread: the default pool (10) is smaller than kopf's worker
        # count, and every request past it paid a fresh TLS handshake on both sides.
        configuration.connection_pool_maxsize = 32
        return cls(client.ApiClient(configuration))

    @staticmethod
    def _json(response) -> dict:
        # Raw JSON instead of the client's typed models: deserialising a Job or Pod list into models and
        # back costs milliseconds each, which dominates a burst of a hundred runs.
        return json.loads(response.data)

    def get_run(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=TIMEOUT
            )
        except ApiException as error:
            if _missing(error):
                return None
            raise

    def list_runs(self, namespace: str) -> list[dict]:
        runs = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _request_timeout=TIMEOUT
        )
        return runs.get("items") or []

    def post_event(self, run: dict, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about the run (what `kubectl describe` and `kubectl get events` show).

        eventTime has microseconds and the name ends in the hex nanosecond time, as client-go names them:
        Events of the same second keep their order in `describe` (it sorts by eventTime when lastTimestamp
        is unset) and in `get events` (listed by name).
        """
        meta = run["metadata"]
        now = datetime.now(UTC)
        event = {
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": run.get("apiVersion") or API_VERSION,
                "kind": run.get("kind") or KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type_,
            "reason": reason,
            "action": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": INSTANCE,
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        self.core.create_namespaced_event(
            meta["namespace"], event, _request_timeout=TIMEOUT, _preload_content=False
        )

    def patch_run_status(self, namespace: str, name: str, status: dict) -> dict:
        return self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
            _request_timeout=TIMEOUT,
        )

    def get_job(self, namespace: str, name: str) -> dict | None:
        try:
            return self._json(
                self.batch.read_namespaced_job(
                    name, namespace, _request_timeout=TIMEOUT, _preload_content=False
                )
            )
        except ApiException as error:
            if _missing(error):
                return None
            raise

    def create_job(self, job: dict) -> tuple[dict, bool]:
        """Creates the Job, or returns the one already there (a retry, a restart): (job, created)."""
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        try:
            created = self.batch.create_namespaced_job(
                namespace, job, _request_timeout=TIMEOUT, _preload_content=False
            )
            return self._json(created), True
        except ApiException as error:
            if error.status != 409:
                raise
        existing = self.get_job(namespace, name)
        if existing is None:  # deleted between our create and read: the caller's next pass decides
            raise RuntimeError(f"Job {namespace}/{name} conflicted on create and then vanished")
        return existing, False

    def set_job_suspend(self, namespace: str, name: str, suspend: bool) -> dict:
        patched = self.batch.patch_namespaced_job(
            name,
            namespace,
            {"spec": {"suspend": suspend}},
            _content_type=MERGE_PATCH,
            _request_timeout=TIMEOUT,
            _preload_content=False,
        )
        return self._json(patched)

    def get_workload(self, namespace: str, job_uid: str) -> dict | None:
        """Kueue's Workload of a Job (Kueue labels it with the Job's uid), or None while there is none."""
        found = self.custom.list_namespaced_custom_object(
            KUEUE_GROUP,
            WORKLOAD_VERSION,
            namespace,
            WORKLOAD_PLURAL,
            label_selector=f"{JOB_UID_LABEL}={job_uid}",
            _request_timeout=TIMEOUT,
        )
        items = [w for w in found.get("items") or [] if not w["metadata"].get("deletionTimestamp")]
        return max(items, key=lambda w: w["metadata"].get("creationTimestamp") or "") if items else None

    def set_workload_active(self, namespace: str, name: str, active: bool) -> None:
        """Kueue's way to take a Workload out of its queue (false) and put it back (true)."""
        self.custom.patch_namespaced_custom_object(
            KUEUE_GROUP,
            WORKLOAD_VERSION,
            namespace,
            WORKLOAD_PLURAL,
            name,
            {"spec": {"active": active}},
            _content_type=MERGE_PATCH,
            _request_timeout=TIMEOUT,
        )

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            # Background propagation: without it the Job's Pods stay behind (orphaned).
            self.batch.delete_namespaced_job(
                name,
                namespace,
                propagation_policy="Background",
                _request_timeout=TIMEOUT,
                _preload_content=False,
            )
        except ApiException as error:
            if not _missing(error):
                raise

    def list_pods(self, namespace: str, selector: str) -> list[dict]:
        pods = self.core.list_namespaced_pod(
            namespace, label_selector=selector, _request_timeout=TIMEOUT, _preload_content=False
        )
        return self._json(pods).get("items") or []

    def patch_deployment(self, namespace: str, name: str, patch: dict) -> None:
        self.apps.patch_namespaced_deployment(
            name,
            namespace,
            patch,
            _content_type=STRATEGIC_MERGE_PATCH,
            _request_timeout=TIMEOUT,
            _preload_content=False,
        )

    # TrainingSchedules and the TrainingRuns they create ----------------------------------------------
    def list_runs_labelled(self, namespace: str, selector: str) -> list[dict]:
        runs = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, label_selector=selector, _request_timeout=TIMEOUT
        )
        return runs.get("items") or []

    def create_run(self, run: dict) -> tuple[dict | None, bool]:
        """Creates the TrainingRun, or returns the one of that name already there: (run, created)."""
        namespace, name = run["metadata"]["namespace"], run["metadata"]["name"]
        try:
            created = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, run, _request_timeout=TIMEOUT
            )
            return created, True
        except ApiException as error:
            if error.status != 409:
                raise
        return self.get_run(namespace, name), False

    def delete_run(self, namespace: str, name: str) -> None:
        try:
            # Background: the garbage collector then removes the run's Job and Pods.
            self.custom.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                propagation_policy="Background",
                _request_timeout=TIMEOUT,
            )
        except ApiException as error:
            if not _missing(error):
                raise

    def get_schedule(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, SCHEDULE_PLURAL, name, _request_timeout=TIMEOUT
            )
        except ApiException as error:
            if _missing(error):
                return None
            raise

    def list_schedules(self, namespace: str) -> list[dict]:
        """Every TrainingSchedule of the namespace; none when the CRD is not installed."""
        try:
            found = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, SCHEDULE_PLURAL, _request_timeout=TIMEOUT
            )
        except ApiException as error:
            if _missing(error):
                return []
            raise
        return found.get("items") or []

    def patch_schedule_status(self, namespace: str, name: str, status: dict) -> dict:
        return self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            SCHEDULE_PLURAL,
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
            _request_timeout=TIMEOUT,
        )
