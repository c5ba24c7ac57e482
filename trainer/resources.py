"""What this process may use (CPUs, memory, GPUs) and the loader and batch sizes that follow from it.

`os.cpu_count()` in a pod is the node's count, not the pod's share: a 4-CPU request on a 64-core node
would start 8+ loader workers per GPU that then fight over 4 CPUs. The CPUs used for sizing are the
tightest of the scheduler affinity, the cgroup CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`) and the
pod's CPU request, which the operator passes as TRAINER_CPU_REQUEST_MILLICORES (a Downward API
`resourceFieldRef`; the operator sets no CPU limit, so without it the quota says nothing).

The functions named parse_* and the sizing rules are pure; read_* do the file I/O.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import ConfigError

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_REQUEST_ENV = "TRAINER_CPU_REQUEST_MILLICORES"
# Per-rank loader workers never exceed this: FIELD-NOTES measured 16 workers on a 16-core node as the
# fastest setting for one H100; beyond it each worker adds its memory (WORKER_MEMORY) for no measured gain.
MAX_WORKERS = 16
# Memory one train-loader worker adds, beyond the images it holds: bench/loader.py measured ~70 MB of
# unique memory (USS) per worker on top of its mosaic buffer (bench/RESULTS.md, "Data loader alone").
WORKER_BASE_MEMORY = 128 * 2**20
PREFETCH = 4  # batches each train-loader worker keeps ready in shared memory (Ultralytics' prefetch_factor)
# Memory kept for the training process itself (model, optimizer, pinned batches, Ultralytics' caches).
TRAINER_MEMORY = 4 * 2**30
# batchSize auto on CUDA: images per GPU at imgsz 640. FIELD-NOTES (one H100, yolov8n): the GPU step
# alone gave 525 / 683 / 764 images/s at batch 32 / 64 / 128, and batch 64 + 16 workers 775 images/s
# end to end vs 522 at 32 + 8. 64 is the knee; Ultralytics' nominal batch (nbs) is also 64, so a larger
# batch would only mean fewer optimizer steps on small datasets.
AUTO_BATCH_PER_GPU_640 = 64
CPU_AUTO_BATCH = 16  # on CPU the batch barely changes the speed; Ultralytics' own default


# CPUs ------------------------------------------------------------------------------------------------
def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 `cpu.max` ("max 100000" or "200000 100000") -> CPUs, None when unlimited."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) > 1 else 100_000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us` -> CPUs, None when unlimited (-1)."""
    try:
        quota, period = int(quota_text.strip()), int(period_text.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _cgroup_paths(proc_self_cgroup: str) -> tuple[str | None, str | None]:
    """(v2 path, v1 cpu-controller path) of this process from /proc/self/cgroup."""
    v2 = v1 = None
    for line in proc_self_cgroup.splitlines():
        fields = line.strip().split(":", 2)
        if len(fields) != 3:
            continue
        hierarchy, controllers, path = fields
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _ancestors(base: Path, path: str | None) -> list[Path]:
    """The process's cgroup folder and every parent up to the mount point, deepest first. Inside a
    container with its own cgroup namespace the path is "/" and only the mount point remains."""
    parts = [p for p in (path or "/").split("/") if p and p != ".."]
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def read_cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_self_cgroup: str | None = None) -> float | None:
    """The tightest CPU quota over this process's cgroup and its ancestors (v2, else v1); None if none."""
    if proc_self_cgroup is None:
        try:
            proc_self_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            proc_self_cgroup = ""
    v2_path, v1_path = _cgroup_paths(proc_self_cgroup)
    limits: list[float] = []
    if (root / "cgroup.controllers").exists():  # the unified (v2) hierarchy is mounted at root
        for folder in _ancestors(root, v2_path):
            try:
                value = parse_cpu_max((folder / "cpu.max").read_text())
            except OSError:
                continue
            if value is not None:
                limits.append(value)
    else:
        for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            if not (root / mount).is_dir():
                continue
            for folder in _ancestors(root / mount, v1_path):
                try:
                    value = parse_cfs(
                        (folder / "cpu.cfs_quota_us").read_text(), (folder / "cpu.cfs_period_us").read_text()
                    )
                except OSError:
                    continue
                if value is not None:
                    limits.append(value)
            break
    return min(limits) if limits else None


def parse_cpu_request(env: Mapping[str, str]) -> float | None:
    """The pod's CPU request in CPUs from TRAINER_CPU_REQUEST_MILLICORES; None when unset."""
    raw = (env.get(CPU_REQUEST_ENV) or "").strip()
    if not raw:
        return None
    try:
        millicores = int(raw)
    except ValueError:
        raise ConfigError(f"{CPU_REQUEST_ENV}={raw!r} is not a whole number of millicores") from None
    if millicores <= 0:
        raise ConfigError(f"{CPU_REQUEST_ENV}={raw!r} must be positive")
    return millicores / 1000


