"""Progress in the TrainingRun's status: the trainer patches status.progress and status.result.

Only when TRAININGRUN_NAME is set. Every patch is tied to a version of the run read just before and found
to carry the run's uid: a trainer whose TrainingRun was deleted and created again under the same name never
writes into the new run. A failure to report never fails the training: the operator falls back to the Pod's
termination message.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from trainer.report import logfmt
from trainer.sweep import ClusterRun

log = logging.getLogger(__name__)
GROUP, VERSION, PLURAL = "training.wastedetection.io", "v1alpha1", "trainingruns"


class StatusReporter:
    def __init__(
        self, name: str | None, namespace: str | None, uid: str | None = None, min_interval: float = 2.0
    ):
        self.name, self.namespace, self.uid = name, namespace or "default", uid
        self.min_interval = min_interval
        self._api = None
        self._last = 0.0
        self._stage: str | None = None
        self._latest: tuple[str, int, int, float | None] | None = None
        self._warned = False
        self._foreign = False  # our run was deleted and another one has its name: never write into it
        # The epoch of the checkpoint this attempt resumed from (a preempted or retried Job), else None.
        self.resumed_from_epoch: int | None = None
        if name:
            self._api = self._connect()

    @staticmethod
    def _connect():
        try:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            return client.CustomObjectsApi()
        except Exception as exc:  # noqa: BLE001
            log.warning(logfmt(event="status_reporting_disabled", error=type(exc).__name__))
            return None

    def _patch(self, status: dict[str, Any]) -> None:
        if self._api is None or self._foreign:
            return
        try:
            self._patch_own_run(status)
        except Exception as exc:  # noqa: BLE001
            if not self._warned:
                log.warning(logfmt(event="status_patch_failed", run=self.name, error=str(exc)[:200]))
                self._warned = True

    def _patch_own_run(self, status: dict[str, Any], attempts: int = 3) -> None:
        """A merge patch tied to the resourceVersion of the run just read and found to carry our uid: a run
        deleted and created again under the same name is never written (the status subresource ignores a
        uid in the patch itself). A conflict (someone else wrote status meanwhile) reads again."""
        from kubernetes.client.exceptions import ApiException

        for attempt in range(attempts):
            run = self._api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name, _request_timeout=30
            )
            meta = run["metadata"]
            if self.uid and meta.get("uid") != self.uid:
                self._foreign = True
                log.warning(
                    logfmt(
                        event="status_not_reported",
                        run=self.name,
                        reason=f"TrainingRun {self.namespace}/{self.name} is another run now (uid "
                        f"{meta.get('uid')}, not {self.uid}): it was deleted and created again",
                    )
                )
                return
            body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
            try:
                self._api.patch_namespaced_custom_object_status(
                    GROUP, VERSION, self.namespace, PLURAL, self.name, body, _request_timeout=30
                )
                return
            except ApiException as exc:
                if exc.status != 409 or attempt == attempts - 1:
                    raise

    def progress(
        self,
        stage: str,
        epoch: int = 0,
        epochs: int = 0,
        best_map50: float | None = None,
        force: bool = False,
    ) -> None:
        now = time.monotonic()
        self._latest = (stage, epoch, epochs, best_map50)
        if not force and stage == self._stage and now - self._last < self.min_interval:
            return
        self._stage, self._last = stage, now
        text = f"{epoch}/{epochs}" if stage == "Training" or (stage == "Done" and epochs) else stage
        progress: dict[str, Any] = {
            "stage": stage,
            "epoch": epoch,
            "epochs": epochs,
            "text": text,
            "updatedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            # Every patch says it (null for a fresh start): an earlier attempt's value never lingers.
            "resumedFromEpoch": self.resumed_from_epoch,
        }
        if best_map50 is not None:
            progress["bestMAP50"] = round(float(best_map50), 4)
        self._patch({"progress": progress})

    def stopped(self) -> None:
        """The run failed: the progress stays where it stopped (stage, epoch), written even if the last
        update was throttled, so the PROGRESS column says how far the run got."""
        if self._latest is not None:
            self.progress(*self._latest, force=True)

    def result(self, compact: dict[str, Any]) -> None:
        self._patch({"result": compact})

    def list_runs(self) -> list[ClusterRun] | None:
        """The TrainingRuns of this namespace (uid, name, phase, reason), or None if they cannot be read."""
        if self._api is None:
            return None
        try:
            listed = self._api.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, _request_timeout=30
            )
        except Exception as exc:  # noqa: BLE001 - tidying is a courtesy, never a reason to fail
            log.warning(logfmt(event="runs_not_listed", error=str(exc)[:200]))
            return None
        runs = []
        for item in listed.get("items") or []:
            status = item.get("status") or {}
            meta = item["metadata"]
            runs.append(
                ClusterRun(
                    uid=meta["uid"],
                    name=meta["name"],
                    phase=status.get("phase"),
                    reason=status.get("reason"),
                    message=status.get("message"),
                )
            )
        return runs
