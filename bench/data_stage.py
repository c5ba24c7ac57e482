"""Data stage benchmark: select, download and build a dataset from GCS behind a cloud-like round trip.

Real PostgreSQL (the Inference API's `inferences` table) and fake-gcs-server, with the loopback proxy from
tests/fixtures/gcs_proxy.py adding --latency-ms to every request (it runs in its own process, so its CPU
and GIL do not count against the client). Three timed runs of the product's own steps
(trainer.pipeline.Job._select and Job._build on a Settings object) against one shared download cache:

1. cold cache, compared in the same process with the original job's way: a sequential loop of
   `blob.download_to_filename` for every image and label (target: product >= 8x faster);
2. the same selection again, nothing new (target: data stage < 2 s, all from the cache);
3. --new more inferences (target: downloads only those).

Selection uses --all-time so each run selects everything and the cache, not the registry cutoff, is what
keeps the second run cheap. Image generation and upload are setup, not timed.

    python bench/data_stage.py                  # n=2000, 20 ms, records bench/RESULTS.md
    python bench/data_stage.py --quick          # a ~30 s smoke run, records nothing
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import REPO, commit, machine, now, update_results

TARGET_SPEEDUP, TARGET_SECOND_S = 8.0, 2.0


# Proxy in its own process ---------------------------------------------------------------------------
def _proxy_main(upstream: str, latency_s: float, conn) -> None:
    from tests.fixtures.gcs_proxy import GCSProxy

    with GCSProxy(upstream=upstream, latency_s=latency_s) as proxy:
        conn.send(proxy.endpoint)
        while True:
            msg = conn.recv()
            if msg == "stats":
                conn.send(proxy.stats)
            elif msg == "reset":
                proxy.reset_stats()
                conn.send(True)
            else:
                return


class ProxyProcess:
    def __init__(self, upstream: str, latency_s: float):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_proxy_main, args=(upstream, latency_s, child), daemon=True)
        self._proc.start()
        self.endpoint = self._conn.recv()
        self.pid = self._proc.pid

    def stats(self) -> dict:
        self._conn.send("stats")
        return self._conn.recv()

    def reset(self) -> None:
        self._conn.send("reset")
        self._conn.recv()

    def stop(self) -> None:
        self._conn.send("stop")
        self._proc.join(5)


class BenchServices:
    """What a data benchmark runs against: a scratch folder, a PostgreSQL server and fake-gcs-server
    (tests/fixtures/services.py), and, once `slow_storage` is called, the loopback proxy that adds latency to
    every storage request. `stop` ends them all and removes their folders."""

    def __init__(self, prefix: str) -> None:
        from tests.fixtures.services import start_gcs, start_postgres

        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.pg = self.gcs = None
        self.proxy: ProxyProcess | None = None
        try:
            self.pg = start_postgres()
            self.gcs = start_gcs()
        except BaseException:
            self.stop()
            raise

    def inference_db(self) -> str:
        """A new database with the Inference API's schema; its URL."""
        dsn = self.pg.new_database()
        self.pg.psql(
            (REPO / "trainer" / "sql" / "inference_api.sql").read_text(), database=dsn.rsplit("/", 1)[1]
        )
        return dsn

    def slow_storage(self, latency_ms: float) -> ProxyProcess:
        """Starts the proxy in front of the emulator: `latency_ms` added to each request."""
        self.proxy = ProxyProcess(self.gcs.endpoint, latency_ms / 1000)
        return self.proxy

    def stop(self) -> None:
        for service in (self.proxy, self.gcs, self.pg):
            if service is not None:
                service.stop()
        if self.pg is not None:
            shutil.rmtree(self.pg.root, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def cpu_seconds(pid: int | None = None) -> float:
    """User+system CPU of a process (this one when pid is None), all threads."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds spent by the client (this process), the proxy and the emulator during one phase."""

    def __init__(self, pids: dict[str, int | None]):
        self.pids = pids
        self.start = {k: cpu_seconds(p) for k, p in pids.items()}

    def done(self, objects: int) -> dict:
        used = {k: cpu_seconds(p) - self.start[k] for k, p in self.pids.items()}
        out = {f"{k}_cpu_s": round(v, 2) for k, v in used.items()}
        if objects:
            out.update({f"{k}_cpu_ms_per_object": round(1000 * v / objects, 2) for k, v in used.items()})
        return out


# Setup: images, labels, rows ------------------------------------------------------------------------
def make_images(n: int, start: int, seed: int = 0) -> list[tuple[bytes, str]]:
    """~60 KB 400x400 JPEGs: crops of one noise field (JPEG cannot shrink noise) with class-coloured boxes."""
    import random

    import numpy as np
    from PIL import Image, ImageDraw

    from tests.fixtures.data import COLOURS

    field = Image.fromarray(
        np.random.default_rng(seed).normal(128, 20, (1200, 1200, 3)).clip(0, 255).astype("uint8")
    )
    out = []
    for i in range(start, start + n):
        rng = random.Random(i)
        x0, y0 = rng.randrange(800), rng.randrange(800)
        img = field.crop((x0, y0, x0 + 400, y0 + 400))
        draw = ImageDraw.Draw(img)
        lines = []
        for _ in range(rng.randint(1, 3)):
            cls = rng.randrange(6)
            w, h = rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.3)
            x, y = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
            draw.rectangle(
                [(x - w / 2) * 400, (y - h / 2) * 400, (x + w / 2) * 400, (y + h / 2) * 400],
                fill=COLOURS[cls],
            )
            lines.append(f"{cls} {x:.6f} {y:.6f} {w:.6f} {h:.6f}")
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        out.append((buf.getvalue(), "\n".join(lines) + "\n"))
    return out


