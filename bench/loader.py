"""The training data loader alone: images/s per worker, mosaic on, imgsz 640, and Ultralytics' cache modes.

The loader is the one Ultralytics trains with (build_yolo_dataset + build_dataloader, mode "train",
mosaic 1.0, the default augmentations), on the real photos of ../shared/data/waste6-dev copied to a
scratch folder (Ultralytics writes its label cache and, with cache=disk, .npy files next to the images).
Each configuration: the loader is built, its first batch taken (worker start-up), the batches its workers
prefetched drained, then --batches batches are timed. Reported per configuration: images/s (wall), CPU ms per image summed over the main process
and its workers (what a dedicated core would pay; robust to other load on a shared machine), images/s
per busy core (1000 / CPU ms), and the unique memory (USS) of each worker.

Configurations:
- workers 0..N with cache off (N = --max-workers, default the CPUs this process may use);
- the worker count the trainer used to pick (min(8, os.cpu_count())) against the one it now sizes from
  the CPUs the pod may use (trainer/resources.py), both under --cpus (a CPU affinity that stands in for a
  pod's share of a bigger node: os.cpu_count() still reports every CPU);
- cache ram and cache disk at the sized worker count.

    python bench/loader.py                     # records a section in bench/RESULTS.md
    python bench/loader.py --quick --no-record
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import commit, machine, now, update_results, waste6_dev


def _cpu_seconds(proc) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def measure(data: dict, imgsz: int, batch: int, workers: int, cache, batches: int) -> dict:
    import psutil
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader, build_yolo_dataset

    cfg = get_cfg(
        overrides={"imgsz": imgsz, "cache": cache, "mosaic": 1.0, "workers": workers, "task": "detect"}
    )
    t0 = time.perf_counter()
    dataset = build_yolo_dataset(cfg, data["train"], batch, data, mode="train", rect=False, stride=32)
    loader = build_dataloader(dataset, batch=batch, workers=workers, shuffle=True, rank=-1, device="cpu")
    it = iter(loader)

    def take():
        nonlocal it
        try:
            return next(it)
        except StopIteration:
            it = iter(loader)
            return next(it)

    take()  # workers started, first batch collated
    build_s = time.perf_counter() - t0
    # Each worker prefetches 4 batches (Ultralytics' prefetch_factor): drain them, so the timed batches
    # are produced while timed and the CPU counted is the CPU they cost.
    for _ in range(4 * loader.num_workers):
        take()
    me = psutil.Process()
    kids = me.children(recursive=True)
    cpu0 = _cpu_seconds(me) + sum(_cpu_seconds(k) for k in kids)
    t1 = time.perf_counter()
    images = 0
    for _ in range(batches):
        images += len(take()["img"])
    wall = time.perf_counter() - t1
    kids = me.children(recursive=True)
    cpu = _cpu_seconds(me) + sum(_cpu_seconds(k) for k in kids) - cpu0
    uss = [k.memory_full_info().uss for k in kids] if kids else []
    out = {
        "workers": workers,
        "loader_workers": loader.num_workers,
        "cache": cache or "off",
        "images": images,
        "wall_s": round(wall, 2),
        "images_per_s": round(images / wall, 1),
        "cpu_ms_per_image": round(1000 * cpu / images, 1),
        "images_per_cpu_s": round(images / cpu, 1) if cpu else None,
        "first_batch_s": round(build_s, 2),
        "worker_uss_mb": round(sum(uss) / len(uss) / 2**20) if uss else None,
        # Ultralytics keeps up to min(images, 8 x batch, 1000) decoded images per worker for mosaic.
        "mosaic_buffer": dataset.max_buffer_length if getattr(dataset, "augment", False) else 0,
        "main_rss_mb": round(me.memory_info().rss / 2**20),
    }
    if hasattr(loader, "close"):
        loader.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=waste6_dev())
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=30, help="timed batches per configuration")
    ap.add_argument("--max-workers", type=int, default=None)
    ap.add_argument("--cpus", type=int, default=1, help="CPU affinity of the pod-share comparison")
    ap.add_argument("--quick", action="store_true", help="imgsz 320, 3 batches")
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.imgsz, a.batches = 320, 4

    from trainer import resources, yolo

    tmp = Path(tempfile.mkdtemp(prefix="wd-bench-loader-"))
    yolo.prepare_offline(tmp / "ultralytics")
    load_start, machine_text = os.getloadavg()[0], machine()
    try:
        import yaml

        root = tmp / "data"
        shutil.copytree(a.data_dir, root)
        names = yaml.safe_load((root / "data.yaml").read_text())["names"]
        data = {"train": str(root / "images" / "train"), "names": names, "nc": len(names), "channels": 3}
        budget = resources.read_cpu_budget()
        max_workers = a.max_workers if a.max_workers is not None else budget.cpus
        runs: list[dict] = []

        def run(label: str, workers: int, cache=False) -> dict:
            r = {"label": label, **measure(data, a.imgsz, a.batch, workers, cache, a.batches)}
            print(json.dumps(r), file=sys.stderr)
            runs.append(r)
            return r

        for w in range(0, max_workers + 1):
            run("workers", w)
        # A pod's share of a bigger node: affinity narrowed, os.cpu_count() unchanged.
        everything = os.sched_getaffinity(0)
        share = set(sorted(everything)[: a.cpus])
        os.sched_setaffinity(0, share)
        try:
            old = min(8, os.cpu_count() or 1)  # the trainer's former default
            sized = resources.loader_workers(resources.read_cpu_budget().cpus, 1)
            before = run(f"pod share {a.cpus} CPU: former default min(8, cpu_count)", old)
            after = run(f"pod share {a.cpus} CPU: sized from the pod's CPUs", sized)
        finally:
            os.sched_setaffinity(0, everything)
        sized_all = resources.loader_workers(budget.cpus, 1)
        ram = run("cache ram", sized_all, "ram")
        disk = run("cache disk", sized_all, "disk")
        off = next(r for r in runs if r["label"] == "workers" and r["workers"] == sized_all)
        result = {
            "benchmark": "loader",
            "imgsz": a.imgsz,
            "batch": a.batch,
            "batches": a.batches,
            "photos": len(list((root / "images" / "train").glob("*.jpg"))),
            "cpu_budget": budget.as_dict(),
            "runs": runs,
            "pod_share": {"cpus": a.cpus, "before": before, "after": after},
            "cache_speedup_cpu": {
                "ram": round(off["cpu_ms_per_image"] / ram["cpu_ms_per_image"], 2),
                "disk": round(off["cpu_ms_per_image"] / disk["cpu_ms_per_image"], 2),
            },
            "load_start": round(load_start, 1),
            "load_end": round(os.getloadavg()[0], 1),
            "machine": machine_text,
            "date": now(),
            "commit": commit(),
        }
        print(json.dumps(result))
        if not (a.quick or a.no_record):
            record(result)
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def record(r: dict) -> None:
    rows = "\n".join(
        f"| {x['label']} | {x['workers']} ({x['loader_workers']}) | {x['cache']} | {x['images_per_s']} | "
        f"{x['cpu_ms_per_image']} | {x['images_per_cpu_s']} | {x['first_batch_s']} | {x['worker_uss_mb'] or '-'} |"
        for x in r["runs"]
    )
    b, a = r["pod_share"]["before"], r["pod_share"]["after"]
    text = f"""## Data loader alone (imgsz {r["imgsz"]}, mosaic on, batch {r["batch"]})

`python bench/loader.py` on {r["date"]}, commit {r["commit"]}. Machine: {r["machine"]}; load average
{r["load_start"]} at the start, {r["load_end"]} at the end (other work shares these cores: the wall rates move with
it, the CPU cost per image much less). {r["photos"]} real photos of waste6-dev, {r["batches"]} timed batches per row
after the first. CPU budget here: {r["cpu_budget"]}.

| configuration | workers (started) | cache | images/s (wall) | CPU ms / image | images / CPU-s | first batch s | worker USS MB |
|---|---|---|---|---|---|---|---|
{rows}

Pod share of {r["pod_share"]["cpus"]} CPU (affinity narrowed, `os.cpu_count()` unchanged): the former default
started {b["workers"]} workers at {b["images_per_s"]} images/s, the sized count {a["workers"]} at {a["images_per_s"]}
images/s. Cache vs off at the same workers, CPU per image: ram {r["cache_speedup_cpu"]["ram"]}x, disk
{r["cache_speedup_cpu"]["disk"]}x.

```json
{json.dumps(r)}
```
"""
    update_results("loader", text)


if __name__ == "__main__":
    sys.exit(main())
