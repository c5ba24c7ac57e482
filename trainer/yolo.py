"""Ultralytics, run fully offline: no telemetry, no font, weight or AMP-check downloads.

Everything Ultralytics writes (settings, fonts, runs) lives under a writable work folder, so the job
runs with a read-only root filesystem and a read-only HOME.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import CLASS_NAMES
from trainer.errors import ModelUnavailableError, TrainingError

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

    def check_amp_offline(model) -> bool:
        # The real check downloads a model to compare outputs; offline it only fails slowly.
        return next(model.parameters()).device.type == "cuda"

    ul_trainer.check_amp = check_amp_offline
    _prepared = config_dir


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


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
class EpochUpdate:
    epoch: int  # 1-based, epochs completed
    epochs: int
    map50: float | None
    best_fitness: float | None
    last: Path | None
    save_dir: Path


@dataclass
class TrainOutcome:
    best: Path
    last: Path
    save_dir: Path
    epochs_completed: int
    early_stopped: bool
    metrics: dict[str, Any] = field(default_factory=dict)


def train(
    model,
    *,
    data_yaml: Path,
    project: Path,
    settings,
    device: str,
    resume: bool,
    on_epoch: Callable[[EpochUpdate], None] | None = None,
) -> TrainOutcome:
    state: dict[str, Any] = {"epoch": 0, "stop": False}

    def fit_epoch_end(tr) -> None:
        if tr.epoch >= tr.epochs:  # fired once more after the final validation of best.pt
            return
        state.update(epoch=tr.epoch + 1, stop=bool(tr.stop), epochs=tr.epochs)
        if on_epoch:
            m = tr.metrics or {}
            on_epoch(
                EpochUpdate(
                    epoch=tr.epoch + 1,
                    epochs=tr.epochs,
                    map50=m.get("metrics/mAP50(B)"),
                    best_fitness=tr.best_fitness,
                    last=Path(tr.last),
                    save_dir=Path(tr.save_dir),
                )
            )

    model.add_callback("on_fit_epoch_end", fit_epoch_end)
    args = dict(
        data=str(data_yaml),
        epochs=settings.epochs,
        batch=settings.batch_size,
        optimizer=settings.optimizer,
        imgsz=settings.img_size,
        patience=settings.patience or 10**6,
        device=device,
        workers=settings.workers,
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
    try:
        results = model.train(resume=True) if resume else model.train(**args)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        raise TrainingError(f"training failed: {type(exc).__name__}: {str(exc)[:400]}") from exc
    tr = model.trainer
    epochs = int(getattr(tr, "epochs", settings.epochs))
    best, last = Path(tr.best), Path(tr.last)
    if not best.is_file():
        best = last
    if not best.is_file():
        raise TrainingError("training ended without writing any weights")
    return TrainOutcome(
        best=best,
        last=last,
        save_dir=Path(tr.save_dir),
        epochs_completed=int(state["epoch"]),
        early_stopped=bool(state["stop"]) and state["epoch"] < epochs,
        metrics=metrics_from(results) if results is not None else {},
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


def evaluate(weights: Path, *, data_yaml: Path, project: Path, settings, device: str, name: str) -> dict:
    model = load_model(weights)
    try:
        results = model.val(
            data=str(data_yaml),
            imgsz=settings.img_size,
            batch=settings.batch_size,
            device=device,
            workers=settings.workers,
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