def seed_data(gcs, db, bucket: str, n: int, start: int, days: int, t0: datetime, chunk: int = 1000) -> int:
    """Uploads n samples straight to the emulator and inserts their rows, a chunk at a time (20,000 images
    at once would hold 1.2 GB here); returns image bytes."""
    client = gcs.client()
    import requests.adapters

    client._http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))
    b = client.bucket(bucket)

    def put(item):
        name, data, ctype = item
        b.blob(name).upload_from_string(data, content_type=ctype)

    total = 0
    for first in range(start, start + n, chunk):
        samples = make_images(min(chunk, start + n - first), first)
        rows, uploads = [], []
        for k, (image, label) in enumerate(samples):
            i = first + k
            ts = t0 + timedelta(seconds=i * 30)
            day = (t0 + timedelta(days=(i - start) * days // max(1, n))).strftime("%Y/%m/%d")
            rid = f"inf-{i:06d}"
            img_name, lbl_name = f"images/{day}/{rid}.jpg", f"labels/{day}/{rid}.txt"
            uploads += [(img_name, image, "image/jpeg"), (lbl_name, label.encode(), "text/plain")]
            rows.append((rid, img_name, lbl_name, "verified", label.count("\n"), ts))
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, uploads))
        cols = list(zip(*rows, strict=True))
        db.execute(
            "INSERT INTO inferences (id, image_object, label_object, status, detection_count, updated_at, "
            "created_at) SELECT *, u.ts FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], "
            "$6::timestamptz[]) AS u(id, i, l, s, d, ts)",
            *[list(c) for c in cols],
        )
        total += sum(len(x[0]) for x in samples)
    return total


# Timed: the original way and the product's way ------------------------------------------------------
def naive(db, endpoint: str, bucket: str, dest: Path) -> tuple[float, int]:
    """The original job: query, then download each image and label in turn with download_to_filename."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from trainer.selection import select, split_of
    from trainer.sources import inference_records

    t0 = time.perf_counter()
    client = storage.Client(
        project="bench", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
    )
    b = client.bucket(bucket)
    sel = select(inference_records(db, None), only_verified=True, min_detections=1)
    count = 0
    for r in sel.selected:
        split = split_of(r.id, 0.8)
        for kind, name, ext in (("images", r.image_object, ".jpg"), ("labels", r.label_object, ".txt")):
            path = dest / kind / split / f"{r.id}{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            b.blob(name).download_to_filename(str(path))
            count += 1
    return time.perf_counter() - t0, count


def product(settings) -> dict:
    """Job._select + Job._build, exactly as Job._run calls them (registry opened first, untimed)."""
    from trainer.db import connect, migrate
    from trainer.pipeline import Job
    from trainer.registry import Registry

    job = Job(settings)
    job.db = connect(settings.database_url, settings.local_dir)
    migrate(job.db)
    job.registry = Registry(job.db)
    t0 = time.perf_counter()
    records, source, _cutoff, replayed = job._select()
    ds = job._build(records, source, replayed)
    seconds = time.perf_counter() - t0
    job.db.close()
    d = job.report.data
    return {
        "seconds": seconds,
        "steps": {k: job.report.timings[k] for k in ("select", "download", "dataset")},
        "selected": len(records),
        "downloaded": d["downloaded"],
        "cached": d["cached"],
        "train": ds.counts["train"],
        "val": ds.counts["val"],
        "skipped": sum(ds.skipped.values()),
    }


def peak_rss_mb() -> float:
    """This process's own peak RSS. Not ru_maxrss: Linux carries the parent's over fork and exec, so a child
    of a benchmark holding 1 GB of images would report at least that."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _product_child(settings, conn) -> None:
    # What the trainer has imported by the time it selects (its preflight opened the same stores).
    import google.cloud.storage  # noqa: F401
    import PIL.Image  # noqa: F401

    import trainer.pipeline  # noqa: F401

    t0 = os.times()
    out = product(settings)
    t1 = os.times()
    out["client_cpu_s"] = round((t1.user + t1.system) - (t0.user + t0.system), 2)
    out["peak_rss_mb"] = peak_rss_mb()
    conn.send(out)


