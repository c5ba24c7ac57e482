"""Preflight: every resource the run will need, checked before selection, downloads or a GPU second.

A models bucket that cannot be written used to be found at publish, after the whole training. Each check
here fails with its own one-line error and exit code:

| check              | what it does                                                        | exit |
|---|---|---|
| `database`         | the registry database is reachable and migrated (the registry step) | 5    |
| `inferences_table` | `SELECT` of the columns the trainer reads from `inferences`, one row | 5   |
| `images_bucket`    | lists one object of the images bucket                               | 4    |
| `dataset`          | a `--dataset` folder exists, or one object of its gs:// prefix lists | 3 / 4 |
| `models_bucket`    | reads `models/latest/`, creates (create-only) and deletes `preflight/<uuid>` | 4 |
| `base_model`       | `models/latest/` or `--base-model` can be had offline               | 6    |
| `device`           | CUDA present with enough devices, when `--device` asks for CUDA     | 8    |
"""

from __future__ import annotations

import importlib.util
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trainer import basemodel
from trainer.blobstore import BlobStore, GCSBlobStore, NotFound, parse_gs_uri
from trainer.db import Database
from trainer.errors import (
    DeviceUnavailableError,
    EmptySelectionError,
    ModelUnavailableError,
    RegistryError,
    StorageError,
    TrainerError,
)
from trainer.publish import LATEST_MODEL
from trainer.settings import Settings

PROBE_PREFIX = "preflight/"
INFERENCE_COLUMNS = "id, image_object, label_object, status, detection_count, created_at, updated_at"


def cuda_indices(device: str) -> list[int] | None:
    """The CUDA devices a --device value asks for; None when it does not ask for CUDA (auto, cpu, mps)."""
    text = device.strip().lower()
    if text in ("auto", "cpu", "mps", ""):
        return None
    if text == "cuda":
        return [0]
    text = text.removeprefix("cuda:")
    if re.fullmatch(r"\d+(,\d+)*", text):
        return sorted({int(i) for i in text.split(",")})
    return None  # not a CUDA request Ultralytics knows; it will refuse it itself


def required_checks(s: Settings) -> list[str]:
    """The checks this run needs, in the order they run: cheapest and most basic first."""
    checks = ["inferences_table", "images_bucket"] if s.from_inferences else ["dataset"]
    checks += ["models_bucket", "base_model"]
    if cuda_indices(s.device) is not None:
        checks.append("device")
    return checks


def _storage_problem(store: BlobStore, what: str, exc: StorageError, action: str) -> StorageError:
    if isinstance(exc, NotFound):
        return StorageError(f"preflight: {what} {store.uri('')} does not exist")
    return StorageError(f"preflight: {what} {store.uri('')} cannot be {action}: {exc}")


