"""Quality on real photos: the product's training against plain Ultralytics on the same images.

The photos are read from ../shared/data/waste6-dev (never copied into the repository). For each seed:
1. the product: every photo becomes a verified row in the Inference API's table (real PostgreSQL) with
   its image and label in fake-gcs-server, then `python -m trainer --from-inferences --all-time` runs as
   a subprocess (its own models bucket per seed, so every seed trains from scratch from yolov8n.yaml);
2. plain Ultralytics: `YOLO("yolov8n.yaml").train(...)` with the same settings and seed on the dataset
   folder the product built in step 1.

Same validation images: the product's stable hash split decides which photos validate (about 20 %), and
plain Ultralytics trains on that very folder, so both see the same train and val files. (The dataset's
own train/val split cannot reach the product through --from-inferences: records carry no split.)

Agreement: the mean mAP50 over seeds differs by at most max(0.03, the larger spread across seeds).

    python bench/quality.py --epochs 3 --imgsz 320 --seeds 0,1 --device cpu    # CPU short schedule
    python bench/quality.py --epochs 60 --imgsz 640 --seeds 0,1,2 --device 0    # the GPU machine
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import REPO, commit, machine, now, update_results

if "pytest" not in sys.modules:
    try:
        import pytest  # noqa: F401 - tests/fixtures/services.py imports it for its fixtures
    except ImportError:
        sys.modules["pytest"] = types.SimpleNamespace(fixture=lambda *a, **k: lambda f: f)


def load_photos(data_dir: Path) -> list[tuple[str, Path, Path]]:
    out = []
    for img in sorted((data_dir / "images").rglob("*.jpg")):
        rel = img.relative_to(data_dir / "images")
        lbl = (data_dir / "labels" / rel).with_suffix(".txt")
        if lbl.is_file():
            out.append((img.stem, img, lbl))
    if not out:
        raise SystemExit(f"no images with labels under {data_dir}")
    return out


def seed_services(pg, gcs, photos) -> str:
    """Rows in a fresh database and objects in the images bucket; returns the DSN."""
    from trainer.db import connect

    dsn = pg.new_database()
    pg.psql((REPO / "trainer" / "sql" / "inference_api.sql").read_text(), database=dsn.rsplit("/", 1)[1])
    bucket = gcs.bucket("quality-images")
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    rows, items = [], []
    for k, (stem, img, lbl) in enumerate(photos):
        day = (t0 + timedelta(days=k % 5)).strftime("%Y/%m/%d")
        rid = f"waste6-{stem}"
        rows.append(
            (
                rid,
                f"images/{day}/{rid}.jpg",
                f"labels/{day}/{rid}.txt",
                "verified",
                sum(1 for x in lbl.read_text().splitlines() if x.strip()),
                t0 + timedelta(minutes=k),
            )
        )
        items += [(rows[-1][1], img), (rows[-1][2], lbl)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda it: bucket.blob(it[0]).upload_from_filename(str(it[1])), items))
    db = connect(dsn, Path(tempfile.gettempdir()))
    cols = [list(c) for c in zip(*rows, strict=True)]
    db.execute(
        "INSERT INTO inferences (id, image_object, label_object, status, detection_count, updated_at) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::timestamptz[])",
        *cols,
    )
    db.close()
    return dsn


def run_product(a, seed: int, dsn: str, gcs, work: Path) -> dict:
    models = f"quality-models-s{seed}"
    gcs.bucket(models)
    report_path = work / f"report-s{seed}.json"
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "STORAGE_EMULATOR_HOST": gcs.endpoint,
        "GCS_IMAGES_BUCKET": "quality-images",
        "GCS_MODELS_BUCKET": models,
        "TRAINER_WORK_DIR": str(work / f"product-s{seed}"),
        "TRAINER_REPORT_PATH": str(report_path),
    }
    args = [
        "--from-inferences",
        "--all-time",
        "--only-verified",
        "--base-model",
        "yolov8n.yaml",
        "--epochs",
        str(a.epochs),
        "--img-size",
        str(a.imgsz),
        "--batch-size",
        str(a.batch),
        "--device",
        a.device,
        "--seed",
        str(seed),
        "--promotion",
        "force",
        "--patience",
        str(a.epochs),
    ]
    if a.workers is not None:
        args += ["--workers", str(a.workers)]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-6000:])
        raise SystemExit(f"product run (seed {seed}) exited {proc.returncode}")
    report = json.loads(report_path.read_text())
    data_yaml = next((work / f"product-s{seed}").rglob("dataset/data.yaml"))
    m = report["metrics"]
    return {
        "seed": seed,
        "map50": round(m["map50"], 4),
        "map50_95": round(m["map50_95"], 4),
        "train": report["data"]["train"],
        "val": report["data"]["val"],
        "wall_s": round(time.perf_counter() - t0, 1),
        "data_yaml": str(data_yaml),
    }


def run_plain(a, seed: int, data_yaml: Path, work: Path, workers: int) -> dict:
    from ultralytics import YOLO

    t0 = time.perf_counter()
    r = YOLO("yolov8n.yaml", task="detect").train(
        data=str(data_yaml),
        epochs=a.epochs,
        imgsz=a.imgsz,
        batch=a.batch,
        device=a.device,
        seed=seed,
        deterministic=True,
        workers=workers,
        optimizer="auto",  # the trainer's default: the same optimizer and learning rate
        patience=a.epochs,
        plots=False,
        verbose=False,
        project=str(work / f"plain-s{seed}"),
        name="train",
        exist_ok=True,
    )
    return {
        "seed": seed,
        "map50": round(float(r.box.map50), 4),
        "map50_95": round(float(r.box.map), 4),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def summarize(rows: list[dict]) -> dict:
    v = [r["map50"] for r in rows]
    return {"mean_map50": round(statistics.fmean(v), 4), "spread": round(max(v) - min(v), 4), "values": v}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "waste6-dev")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=None, help="default: the trainer's (CPUs, at most 8)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    workers = a.workers if a.workers is not None else min(8, os.cpu_count() or 1)
    started = time.perf_counter()

    from tests.fixtures.services import start_gcs, start_postgres
    from trainer import yolo

    photos = load_photos(a.data_dir)
    tmp = Path(tempfile.mkdtemp(prefix="wd-bench-quality-"))
    yolo.prepare_offline(tmp / "ultralytics")
    os.environ.setdefault("TRAINER_WORK_DIR", str(tmp))
    pg, gcs = start_postgres(), start_gcs()
    try:
        dsn = seed_services(pg, gcs, photos)
        product, plain = [], []
        for seed in seeds:
            p = run_product(a, seed, dsn, gcs, tmp)
            product.append(p)
            print(f"product seed {seed}: {json.dumps(p)}", file=sys.stderr)
            u = run_plain(a, seed, Path(p["data_yaml"]), tmp, workers)
            plain.append(u)
            print(f"plain   seed {seed}: {json.dumps(u)}", file=sys.stderr)
        ps, us = summarize(product), summarize(plain)
        tolerance = max(0.03, ps["spread"], us["spread"])
        result = {
            "benchmark": "quality",
            "photos": len(photos),
            "data": str(a.data_dir),
            "train": product[0]["train"],
            "val": product[0]["val"],
            "epochs": a.epochs,
            "imgsz": a.imgsz,
            "batch": a.batch,
            "device": a.device,
            "seeds": seeds,
            "product": ps,
            "plain": us,
            "difference": round(ps["mean_map50"] - us["mean_map50"], 4),
            "tolerance": tolerance,
            "agree": abs(ps["mean_map50"] - us["mean_map50"]) <= tolerance,
            "per_seed": [
                {
                    "seed": p["seed"],
                    "product_map50": p["map50"],
                    "plain_map50": u["map50"],
                    "product_s": p["wall_s"],
                    "plain_s": u["wall_s"],
                }
                for p, u in zip(product, plain, strict=True)
            ],
            "wall_s": round(time.perf_counter() - started, 1),
            "machine": machine(),
            "date": now(),
            "commit": commit(),
        }
        print(json.dumps(result))
        if not a.no_record:
            record(result)
        return 0
    finally:
        gcs.stop()
        pg.stop()
        shutil.rmtree(pg.root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def record(r: dict) -> None:
    rows = "\n".join(
        f"| {s['seed']} | {s['product_map50']} | {s['plain_map50']} | {s['product_s']} | {s['plain_s']} |"
        for s in r["per_seed"]
    )
    key = "quality_" + ("gpu" if r["device"] != "cpu" else "cpu")
    text = f"""## Quality on real photos ({r["device"]}: {r["epochs"]} epochs at {r["imgsz"]}, seeds {r["seeds"]})

`python bench/quality.py --epochs {r["epochs"]} --imgsz {r["imgsz"]} --seeds {",".join(map(str, r["seeds"]))} --device {r["device"]}`
on {r["date"]}, commit {r["commit"]}. Machine: {r["machine"]}.
{r["photos"]} photos from {r["data"]}; the product's hash split gave {r["train"]} train / {r["val"]} val, and
plain Ultralytics trained on the folder the product built (same files). yolov8n from scratch, batch {r["batch"]}.

| seed | product mAP50 | plain mAP50 | product s (whole job) | plain s (training) |
|---|---|---|---|---|
{rows}

Mean mAP50: product {r["product"]["mean_map50"]}, plain {r["plain"]["mean_map50"]}, difference {r["difference"]},
tolerance {r["tolerance"]}: {"agree" if r["agree"] else "DO NOT agree"}.

```json
{json.dumps(r)}
```
"""
    update_results(key, text)


if __name__ == "__main__":
    sys.exit(main())
