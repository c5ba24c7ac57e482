"""Operator at scale, on the real control plane: 100 TrainingRuns created at once.

Measures, per run, create -> Job created and Job complete -> status Succeeded (p50, p99), and the operator's
peak RSS (VmHWM). The operator runs as in the cluster (`python -m waste_operator`) with only its
ServiceAccount's permissions. The runs are created suspended (the operator creates their Jobs suspended),
then resumed together: the real Job controller, scheduler and the process kubelet run the Jobs, whose
trainer is bench/standin (reports its result to the run's status and exits at once, no Kubernetes client),
so it measures the operator, not training.

    python bench/operator_scale.py [--runs 100]

Targets: p50 <= 1 s, p99 <= 5 s, RSS <= 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import commit, machine, now, update_results

GROUP, VERSION, PLURAL = "training.wastedetection.io", "v1alpha1", "trainingruns"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 3)


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=100)
    a = p.parse_args()

    from kubernetes import client, watch

    from tests.controlplane.kubelet import Kubelet, NamespaceView
    from tests.controlplane.server import ControlPlane, build_binaries
    from tests.operator.harness import OperatorProcess, prepare_namespace

    work = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    cp = ControlPlane(build_binaries(work / "build.log"), work)
    cp.start()
    ns = "bench"
    op = None
    kubelet = Kubelet(cp, root=work / "kubelet").start()
    try:
        api = cp.api_client()
        core, batch, custom = client.CoreV1Api(api), client.BatchV1Api(api), client.CustomObjectsApi(api)
        core.create_namespace({"metadata": {"name": ns}})
        cp.kubectl(
            "apply", "--server-side", "-f", str(Path(__file__).resolve().parents[1] / "crds/trainingrun.yaml")
        )
        cp.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=30s")
        prepare_namespace(cp, ns)
        NamespaceView(kubelet, ns, cwd=Path(__file__).resolve().parent / "standin")
        # The production resync period: the tests' 1 s would re-read a hundred unfinished runs every second.
        op = OperatorProcess(cp, ns, work, stuck_seconds=900, extra_env={"RESYNC_SECONDS": "30"}).start()

        created: dict[str, float] = {}
        job_seen: dict[str, float] = {}
        completed: dict[str, float] = {}
        succeeded: dict[str, float] = {}
        stop = threading.Event()

        def watch_jobs() -> None:
            w = watch.Watch()
            while not stop.is_set():
                # Jobs as plain dicts (the generic path of CustomObjectsApi): typed models would make this
                # watcher, not the operator, the slow part.
                for ev in w.stream(
                    custom.list_namespaced_custom_object,
                    "batch",
                    "v1",
                    ns,
                    "jobs",
                    timeout_seconds=5,
                    _request_timeout=10,
                ):
                    labels = ev["object"]["metadata"].get("labels") or {}
                    run = labels.get("training.wastedetection.io/trainingrun")
                    if run and run not in job_seen:
                        job_seen[run] = time.monotonic()
                    conditions = (ev["object"].get("status") or {}).get("conditions") or []
                    if (
                        run
                        and run not in completed
                        and any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)
                    ):
                        completed[run] = time.monotonic()
                    if stop.is_set():
                        break

        def watch_runs() -> None:
            w = watch.Watch()
            while not stop.is_set():
                for ev in w.stream(
                    custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    ns,
                    PLURAL,
                    timeout_seconds=5,
                    _request_timeout=10,
                ):
                    obj = ev["object"]
                    name = obj["metadata"]["name"]
                    if (obj.get("status") or {}).get("phase") == "Succeeded" and name not in succeeded:
                        succeeded[name] = time.monotonic()
                    if stop.is_set():
                        break

        threads = [threading.Thread(target=f, daemon=True) for f in (watch_jobs, watch_runs)]
        for t in threads:
            t.start()
        time.sleep(1)

        names = [f"run-{i:03d}" for i in range(a.runs)]
        # Created suspended: the operator creates each Job (suspended, no Pods) while the bursts of creates
        # arrive, as before; then all are resumed and run.
        spec = {
            "suspend": True,
            "epochs": 1,
            "resources": {"gpus": 0, "cpu": "100m", "memory": "64Mi"},
            "source": {"fromInferences": {"onlyVerified": True}},
        }

        def create(name: str) -> None:
            custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                PLURAL,
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "TrainingRun",
                    "metadata": {"name": name},
                    "spec": spec,
                },
            )
            created[name] = time.monotonic()

        pids = {
            "operator": op.proc.pid,
            "etcd": cp._procs[0].pid,
            "kube-apiserver": cp._procs[1].pid,
            "kube-controller-manager": cp._procs[2].pid,
            "kube-scheduler": cp._procs[3].pid,
            "benchmark": os.getpid(),
        }
        cpu0 = {k: cpu_seconds(v) for k, v in pids.items()}
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(create, names))
        create_wall = time.monotonic() - t0
        deadline = time.monotonic() + 120
        while len(job_seen) < a.runs and time.monotonic() < deadline:
            time.sleep(0.2)

        # Resume every run: the Job controller, the scheduler and the kubelet run the Jobs; the operator turns
        # each completed Job into Succeeded.
        def resume(name: str) -> None:
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, name, {"spec": {"suspend": False}}
            )

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(resume, names))
        deadline = time.monotonic() + 240
        while len(succeeded) < a.runs and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        cpu = {k: round(cpu_seconds(v) - cpu0[k], 2) for k, v in pids.items()}
        wall = round(time.monotonic() - t0, 2)

        to_job = [job_seen[n] - created[n] for n in names if n in job_seen and n in created]
        to_status = [succeeded[n] - completed[n] for n in names if n in succeeded and n in completed]
        jobs_total = len(batch.list_namespaced_job(ns).items)
        rss = rss_peak_mb(op.proc.pid)
        figures = {
            "benchmark": "operator_scale",
            "runs": a.runs,
            "create_wall_s": round(create_wall, 2),
            "jobs_created": len(to_job),
            "jobs_in_namespace": jobs_total,
            "succeeded": len(to_status),
            "create_to_job_p50_s": pct(to_job, 0.5),
            "create_to_job_p99_s": pct(to_job, 0.99),
            "create_to_job_mean_s": round(statistics.mean(to_job), 3) if to_job else None,
            "complete_to_succeeded_p50_s": pct(to_status, 0.5),
            "complete_to_succeeded_p99_s": pct(to_status, 0.99),
            "operator_peak_rss_mb": round(rss, 1),
            "cpu_s": cpu,
            "wall_s": wall,
            "targets_met": {
                "p50<=1s": max(pct(to_job, 0.5), pct(to_status, 0.5)) <= 1.0,
                "p99<=5s": max(pct(to_job, 0.99), pct(to_status, 0.99)) <= 5.0,
                "rss<=200MB": rss <= 200,
                "one_job_per_run": jobs_total == a.runs,
            },
            "machine": machine(),
            "date": now(),
            "commit": commit(),
        }
        print(json.dumps(figures))
        update_results(
            "operator_scale",
            f"""## Operator: {a.runs} TrainingRuns created at once

`python bench/operator_scale.py --runs {a.runs}` on {figures["date"]}, commit {figures["commit"]}.
Machine: {figures["machine"]}. Real kube-apiserver, etcd, Job controller and scheduler; the process kubelet runs\na stand-in trainer that only writes its result; the operator under its ServiceAccount.

| measure | p50 (s) | p99 (s) | target |
|---|---|---|---|
| create -> Job created | {figures["create_to_job_p50_s"]} | {figures["create_to_job_p99_s"]} | p50 <= 1, p99 <= 5 |
| Job complete -> status Succeeded | {figures["complete_to_succeeded_p50_s"]} | {figures["complete_to_succeeded_p99_s"]} | p50 <= 1, p99 <= 5 |

Operator peak RSS {figures["operator_peak_rss_mb"]} MB (target <= 200); {jobs_total} Jobs for {a.runs} runs.

```json
{json.dumps(figures)}
```""",
        )
    finally:
        if op is not None:
            op.stop()
        kubelet.stop()
        cp.stop()


if __name__ == "__main__":
    main()