@dataclass
class Preflight:
    """The thin I/O behind the checks: the run's database and stores, opened by the pipeline."""

    settings: Settings
    db: Database
    models: BlobStore
    images: BlobStore | None = None
    timings: dict[str, float] = field(default_factory=dict)
    latest_exists: bool = False

    def run(self) -> dict[str, float]:
        """Runs every required check, in order; the first failure raises its TrainerError."""
        checks: dict[str, Callable[[], None]] = {
            "inferences_table": self.inferences_table,
            "images_bucket": self.images_bucket,
            "dataset": self.dataset,
            "models_bucket": self.models_bucket,
            "base_model": self.base_model,
            "device": self.device,
        }
        for name in required_checks(self.settings):
            t0 = time.perf_counter()
            try:
                checks[name]()
            finally:
                self.timings[name] = round(time.perf_counter() - t0, 4)
        return self.timings

    def inferences_table(self) -> None:
        try:
            self.db.fetch(f"SELECT {INFERENCE_COLUMNS} FROM inferences LIMIT 1")  # noqa: S608 - constant text
        except RegistryError as exc:
            raise RegistryError(
                f"preflight: the Inference API's table 'inferences' cannot be read ({INFERENCE_COLUMNS}): "
                f"{exc}"
            ) from None

    def images_bucket(self) -> None:
        assert self.images is not None
        try:
            self.images.list("", limit=1)
        except StorageError as exc:
            raise _storage_problem(self.images, "images bucket", exc, "listed") from None

    def dataset(self) -> None:
        uri = self.settings.dataset or ""
        if not uri.startswith("gs://"):
            if not Path(uri).is_dir():
                raise EmptySelectionError(f"preflight: dataset folder {Path(uri).absolute()} does not exist")
            return
        bucket, prefix = parse_gs_uri(uri)
        store = GCSBlobStore(bucket)
        try:
            store.list(f"{prefix}/" if prefix else "", limit=1)
        except StorageError as exc:
            raise _storage_problem(store, "datasets bucket", exc, "listed") from None

    def models_bucket(self) -> None:
        """Read, then a create-only write and its delete under preflight/: never touches a real object."""
        store = self.models
        probe = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        try:
            self.latest_exists = store.stat(LATEST_MODEL) is not None
        except StorageError as exc:
            raise _storage_problem(store, "models bucket", exc, "read") from None
        try:
            store.upload_bytes(b"preflight\n", probe, if_generation_match=0, content_type="text/plain")
            store.delete(probe)
        except StorageError as exc:
            raise _storage_problem(store, "models bucket", exc, "written") from None

    def base_model(self) -> None:
        if self.latest_exists:
            return
        s = self.settings
        if s.base_model.startswith("gs://"):
            self._gs_base_model(s.base_model)
            return
        if resolve_base_model(s.base_model, s.weights_dir, s.local_dir) is None:
            message = basemodel.missing_message(
                s.base_model,
                s.weights_dir,
                s.local_dir,
                self.models.uri(LATEST_MODEL),
                in_cluster=bool(s.run_key),
            )
            raise ModelUnavailableError(f"preflight: {message}")

    def _gs_base_model(self, uri: str) -> None:
        """Your own weights: they must exist (the same words as the base-model step) and be readable."""
        bucket, name = parse_gs_uri(uri)
        try:
            found = GCSBlobStore(bucket).stat(name) is not None
        except StorageError as exc:
            raise ModelUnavailableError(f"preflight: base model {uri} cannot be read: {exc}") from None
        if not found:
            raise ModelUnavailableError(
                f"preflight: base model {uri} does not exist (spec.baseModel / --base-model): upload your "
                "weights there, or name another object"
            )

    def device(self) -> None:
        wanted = cuda_indices(self.settings.device) or [0]
        import torch

        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if max(wanted) >= visible:
            raise DeviceUnavailableError(
                f"preflight: --device {self.settings.device} asks for CUDA device(s) "
                f"{', '.join(map(str, wanted))} but {visible} are visible (no GPU in this pod, its driver is "
                "missing, or resources.gpus is too low)"
            )


def resolve_base_model(text: str, weights_dir: Path | None, local_dir: Path) -> str | None:
    """Where --base-model is found offline (a path or gs:// URI), or None. Mirrors the base-model step."""
    if basemodel.is_architecture(text):
        return text if Path(text).is_file() or _ultralytics_config(Path(text).name) else None
    if text.startswith("gs://"):
        bucket, name = parse_gs_uri(text)
        try:
            return text if GCSBlobStore(bucket).stat(name) is not None else None
        except TrainerError:
            return None
    for candidate in basemodel.weight_candidates(text, weights_dir, local_dir):
        if candidate.is_file():
            return str(candidate.absolute())
    return None


def _ultralytics_config(name: str) -> bool:
    """An architecture Ultralytics ships (yolov8n.yaml is yolov8.yaml at scale n), found without importing it."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return False
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", Path(name).stem) + Path(name).suffix
    cfg = Path(next(iter(spec.submodule_search_locations))) / "cfg"
    return any(p.name in (name, unified) for p in cfg.rglob("*.y*ml"))
