"""Ultralytics, run fully offline: no telemetry, no font, weight or AMP-check downloads.

Everything Ultralytics writes (settings, fonts, runs) lives under a writable work folder, so the job
runs with a read-only root filesystem and a read-only HOME.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer import CLASS_NAMES
from trainer.errors import ConfigError, ModelUnavailableError, TrainingError

if TYPE_CHECKING:
    from trainer.hooks import HookConfig

log = logging.getLogger(__name__)
_prepared: Path | None = None


def prepare_offline(config_dir: Path) -> None:
    """Must run before `import ultralytics` (its settings are read at import time)."""
    global _prepared
    if _prepared is not None:
        return
    config_dir = Path(config_dir).absolute()
    config_dir.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    os.environ.setdefault("MPLCONFIGDIR", str(config_dir / "matplotlib"))
    seed = os.environ.get("TRAINER_MPL_SEED")
    if seed and Path(seed).is_dir():
        # A font list built into the image: copying it saves rebuilding it at every start.
        target = Path(os.environ["MPLCONFIGDIR"])
        target.mkdir(parents=True, exist_ok=True)
        for cached in Path(seed).glob("fontlist-*.json"):
            if not (target / cached.name).exists():
                shutil.copyfile(cached, target / cached.name)
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for sub in ("Ultralytics", "."):
        target = config_dir / sub
        target.mkdir(parents=True, exist_ok=True)
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            if not (target / name).exists():
                shutil.copyfile(font, target / name)  # the font check then never goes online

    from ultralytics import settings
    from ultralytics.engine import trainer as ul_trainer

    from trainer.hooks import check_amp_offline

    wanted = {
        "sync": False,
        "hub": False,
        "clearml": False,
        "comet": False,
        "dvc": False,
        "mlflow": False,
        "neptune": False,
        "raytune": False,
        "tensorboard": False,
        "wandb": False,
        "datasets_dir": str(config_dir / "datasets"),
        "weights_dir": str(config_dir / "weights"),
        "runs_dir": str(config_dir / "runs"),
    }
    settings.update({k: v for k, v in wanted.items() if k in settings})
    ul_trainer.check_amp = check_amp_offline
    _prepared = config_dir


class WarmUp:
    """Imports torch, Ultralytics and matplotlib (5-6 s of CPU, measured in bench/fixed_costs.py) and
    counts the GPUs in a background thread, so that they overlap the downloads instead of following them.
    `device()` waits for it and raises what it raised (a --device naming a missing GPU, for one)."""

    def __init__(self, config_dir: Path, device: str):
        import threading

        self._config_dir, self._requested = config_dir, device
        self._device: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="warm-up", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            prepare_offline(self._config_dir)
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # the per-class chart at the end of the run
            import ultralytics.models.yolo.detect  # noqa: F401

            import trainer.hooks  # noqa: F401

            self._device = resolve_device(self._requested)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of device()
            self._error = exc

    def device(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._device is not None
        return self._device

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)


def resolve_device(device: str) -> str:
    """--device -> Ultralytics' device string: auto and cuda take every GPU this process sees."""
    from trainer import resources

    visible = resources.visible_gpus() if device.strip().lower() not in ("cpu", "mps") else 0
    return resources.resolve_device(device, visible)


def load_model(weights: Path | str):
    """A YOLO model from a .pt file or a .yaml architecture; never downloads."""
    from ultralytics import YOLO

    text = str(weights)
    if not text.endswith((".yaml", ".yml")) and not Path(text).is_file():
        raise ModelUnavailableError(f"weights file {text} does not exist")
    try:
        return YOLO(text, task="detect")
    except Exception as exc:  # noqa: BLE001
        raise ModelUnavailableError(f"cannot load {text}: {str(exc)[:300]}") from None


@dataclass
class TrainOutcome:
    best: Path
    last: Path
    save_dir: Path
    epochs_completed: int
    early_stopped: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    # How the run was sized: total batch, loader workers per GPU process, processes, the CPU budget.
    sizing: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sizing:
    batch: int  # Ultralytics' batch argument: a total, or -1 for AutoBatch on one GPU
    workers: int  # per training process
    ranks: int
    cpu: dict[str, Any]


def size_run(settings, device: str, env: dict[str, str] | None = None) -> Sizing:
    """Batch and loader workers for this device from the settings and what the pod may use."""
    from trainer import resources

    ranks = resources.ranks_of(device)
    budget = resources.read_cpu_budget(env)
    batch = settings.batch_size
    if batch == "auto":
        # On CUDA Ultralytics' AutoBatch fits the GPU memory (hooks.WasteTrainer caps it); a CPU has no
        # memory to fit and barely cares about the batch.
        batch = -1 if device not in ("cpu", "mps") else resources.CPU_AUTO_BATCH
        per_rank = resources.auto_batch_per_gpu(settings.img_size) if batch == -1 else batch
    elif batch < ranks:
        raise ConfigError(
            f"--batch-size {batch} is the total over all GPUs and cannot be shared among {ranks} GPUs: "
            f"use at least {ranks} (a multiple of {ranks}), or auto"
        )
    else:
        per_rank = batch // ranks
    workers = settings.workers
    if workers is None:
        workers = resources.loader_workers(
            budget.cpus, ranks, resources.read_memory_limit(), per_rank, settings.img_size
        )
    return Sizing(batch=int(batch), workers=int(workers), ranks=ranks, cpu=budget.as_dict())


