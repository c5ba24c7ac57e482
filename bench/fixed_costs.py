"""Fixed costs of a training job, part by part: what a run spends outside training.

The run shape of the GPU target (2,000 verified inferences, 4,000 objects, a champion in models/latest/ to
compare against), on this machine: PostgreSQL and fake-gcs-server behind the loopback proxy of
bench/data_stage.py (+--latency-ms per request, a cloud round trip), `python -m trainer --from-inferences
--all-time` as a subprocess with a fresh work and download folder per run, as a new Job has. Training is
scaled down on CPU (--epochs, --imgsz: 1 and 64); every other part is the real one at the real size, and
the champion is evaluated on the real 400-image validation split at the run's --imgsz (on CPU a stand-in
for its GPU cost: one validation pass, like each epoch's).

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

    git -C /work/main archive main trainer | tar -x -C /tmp/before      # e.g. main's trainer/ as "before"
    python bench/fixed_costs.py --trainer before=/tmp/before --trainer after=.   # alternating, recorded
    python bench/fixed_costs.py --quick --no-record
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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
    ap.add_argument("--imgsz", type=int, default=64, help="training and evaluation size (scaled on CPU)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--runs", type=int, default=2, help="measured runs after the seed run")
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument(
        "--trainer",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a trainer/ package to measure, in the folder DIR (repeatable; the measured runs of all of them "
        "alternate, so they share the machine's load alike). Default: this repository's, as 'after'",
    )
    ap.add_argument("--quick", action="store_true", help="n=200, imgsz 64, one measured run")
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.imgsz, a.runs = 200, 64, 1

    from data_stage import BenchServices, seed_data

    from trainer.db import connect

    trainers = dict(t.split("=", 1) for t in a.trainer) or {"after": str(REPO)}
    trainers = {name: str(Path(path).resolve()) for name, path in trainers.items()}
    load_start, machine_text = os.getloadavg()[0], machine()
    services = BenchServices("wd-bench-fixed-")
    try:
        tmp, gcs = services.tmp, services.gcs
        gcs.bucket("bench-images")
        dsns = {}
        for name in trainers:
            # Each trainer its own database (inferences and registry), models bucket and champion.
            dsns[name] = services.inference_db()
            db = connect(dsns[name], tmp)
            seed_data(gcs, db, "bench-images", a.n, 0, 7, datetime(2026, 11, 1, tzinfo=UTC))
            db.close()
        proxy = services.slow_storage(a.latency_ms)
        base_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_", "GCS_", "TRAININGRUN_"))},
            "GCS_IMAGES_BUCKET": "bench-images",
            "STORAGE_EMULATOR_HOST": proxy.endpoint,
        }
        envs = {}
        common = ["--from-inferences", "--only-verified", "--all-time", "--base-model", "yolov8n.yaml"]
        for name in trainers:
            gcs.bucket(f"bench-models-{name}")
            local = tmp / name
            local.mkdir()
            envs[name] = {
                **base_env,
                "DATABASE_URL": dsns[name],
                "GCS_MODELS_BUCKET": f"bench-models-{name}",
                "TRAINER_LOCAL_DIR": str(local),
                "TRAINER_REPORT_PATH": str(local / "report.json"),
            }
            seed = {**envs[name], "TRAINER_WORK_DIR": str(local / "work-seed")}
            run_job(
                [*common, "--epochs", "1", "--img-size", "64", "--promotion", "force"], seed, trainers[name]
            )
            print(f"{name}: seed run done, v1 is latest", file=sys.stderr)
        runs: dict[str, list[dict]] = {name: [] for name in trainers}
        for i in range(a.runs):
            for name, path in trainers.items():
                env = {
                    **envs[name],
                    "TRAINER_WORK_DIR": str(tmp / name / f"work-{i}"),
                }  # a new Job: empty /tmp
                args = [
                    *common,
                    "--epochs",
                    str(a.epochs),
                    "--img-size",
                    str(a.imgsz),
                    "--batch-size",
                    str(a.batch),
                ]
                r = run_job([*args, "--promotion", "skip"], env, path)
                for part, seconds in r["parts"].items():
                    line = {
                        "benchmark": "fixed_costs",
                        "trainer": name,
                        "run": i + 1,
                        "part": part,
                        "seconds": seconds,
                    }
                    print(json.dumps(line), flush=True)
                summary = {k: v for k, v in r.items() if k != "parts"}
                print(
                    json.dumps(
                        {"benchmark": "fixed_costs", "trainer": name, "run": i + 1, "summary": summary}
                    )
                )
                runs[name].append(r)
        result = {
            "benchmark": "fixed_costs",
            "trainers": trainers,
            "n": a.n,
            "epochs": a.epochs,
            "imgsz": a.imgsz,
            "batch": a.batch,
            "latency_ms": a.latency_ms,
            "runs": runs,
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
        services.stop()


def record(r: dict) -> None:
    columns = [(name, i, run) for name, runs in r["runs"].items() for i, run in enumerate(runs, 1)]
    parts: list[str] = []
    for _, _, run in columns:
        parts += [p for p in run["parts"] if p not in parts]
    head = " | ".join(f"{name} run {i}" for name, i, _ in columns)
    rows = []
    for part in parts:
        cells = " | ".join(str(run["parts"].get(part, "-")) for _, _, run in columns)
        rows.append(f"| {part} | {cells} |")
    for label, key in (
        ("wall", "wall_s"),
        ("outside train", "outside_train_s"),
        ("outside share", "outside_train_share"),
    ):
        rows.append(f"| **{label}** | " + " | ".join(f"**{run[key]}**" for _, _, run in columns) + " |")
    rows.append(
        "| champion evaluation reused | "
        + " | ".join(str(run["champion_cached"]) for _, _, run in columns)
        + " |"
    )
    trainers = ", ".join(f"{k}: `{v}`" for k, v in r["trainers"].items())
    text = f"""## Fixed costs of a run ({r["n"]} inferences, training scaled to {r["epochs"]} epoch at {r["imgsz"]} on CPU)

`python bench/fixed_costs.py` on {r["date"]}, commit {r["commit"]}. Machine: {r["machine"]}; load average
{r["load_start"]} at the start, {r["load_end"]} at the end. Trainers: {trainers}. PostgreSQL and fake-gcs-server
behind +{r["latency_ms"]:g} ms per request; the measured runs of the trainers alternate. Seconds per part:

| part | {head} |
|---|{"---|" * len(columns)}
{chr(10).join(rows)}

```json
{json.dumps(r)}
```
"""
    update_results("fixed_costs", text)


if __name__ == "__main__":
    sys.exit(main())