def product_in_child(settings) -> dict:
    """One product run in its own process: its peak RSS is the trainer's, not the benchmark's."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_product_child, args=(settings, child))
    proc.start()
    try:
        return parent.recv()
    finally:
        proc.join()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="inferences in the first run (default 2000)")
    ap.add_argument("--new", type=int, default=100, help="inferences added for the incremental run")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="added per request by the proxy")
    ap.add_argument("--days", type=int, default=7, help="day folders the objects are spread over")
    ap.add_argument(
        "--concurrency", type=int, default=None, help="TRAINER_DOWNLOAD_CONCURRENCY (default: the trainer's)"
    )
    ap.add_argument("--quick", action="store_true", help="n=200, new=20: a smoke run; records nothing")
    ap.add_argument("--no-record", action="store_true", help="do not update bench/RESULTS.md")
    ap.add_argument(
        "--skip-naive",
        action="store_true",
        help="leave out the sequential baseline (at --n 20000 it alone takes ~20 min); records only the "
        "scaling section",
    )
    ap.add_argument("--profile", type=Path, help="write a cProfile of the cold product run here")
    ap.add_argument(
        "--trainer-path",
        type=Path,
        help="a folder holding a modified trainer/ package to measure instead of the repository's "
        "(a modified copy to compare)",
    )
    a = ap.parse_args(argv)
    if a.trainer_path:
        sys.path.insert(0, str(a.trainer_path.resolve()))
    if a.quick:
        a.n, a.new = min(a.n, 200), min(a.new, 20)
    logging.basicConfig(level=logging.WARNING)

    import trainer
    from trainer.db import connect

    print(f"trainer package: {Path(trainer.__file__).parent}", file=sys.stderr)
    from trainer.settings import Settings

    machine_text = machine()
    t_setup = time.perf_counter()
    services = BenchServices("wd-bench-data-")
    try:
        tmp, gcs = services.tmp, services.gcs
        dsn = services.inference_db()
        gcs.bucket("bench-images"), gcs.bucket("bench-models")
        db = connect(dsn, tmp)
        t0 = datetime(2026, 11, 1, tzinfo=UTC)
        image_bytes = seed_data(gcs, db, "bench-images", a.n, 0, a.days, t0)
        proxy = services.slow_storage(a.latency_ms)
        os.environ["STORAGE_EMULATOR_HOST"] = proxy.endpoint  # read by trainer.blobstore.gcs_client
        setup_s = time.perf_counter() - t_setup
        print(
            f"setup {setup_s:.1f} s: {a.n} samples, {image_bytes / a.n / 1000:.1f} KB/image, "
            f"proxy {proxy.endpoint} +{a.latency_ms:g} ms",
            file=sys.stderr,
        )

        settings = Settings(
            from_inferences=True,
            only_verified=True,
            all_time=True,
            database_url=dsn,
            images_bucket="bench-images",
            models_bucket="bench-models",
            local_dir=tmp / "local",
            work_dir=tmp / "work",
            cache_dir=tmp / "cache",
            **({"download_concurrency": a.concurrency} if a.concurrency else {}),
        )

        pids = {"client": None, "proxy": proxy.pid, "emulator": gcs.proc.pid}
        naive_s, naive_objects, naive_cpu = None, 2 * a.n, {}
        if not a.skip_naive:
            proxy.reset()
            meter = CpuMeter(pids)
            naive_s, naive_objects = naive(db, proxy.endpoint, "bench-images", tmp / "naive")
            naive_cpu = meter.done(naive_objects)
            naive_requests = proxy.stats().get("requests", 0)
            print(
                f"naive: {naive_s:.2f} s for {naive_objects} objects ({naive_requests} requests)",
                file=sys.stderr,
            )

        proxy.reset()
        if a.profile:
            import cProfile

            meter = CpuMeter(pids)
            prof = cProfile.Profile()
            first = prof.runcall(product, settings)
            prof.dump_stats(a.profile)
            first_cpu = meter.done(first["downloaded"])
        else:
            meter = CpuMeter({"proxy": proxy.pid, "emulator": gcs.proc.pid})
            first = product_in_child(settings)
            first_cpu = meter.done(first["downloaded"])
            first_cpu["client_cpu_s"] = first["client_cpu_s"]
            first_cpu["client_cpu_ms_per_object"] = round(
                1000 * first["client_cpu_s"] / max(1, first["downloaded"]), 2
            )
        first_requests = proxy.stats().get("requests", 0)
        print(f"product cold: {json.dumps(first)} ({first_requests} requests)", file=sys.stderr)

        proxy.reset()
        second = product_in_child(settings)
        second_requests = proxy.stats().get("requests", 0)
        print(f"product warm: {json.dumps(second)} ({second_requests} requests)", file=sys.stderr)

        seed_data(gcs, db, "bench-images", a.new, a.n, a.days, t0 + timedelta(days=a.days))
        proxy.reset()
        third = product_in_child(settings)
        third_stats = proxy.stats()
        print(
            f"product +{a.new}: {json.dumps(third)} ({third_stats.get('requests', 0)} requests)",
            file=sys.stderr,
        )
        db.close()

        result = {
            "benchmark": "data_stage",
            "objects": naive_objects,
            "n": a.n,
            "latency_ms": a.latency_ms,
            "concurrency": settings.download_concurrency,
            "kb_per_image": round(image_bytes / a.n / 1000, 1),
            "naive_s": round(naive_s, 2) if naive_s else None,
            "naive_cpu": naive_cpu,
            "product_cpu": first_cpu,
            "loadavg_end": round(os.getloadavg()[0], 1),
            "product_s": round(first["seconds"], 2),
            "product_ms_per_object": round(1000 * first["seconds"] / naive_objects, 3),
            "product_steps_s": first["steps"],
            "product_peak_rss_mb": first.get("peak_rss_mb"),
            "second_run_peak_rss_mb": second.get("peak_rss_mb"),
            "speedup": round(naive_s / first["seconds"], 2) if naive_s else None,
            "second_run_s": round(second["seconds"], 2),
            "second_run_steps_s": second["steps"],
            "second_run_downloaded": second["downloaded"],
            "second_run_requests": second_requests,
            "incremental_new": a.new,
            "incremental_100_s": round(third["seconds"], 2),
            "incremental_downloaded": third["downloaded"],
            "incremental_steps_s": third["steps"],
            "incremental_selected": third["selected"],
            "targets_met": {
                "speedup>=8": bool(naive_s) and naive_s / first["seconds"] >= TARGET_SPEEDUP,
                "second_run<2s": second["seconds"] < TARGET_SECOND_S and second["downloaded"] == 0,
                "incremental_downloads_only_new": third["downloaded"] == 2 * a.new,
            },
            "trainer": str(Path(trainer.__file__).parent),
            "machine": machine_text,
            "date": now(),
            "commit": commit(),
        }
        print(json.dumps(result))
        if not (a.quick or a.no_record):
            if not a.skip_naive:
                record(
                    result, first, second, third, "data_stage_suggested" if a.trainer_path else "data_stage"
                )
            if not a.trainer_path:
                record_scale(result)
        return 0
    finally:
        services.stop()


def record(r: dict, first: dict, second: dict, third: dict, key: str) -> None:
    ok = r["targets_met"]

    def cpu(c: dict) -> str:
        return " / ".join(str(c.get(f"{k}_cpu_ms_per_object")) for k in ("client", "proxy", "emulator"))

    title = "Data stage" if key == "data_stage" else "Data stage with a modified trainer"
    text = f"""## {title}: select, download, build ({r["n"]} inferences, +{r["latency_ms"]:g} ms per request)

