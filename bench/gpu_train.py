"""GPU benchmark, one prepared script: the product against plain Ultralytics, and the job's fixed costs.

(b) The whole job, `python -m trainer --dataset gs://... --batch-size auto` (fake-gcs-server, the embedded
    SQLite registry: the GPU machine has no PostgreSQL), --n images, --epochs (2,000 and 10), after a
    1-epoch seed run has published a models/latest/ so the measured run also evaluates a champion.
    Target: everything but the `train` step <= 10 % of the job's wall time; the JSON itemises the rest.
(a) Train images/s on the dataset folder that job built, three runs of --speed-epochs: the product's
    training step `trainer.yolo.train(...)` with batch auto and the workers it sizes from the CPUs; plain
    `YOLO("yolov8n.yaml").train(...)` at exactly that batch and those workers (target: product >= 0.95 x);
    plain Ultralytics at its defaults, batch 16 and 8 workers (target: product >= 1.4 x). Train images/s =
    training images / time between on_train_epoch_start and on_train_epoch_end (CUDA synchronised,
    validation excluded), median over the epochs after the first.
(c) mAP50 on the real photos of waste6-dev (their own train/val split): the product's whole job against
    plain Ultralytics on the folder the product built, --quality-epochs at --quality-imgsz (60 at 640),
    batch 16, seed 0, no early stop; the two run at the same time on the one GPU. Target: within 0.03
    (plain reached ~0.42 from scratch, per the data set's README).

Data for (a) and (b): --data-dir (real photos, e.g. waste6-dev) repeated with distinct ids up to --n, or
synthetic 640x640 JPEGs (tests/fixtures/data.make_sample); repeated photos fall into both splits, so (a)
and (b) measure speed only. Every part's figures are printed and written to --out (default $OUT/gpu_train.json)
as soon as they exist.

    bash bench/gpu_train.sh                                   # on the GPU machine (< 8 min)
    python bench/gpu_train.py --quick --device cpu --synthetic # end-to-end check on a CPU
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

from _common import REPO, commit, machine, now, update_results, waste6_dev

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


def plain_train(data_yaml: Path, project: Path, epochs: int, imgsz: int, device: str, **settings) -> dict:
    """`YOLO("yolov8n.yaml").train(...)`: only the given settings, Ultralytics' defaults for the rest."""
    from ultralytics import YOLO

    timer = EpochTimer()
    model = YOLO("yolov8n.yaml", task="detect")
    timer.attach(model)
    t0 = time.perf_counter()
    r = model.train(
        data=str(data_yaml),
        epochs=epochs,
        imgsz=imgsz,
        device=device,
        seed=0,
        deterministic=True,
        plots=False,
        project=str(project),
        name="train",
        exist_ok=True,
        verbose=False,
        **settings,
    )
    tr = model.trainer
    return {
        **timer.summary(),
        "batch": int(tr.batch_size),
        "workers": int(tr.train_loader.num_workers),
        "wall_s": round(time.perf_counter() - t0, 1),
        "map50": round(float(r.box.map50), 4) if r is not None else None,
    }


def product_train(data_yaml: Path, project: Path, settings, device: str) -> dict:
    """The trainer's training step, `trainer.yolo.train(...)`: the product's class, hooks and sizing."""
    from trainer import yolo

    timer = EpochTimer()
    model = yolo.load_model("yolov8n.yaml")
    timer.attach(model)
    t0 = time.perf_counter()
    out = yolo.train(
        model, data_yaml=data_yaml, project=project, settings=settings, device=device, resume=False
    )
    return {
        **timer.summary(),
        "batch": out.sizing["batch"],
        "workers": out.sizing["workers_per_process"],
        "wall_s": round(time.perf_counter() - t0, 1),
        "map50": round(out.metrics.get("map50", 0.0), 4),
    }


class Results:
    """Every part's figures, printed and written (to --out) as soon as they exist: a run cut short by the
    time limit still leaves what it measured."""

    def __init__(self, path: Path | None, head: dict):
        self.path, self.data = path, dict(head)

    def add(self, key: str, value) -> None:
        self.data[key] = value
        print(f"{key}: {json.dumps(value)}", file=sys.stderr, flush=True)
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.data, indent=1))


