"""The product's part of an Ultralytics training, in whichever process trains.

On one device Ultralytics trains in this process. On several it writes a script that rebuilds the
trainer in `torch.distributed.run` workers from a pickle (ultralytics/utils/dist.py: the trainer's
class by module path, its args and model, and in 8.4 its callbacks); closures over the job's clients
would not survive that, and older releases carried no callbacks at all. So:

- `TrainHooks` does what the job needs during training (status progress, the epoch checkpoint upload,
  the outcome file the launching process reads back). It is picklable: its clients are built on first
  use in the process that runs it. It acts on rank 0 (or the single process) only.
- `WasteTrainer`, an importable DetectionTrainer subclass, installs `TrainHooks` from TRAINER_HOOKS (a
  JSON `HookConfig` in the environment, which torch.distributed.run passes to its workers) unless a
  carried copy is already among its callbacks. It also sizes batchSize auto, which Ultralytics'
  AutoBatch refuses to do for several GPUs.

Import this module only after trainer.yolo.prepare_offline (it imports Ultralytics).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ultralytics.engine import trainer as ul_trainer
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG

from trainer import resources
from trainer.files import write_text_atomic
from trainer.report import logfmt, setup_logging

log = logging.getLogger("trainer")
HOOKS_ENV = "TRAINER_HOOKS"


@dataclass(frozen=True)
class HookConfig:
    outcome_path: str  # the JSON the launching process reads after training
    run_name: str | None = None  # the TrainingRun whose status.progress rank 0 patches
    run_namespace: str | None = None
    models_bucket: str | None = None  # where checkpoints go: this bucket, or else local_dir/models-bucket
    local_dir: str | None = None
    checkpoint_object: str | None = None  # None: no checkpoint upload
    checkpoint_every: int = 1
    # The registry row whose heartbeat_at each checkpoint refreshes (None: none). The database is
    # DATABASE_URL from the environment the workers inherit (never in this JSON), else local_dir's SQLite.
    heartbeat_run_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> HookConfig:
        return cls(**json.loads(text))


def rank() -> int:
    """-1 in a single process, else this worker's global rank (set by torch.distributed.run)."""
    return int(os.environ.get("RANK", "-1"))


class TrainHooks:
    def __init__(self, config: HookConfig):
        self.config = config
        self.epoch = 0
        self.stop = False
        self.best_map50: float | None = None
        self._reporter = None
        self._store = None
        self._registry = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        # API, storage and database clients are per process
        state["_reporter"] = state["_store"] = state["_registry"] = None
        return state

    def install(self, trainer) -> None:
        trainer.add_callback("on_fit_epoch_end", self.on_fit_epoch_end)
        trainer.add_callback("on_train_end", self.on_train_end)

    @staticmethod
    def installed_in(trainer) -> bool:
        return any(
            isinstance(getattr(cb, "__self__", None), TrainHooks)
            for cb in trainer.callbacks.get("on_fit_epoch_end", [])
        )

    def reporter(self):
        if self._reporter is None:
            from trainer.progress import StatusReporter

            self._reporter = StatusReporter(self.config.run_name, self.config.run_namespace)
        return self._reporter

    def store(self):
        if self._store is None:
            from trainer.blobstore import GCSBlobStore, LocalBlobStore

            c = self.config
            self._store = (
                GCSBlobStore(c.models_bucket)
                if c.models_bucket
                else LocalBlobStore(Path(c.local_dir or ".wd-local") / "models-bucket")
            )
        return self._store

    def registry(self):
        if self._registry is None:
            from trainer.db import connect
            from trainer.registry import Registry

            local = Path(self.config.local_dir or ".wd-local")
            self._registry = Registry(connect(os.environ.get("DATABASE_URL") or None, local))
        return self._registry

    def on_fit_epoch_end(self, tr) -> None:
        if rank() > 0 or tr.epoch >= tr.epochs:  # Ultralytics fires it once more after validating best.pt
            return
        self.epoch, self.stop = tr.epoch + 1, bool(tr.stop)
        map50 = (tr.metrics or {}).get("metrics/mAP50(B)")
        if map50 is not None and (self.best_map50 is None or map50 > self.best_map50):
            self.best_map50 = float(map50)
        log.info(
            logfmt(
                event="epoch",
                epoch=self.epoch,
                epochs=tr.epochs,
                map50=float(map50) if map50 is not None else "",
                rank=max(rank(), 0),
                world_size=max(tr.world_size, 1),
            )
        )
        self.reporter().progress("Training", self.epoch, tr.epochs, self.best_map50)
        c = self.config
        last = Path(tr.last)
        if (
            c.checkpoint_object
            and last.is_file()
            and self.epoch % max(1, c.checkpoint_every) == 0
            and self.epoch < tr.epochs
        ):
            self.store().upload_file(last, c.checkpoint_object)  # a retried Job resumes from here
            if c.heartbeat_run_id:
                try:
                    self.registry().heartbeat(c.heartbeat_run_id)
                except Exception as exc:  # noqa: BLE001 - a missed heartbeat is no reason to stop training
                    log.warning(logfmt(event="heartbeat_failed", error=str(exc)[:200]))

    def on_train_end(self, tr) -> None:
        if rank() > 0:
            return
        from trainer.yolo import metrics_from

        validator_metrics = getattr(getattr(tr, "validator", None), "metrics", None)
        outcome = {
            "epochs_completed": self.epoch,
            "epochs": int(tr.epochs),
            "early_stopped": self.stop and self.epoch < int(tr.epochs),
            "batch": int(tr.batch_size),
            "workers_per_rank": int(getattr(tr.train_loader, "num_workers", 0)),
            "world_size": max(int(tr.world_size), 1),
            "device": str(tr.args.device),
            "best": str(tr.best),
            "last": str(tr.last),
            "save_dir": str(tr.save_dir),
            "metrics": metrics_from(validator_metrics) if validator_metrics is not None else {},
        }
        write_text_atomic(Path(self.config.outcome_path), json.dumps(outcome))
        if self._registry is not None:
            self._registry.db.close()
            self._registry = None


