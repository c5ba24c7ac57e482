"""Preflight cost: what checking every resource before a run costs, against PostgreSQL and fake-gcs-server.

The trainer's own checks (trainer.preflight.Preflight, as Job._preflight calls it) for a --from-inferences
run: the inferences table, the images bucket, the models bucket (read, create-only probe, delete) and the base
model. Measured directly against the emulator and again with --latency-ms added to every request by the
loopback proxy (a cloud round trip). The device check is left out: it imports torch, which training imports
anyway, and only runs when --device asks for CUDA.

    python bench/preflight.py            # 30 rounds at 0 and 20 ms, records bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time

from _common import commit, machine, now, update_results

TARGET_S = 1.0


def measure(settings, rounds: int) -> dict:
    from trainer.blobstore import GCSBlobStore
    from trainer.db import connect, migrate
    from trainer.preflight import Preflight

    db = connect(settings.database_url, settings.local_dir)
    migrate(db)
    models, images = GCSBlobStore(settings.models_bucket), GCSBlobStore(settings.images_bucket)
    totals: list[float] = []
    per_check: dict[str, list[float]] = {}
    try:
        Preflight(settings=settings, db=db, models=models, images=images).run()  # warm: connections, imports
        for _ in range(rounds):
            check = Preflight(settings=settings, db=db, models=models, images=images)
            t0 = time.perf_counter()
            check.run()
            totals.append(time.perf_counter() - t0)
            for name, seconds in check.timings.items():
                per_check.setdefault(name, []).append(seconds)
    finally:
        db.close()
    return {
        "median_s": round(statistics.median(totals), 4),
        "max_s": round(max(totals), 4),
        "checks_median_s": {k: round(statistics.median(v), 4) for k, v in per_check.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--latency-ms", type=float, default=20.0, help="the second series' added latency")
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from data_stage import BenchServices

    from trainer.settings import Settings

    machine_text = machine()
    services = BenchServices("wd-bench-preflight-")
    try:
        tmp, gcs = services.tmp, services.gcs
        dsn = services.inference_db()
        images, models = gcs.bucket("bench-images"), gcs.bucket("bench-models")
        images.blob("images/2026/11/01/a.jpg").upload_from_string(b"x")
        settings = Settings(
            from_inferences=True,
            database_url=dsn,
            images_bucket=images.name,
            models_bucket=models.name,
            base_model="yolov8n.yaml",
            local_dir=tmp,
            work_dir=tmp / "work",
            cache_dir=tmp / "cache",
        )
        series = {}
        os.environ["STORAGE_EMULATOR_HOST"] = gcs.endpoint
        series["0"] = measure(settings, a.rounds)
        proxy = services.slow_storage(a.latency_ms)
        os.environ["STORAGE_EMULATOR_HOST"] = proxy.endpoint
        series[f"{a.latency_ms:g}"] = measure(settings, a.rounds)
        leftovers = [b.name for b in gcs.client().list_blobs(models.name)]
        result = {
            "benchmark": "preflight",
            "rounds": a.rounds,
            "series_by_latency_ms": series,
            "probe_objects_left": len(leftovers),
            "targets_met": {"under_1s": all(s["max_s"] < TARGET_S for s in series.values())},
            "machine": machine_text,
            "loadavg_end": round(os.getloadavg()[0], 1),
            "date": now(),
            "commit": commit(),
        }
        print(json.dumps(result))
        if not a.no_record:
            record(result)
        return 0
    finally:
        services.stop()


def record(r: dict) -> None:
    rows = []
    for latency, s in r["series_by_latency_ms"].items():
        checks = ", ".join(f"{k} {v}" for k, v in s["checks_median_s"].items())
        rows.append(f"| +{latency} ms | {s['median_s']} | {s['max_s']} | {checks} |")
    text = f"""## Preflight: every resource checked before a run ({r["rounds"]} rounds)

`python bench/preflight.py` on {r["date"]}, commit {r["commit"]}. Machine: {r["machine"]}; load average at
the end {r["loadavg_end"]}. Real PostgreSQL and fake-gcs-server; the second series adds latency to every
storage request through the loopback proxy. Target: well under 1 s ({"met" if r["targets_met"]["under_1s"] else "NOT met"}).
Probe objects left in the models bucket: {r["probe_objects_left"]}.

| storage latency | median s | max s | median s per check |
|---|---|---|---|
{chr(10).join(rows)}

```json
{json.dumps(r)}
```
"""
    update_results("preflight", text)


if __name__ == "__main__":
    sys.exit(main())
