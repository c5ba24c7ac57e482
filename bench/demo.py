"""The demo's first run: which image count, image size, epochs and optimizer learn the synthetic data fast.

Each configuration writes v1's data with the demo's own generator and arguments (scripts/demo-settings.sh's
V1_DATA, its image count replaced), then runs `python -m trainer --dataset ... --base-model yolov8n.yaml`
from scratch on CPU, on the embedded default (local folders, SQLite), each in a fresh folder. Recorded:
mAP50, the train step's seconds, the run's wall and CPU seconds. Then the whole demo (`WD_SKIP_SETUP=1 bash
scripts/demo.sh`, both runs, its own settings) is timed once, and its decision lines are kept.

    python bench/demo.py                         # the configurations below, records bench/RESULTS.md
    python bench/demo.py --configs 120:128:25:auto --no-demo --no-record
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, commit, machine, now, update_results

from tests.fixtures.demo import demo_settings

# images : imgsz : epochs : optimizer (auto, or NAME@lr)
CONFIGS = [
    "120:128:25:auto",
    "120:96:25:auto",
    "120:128:15:AdamW@0.003",
    "120:128:20:auto",
    "160:128:20:auto",
]


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_config(spec: str, root: Path) -> dict:
    images, imgsz, epochs, opt = spec.split(":")
    folder = root / spec.replace(":", "_").replace("@", "-")
    shutil.rmtree(folder, ignore_errors=True)
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}:{REPO / 'operator'}",
        "TRAINER_LOCAL_DIR": str(folder),
        "TRAINER_WORK_DIR": str(folder / "work"),
        "TRAINER_REPORT_PATH": str(folder / "report.json"),
    }
    data = demo_settings()["V1_DATA"]
    data[data.index("--images") + 1] = images
    subprocess.run(
        [sys.executable, REPO / "scripts/make_sample_dataset.py", folder / "ds", *data],
        check=True,
        env=env,
        capture_output=True,
    )
    optimizer = ["--optimizer", opt.split("@")[0], "--learning-rate", opt.split("@")[1]] if "@" in opt else []
    args = ["--dataset", str(folder / "ds"), "--base-model", "yolov8n.yaml", "--epochs", epochs,
            "--img-size", imgsz, "--batch-size", "16", "--device", "cpu", *optimizer]  # fmt: skip
    cpu0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", *args], env=env, capture_output=True, text=True, cwd=folder
    )
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if proc.returncode:
        raise SystemExit(f"{spec}: trainer failed:\n{proc.stderr[-2000:]}")
    report = json.loads((folder / "report.json").read_text())
    m = report["metrics"]
    out = {
        "config": spec,
        "images": int(images),
        "imgsz": int(imgsz),
        "epochs": int(epochs),
        "optimizer": opt,
        "train": report["data"]["train"],
        "val": report["data"]["val"],
        "map50": round(m["map50"], 3),
        "train_s": round(report["timings"]["train"], 1),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load_end": round(os.getloadavg()[0], 1),
    }
    shutil.rmtree(folder, ignore_errors=True)
    return out


def run_demo(root: Path) -> dict:
    local = root / "demo"
    env = {
        **os.environ,
        "WD_SKIP_SETUP": "1",
        "PYTHONPATH": f"{REPO}:{REPO / 'operator'}",
        "TRAINER_LOCAL_DIR": str(local),
        "TRAINER_WORK_DIR": str(local / "work"),
    }
    cpu0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run(["bash", REPO / "scripts/demo.sh"], env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if proc.returncode:
        raise SystemExit(f"demo failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    runs = [json.loads((local / "demo-reports" / f).read_text()) for f in ("run1-v1.json", "run2-v2.json")]
    out = {
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load_end": round(os.getloadavg()[0], 1),
        "runs": [
            {
                "version": r["model"]["version"],
                "map50": round(r["metrics"]["map50"], 3),
                "train_s": round(r["timings"]["train"], 1),
                "total_s": round(r["timings"]["total"], 1),
            }
            for r in runs
        ],
        "decisions": [ln for ln in proc.stdout.splitlines() if ln.startswith("decision: ")],
        "stdout": proc.stdout,
    }
    shutil.rmtree(local, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--configs", default=",".join(CONFIGS), help="images:imgsz:epochs:optimizer, comma-separated"
    )
    ap.add_argument("--no-demo", action="store_true", help="skip timing the whole demo")
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args()
    where, started = machine(), now()
    rows = []
    with tempfile.TemporaryDirectory(prefix="wd-bench-demo-") as tmp:
        for spec in filter(None, a.configs.split(",")):
            rows.append(run_config(spec, Path(tmp)))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        demo = None if a.no_demo else run_demo(Path(tmp))
    result = {
        "benchmark": "demo",
        "configs": rows,
        "demo": demo and {k: v for k, v in demo.items() if k != "stdout"},
        "machine": where,
        "date": started,
        "commit": commit(),
    }
    print(json.dumps(result))
    if demo:
        print(demo["stdout"], file=sys.stderr)
    if a.no_record:
        return
    data = demo_settings()["V1_DATA"]
    data = " ".join("N" if i and data[i - 1] == "--images" else w for i, w in enumerate(data))
    lines = [
        "## Demo: the first run's settings (synthetic data, CPU, from scratch)",
        "",
        f"`python bench/demo.py` on {started}, commit {result['commit']}. Machine: {where}.",
        f"v1's data: `scripts/make_sample_dataset.py {data}` (96 px images, one or two boxes each, the",
        "dataset's own 80/20 split); `python -m trainer --dataset ... --base-model yolov8n.yaml --batch-size 16",
        "--device cpu`, embedded default. CPU s: user + system of the trainer and its data-loader workers; wall s",
        "grows with whatever else runs on the machine (load average at the end of each run shown).",
        "",
        "| images | imgsz | epochs | optimizer | train/val | mAP50 | train step s | wall s | CPU s | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['images']} | {r['imgsz']} | {r['epochs']} | {r['optimizer']} | {r['train']}/{r['val']} | "
            f"{r['map50']} | {r['train_s']} | {r['wall_s']} | {r['cpu_s']} | {r['load_end']} |"
        )
    if demo:
        v1, v2 = demo["runs"]
        lines += [
            "",
            f"The whole demo (`WD_SKIP_SETUP=1 bash scripts/demo.sh`, both runs, scripts/demo-settings.sh): "
            f"{demo['wall_s']} s wall, {demo['cpu_s']} s CPU, load {demo['load_end']} at the end; v1 "
            f"{v1['total_s']} s (train {v1['train_s']} s), v2 {v2['total_s']} s (train {v2['train_s']} s). "
            "Its decisions:",
            "",
            *[f"- `{d}`" for d in demo["decisions"]],
        ]
    lines += ["", "```json", json.dumps(result), "```"]
    update_results("demo", "\n".join(lines))


if __name__ == "__main__":
    main()