`python bench/data_stage.py --n {r["n"]} --latency-ms {r["latency_ms"]:g}{" --trainer-path " + r["trainer"].rsplit("/", 1)[0] if key != "data_stage" else ""}` on {r["date"]}, commit {r["commit"]}.
Trainer package: `{r["trainer"]}`. Machine: {r["machine"]}; load average at the end {r["loadavg_end"]}.
CPU ms per object, client / proxy / emulator: naive {cpu(r["naive_cpu"])}; product (cold) {cpu(r["product_cpu"])}. Objects: {r["objects"]} ({r["kb_per_image"]} KB per image + a label each);
download concurrency {r["concurrency"]}.

| run | seconds | downloaded | steps (select / download / dataset, s) | target | met |
|---|---|---|---|---|---|
| naive sequential `download_to_filename` | {r["naive_s"]} | {r["objects"]} | | | |
| product, cold cache | {r["product_s"]} | {first["downloaded"]} | {first["steps"]["select"]} / {first["steps"]["download"]} / {first["steps"]["dataset"]} | >= 8x naive (got {r["speedup"]}x) | {"yes" if ok["speedup>=8"] else "NO"} |
| product, nothing new | {r["second_run_s"]} | {second["downloaded"]} | {second["steps"]["select"]} / {second["steps"]["download"]} / {second["steps"]["dataset"]} | < 2 s, 0 downloads | {"yes" if ok["second_run<2s"] else "NO"} |
| product, +{r["incremental_new"]} new | {r["incremental_100_s"]} | {third["downloaded"]} | {third["steps"]["select"]} / {third["steps"]["download"]} / {third["steps"]["dataset"]} | only the new ({2 * r["incremental_new"]} objects) | {"yes" if ok["incremental_downloads_only_new"] else "NO"} |