@dataclass(frozen=True)
class CpuBudget:
    cpus: int  # what the loader is sized from
    affinity: int
    quota: float | None
    request: float | None
    bound_by: str  # "affinity", "quota" or "request": which of the three decided

    def as_dict(self) -> dict:
        return {
            "cpus": self.cpus,
            "affinity": self.affinity,
            "quota": self.quota,
            "request": self.request,
            "bound_by": self.bound_by,
        }


def cpu_budget(affinity: int, quota: float | None, request: float | None) -> CpuBudget:
    """The CPUs this process may count on: the tightest bound, a fractional quota or request rounded up
    (half a CPU still runs one worker), never below 1."""
    bounds = [("affinity", float(max(1, affinity)))]
    if quota is not None:
        bounds.append(("quota", quota))
    if request is not None:
        bounds.append(("request", request))
    name, value = min(bounds, key=lambda b: b[1])
    return CpuBudget(max(1, math.ceil(value - 1e-9)), max(1, affinity), quota, request, name)


def read_cpu_budget(env: Mapping[str, str] | None = None, root: Path = CGROUP_ROOT) -> CpuBudget:
    env = os.environ if env is None else env
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        affinity = os.cpu_count() or 1
    return cpu_budget(affinity, read_cgroup_cpu_limit(root), parse_cpu_request(env))


# Memory ----------------------------------------------------------------------------------------------
def parse_memory_limit(text: str) -> int | None:
    """v2 `memory.max` ("max" or bytes) or v1 `memory.limit_in_bytes` -> bytes, None when unlimited."""
    text = text.strip()
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    # v1 reports "unlimited" as a page-rounded 2^63 - 1.
    return value if 0 < value < 2**60 else None


def read_memory_limit(root: Path = CGROUP_ROOT) -> int | None:
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            return parse_memory_limit(path.read_text())
        except OSError:
            continue
    return None


# Sizing rules ----------------------------------------------------------------------------------------
def worker_memory(batch_per_rank: int, imgsz: int) -> int:
    """Bytes one train-loader worker may hold: its own base, the decoded images Ultralytics buffers for
    mosaic (up to min(8 x batch, 1000), long side imgsz) and the batches it prefetches into shared memory
    (which counts against the pod's memory limit too)."""
    image = imgsz * imgsz * 3
    return WORKER_BASE_MEMORY + (min(8 * batch_per_rank, 1000) + PREFETCH * batch_per_rank) * image


def loader_workers(
    cpus: int, ranks: int, memory_limit: int | None = None, batch_per_rank: int = 16, imgsz: int = 640
) -> int:
    """Train-loader workers per rank (Ultralytics' `workers` is per process): the CPUs shared out among
    the ranks, at most MAX_WORKERS, and no more than fit in the memory the training processes leave."""
    ranks = max(1, ranks)
    workers = min(MAX_WORKERS, max(1, cpus // ranks))
    if memory_limit is not None:
        spare = memory_limit - ranks * TRAINER_MEMORY
        workers = min(workers, max(1, spare // (ranks * worker_memory(batch_per_rank, imgsz))))
    return int(workers)


def auto_batch_per_gpu(imgsz: int) -> int:
    """batchSize auto's images per GPU: 64 at 640, the same pixels per step at other sizes, a multiple
    of 8 between 8 and 256. On one GPU Ultralytics' AutoBatch may still lower it to fit the memory."""
    scaled = AUTO_BATCH_PER_GPU_640 * (640 / imgsz) ** 2
    return int(min(256, max(8, scaled // 8 * 8)))


# Devices ---------------------------------------------------------------------------------------------
def resolve_device(requested: str, visible_gpus: int) -> str:
    """The Ultralytics device string for a --device value: `auto` and `cuda` take every GPU this process
    sees (what the pod was given: the device plugin exposes exactly its GPUs, CUDA_VISIBLE_DEVICES
    narrows them), `auto` falls back to cpu; a list of indices must name visible GPUs."""
    requested = requested.strip().lower()
    if requested in ("auto", "cuda"):
        if visible_gpus > 0:
            return ",".join(str(i) for i in range(visible_gpus))
        if requested == "cuda":
            raise ConfigError("--device cuda, but no CUDA GPU is visible to this process")
        return "cpu"
    if requested in ("cpu", "mps"):
        return requested
    try:
        indices = [int(x) for x in requested.split(",")]
    except ValueError:
        raise ConfigError(
            f"--device {requested!r}: expected auto, cpu, cuda, mps or GPU indices such as 0 or 0,1"
        ) from None
    if len(set(indices)) != len(indices):
        raise ConfigError(f"--device {requested!r} names a GPU twice")
    missing = [i for i in indices if not 0 <= i < visible_gpus]
    if missing:
        raise ConfigError(
            f"--device {requested!r} names GPU {', '.join(map(str, missing))}, but this process sees "
            f"{visible_gpus} GPU(s)"
            + (f" (0-{visible_gpus - 1})" if visible_gpus else "")
            + ": request more with resources.gpus or use --device auto"
        )
    return ",".join(map(str, indices))


def ranks_of(device: str) -> int:
    """Training processes Ultralytics starts for a resolved device string (1 unless several GPUs)."""
    if device in ("cpu", "mps"):
        return 1
    return len(device.split(","))


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
