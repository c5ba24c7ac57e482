"""One typed settings object for the trainer, built at start-up from flags and environment."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from trainer.errors import ConfigError
from trainer.uris import check_base_model, dataset_source

PROMOTION_MODES = ("gate", "force", "skip")
# Ultralytics' optimizers; "auto" lets Ultralytics choose one and its learning rate from the run's length.
OPTIMIZERS = ("auto", "SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSProp")
# A Kubernetes uid (a UUID); it names the run's checkpoint folder, so nothing else is let through.
_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")


@dataclass(frozen=True)
class Settings:
    # Training parameters (names and defaults are the original job's).
    epochs: int = 50
    # Images per optimizer step over all GPUs; "auto" sizes it to the GPUs (trainer/resources.py).
    batch_size: int | Literal["auto"] = 16
    optimizer: str = "auto"
    learning_rate: float | None = None  # None: the optimizer's own (auto chooses it)
    img_size: int = 640
    patience: int = 10
    device: str = "auto"
    base_model: str = "yolov8n.pt"
    seed: int = 0
    workers: int | None = None  # loader workers per training process; None: sized from the pod's CPUs
    # Data source.
    from_inferences: bool = False
    only_verified: bool = False
    all_time: bool = False
    train_split: float = 0.8
    min_detections: int = 1
    background_share: float = 0.1  # with min_detections 0: the most background images may make up
    dataset: str | None = None
    incremental: bool = False  # dataset mode: the dataset adds to what the deployed model learned
    replay_ratio: float = 1.0
    history_val: int = 1000
    # Promotion gate.
    promotion: str = "gate"
    map50_tolerance: float = 0.02
    class_ap_drop: float = 0.15
    checkpoint_every: int = 1
    # Environment.
    database_url: str | None = field(default=None, repr=False)
    models_bucket: str | None = None
    images_bucket: str | None = None
    datasets_bucket: str | None = None
    local_dir: Path = Path(".wd-local")
    weights_dir: Path | None = None  # pretrained weights baked into the trainer image (TRAINER_WEIGHTS_DIR)
    work_dir: Path = Path("/tmp/wd-trainer")
    cache_dir: Path = Path("/tmp/wd-trainer/cache")
    report_path: Path | None = None
    termination_log: Path | None = None
    run_name: str | None = None
    run_namespace: str | None = None
    run_uid: str | None = None
    download_concurrency: int = 16
    cache_max_bytes: int = 0  # 0: unbounded (a per-Job scratch volume); else least recently used evicted

    @property
    def run_key(self) -> str | None:
        """The identity of this run in the registry and the models bucket: its TrainingRun's uid.

        The same for every retry of the run's Job (which resumes), and new for a TrainingRun deleted and
        created again under the same name (which starts afresh). None outside Kubernetes.
        """
        return self.run_uid

    @property
    def run_label(self) -> str | None:
        """namespace/name of the TrainingRun, for people (logs, the registry's run row, promotions)."""
        if self.run_name:
            return f"{self.run_namespace or 'default'}/{self.run_name}"
        return None

    def effective_parameters(self) -> dict:
        """What a model version records about how it was made (no secrets)."""
        keep = (
            "epochs batch_size optimizer learning_rate img_size patience device base_model seed from_inferences "
            "only_verified all_time train_split min_detections background_share dataset incremental replay_ratio "
            "history_val promotion "
            "map50_tolerance class_ap_drop"
        ).split()
        values = asdict(self)
        return {k: values[k] for k in keep}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Fine-tune the waste-detection YOLOv8 model on verified feedback and publish a new version.",
        epilog="Subcommand: 'python -m trainer versions' lists registered versions.",
    )
    p.add_argument("--epochs", type=int, default=50, help="training epochs (default 50)")
    p.add_argument(
        "--batch-size",
        type=_batch_size,
        default=16,
        help="images per optimizer step, over all GPUs together, or auto: 64 per GPU at 640 px (the same "
        "pixels at other sizes), lowered by Ultralytics' AutoBatch if the GPU memory needs it; 16 on CPU "
        "(default 16)",
    )
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default="auto",
        help="auto (Ultralytics picks AdamW for short runs, SGD for long ones, and their learning rates) or "
        "one of SGD, Adam, AdamW, NAdam, RAdam, RMSProp (default auto)",
    )
    p.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="initial learning rate (Ultralytics lr0); needs a named --optimizer, as auto picks its own",
    )
    p.add_argument("--img-size", type=int, default=640, help="square training image size (default 640)")
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs (default 10)")
    p.add_argument(
        "--device",
        default="auto",
        help="auto (every visible GPU, else cpu; several GPUs train with DDP), cpu, cuda, 0, 0,1",
    )
    p.add_argument(
        "--base-model",
        default="yolov8n.pt",
        help="weights to start from when models/latest/ is empty: a file name looked up in "
        "$TRAINER_WEIGHTS_DIR then $TRAINER_LOCAL_DIR/weights/, a .pt path, a gs://bucket/path.pt URI, or a "
        ".yaml architecture to train from scratch (default yolov8n.pt)",
    )
    p.add_argument("--from-inferences", action="store_true", help="train on Inference API records")
    p.add_argument("--only-verified", action="store_true", help="keep only verified or corrected records")
    p.add_argument(
        "--all-time", action="store_true", help="all records, not only those since the last training"
    )
    p.add_argument("--train-split", type=float, default=0.8, help="fraction of samples used for training")
    p.add_argument("--min-detections", type=int, default=1, help="skip records with fewer boxes")
    p.add_argument(
        "--background-share",
        type=float,
        default=0.1,
        help="with --min-detections 0, records whose label file has no boxes train as background images "
        "(negatives against false positives), at most this share of the images (default 0.1)",
    )
    p.add_argument(
        "--dataset",
        metavar="gs://bucket/prefix|NAME|PATH",
        help="train on a YOLO dataset: gs://bucket/prefix, a NAME in GCS_DATASETS_BUCKET, or a local folder",
    )
    p.add_argument(
        "--incremental",
        action="store_true",
        help="with --dataset: the dataset is new data on top of the deployed model, not a complete set; "
        "earlier datasets' training images are replayed (--replay-ratio) and their validation images "
        "added (--history-val), as on incremental runs from inferences",
    )
    p.add_argument(
        "--replay-ratio",
        type=float,
        default=1.0,
        help="earlier training images mixed in per new image on incremental runs (default 1.0)",
    )
    p.add_argument(
        "--history-val",
        type=int,
        default=1000,
        metavar="N",
        help="earlier validation images (stable hash split, sampled per class) added to an incremental "
        "run's validation set, so champion and challenger are also compared on what the model knew "
        "before; 0: the new data's only (default 1000)",
    )
    p.add_argument(
        "--promotion",
        choices=PROMOTION_MODES,
        default="gate",
        help="gate: move latest only if not worse; force: always; skip: never (default gate)",
    )
    p.add_argument(
        "--map50-tolerance",
        type=float,
        default=0.02,
        help="gate: how much lower than the champion's mAP50 is still accepted; negative demands an improvement (default 0.02)",
    )
    p.add_argument(
        "--class-ap-drop",
        type=float,
        default=0.15,
        help="gate: largest accepted drop of one class's AP50 (default 0.15)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data-loader workers per GPU (default: the CPUs the pod may use - cgroup quota, affinity, "
        "TRAINER_CPU_REQUEST_MILLICORES - shared among the GPUs, at most 16)",
    )
    return p


