"""Progress in the TrainingRun's status: the trainer patches status.progress and status.result.

Only when TRAININGRUN_NAME is set. A failure to report never fails the training: the operator falls
back to the Pod's termination message.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from trainer.report import logfmt

log = logging.getLogger(__name__)
GROUP, VERSION, PLURAL = "training.wastedetection.io", "v1alpha1", "trainingruns"


class StatusReporter:
    def __init__(self, name: str | None, namespace: str | None, min_interval: float = 2.0):
        self.name, self.namespace = name, namespace or "default"
        self.min_interval = min_interval
        self._api = None
        self._last = 0.0
        self._stage: str | None = None
        self._warned = False
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
        if self._api is None:
            return
        try:
            self._api.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, PLURAL, self.name, {"status": status}
            )
        except Exception as exc:  # noqa: BLE001
            if not self._warned:
                log.warning(logfmt(event="status_patch_failed", run=self.name, error=str(exc)[:200]))
                self._warned = True

    def progress(
        self,
        stage: str,
        epoch: int = 0,
        epochs: int = 0,
        best_map50: float | None = None,
        force: bool = False,
    ) -> None:
        now = time.monotonic()
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
        }
        if best_map50 is not None:
            progress["bestMAP50"] = round(float(best_map50), 4)
        self._patch({"progress": progress})

    def result(self, compact: dict[str, Any]) -> None:
        self._patch({"result": compact})
