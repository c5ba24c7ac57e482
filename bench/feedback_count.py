"""How fast a TrainingSchedule counts new samples in a 1,000,000-row inferences table, with and without the
index the Inference API needs (trainer/sql/inference_api.sql: inferences_new_feedback).

It times the operator's own path (waste_operator.samples.SampleCounter.count: a read-only transaction that
reads the deployed model's cutoff and counts up to the threshold) and EXPLAINs the count query, for three
index sets: none but the primary key; the schema before TrainingSchedules (an index on updated_at); and
the partial index. Cases: a very recent cutoff (fewer new samples than the threshold: all are read), a recent
cutoff (1% of the table newer), an old cutoff (half the table newer), no model deployed (no cutoff), each
with a threshold of 200, and the recent cutoff with a threshold larger than everything new (the whole count).
PostgreSQL's defaults are kept: with synchronize_seqscans a sequential scan starts where the last one stopped,
so a Seq Scan that finds its 200 rows early is luck, not a plan to rely on; the buffers column shows the work.

    python bench/feedback_count.py [--rows 1000000] [--repeat 15] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

from _common import REPO, commit, machine, now, update_results

sys.path.insert(0, str(REPO / "operator"))  # waste_operator (the folder is not a package itself)

from waste_operator.samples import SampleCounter

from tests.fixtures.inference_api import create_inference_table
from tests.fixtures.services import start_postgres
from trainer.db import PostgresDatabase, migrate
from trainer.feedback import INDEX_NAME, INDEX_SQL, new_samples_sql

START = datetime(2025, 12, 1, tzinfo=UTC)
STEP_S = 31.5  # one record every 31.5 s: 1,000,000 records span a year


def fill(dsn: str, rows: int) -> None:
    """Records in time order (as an API writes them): 60% pending, 25% verified, 10% corrected, 5% rejected;
    5% without a label file; 0-5 detections. Deterministic (setseed)."""
    sql = """
        SELECT setseed(0.42);
        INSERT INTO inferences (id, image_object, label_object, status, detection_count, created_at, updated_at)
        SELECT 'inf-' || g, 'images/' || g || '.jpg',
               CASE WHEN random() < 0.05 THEN NULL ELSE 'labels/' || g || '.txt' END,
               (ARRAY['pending','pending','pending','pending','pending','pending','pending','pending','pending',
                      'pending','pending','pending','verified','verified','verified','verified','verified',
                      'corrected','corrected','rejected'])[1 + floor(random() * 20)::int],
               floor(random() * 6)::int,
               :'start'::timestamptz + g * (:'step' || ' seconds')::interval,
               :'start'::timestamptz + g * (:'step' || ' seconds')::interval
        FROM generate_series(1, :rows) AS g;
    """
    run_sql(dsn, sql, rows=str(rows), start=START.isoformat(), step=str(STEP_S))


def run_sql(dsn: str, sql: str, **variables: str) -> None:
    import subprocess

    bound = [arg for name, value in variables.items() for arg in ("-v", f"{name}={value}")]
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *bound, dsn], input=sql, text=True, check=True
    )


def deploy(dsn: str, cutoff: datetime | None) -> None:
    db = PostgresDatabase(dsn)
    try:
        migrate(db)
        db.execute("DELETE FROM model_versions")
        if cutoff is None:
            db.execute("UPDATE latest_model SET version = NULL WHERE id = 1")
            return
        db.execute(
            "INSERT INTO model_versions (number, name, state, run_id, data_cutoff, created_at) "
            "VALUES (1, 'v1', 'registered', 'bench', $1, $1)",
            cutoff,
        )
        db.execute("UPDATE latest_model SET version = 1 WHERE id = 1")
    finally:
        db.close()


def plan_nodes(plan: dict) -> list[str]:
    node = plan["Node Type"] + (f" on {plan['Index Name']}" if plan.get("Index Name") else "")
    return [node] + [n for child in plan.get("Plans", []) for n in plan_nodes(child)]


async def explain(dsn: str, cutoff: datetime | None, limit: int) -> dict:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        args = [1, limit] + ([cutoff] if cutoff else [])
        text = await conn.fetchval(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + new_samples_sql(since=cutoff is not None), *args
        )
        plan = json.loads(text)[0]
        top = plan["Plan"]
        return {
            "nodes": plan_nodes(top),
            "execution_ms": round(plan["Execution Time"], 3),
            "shared_buffers": top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0),
        }
    finally:
        await conn.close()


def time_counter(dsn: str, limit: int, repeat: int) -> tuple[float, float, int]:
    counter = SampleCounter(dsn)
    try:
        counter.count(1, limit)  # connect and warm the cache
        times, new = [], 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = counter.count(1, limit)
            times.append((time.perf_counter() - t0) * 1000)
            if result.problem:
                raise RuntimeError(result.detail)
            new = result.new
        return statistics.median(times), min(times), new
    finally:
        counter.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    started_on = machine()
    span = timedelta(seconds=STEP_S * args.rows)
    recent = START + span * 0.99
    old = START + span * 0.5
    latest = START + span * 0.9999
    cases = [
        # The usual state between retrainings: fewer new samples than the threshold, so every one is read.
        ("very recent cutoff (0.01% newer), threshold 200", latest, 200),
        ("recent cutoff (1% newer), threshold 200", recent, 200),
        ("old cutoff (50% newer), threshold 200", old, 200),
        ("no model deployed, threshold 200", None, 200),
        ("recent cutoff, whole count (threshold 10^9)", recent, 10**9),
    ]
    server = start_postgres()
    results: dict = {}
    try:
        dsn = server.new_database()
        create_inference_table(dsn)
        t0 = time.perf_counter()
        fill(dsn, args.rows)
        print(f"filled {args.rows} rows in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        index_sets = {
            "primary key only": "DROP INDEX IF EXISTS inferences_updated_at; DROP INDEX IF EXISTS "
            + INDEX_NAME,
            "updated_at (before)": "CREATE INDEX IF NOT EXISTS inferences_updated_at ON inferences (updated_at)",
            "partial feedback index": INDEX_SQL,
        }
        for label, ddl in index_sets.items():
            run_sql(dsn, ddl + ";\nVACUUM ANALYZE inferences;")
            for name, cutoff, limit in cases:
                deploy(dsn, cutoff)
                median_ms, min_ms, new = time_counter(dsn, limit, args.repeat)
                plan = asyncio.run(explain(dsn, cutoff, limit))
                results.setdefault(name, {})[label] = {
                    "median_ms": round(median_ms, 2),
                    "min_ms": round(min_ms, 2),
                    "new": new,
                    **plan,
                }
                print(
                    f"{label:24} | {name:45} | {median_ms:8.2f} ms | new {new} | {plan['nodes']}",
                    file=sys.stderr,
                )
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)

    summary = {
        "benchmark": "feedback_count",
        "rows": args.rows,
        "repeat": args.repeat,
        "results": results,
        # Work, not wall time: on a shared 2-core machine the round trips' wall time is mostly the load.
        "buffers_ratio_before_vs_index": {
            name: round(
                r["updated_at (before)"]["shared_buffers"]
                / max(r["partial feedback index"]["shared_buffers"], 1),
                1,
            )
            for name, r in results.items()
        },
        "worst_execution_ms": {
            label: max(r[label]["execution_ms"] for r in results.values())
            for label in next(iter(results.values()))
        },
        "machine": started_on,
        "date": now(),
        "commit": commit(),
    }
    print(json.dumps(summary))
    if not args.no_record:
        update_results("feedback_count", report(summary))


def report(summary: dict) -> str:
    lines = [
        f"## TrainingSchedule: counting new samples in {summary['rows']:,} inferences",
        "",
        f"`python bench/feedback_count.py --rows {summary['rows']}` on {summary['date']}, commit {summary['commit']}.",
        f"Machine: {summary['machine']}. Real PostgreSQL 15 (defaults but fsync off); wall: the operator's",
        "SampleCounter.count (a read-only transaction: the deployed cutoff, then the count up to the threshold;",
        f"four round trips), median and min of {summary['repeat']} calls on a warm connection; plan, execution ms",
        "and shared buffers (8 KiB pages touched) from EXPLAIN (ANALYZE, BUFFERS) of the count query. On this",
        "shared machine the wall times are mostly the load; the buffers are the work the query does.",
        "",
        "| case | indexes | wall median / min ms | query ms | buffers | counted | plan |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, by_index in summary["results"].items():
        for label, r in by_index.items():
            lines.append(
                f"| {name} | {label} | {r['median_ms']} / {r['min_ms']} | {r['execution_ms']} | "
                f"{r['shared_buffers']} | {r['new']} | {' > '.join(r['nodes'])} |"
            )
    lines += ["", "```json", json.dumps(summary), "```"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
