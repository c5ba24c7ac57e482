"""One exception type per failure class, each with the exit code and the reason the operator shows."""

from __future__ import annotations


class TrainerError(Exception):
    """Base class: a failure the trainer understands, reported with a reason and an exit code."""

    exit_code = 1
    reason = "InternalError"


class ConfigError(TrainerError):
    """Missing or contradictory input: flags, environment, URIs."""

    exit_code = 2
    reason = "InvalidInput"


class EmptySelectionError(TrainerError):
    """Nothing to train on: no new records, or every sample was skipped."""

    exit_code = 3
    reason = "EmptySelection"


class StorageError(TrainerError):
    """The object store failed after its retries, or an object was missing."""

    exit_code = 4
    reason = "StorageError"


class RegistryError(TrainerError):
    """The model registry (PostgreSQL or SQLite) failed or refused."""

    exit_code = 5
    reason = "RegistryError"


class ModelUnavailableError(TrainerError):
    """The base model's weights cannot be had offline."""

    exit_code = 6
    reason = "ModelUnavailable"


class TrainingError(TrainerError):
    """Ultralytics failed to train or evaluate."""

    exit_code = 7
    reason = "TrainingError"


class DeviceUnavailableError(TrainerError):
    """The run asks for CUDA and the pod has no (or too few) GPUs: found before any data is fetched.

    Not permanent: the Job's retry may land on a node whose GPU works.
    """

    exit_code = 8
    reason = "DeviceUnavailable"