```json
{json.dumps(r)}
```
"""
    update_results(key, text)


def record_scale(r: dict) -> None:
    """The data stage as the work grows: one row per --n, the latest run of each kept side by side."""
    import re

    from _common import RESULTS

    key = "data_stage_scale"
    runs: dict[int, dict] = {}
    text = RESULTS.read_text() if RESULTS.exists() else ""
    m = re.search(rf"<!-- {key}:start -->.*?```json\n(.*?)\n```.*?<!-- {key}:end -->", text, re.S)
    if m:
        for line in m.group(1).splitlines():
            if line.strip():
                old = json.loads(line)
                runs[old["n"]] = old
    runs[r["n"]] = {
        k: r[k]
        for k in (
            "n",
            "objects",
            "latency_ms",
            "product_s",
            "product_ms_per_object",
            "product_steps_s",
            "product_peak_rss_mb",
            "second_run_s",
            "second_run_peak_rss_mb",
            "product_cpu",
            "loadavg_end",
            "machine",
            "date",
            "commit",
        )
    }
    rows = []
    for n in sorted(runs):
        x = runs[n]
        steps = x["product_steps_s"]
        rows.append(
            f"| {n} | {x['objects']} | {x['product_s']} | {x['product_ms_per_object']} | "
            f"{steps['select']} / {steps['download']} / {steps['dataset']} | "
            f"{x['product_cpu'].get('client_cpu_ms_per_object')} | {x['product_peak_rss_mb']} | "
            f"{x['second_run_s']} | {x['second_run_peak_rss_mb']} | {x['machine'].rsplit('load ', 1)[-1]} / "
            f"{x['loadavg_end']} | {x['date']}, {x['commit']} |"
        )
    body = "\n".join(json.dumps(runs[n]) for n in sorted(runs))
    text = f"""## Data stage as the work grows (cold cache, +{r["latency_ms"]:g} ms per request)

`python bench/data_stage.py --n N` (`--skip-naive` at 20,000: the sequential baseline alone would take ~20 min).
Each product run is a child process: peak RSS is the trainer's own (`VmHWM`), not the benchmark's.

| n | objects | cold s | ms per object | select / download / dataset s | client CPU ms/object | peak RSS MB | nothing new s | its peak RSS MB | load start / end | date, commit |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

```json
{body}
```
"""
    update_results(key, text)


if __name__ == "__main__":
    sys.exit(main())
