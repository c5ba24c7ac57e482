"""GPU training benchmark: the trainer's training step against plain Ultralytics, and the whole job's
time outside training.

Three measurements on the same dataset and settings (yolov8n from scratch, --n images, --epochs):
1. the whole job, `python -m trainer --dataset gs://...` as a subprocess against fake-gcs-server and the
   embedded SQLite registry (no PostgreSQL on the GPU machine), after a 1-epoch seed run has published a
   models/latest/, so the measured run also downloads and evaluates a champion. Target: everything but the
   `train` step (selection, download, dataset, base model, champion evaluation, upload, registration,
   process start) <= 10 % of the job's wall time;
2. plain Ultralytics, `YOLO("yolov8n.yaml").train(...)` on the dataset folder the job built;
3. the trainer's training step, `trainer.yolo.train(...)`, on the same folder.
Train images per second = training images / time between on_train_epoch_start and on_train_epoch_end
(validation excluded), median over epochs after the first. Target: trainer / plain >= 0.95.

Data: --data-dir (real photos, e.g. ../shared/data/waste6-dev) repeated with distinct ids up to --n, or,
when absent, synthetic 640x640 JPEGs with coloured boxes (tests/fixtures/data.make_sample). Repeated
photos fall into both splits, so the mAP of this benchmark means nothing; it measures speed.

    bash bench/gpu_train.sh                          # on the GPU machine (installs .whl/, < 8 min)
    python bench/gpu_train.py --device cpu --quick   # end-to-end check on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import REPO, commit, machine, now, update_results

if "pytest" not in sys.modules:
    try:
        import pytest  # noqa: F401 - tests/fixtures/services.py imports it for its fixtures
    except ImportError:  # the GPU machine has no pytest: the fixtures' decorator is all that is needed
        sys.modules["pytest"] = types.SimpleNamespace(fixture=lambda *a, **k: lambda f: f)


def distinct_copy(jpeg: bytes, k: int) -> bytes:
    """The same pixels with different bytes: a JPEG comment after the start marker. The trainer keeps one
    sample per image content, so plain repeats would shrink the dataset back to the distinct photos."""
    if k == 0 or not jpeg.startswith(b"\xff\xd8"):
        return jpeg
    comment = f"copy {k}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def make_dataset(n: int, data_dir: Path | None, imgsz: int) -> tuple[list[tuple[str, bytes, str]], str]:
    """(id, jpeg bytes, label text) for n samples, and a description of where they came from."""
    if data_dir and (data_dir / "images").is_dir():
        pairs = []
        for img in sorted((data_dir / "images").rglob("*.jpg")):
            rel = img.relative_to(data_dir / "images")
            lbl = (data_dir / "labels" / rel).with_suffix(".txt")
            if lbl.is_file() and lbl.read_text().strip():
                pairs.append((img.stem, img.read_bytes(), lbl.read_text()))
        out = [
            (
                f"{pairs[i % len(pairs)][0]}-r{i // len(pairs)}",
                distinct_copy(pairs[i % len(pairs)][1], i // len(pairs)),
                pairs[i % len(pairs)][2],
            )
            for i in range(n)
        ]
        return out, f"{len(pairs)} real photos from {data_dir} repeated to {n} with distinct ids and bytes"
    from tests.fixtures.data import make_sample

    def one(i: int):
        s = make_sample(i, size=imgsz)
        return (f"syn-{i:05d}", s.image, s.label)

    with ThreadPoolExecutor(os.cpu_count() or 4) as pool:
        out = list(pool.map(one, range(n)))
    return out, f"{n} synthetic {imgsz}x{imgsz} JPEGs (tests/fixtures/data.make_sample)"


def upload(gcs, bucket: str, prefix: str, samples) -> None:
    import requests.adapters

    client = gcs.client()
    client._http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))
    b = client.bucket(bucket)
    items = [(f"{prefix}/images/{i}.jpg", img) for i, img, _ in samples]
    items += [(f"{prefix}/labels/{i}.txt", lbl.encode()) for i, _, lbl in samples]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda it: b.blob(it[0]).upload_from_string(it[1]), items))


def run_job(args: list[str], env: dict, label: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"{label}: python -m trainer exited {proc.returncode}")
    return wall, json.loads(Path(env["TRAINER_REPORT_PATH"]).read_text())


class EpochTimer:
    """Callbacks timing the training part of each epoch (validation excluded)."""

    def __init__(self):
        self.seconds: list[float] = []
        self.images = 0
        self._t = 0.0

    def attach(self, model) -> None:
        model.add_callback("on_train_epoch_start", self._start)
        model.add_callback("on_train_epoch_end", self._end)

    def _sync(self, tr) -> None:
        import torch

        if getattr(tr, "device", None) is not None and tr.device.type == "cuda":
            torch.cuda.synchronize()

    def _start(self, tr) -> None:
        self._sync(tr)
        self._t = time.perf_counter()

    def _end(self, tr) -> None:
        self._sync(tr)
        self.seconds.append(time.perf_counter() - self._t)
        self.images = len(tr.train_loader.dataset)

    def summary(self) -> dict:
        steady = self.seconds[1:] or self.seconds
        return {
            "train_images": self.images,
            "epoch_s": [round(s, 2) for s in self.seconds],
            "images_per_s": round(self.images / statistics.median(steady), 1) if steady else None,
            "images_per_s_all_epochs": round(self.images * len(self.seconds) / sum(self.seconds), 1)
            if self.seconds
            else None,
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument(
        "--batch", type=int, default=64, help="the same for all runs (FIELD-NOTES: 64 on an H100)"
    )
    ap.add_argument(
        "--workers", type=int, default=None, help="data-loader workers (default: CPUs, at most 16)"
    )
    ap.add_argument("--device", default="0")
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "waste6-dev")
    ap.add_argument("--synthetic", action="store_true", help="ignore --data-dir, generate images")
    ap.add_argument("--skip", default="", help="comma list of job,plain,trainer to leave out")
    ap.add_argument("--quick", action="store_true", help="tiny CPU check: n=24, 1 epoch, imgsz 64, batch 8")
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.epochs, a.imgsz, a.batch = 24, 1, 64, 8
    workers = a.workers if a.workers is not None else min(16, os.cpu_count() or 1)
    if a.quick and a.workers is None:
        workers = 0
    skip = set(filter(None, a.skip.split(",")))
    started = time.perf_counter()

    from tests.fixtures.services import start_gcs
    from trainer import yolo
    from trainer.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="wd-bench-gpu-"))
    yolo.prepare_offline(tmp / "ultralytics")  # before any `import ultralytics`; the same for every run
    gcs = start_gcs()
    result: dict = {
        "benchmark": "gpu_train",
        "device": a.device,
        "n": a.n,
        "epochs": a.epochs,
        "imgsz": a.imgsz,
        "batch": a.batch,
        "workers": workers,
    }
    try:
        samples, source = make_dataset(a.n, None if a.synthetic else a.data_dir, a.imgsz)
        gcs.bucket("datasets"), gcs.bucket("models")
        upload(gcs, "datasets", "bench", samples)
        result["data"] = source
        env = {
            **os.environ,
            "STORAGE_EMULATOR_HOST": gcs.endpoint,
            "GCS_MODELS_BUCKET": "models",
            "GCS_DATASETS_BUCKET": "datasets",
            "TRAINER_WORK_DIR": str(tmp / "job"),
            "TRAINER_LOCAL_DIR": str(tmp / "local"),
            "TRAINER_REPORT_PATH": str(tmp / "report.json"),
            "YOLO_CONFIG_DIR": str(tmp / "ultralytics"),
        }
        env.pop("DATABASE_URL", None)
        common = [
            "--dataset",
            "gs://datasets/bench",
            "--img-size",
            str(a.imgsz),
            "--batch-size",
            str(a.batch),
            "--workers",
            str(workers),
            "--device",
            a.device,
            "--seed",
            "0",
            "--promotion",
            "force",
        ]
        print(f"setup {time.perf_counter() - started:.1f} s: {source}", file=sys.stderr)

        # 1. The whole job (after a 1-epoch seed run publishes a champion to evaluate against).
        seed_wall, _ = run_job([*common, "--epochs", "1", "--base-model", "yolov8n.yaml"], env, "seed run")
        print(f"seed run {seed_wall:.1f} s", file=sys.stderr)
        data_yaml = None
        if "job" not in skip:
            wall, report = run_job(
                [*common, "--epochs", str(a.epochs), "--base-model", "yolov8n.yaml"], env, "measured run"
            )
            t = report["timings"]
            outside = wall - t["train"]
            result["job"] = {
                "wall_s": round(wall, 1),
                "train_s": t["train"],
                "outside_train_s": round(outside, 1),
                "outside_fraction": round(outside / wall, 3),
                "steps_s": {k: v for k, v in t.items() if k not in ("train", "total")},
                # Python start and imports before the report exists, and time inside the run outside any
                # step (importing Ultralytics and torch, building the model, the per-class chart).
                "process_overhead_s": round(wall - t["total"], 1),
                "in_run_outside_steps_s": round(t["total"] - sum(v for k, v in t.items() if k != "total"), 1),
                "dataset": report.get("data", {}).get("train"),
                "val": report.get("data", {}).get("val"),
                "champion_evaluated": bool(report.get("champion")),
            }
            print(f"job: {json.dumps(result['job'])}", file=sys.stderr)
        data_yaml = next((tmp / "job").rglob("dataset/data.yaml"))

        # 2 and 3. Plain Ultralytics and the trainer's step on the dataset folder the job built.
        settings = Settings(
            epochs=a.epochs,
            batch_size=a.batch,
            img_size=a.imgsz,
            workers=workers,
            seed=0,
            device=a.device,
            patience=10,
        )
        if "plain" not in skip:
            from ultralytics import YOLO

            timer = EpochTimer()
            model = YOLO("yolov8n.yaml", task="detect")
            timer.attach(model)
            t0 = time.perf_counter()
            r = model.train(
                data=str(data_yaml),
                epochs=a.epochs,
                batch=a.batch,
                imgsz=a.imgsz,
                workers=workers,
                device=a.device,
                seed=0,
                deterministic=True,
                optimizer=settings.optimizer,  # auto, as the trainer: the same optimizer and rate
                patience=10,
                plots=False,
                project=str(tmp / "plain"),
                name="train",
                exist_ok=True,
                verbose=False,
            )
            result["plain"] = {
                **timer.summary(),
                "wall_s": round(time.perf_counter() - t0, 1),
                "map50": round(float(r.box.map50), 4),
            }
            print(f"plain: {json.dumps(result['plain'])}", file=sys.stderr)
        if "trainer" not in skip:
            timer = EpochTimer()
            model = yolo.load_model("yolov8n.yaml")
            timer.attach(model)
            t0 = time.perf_counter()
            out = yolo.train(
                model,
                data_yaml=data_yaml,
                project=tmp / "trainer",
                settings=settings,
                device=a.device,
                resume=False,
            )
            result["trainer"] = {
                **timer.summary(),
                "wall_s": round(time.perf_counter() - t0, 1),
                "map50": round(out.metrics.get("map50", 0.0), 4),
            }
            print(f"trainer: {json.dumps(result['trainer'])}", file=sys.stderr)
        if "plain" in result and "trainer" in result:
            result["throughput_ratio"] = round(
                result["trainer"]["images_per_s"] / result["plain"]["images_per_s"], 3
            )
        result["targets_met"] = {
            "throughput_ratio>=0.95": result.get("throughput_ratio", 0) >= 0.95
            if "throughput_ratio" in result
            else None,
            "outside_training<=10%": result["job"]["outside_fraction"] <= 0.10 if "job" in result else None,
        }
        result.update(
            bench_wall_s=round(time.perf_counter() - started, 1),
            machine=machine(),
            date=now(),
            commit=commit(),
        )
        print(json.dumps(result))
        if not (a.quick or a.no_record):
            record(result)
        return 0
    finally:
        gcs.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def record(r: dict) -> None:
    job, plain, tr = r.get("job", {}), r.get("plain", {}), r.get("trainer", {})
    text = f"""## GPU training: trainer vs plain Ultralytics, job overhead ({r["n"]} images, {r["epochs"]} epochs)

`bash bench/gpu_train.sh` on {r["date"]}, commit {r["commit"]}. Machine: {r["machine"]}.
Data: {r["data"]}. imgsz {r["imgsz"]}, batch {r["batch"]}, workers {r["workers"]}, device {r["device"]}.

| measure | value | target | met |
|---|---|---|---|
| plain Ultralytics train images/s | {plain.get("images_per_s")} | | |
| trainer's step train images/s | {tr.get("images_per_s")} | >= 0.95 x plain (got {r.get("throughput_ratio")}) | {r["targets_met"]["throughput_ratio>=0.95"]} |
| whole job wall / train step (s) | {job.get("wall_s")} / {job.get("train_s")} | | |
| outside training | {job.get("outside_train_s")} s ({job.get("outside_fraction")}) | <= 10 % | {r["targets_met"]["outside_training<=10%"]} |

```json
{json.dumps(r)}
```
"""
    update_results("gpu_train", text)


if __name__ == "__main__":
    sys.exit(main())