def train(
    model,
    *,
    data_yaml: Path,
    project: Path,
    settings,
    device: str,
    resume: bool,
    hooks: HookConfig | None = None,
    trainer_cls=None,
) -> TrainOutcome:
    """Trains through hooks.WasteTrainer (one process, or Ultralytics' DDP workers when device names
    several GPUs) and reads back what rank 0 wrote to the hooks' outcome file."""
    from trainer.hooks import HOOKS_ENV, HookConfig, WasteTrainer

    project = Path(project)
    hooks = hooks or HookConfig(outcome_path=str(project / "train-outcome.json"))
    outcome_file = Path(hooks.outcome_path)
    outcome_file.unlink(missing_ok=True)  # a retried Job's previous attempt must not be read as this one's
    sizing = size_run(settings, device)
    args = dict(
        data=str(data_yaml),
        epochs=settings.epochs,
        batch=sizing.batch,
        optimizer=settings.optimizer,
        imgsz=settings.img_size,
        patience=settings.patience or 10**6,
        device=device,
        workers=sizing.workers,
        project=str(project),
        name="train",
        exist_ok=True,
        seed=settings.seed,
        deterministic=True,
        plots=False,
        verbose=False,
        val=True,
        amp=device != "cpu",
        cache=False,
    )
    if settings.learning_rate is not None:
        args["lr0"] = settings.learning_rate
    previous = os.environ.get(HOOKS_ENV)
    os.environ[HOOKS_ENV] = hooks.to_json()  # read by WasteTrainer here and in every DDP worker
    cls = trainer_cls or WasteTrainer
    try:
        if resume:
            model.train(trainer=cls, resume=True)
        else:
            model.train(trainer=cls, **args)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        raise TrainingError(f"training failed: {type(exc).__name__}: {str(exc)[:400]}") from exc
    finally:
        if previous is None:
            os.environ.pop(HOOKS_ENV, None)
        else:
            os.environ[HOOKS_ENV] = previous
    try:
        done = json.loads(outcome_file.read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"training ended without its outcome ({outcome_file}): {exc}") from None
    best, last = Path(done["best"]), Path(done["last"])
    if not best.is_file():
        best = last
    if not best.is_file():
        raise TrainingError("training ended without writing any weights")
    return TrainOutcome(
        best=best,
        last=last,
        save_dir=Path(done["save_dir"]),
        epochs_completed=int(done["epochs_completed"]),
        early_stopped=bool(done["early_stopped"]),
        metrics=done["metrics"],
        sizing={
            "batch": done["batch"],
            "workers_per_process": done["workers_per_rank"],
            "processes": done["world_size"],
            "cpu": sizing.cpu,
        },
    )


def _floats(values) -> list[float]:
    if values is None:
        return []
    import numpy as np

    return [float(v) for v in np.asarray(values).reshape(-1)]


def metrics_from(results) -> dict[str, Any]:
    """Ultralytics DetMetrics -> plain numbers: overall, AP50 per class present, confusion matrix."""
    box = results.box
    per_class: dict[str, dict[str, float]] = {}
    ap50 = _floats(getattr(box, "ap50", None))
    ap = _floats(getattr(box, "ap", None))
    for i, cls in enumerate(_floats(getattr(box, "ap_class_index", None))):
        name = CLASS_NAMES[int(cls)] if int(cls) < len(CLASS_NAMES) else str(cls)
        per_class[name] = {
            "ap50": float(ap50[i]) if i < len(ap50) else 0.0,
            "ap50_95": float(ap[i]) if i < len(ap) else 0.0,
        }
    confusion = None
    cm = getattr(results, "confusion_matrix", None)
    if cm is not None and getattr(cm, "matrix", None) is not None:
        confusion = [[int(v) for v in row] for row in cm.matrix.tolist()]
    return {
        "map50": float(box.map50),
        "map50_95": float(box.map),
        "precision": float(box.mp),
        "recall": float(box.mr),
        "per_class": per_class,
        "confusion": confusion,
    }


def evaluate(
    weights: Path,
    *,
    data_yaml: Path,
    project: Path,
    settings,
    device: str,
    name: str,
    batch: int | None = None,
    workers: int | None = None,
) -> dict:
    """Validates weights on data_yaml's val split. Pass the challenger's validation batch (Ultralytics
    validates during training at twice the per-GPU training batch): the val loader pads each batch to
    its own shape, so the batch is part of what the gate compares."""
    from trainer import resources

    model = load_model(weights)
    if batch is None:
        batch = settings.batch_size if settings.batch_size != "auto" else resources.CPU_AUTO_BATCH
    if workers is None:
        workers = settings.workers if settings.workers is not None else 0
    try:
        results = model.val(
            data=str(data_yaml),
            imgsz=settings.img_size,
            batch=batch,
            device=device.split(",")[0],  # validation runs in one process, on the first GPU
            workers=workers,
            project=str(project),
            name=name,
            exist_ok=True,
            plots=False,
            verbose=False,
            split="val",
        )
    except Exception as exc:
        raise TrainingError(
            f"evaluation of {weights.name} failed: {type(exc).__name__}: {str(exc)[:400]}"
        ) from exc
    return metrics_from(results)
