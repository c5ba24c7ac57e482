"""What the pod may use -> loader workers, batch and devices: pure rules and cgroup files as a node has them."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer import resources as r
from trainer.errors import ConfigError

GiB = 2**30


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    "text, cpus",
    [
        ("max 100000\n", None),
        ("400000 100000\n", 4.0),
        ("150000 100000", 1.5),
        ("50000 100000", 0.5),
        ("", None),
    ],
)
def test_cgroup_v2_cpu_max_is_read_as_cpus(text, cpus):
    assert r.parse_cpu_max(text) == cpus


def test_cgroup_v1_cfs_quota_minus_one_is_unlimited():
    assert r.parse_cfs("-1\n", "100000\n") is None
    assert r.parse_cfs("250000\n", "100000\n") == 2.5


def test_v2_container_with_its_own_cgroup_namespace_reads_the_mount_root(tmp_path):
    root = _write(tmp_path, {"cgroup.controllers": "cpu memory", "cpu.max": "300000 100000\n"})
    assert r.read_cgroup_cpu_limit(root, "0::/\n") == 3.0


def test_v2_the_tightest_quota_of_the_cgroup_and_its_parents_wins(tmp_path):
    # A pod-level limit of 2 CPUs above a container cgroup without one (kubepods.slice layout).
    root = _write(
        tmp_path,
        {
            "cgroup.controllers": "cpu",
            "cpu.max": "max 100000",
            "kubepods.slice/pod1/cpu.max": "200000 100000",
            "kubepods.slice/pod1/ctr/cpu.max": "max 100000",
        },
    )
    assert r.read_cgroup_cpu_limit(root, "0::/kubepods.slice/pod1/ctr\n") == 2.0


def test_v1_hierarchy_with_cpu_and_cpuacct_mounted_together(tmp_path):
    root = _write(
        tmp_path,
        {
            "cpu,cpuacct/kubepods/pod1/ctr/cpu.cfs_quota_us": "600000",
            "cpu,cpuacct/kubepods/pod1/ctr/cpu.cfs_period_us": "100000",
            "cpu,cpuacct/cpu.cfs_quota_us": "-1",
            "cpu,cpuacct/cpu.cfs_period_us": "100000",
        },
    )
    proc = "12:memory:/kubepods/pod1/ctr\n4:cpu,cpuacct:/kubepods/pod1/ctr\n"
    assert r.read_cgroup_cpu_limit(root, proc) == 6.0


def test_no_quota_anywhere_is_none(tmp_path):
    root = _write(tmp_path, {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"})
    assert r.read_cgroup_cpu_limit(root, "3:cpu:/\n") is None
    assert r.read_cgroup_cpu_limit(tmp_path / "missing", "") is None


def test_request_from_the_downward_api_in_millicores():
    assert r.parse_cpu_request({r.CPU_REQUEST_ENV: "4000"}) == 4.0
    assert r.parse_cpu_request({r.CPU_REQUEST_ENV: "500"}) == 0.5
    assert r.parse_cpu_request({}) is None
    with pytest.raises(ConfigError, match=r.CPU_REQUEST_ENV):
        r.parse_cpu_request({r.CPU_REQUEST_ENV: "four"})
    with pytest.raises(ConfigError, match="positive"):
        r.parse_cpu_request({r.CPU_REQUEST_ENV: "0"})


def test_a_pod_on_a_big_node_counts_its_request_not_the_node():
    # 64 cores visible (no CPU limit, so no quota), a 4-CPU request: 4, not 64.
    b = r.cpu_budget(affinity=64, quota=None, request=4.0)
    assert (b.cpus, b.bound_by) == (4, "request")
    assert r.cpu_budget(affinity=64, quota=2.5, request=8.0).cpus == 3  # half a CPU still runs a worker
    assert r.cpu_budget(affinity=2, quota=None, request=16.0).bound_by == "affinity"
    assert r.cpu_budget(affinity=8, quota=0.2, request=None).cpus == 1


def test_workers_share_the_cpus_among_gpu_processes_and_stop_at_16():
    assert r.loader_workers(cpus=16, ranks=1) == 16
    assert r.loader_workers(cpus=64, ranks=1) == r.MAX_WORKERS
    assert r.loader_workers(cpus=32, ranks=4) == 8
    assert r.loader_workers(cpus=2, ranks=4) == 1  # never 0: a GPU process always gets a loader worker


def test_workers_fit_in_the_memory_left_after_the_training_processes():
    # One worker at batch 16, 640 px: its base, a 128-image mosaic buffer and 4 prefetched batches.
    per_worker = r.WORKER_BASE_MEMORY + (128 + 64) * 640 * 640 * 3
    assert r.worker_memory(16, 640) == per_worker
    # The default pod (16 GiB) leaves 12 GiB after the training process: 16 CPUs' worth of workers fit.
    assert r.loader_workers(cpus=16, ranks=1, memory_limit=16 * GiB) == 16
    # At batch 64 a worker holds 512 buffered + 256 prefetched images (~1 GiB): 12 GiB holds 11.
    assert r.loader_workers(cpus=16, ranks=1, memory_limit=16 * GiB, batch_per_rank=64) == 11
    assert r.loader_workers(cpus=16, ranks=2, memory_limit=9 * GiB) == 1  # never 0


def test_auto_batch_is_64_per_gpu_at_640_and_the_same_pixels_elsewhere():
    assert r.auto_batch_per_gpu(640) == 64
    assert r.auto_batch_per_gpu(320) == 256
    assert r.auto_batch_per_gpu(1280) == 16
    assert r.auto_batch_per_gpu(2048) == 8
    assert all(r.auto_batch_per_gpu(s) % 8 == 0 for s in range(32, 2049, 32))


@pytest.mark.parametrize(
    "requested, visible, device",
    [
        ("auto", 0, "cpu"),
        ("auto", 1, "0"),
        ("auto", 4, "0,1,2,3"),  # resources.gpus: 4 -> all four train
        ("cuda", 2, "0,1"),
        ("cpu", 8, "cpu"),
        ("1,0", 2, "1,0"),
        ("0", 4, "0"),
    ],
)
def test_device_auto_takes_every_gpu_the_pod_was_given(requested, visible, device):
    assert r.resolve_device(requested, visible) == device


@pytest.mark.parametrize(
    "requested, visible, words",
    [
        ("0,1", 1, ["GPU 1", "sees 1 GPU", "resources.gpus"]),
        ("cuda", 0, ["no CUDA GPU"]),
        ("0,0", 2, ["twice"]),
        ("gpu0", 1, ["expected auto"]),
    ],
)
def test_a_device_the_pod_does_not_have_is_refused_up_front(requested, visible, words):
    with pytest.raises(ConfigError) as err:
        r.resolve_device(requested, visible)
    assert all(w in str(err.value) for w in words), err.value


def test_ranks_of_a_device_string():
    assert [r.ranks_of(d) for d in ("cpu", "0", "0,1,2,3")] == [1, 1, 4]


def test_memory_limit_files():
    assert r.parse_memory_limit("max\n") is None
    assert r.parse_memory_limit("17179869184\n") == 16 * GiB
    assert r.parse_memory_limit("9223372036854771712") is None  # v1's "unlimited"


def test_a_run_is_sized_from_the_settings_and_the_pod():
    from trainer.settings import Settings
    from trainer.yolo import size_run

    env = {r.CPU_REQUEST_ENV: "1000"}
    cpu = size_run(Settings(batch_size="auto"), "cpu", env)
    assert (cpu.batch, cpu.ranks, cpu.workers) == (r.CPU_AUTO_BATCH, 1, 1)
    assert cpu.cpu["bound_by"] in ("request", "affinity")
    # On CUDA, auto is Ultralytics' AutoBatch (-1), which the product's trainer caps.
    assert size_run(Settings(batch_size="auto"), "0,1", env).batch == -1
    assert size_run(Settings(batch_size=64, workers=5), "0,1,2,3", env).workers == 5
    with pytest.raises(ConfigError, match="total over all GPUs"):
        size_run(Settings(batch_size=2), "0,1,2,3", env)