def check_amp_offline(model) -> bool:
    # The real check downloads a model to compare outputs; offline it only fails slowly.
    return next(model.parameters()).device.type == "cuda"


class WasteTrainer(DetectionTrainer):
    """Ultralytics' detection trainer with the product's hooks, in the launching process and in every
    DDP worker (the worker script imports this class by its module path)."""

    def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None):
        ul_trainer.check_amp = check_amp_offline  # in DDP workers too, which never ran prepare_offline
        if rank() >= 0:
            setup_logging()  # a DDP worker: a fresh process running Ultralytics' generated script
        super().__init__(cfg, overrides, _callbacks)
        text = os.environ.get(HOOKS_ENV)
        if text and not TrainHooks.installed_in(self):
            TrainHooks(HookConfig.from_json(text)).install(self)

    def auto_batch(self, max_num_obj=0, dataset_size=0):
        """One GPU with batch -1: Ultralytics' AutoBatch (60 % of the GPU memory), at most the measured
        knee of resources.auto_batch_per_gpu."""
        fitted = super().auto_batch(max_num_obj, dataset_size)
        return min(int(fitted), resources.auto_batch_per_gpu(int(self.args.imgsz)))

    def train(self):
        if self.ddp and self.args.batch < 1:
            # Several GPUs: Ultralytics refuses AutoBatch there. Fit one GPU here, before it launches the
            # workers, and give each GPU that batch.
            self.args.batch = self.batch_size = self._per_gpu_auto_batch() * self.world_size
            log.info(logfmt(event="auto_batch", batch=self.batch_size, gpus=self.world_size))
        return super().train()

    def _per_gpu_auto_batch(self) -> int:
        import copy

        import torch
        from torch import nn
        from ultralytics.utils.autobatch import check_train_batch_size

        rule = resources.auto_batch_per_gpu(int(self.args.imgsz))
        if isinstance(self.model, nn.Module):
            model = copy.deepcopy(self.model)
        elif str(self.model).endswith((".yaml", ".yml")):
            model = self.get_model(cfg=str(self.model), verbose=False)
        else:
            return rule
        if not torch.cuda.is_available():
            return rule
        first = int(str(self.args.device).split(",")[0])
        try:
            # Leaves this process a CUDA context on the first GPU (~0.5 GB) while the workers train.
            fitted = check_train_batch_size(model.to(torch.device("cuda", first)), imgsz=int(self.args.imgsz))
        finally:
            del model
            torch.cuda.empty_cache()
        return max(1, min(int(fitted), rule))