def ratio(a: dict, b: dict) -> float | None:
    if a.get("images_per_s") and b.get("images_per_s"):
        return round(a["images_per_s"] / b["images_per_s"], 3)
    return None


def quality_folder(a, tmp: Path) -> tuple[Path, str]:
    """The waste6-dev photos (their own train/val split), or a synthetic folder with --synthetic."""
    if not a.synthetic and (a.quality_data / "images").is_dir():
        dest = tmp / "waste6-dev"
        shutil.copytree(a.quality_data, dest)  # Ultralytics writes label caches next to the images
        return dest, f"real photos from {a.quality_data}"
    from tests.fixtures.data import write_yolo_folder

    return write_yolo_folder(tmp / "quality-synthetic", 60), "60 synthetic images (tests/fixtures/data.py)"


def run_quality(a, tmp: Path, env: dict, extra_args: list[str]) -> dict:
    """(c) mAP50, the product (`python -m trainer --dataset FOLDER`) against plain Ultralytics on the folder
    the product built, same epochs, imgsz, batch, seed, no early stop. The two run at the same time on the
    same GPU (speed is not what is compared here; the GPU and the 16 CPUs have room for two small runs)."""
    folder, source = quality_folder(a, tmp)
    work = tmp / "quality-job"
    qenv = {**env, "TRAINER_WORK_DIR": str(work), "TRAINER_LOCAL_DIR": str(tmp / "quality-local"),
            "TRAINER_REPORT_PATH": str(tmp / "quality-report.json")}  # fmt: skip
    for k in ("GCS_MODELS_BUCKET", "GCS_DATASETS_BUCKET"):
        qenv.pop(k, None)
    args = ["--dataset", str(folder), "--base-model", "yolov8n.yaml", "--epochs", str(a.quality_epochs),
            "--img-size", str(a.quality_imgsz), "--batch-size", str(a.quality_batch), "--patience", "0",
            "--device", a.device, "--seed", "0", "--promotion", "force", *extra_args]  # fmt: skip
    (tmp / "quality-local").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log = tmp / "quality-job.log"
    proc = subprocess.Popen([sys.executable, "-m", "trainer", *args], cwd=REPO, env=qenv,
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"))  # fmt: skip
    deadline = time.monotonic() + 300
    built = None
    while built is None:
        # The dataset step's log line comes after data.yaml, the last file it writes.
        if "step=dataset" in (log.read_text(errors="replace") if log.exists() else ""):
            built = next(work.rglob("dataset/data.yaml"))
        elif proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"quality: the product never built its dataset:\n{log.read_text()[-4000:]}")
        else:
            time.sleep(0.5)
    plain_folder = tmp / "quality-plain"
    shutil.copytree(built.parent, plain_folder, ignore=shutil.ignore_patterns("*.cache", "*.npy"))
    text = (plain_folder / "data.yaml").read_text().replace(str(built.parent), str(plain_folder))
    (plain_folder / "data.yaml").write_text(text)
    plain = plain_train(plain_folder / "data.yaml", tmp / "quality-plain-runs", a.quality_epochs,
                        a.quality_imgsz, a.device, batch=a.quality_batch, patience=a.quality_epochs + 1,
                        workers=8)  # fmt: skip
    if proc.wait() != 0:
        raise SystemExit(f"quality: python -m trainer exited {proc.returncode}:\n{log.read_text()[-4000:]}")
    report = json.loads(Path(qenv["TRAINER_REPORT_PATH"]).read_text())
    product_map = report["metrics"]["map50"]
    return {
        "data": source,
        "train": report["data"]["train"],
        "val": report["data"]["val"],
        "epochs": a.quality_epochs,
        "imgsz": a.quality_imgsz,
        "batch": a.quality_batch,
        "product_map50": round(product_map, 4),
        "plain_map50": plain["map50"],
        "difference": round(product_map - (plain["map50"] or 0.0), 4),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=10, help="(b): the whole job's epochs")
    ap.add_argument("--speed-epochs", type=int, default=3, help="(a): epochs per throughput run")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--device", default="0")
    ap.add_argument("--data-dir", type=Path, default=waste6_dev(), help="photos for (a) and (b)")
    ap.add_argument(
        "--quality-data", type=Path, default=waste6_dev(), help="(c): a YOLO folder with train/val"
    )
    ap.add_argument("--quality-epochs", type=int, default=60)
    ap.add_argument("--quality-imgsz", type=int, default=640)
    ap.add_argument("--quality-batch", type=int, default=16)
    ap.add_argument("--synthetic", action="store_true", help="generated images for every part")
    ap.add_argument("--skip", default="", help="comma list of job,speed,quality to leave out")
    ap.add_argument("--out", type=Path, default=None, help="also write the results JSON here (default $OUT)")
    ap.add_argument("--quick", action="store_true", help="tiny CPU check: n=24, 1 epoch, imgsz 64")
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.epochs, a.speed_epochs, a.imgsz = 24, 1, 2, 64
        a.quality_epochs, a.quality_imgsz, a.quality_batch = 1, 64, 8
    out = a.out or (Path(os.environ["OUT"]) / "gpu_train.json" if os.environ.get("OUT") else None)
    skip = set(filter(None, a.skip.split(",")))
    started = time.perf_counter()

    from tests.fixtures.services import start_gcs
    from trainer import yolo
    from trainer.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="wd-bench-gpu-"))
    yolo.prepare_offline(tmp / "ultralytics")  # before any `import ultralytics`; the same for every run
    results = Results(out, {"benchmark": "gpu_train", "device": a.device, "n": a.n, "epochs": a.epochs,
                            "imgsz": a.imgsz, "machine": machine(), "date": now(), "commit": commit()})  # fmt: skip
    gcs = start_gcs()
    try:
        samples, source = make_dataset(a.n, None if a.synthetic else a.data_dir, a.imgsz)
        gcs.bucket("datasets"), gcs.bucket("models")
        upload(gcs, "datasets", "bench", samples)
        results.add("data", source)
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
        # Tiny CPU checks pin 0 workers; otherwise the trainer sizes them.
        sized = ["--workers", "0"] if a.quick else []
        common = ["--dataset", "gs://datasets/bench", "--img-size", str(a.imgsz), "--batch-size", "auto",
                  "--device", a.device, "--seed", "0", "--promotion", "force", *sized]  # fmt: skip
        results.add("setup_s", round(time.perf_counter() - started, 1))

        # (b) The whole job as a user runs it (batch auto, sized workers), after a 1-epoch seed run has
        # published a champion for it to evaluate.
        run_job([*common, "--epochs", "1", "--base-model", "yolov8n.yaml"], env, "seed run")
        if "job" not in skip:
            wall, report = run_job(
                [*common, "--epochs", str(a.epochs), "--base-model", "yolov8n.yaml"], env, "job"
            )
            t = report["timings"]
            outside = wall - t["train"]
            results.add("job", {
                "wall_s": round(wall, 1),
                "train_s": t["train"],
                "outside_train_s": round(outside, 1),
                "outside_fraction": round(outside / wall, 3),
                "steps_s": {k: v for k, v in t.items() if k not in ("train", "total")},
                "process_start_and_exit_s": round(wall - t["total"], 1),
                "in_run_outside_steps_s": round(t["total"] - sum(v for k, v in t.items() if k != "total"), 1),
                "train": report["data"].get("train"),
                "val": report["data"].get("val"),
                "batch": report["training"].get("batch"),
                "workers": report["training"].get("workers_per_process"),
                "champion_evaluated": bool(report.get("champion")),
            })  # fmt: skip
        data_yaml = next((tmp / "job").rglob("dataset/data.yaml"))

        # (a) Train images/s on the folder the job built: the product's step with its sizing (batch auto,
        # workers from the CPUs), plain Ultralytics at exactly those settings, and plain at its defaults.
        if "speed" not in skip:
            s = Settings(epochs=a.speed_epochs, batch_size="auto", img_size=a.imgsz, seed=0, device=a.device,
                         workers=0 if a.quick else None, patience=10)  # fmt: skip
            product = product_train(data_yaml, tmp / "product", s, a.device)
            results.add("product_sized", product)
            equal = plain_train(data_yaml, tmp / "plain-equal", a.speed_epochs, a.imgsz, a.device,
                                batch=product["batch"], workers=product["workers"])  # fmt: skip
            results.add("plain_equal", equal)
            defaults = plain_train(data_yaml, tmp / "plain-defaults", a.speed_epochs, a.imgsz, a.device,
                                   **({"batch": 8, "workers": 0} if a.quick else {}))  # fmt: skip
            results.add("plain_defaults", defaults)
            results.add("ratios", {"product_vs_plain_equal": ratio(product, equal),
                                   "product_vs_plain_defaults": ratio(product, defaults)})  # fmt: skip

        # (c) mAP50 on real photos, product vs plain.
        if "quality" not in skip:
            results.add("quality", run_quality(a, tmp, env, ["--workers", "0"] if a.quick else []))

        d = results.data
        r = d.get("ratios", {})
        q = d.get("quality")
        results.add("targets_met", {
            "equal_settings>=0.95": None if r.get("product_vs_plain_equal") is None else r["product_vs_plain_equal"] >= 0.95,
            "sized_vs_defaults>=1.4": None if r.get("product_vs_plain_defaults") is None else r["product_vs_plain_defaults"] >= 1.4,
            "outside_training<=10%": d["job"]["outside_fraction"] <= 0.10 if "job" in d else None,
            "quality_within_0.03": abs(q["difference"]) <= 0.03 if q else None,
        })  # fmt: skip
        results.add("bench_wall_s", round(time.perf_counter() - started, 1))
        print(json.dumps(results.data))
        if not (a.quick or a.no_record):
            record(results.data)
        return 0
    finally:
        gcs.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def record(r: dict) -> None:
    job, p, e, dflt = (
        r.get("job", {}),
        r.get("product_sized", {}),
        r.get("plain_equal", {}),
        r.get("plain_defaults", {}),
    )
    q, ratios, met = r.get("quality") or {}, r.get("ratios", {}), r["targets_met"]
    text = f"""## GPU training: the product vs plain Ultralytics ({r["n"]} images; job {r["epochs"]} epochs)

`bash bench/gpu_train.sh` on {r["date"]}, commit {r["commit"]}. Machine: {r["machine"]}. Data: {r["data"]}.

| measure | value | target | met |
|---|---|---|---|
| (a) product's step, batch auto + sized workers: train images/s | {p.get("images_per_s")} (batch {p.get("batch")}, {p.get("workers")} workers) | | |
| (a) plain Ultralytics at the same batch and workers | {e.get("images_per_s")} | product >= 0.95 x (got {ratios.get("product_vs_plain_equal")}) | {met["equal_settings>=0.95"]} |
| (a) plain Ultralytics at its defaults | {dflt.get("images_per_s")} (batch {dflt.get("batch")}, {dflt.get("workers")} workers) | product >= 1.4 x (got {ratios.get("product_vs_plain_defaults")}) | {met["sized_vs_defaults>=1.4"]} |
| (b) whole job wall / train step (s) | {job.get("wall_s")} / {job.get("train_s")} | | |
| (b) outside training | {job.get("outside_train_s")} s ({job.get("outside_fraction")}) | <= 10 % | {met["outside_training<=10%"]} |
| (c) mAP50 product / plain ({q.get("epochs")} epochs at {q.get("imgsz")}, {q.get("train")}/{q.get("val")} images) | {q.get("product_map50")} / {q.get("plain_map50")} | within 0.03 | {met["quality_within_0.03"]} |

```json
{json.dumps(r)}
```
"""
    update_results("gpu_train", text)


if __name__ == "__main__":
    sys.exit(main())
