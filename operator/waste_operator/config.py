"""One typed settings object for the operator, read from the environment once at startup."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Every variable `from_env` reads, with the field it sets and what it means: `python -m waste_operator
# --help` prints them with their defaults (a unit test checks this list against what from_env reads).
ENV_HELP: tuple[tuple[str, str, str], ...] = (
    ("TRAINER_IMAGE", "trainer_image", "the trainer image of the training Jobs (pin it by digest)"),
    ("GCS_MODELS_BUCKET", "models_bucket", "bucket of the model versions"),
    ("GCS_IMAGES_BUCKET", "images_bucket", "bucket of the Inference API's images and labels"),
    ("GCS_DATASETS_BUCKET", "datasets_bucket", "bucket of uploaded datasets"),
    ("DB_SECRET_NAME", "db_secret_name", "Secret, in the run's namespace, with the database URL"),
    ("DB_SECRET_KEY", "db_secret_key", "its key"),
    ("WATCH_NAMESPACES", "namespaces", "comma-separated namespaces whose TrainingRuns it runs"),
    ("TRAINER_SERVICE_ACCOUNT", "trainer_service_account", "ServiceAccount of the training Pods"),
    ("RESYNC_SECONDS", "resync_seconds", "how often unfinished runs are re-read without an event"),
    ("STUCK_SECONDS", "stuck_seconds", "how long a Pod may stay unschedulable before the run fails"),
    ("TRAINER_SHM_SIZE", "shm_size", "least /dev/shm of a training Pod (more for many loaders)"),
    ("TRAINER_TMP_SIZE", "tmp_size", "size limit of the training Pod's /tmp"),
    ("LIVENESS_ENDPOINT", "liveness_endpoint", "where the liveness probe is served"),
    ("TRAINER_CACHE_CLAIM", "cache_claim", "PersistentVolumeClaim for the trainer's download cache"),
    ("TRAINER_CACHE_MAX_GB", "cache_max_gb", "bound of that cache, in GB"),
    ("DATABASE_URL", "database_url", "the Inference API's database, read-only (TrainingSchedule counts)"),
    ("SCHEDULE_RESYNC_SECONDS", "schedule_seconds", "how often every TrainingSchedule is looked at"),
    ("RESTART_RETRY_SECONDS", "restart_retry_seconds", "first wait before a refused restart is retried"),
    ("RESTART_ATTEMPTS", "restart_attempts", "how many times a refused restart is tried again"),
    ("TRAINER_IMAGE_PREFIXES", "image_prefixes", "comma-separated prefixes spec.image may start with"),
    ("LOG_LEVEL", "log_level", "DEBUG, INFO, WARNING or ERROR (DEBUG adds kopf's per-event lines)"),
    ("DEFAULT_QUEUE_NAME", "default_queue_name", "Kueue LocalQueue of runs that name none"),
    ("KUEUE_WORKLOADS", "watch_workloads", '"watch": follow Kueue\'s Workloads (needs their RBAC)'),
)


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable and what to do."""


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNITS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_UNITS |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: Any) -> float:
    """A Kubernetes quantity as the CRD admits it ("4", "500m", "16Gi", 8) -> a number."""
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"not a quantity: {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class OperatorConfig:
    trainer_image: str
    models_bucket: str
    images_bucket: str
    datasets_bucket: str
    db_secret_name: str = "waste-detection-db"
    db_secret_key: str = "database-url"
    # The operator watches named namespaces only (namespace Roles, no ClusterRole).
    namespaces: tuple[str, ...] = ("waste-detection",)
    trainer_service_account: str = "waste-trainer"
    # How often each unfinished run is re-read from the API, even when no watch event came.
    resync_seconds: float = 30.0
    # How long a Pod may stay unschedulable or unable to start before the run is failed.
    stuck_seconds: float = 900.0
    # The smallest /dev/shm a trainer gets; larger runs get what their loader workers need (jobs.shm_size).
    shm_size: str = "8Gi"
    tmp_size: str = "50Gi"
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    # A PersistentVolumeClaim (in the run's namespace) for the trainer's download cache; None: per-Job scratch.
    cache_claim: str | None = None
    cache_max_gb: float = 50.0
    # TrainingSchedules: the Inference API's database (read-only, to count new samples; from the Secret that
    # the Deployment mounts as DATABASE_URL; None: schedules with minNewSamples > 0 say so in their status),
    # and how often every schedule is looked at (a tick fires at most this late).
    database_url: str | None = field(default=None, repr=False)
    schedule_seconds: float = 10.0
    # A refused inference API restart is tried again after 30 s, doubling up to 10 min, this many times.
    restart_retry_seconds: float = 30.0
    restart_attempts: int = 6
    # spec.image must be trainer_image or start with one of these (the Job hands it the database Secret).
    image_prefixes: tuple[str, ...] = ()
    # The operator's own lines (one per decision); DEBUG also shows kopf's per-event lines.
    log_level: str = "INFO"
    # Kueue's LocalQueue for runs without spec.queueName; None: such runs go straight to the scheduler.
    default_queue_name: str | None = None
    # Watch Kueue's Workloads (KUEUE_WORKLOADS=watch): queued runs follow admission and preemption at once,
    # not at the next resync. Needs the Workload RBAC of manifests/components/kueue.
    watch_workloads: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise ConfigError(f"{name} is not set: the operator's ConfigMap must define it")
            return value

        def number(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a number") from None
            if value <= 0:
                raise ConfigError(f"{name}={raw!r} must be positive")
            return value

        def size(name: str, default: str) -> str:
            raw = env.get(name, "").strip() or default
            try:
                if quantity(raw) <= 0:
                    raise ValueError(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a positive size such as 8Gi or 512Mi") from None
            return raw

        log_level = env.get("LOG_LEVEL", "").strip().upper() or cls.log_level
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"LOG_LEVEL={log_level!r} is not one of DEBUG, INFO, WARNING, ERROR")
        namespaces = tuple(n.strip() for n in env.get("WATCH_NAMESPACES", "").split(",") if n.strip())
        return cls(
            trainer_image=required("TRAINER_IMAGE"),
            models_bucket=required("GCS_MODELS_BUCKET"),
            images_bucket=required("GCS_IMAGES_BUCKET"),
            datasets_bucket=required("GCS_DATASETS_BUCKET"),
            db_secret_name=env.get("DB_SECRET_NAME", "").strip() or cls.db_secret_name,
            db_secret_key=env.get("DB_SECRET_KEY", "").strip() or cls.db_secret_key,
            namespaces=namespaces or cls.namespaces,
            trainer_service_account=env.get("TRAINER_SERVICE_ACCOUNT", "").strip()
            or cls.trainer_service_account,
            resync_seconds=number("RESYNC_SECONDS", cls.resync_seconds),
            stuck_seconds=number("STUCK_SECONDS", cls.stuck_seconds),
            shm_size=size("TRAINER_SHM_SIZE", cls.shm_size),
            tmp_size=env.get("TRAINER_TMP_SIZE", "").strip() or cls.tmp_size,
            liveness_endpoint=env.get("LIVENESS_ENDPOINT", "").strip() or cls.liveness_endpoint,
            cache_claim=env.get("TRAINER_CACHE_CLAIM", "").strip() or None,
            cache_max_gb=number("TRAINER_CACHE_MAX_GB", cls.cache_max_gb),
            database_url=env.get("DATABASE_URL", "").strip() or None,
            schedule_seconds=number("SCHEDULE_RESYNC_SECONDS", cls.schedule_seconds),
            restart_retry_seconds=number("RESTART_RETRY_SECONDS", cls.restart_retry_seconds),
            restart_attempts=int(number("RESTART_ATTEMPTS", cls.restart_attempts)),
            log_level=log_level,
            default_queue_name=queue_setting(env.get("DEFAULT_QUEUE_NAME", "")),
            watch_workloads=watch_workloads(env),
            image_prefixes=tuple(
                p.strip() for p in env.get("TRAINER_IMAGE_PREFIXES", "").split(",") if p.strip()
            ),
        )


def watch_workloads(env: Mapping[str, str] | None = None) -> bool:
    """KUEUE_WORKLOADS: "watch" to follow Kueue's Workloads, empty (the default) to leave them alone."""
    env = os.environ if env is None else env
    raw = env.get("KUEUE_WORKLOADS", "").strip().lower()
    if raw not in ("", "watch"):
        raise ConfigError(f'KUEUE_WORKLOADS={raw!r} is not "watch" or empty')
    return raw == "watch"


def queue_setting(raw: str) -> str | None:
    """DEFAULT_QUEUE_NAME: empty for none, else a LocalQueue name (a DNS label, as Kueue's label value)."""
    value = raw.strip()
    if not value:
        return None
    if len(value) > 63 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value):
        raise ConfigError(
            f"DEFAULT_QUEUE_NAME={value!r} is not a LocalQueue name (lower-case letters, digits and '-', "
            "at most 63 characters)"
        )
    return value


def image_allowed(image: str | None, config: OperatorConfig) -> bool:
    """spec.image is left out, is the configured trainer image, or starts with an allowed prefix."""
    return not image or image == config.trainer_image or image.startswith(config.image_prefixes)
