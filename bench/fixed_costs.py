"""Fixed costs of a training job, part by part: what a run spends outside training.

The run shape of the GPU target (2,000 verified inferences, 4,000 objects, a champion in models/latest/ to
compare against), on this machine: PostgreSQL and fake-gcs-server behind the loopback proxy of
bench/data_stage.py (+--latency-ms per request, a cloud round trip), `python -m trainer --from-inferences
--all-time` as a subprocess with a fresh work and download folder per run, as a new Job has. Training is
scaled down on CPU (--epochs, --imgsz); every other part is the real one at the real size, and the
champion is evaluated on the real 400-image validation split at the run's --imgsz.

First a seed run publishes v1 (latest). Then --runs measured runs with --promotion skip, so latest stays
v1 and each run meets the same champion on the same validation images (the second can reuse the first's
champion evaluation). Each part is printed as one JSON line:
- start_imports: process start to the trainer's first log line (interpreter, imports, settings);
- every step of the run report (registry, select, download, dataset, warm_up, base_model, train,
  evaluate_champion, publish, register, chart: whichever the trainer under test has);
- in_run_other: time inside the run outside any step (model load; before the cuts: the imports of torch
  and Ultralytics and the chart);
- exit: report written to process end (interpreter teardown);
and a summary line with the wall time, the time outside `train`, and its share.

    python bench/fixed_costs.py                                   # the repository's trainer, recorded
    python bench/fixed_costs.py --trainer-path /tmp/before --label before   # e.g. main's trainer/
    python bench/fixed_costs.py --quick --no-record
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import REPO, commit, machine, now, update_results

STEP_ORDER = [
    "registry",
    "select",
    "download",
    "dataset",
    "warm_up",
    "base_model",
    "train",
    "evaluate_champion",
    "publish",
    "register",
    "chart",
]


def run_job(args: list[str], env: dict, pythonpath: str) -> dict:
    t_spawn = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=env["TRAINER_LOCAL_DIR"],
        env={**env, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
    )
    wall = time.time() - t_spawn
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-6000:])
        raise SystemExit(f"python -m trainer exited {proc.returncode}")
    report = json.loads(Path(env["TRAINER_REPORT_PATH"]).read_text())
    first = next(line for line in proc.stderr.splitlines() if "event=start" in line)
    started = datetime.strptime(first[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    timings = report["timings"]
    steps = {k: v for k, v in timings.items() if k != "total"}
    parts = {"start_imports": round(started - t_spawn, 2)}
    parts |= {k: round(steps[k], 2) for k in STEP_ORDER if k in steps}
    parts |= {k: round(v, 2) for k, v in steps.items() if k not in parts}
    parts["in_run_other"] = round(timings["total"] - sum(steps.values()), 2)
    parts["exit"] = round(wall - timings["total"] - parts["start_imports"], 2)
    return {
        "wall_s": round(wall, 2),
        "parts": parts,
        "outside_train_s": round(wall - steps.get("train", 0.0), 2),
        "outside_train_share": round((wall - steps.get("train", 0.0)) / wall, 3),
        "champion_cached": (report.get("champion") or {}).get("cached"),
        "train": report["data"].get("train"),
        "val": report["data"].get("val"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1, help="training epochs (scaled down on CPU)")
    ap.add_argument("--imgsz", type=int, default=160, help="training and evaluation size (scaled on CPU)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--runs", type=int, default=2, help="measured runs after the seed run")
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--trainer-path", type=Path, help="a folder holding the trainer/ package to measure")
    ap.add_argument("--label", default="after", help="the name of this measurement in RESULTS.md")
    ap.add_argument("--quick", action="store_true", help="n=200, imgsz 64, one measured run")
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.imgsz, a.runs = 200, 64, 1

    from data_stage import ProxyProcess, seed_data

    from tests.fixtures.services import start_gcs, start_postgres
    from trainer.db import connect

    pythonpath = str((a.trainer_path or REPO).resolve())
    tmp = Path(tempfile.mkdtemp(prefix="wd-bench-fixed-"))
    pg = gcs = proxy = None
    load_start = os.getloadavg()[0]
    try:
        pg, gcs = start_postgres(), start_gcs()
        dsn = pg.new_database()
        pg.psql((REPO / "trainer" / "sql" / "inference_api.sql").read_text(), database=dsn.rsplit("/", 1)[1])
        gcs.bucket("bench-images"), gcs.bucket("bench-models")
        db = connect(dsn, tmp)
        seed_data(gcs, db, "bench-images", a.n, 0, 7, datetime(2026, 11, 1, tzinfo=UTC))
        db.close()
        proxy = ProxyProcess(gcs.endpoint, a.latency_ms / 1000)
        base_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_", "GCS_", "TRAININGRUN_"))},
            "DATABASE_URL": dsn,
            "GCS_IMAGES_BUCKET": "bench-images",
            "GCS_MODELS_BUCKET": "bench-models",
            "STORAGE_EMULATOR_HOST": proxy.endpoint,
            "TRAINER_LOCAL_DIR": str(tmp),
            "TRAINER_REPORT_PATH": str(tmp / "report.json"),
        }
        common = ["--from-inferences", "--only-verified", "--all-time", "--base-model", "yolov8n.yaml"]
        seed_env = {**base_env, "TRAINER_WORK_DIR": str(tmp / "work-seed")}
        run_job([*common, "--epochs", "1", "--img-size", "64", "--promotion", "force"], seed_env, pythonpath)
        print("seed run done: v1 is latest", file=sys.stderr)
        runs = []
        for i in range(a.runs):
            env = {**base_env, "TRAINER_WORK_DIR": str(tmp / f"work-{i}")}  # a new Job: empty /tmp
            args = [
                *common,
                "--epochs",
                str(a.epochs),
                "--img-size",
                str(a.imgsz),
                "--batch-size",
                str(a.batch),
            ]
            r = run_job([*args, "--promotion", "skip"], env, pythonpath)
            for part, seconds in r["parts"].items():
                print(
                    json.dumps({"benchmark": "fixed_costs", "run": i + 1, "part": part, "seconds": seconds})
                )
            print(
                json.dumps(
                    {
                        "benchmark": "fixed_costs",
                        "run": i + 1,
                        "summary": {k: v for k, v in r.items() if k != "parts"},
                    }
                )
            )
            runs.append(r)
        result = {
            "benchmark": "fixed_costs",
            "label": a.label,
            "trainer": pythonpath,
            "n": a.n,
            "epochs": a.epochs,
            "imgsz": a.imgsz,
            "batch": a.batch,
            "latency_ms": a.latency_ms,
            "runs": runs,
            "load_start": round(load_start, 1),
            "load_end": round(os.getloadavg()[0], 1),
            "machine": machine(),
            "date": now(),
            "commit": commit(),
        }
        print(json.dumps(result))
        if not (a.quick or a.no_record):
            record(result)
        return 0
    finally:
        for service in (proxy, gcs, pg):
            if service is not None:
                service.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def record(r: dict) -> None:
    update_results(f"fixed_costs_{r['label']}", "```json\n" + json.dumps(r) + "\n```")


if __name__ == "__main__":
    sys.exit(main())