def _batch_size(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or auto, got {text!r}") from None


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors become one ConfigError line
        raise _ArgumentError(message)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser()
    parser.__class__ = _Parser
    try:
        return parser.parse_args(list(argv))
    except _ArgumentError as exc:
        raise ConfigError(str(exc)) from None


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")


def _cache_max_bytes(raw: str) -> int:
    raw = raw.strip()
    if not raw:
        return 0
    try:
        gb = float(raw)
    except ValueError:
        raise ConfigError(f"TRAINER_CACHE_MAX_GB={raw!r} is not a number of gigabytes") from None
    if not 0 <= gb < 1e6:
        raise ConfigError(f"TRAINER_CACHE_MAX_GB={raw!r} must be between 0 (unbounded) and 1e6")
    return int(gb * 1e9)


def _check_database_url(url: str) -> None:
    """Refuses a malformed URL up front; the message never repeats the URL (it holds a password)."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("DATABASE_URL must be a postgresql:// URL")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0..65535
    except ValueError as exc:
        raise ConfigError(f"DATABASE_URL is malformed: {exc}") from None
    if not parts.hostname and "host=" not in parts.query:
        raise ConfigError("DATABASE_URL names no host")


def load_settings(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Settings:
    """Flags and environment -> Settings, or a ConfigError naming what is wrong. Reads no files."""
    env = os.environ if env is None else env
    a = parse_args(argv)

    if a.from_inferences and a.dataset:
        raise ConfigError("choose one data source: --from-inferences or --dataset, not both")
    if not a.from_inferences and not a.dataset:
        raise ConfigError("no data source: pass --from-inferences or --dataset PATH|gs://bucket/prefix")
    if a.dataset and (a.only_verified or a.all_time):
        raise ConfigError("--only-verified and --all-time apply to --from-inferences, not to --dataset")
    if a.incremental and not a.dataset:
        raise ConfigError(
            "--incremental applies to --dataset (runs from inferences are incremental unless --all-time)"
        )
    if not 0 < a.train_split < 1:
        raise ConfigError(f"--train-split must be between 0 and 1 (exclusive), got {a.train_split}")
    for name in ("epochs", "batch_size", "img_size"):
        if getattr(a, name) != "auto":
            _positive("--" + name.replace("_", "-"), getattr(a, name))
    if a.workers is not None and a.workers < 0:
        raise ConfigError(f"--workers must not be negative, got {a.workers}")
    if a.learning_rate is not None:
        _positive("--learning-rate", a.learning_rate)
        if a.optimizer == "auto":
            # Ultralytics would ignore it with only a log line: say so before any GPU time is spent.
            raise ConfigError(
                f"--learning-rate {a.learning_rate} has no effect with --optimizer auto (Ultralytics then "
                "picks the optimizer and its rate); name one, e.g. --optimizer SGD --learning-rate 0.01"
            )
    if a.img_size % 32:
        raise ConfigError(f"--img-size must be a multiple of 32, got {a.img_size}")
    if a.patience < 0 or a.min_detections < 0:
        raise ConfigError("--patience and --min-detections must not be negative")
    if a.history_val < 0:
        raise ConfigError(f"--history-val must not be negative, got {a.history_val}")
    if not 0 <= a.background_share < 1:
        raise ConfigError(f"--background-share must be at least 0 and below 1, got {a.background_share}")
    if not 0 <= a.replay_ratio <= 10:
        raise ConfigError(f"--replay-ratio must be between 0 and 10, got {a.replay_ratio}")

    database_url = env.get("DATABASE_URL") or None
    images_bucket = env.get("GCS_IMAGES_BUCKET") or None
    datasets_bucket = env.get("GCS_DATASETS_BUCKET") or None
    if a.from_inferences and not database_url:
        raise ConfigError("--from-inferences needs DATABASE_URL (the Inference API's PostgreSQL)")
    if database_url:
        _check_database_url(database_url)
    models_bucket = env.get("GCS_MODELS_BUCKET") or None
    if images_bucket or datasets_bucket or models_bucket:
        # Production mode: once any bucket is named, the ones this mode needs must all be named, so a
        # forgotten variable never sends models to a local folder inside a pod.
        if not models_bucket:
            raise ConfigError("GCS_MODELS_BUCKET is not set, but other GCS_*_BUCKET variables are")
        if a.from_inferences and not images_bucket:
            raise ConfigError("--from-inferences with GCS needs GCS_IMAGES_BUCKET (where the images are)")

    run_name = env.get("TRAININGRUN_NAME") or None
    run_uid = (env.get("TRAININGRUN_UID") or "").strip() or None
    if run_name and not run_uid:
        # Keyed by name, a run deleted and created again would resume or repeat the old one's work.
        raise ConfigError(
            "TRAININGRUN_NAME is set but TRAININGRUN_UID is not: the operator sets both (an older operator "
            "with a newer trainer image?); a run is identified by its TrainingRun's uid"
        )
    if run_uid and not _UID.fullmatch(run_uid):
        raise ConfigError(f"TRAININGRUN_UID={run_uid[:80]!r} is not a Kubernetes uid")

    # In a Job (the operator passes the run's uid) only the CRD's forms count: no local folders or paths.
    local_allowed = run_uid is None
    check_base_model(a.base_model, local_allowed)
    dataset = dataset_source(a.dataset, datasets_bucket, local_allowed) if a.dataset else None

    tmp = Path(env.get("TMPDIR") or "/tmp")
    work_dir = Path(env.get("TRAINER_WORK_DIR") or tmp / "wd-trainer")
    return Settings(
        epochs=a.epochs,
        batch_size=a.batch_size,
        optimizer=a.optimizer,
        learning_rate=a.learning_rate,
        img_size=a.img_size,
        patience=a.patience,
        device=a.device,
        base_model=a.base_model,
        seed=a.seed,
        workers=a.workers,
        from_inferences=a.from_inferences,
        only_verified=a.only_verified,
        all_time=a.all_time,
        train_split=a.train_split,
        min_detections=a.min_detections,
        background_share=a.background_share,
        dataset=dataset,
        incremental=a.incremental,
        replay_ratio=a.replay_ratio,
        history_val=a.history_val,
        promotion=a.promotion,
        map50_tolerance=a.map50_tolerance,
        class_ap_drop=a.class_ap_drop,
        database_url=database_url,
        models_bucket=models_bucket,
        images_bucket=images_bucket,
        datasets_bucket=datasets_bucket,
        local_dir=Path(env.get("TRAINER_LOCAL_DIR") or ".wd-local").absolute(),
        weights_dir=Path(env["TRAINER_WEIGHTS_DIR"]) if env.get("TRAINER_WEIGHTS_DIR") else None,
        work_dir=work_dir,
        cache_dir=Path(env.get("TRAINER_CACHE_DIR") or work_dir / "cache"),
        report_path=Path(env["TRAINER_REPORT_PATH"]) if env.get("TRAINER_REPORT_PATH") else None,
        termination_log=Path(env["TRAINER_TERMINATION_LOG"]) if env.get("TRAINER_TERMINATION_LOG") else None,
        run_name=run_name,
        run_namespace=env.get("TRAININGRUN_NAMESPACE") or None,
        run_uid=run_uid,
        download_concurrency=int(env.get("TRAINER_DOWNLOAD_CONCURRENCY") or 16),
        cache_max_bytes=_cache_max_bytes(env.get("TRAINER_CACHE_MAX_GB", "")),
    )
