"""Kueue queueing cost, on the real control plane and the real Kueue manager: quota freed -> next run going.

A ClusterQueue with quota for one GPU and N+1 GPU TrainingRuns queued at once in its LocalQueue: Kueue admits
them one at a time. For each of the N hand-overs it measures, from the moment the running run's quota is freed
(its Job's Complete condition; Kueue's Workload Finished is also recorded), how long until the next run's Job
is unsuspended (Kueue's admission) and until that run's status says Running (the operator). The operator runs
as in the cluster, under its ServiceAccount plus manifests/components/kueue's Role, watching Workloads; each
run's trainer is bench/standin, which sleeps BENCH_STANDIN_SECONDS and reports its result.

    python bench/kueue_admission.py [--runs 10]

No target in the issue; for scale, the Job controller's sync batch alone is 0.2 s here (1 s upstream).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from _common import commit, machine, now, update_results

GROUP, VERSION, PLURAL = "training.wastedetection.io", "v1alpha1", "trainingruns"
RUN_LABEL = f"{GROUP}/trainingrun"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 3)


def true(obj: dict, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10, help="hand-overs to measure (runs created: this + 1)")
    p.add_argument("--seconds", type=float, default=2.0, help="how long each run's trainer runs")
    a = p.parse_args()

    import yaml
    from kubernetes import client, watch

    from tests.controlplane.kubelet import Kubelet, NamespaceView
    from tests.controlplane.kueue import KueueManager
    from tests.controlplane.kueue import build as build_kueue
    from tests.controlplane.server import ControlPlane, build_binaries
    from tests.operator.harness import OperatorProcess, prepare_namespace
    from tests.operator.test_kueue import gpu_pool, workload_rbac

    repo = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix="bench-kueue-"))
    cp = ControlPlane(build_binaries(work / "build.log"), work)
    cp.start()
    ns = "bench"
    op = manager = None
    kubelet = Kubelet(cp, root=work / "kubelet").start()
    try:
        manager = KueueManager(cp, build_kueue(work / "kueue-build.log"), work / "kueue").start()
        api = cp.api_client()
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        core.create_namespace({"metadata": {"name": ns}})
        cp.kubectl("apply", "--server-side", "-f", str(repo / "crds/trainingrun.yaml"))
        cp.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=30s")
        prepare_namespace(cp, ns)
        cp.kubectl("apply", "-f", "-", input=workload_rbac(ns))
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(gpu_pool(ns, gpus=1)))
        cp.kubectl("wait", "--for=condition=Active", f"clusterqueue/{ns}-pool", "--timeout=30s")
        NamespaceView(
            kubelet, ns, cwd=repo / "bench" / "standin", env={"BENCH_STANDIN_SECONDS": str(a.seconds)}
        )
        op = OperatorProcess(
            cp, ns, work, stuck_seconds=900, extra_env={"RESYNC_SECONDS": "30", "KUEUE_WORKLOADS": "watch"}
        ).start()

        complete: dict[str, float] = {}
        unsuspended: dict[str, float] = {}
        finished: dict[str, float] = {}  # Workload Finished, by the run of its Job
        running: dict[str, float] = {}
        job_run: dict[str, str] = {}
        stop = threading.Event()

        def stream(group: str, version: str, plural: str, on_event) -> None:
            w = watch.Watch()
            while not stop.is_set():
                for ev in w.stream(
                    custom.list_namespaced_custom_object,
                    group,
                    version,
                    ns,
                    plural,
                    timeout_seconds=5,
                    _request_timeout=10,
                ):
                    on_event(ev["object"], time.monotonic())
                    if stop.is_set():
                        break

        def on_job(job: dict, t: float) -> None:
            run = (job["metadata"].get("labels") or {}).get(RUN_LABEL)
            if not run:
                return
            job_run[job["metadata"]["name"]] = run
            if job["spec"].get("suspend") is False and run not in unsuspended:
                unsuspended[run] = t
            if true(job, "Complete") and run not in complete:
                complete[run] = t

        def on_workload(wl: dict, t: float) -> None:
            owners = [
                r["name"] for r in wl["metadata"].get("ownerReferences") or [] if r.get("kind") == "Job"
            ]
            run = next((job_run[o] for o in owners if o in job_run), None)
            if run and true(wl, "Finished") and run not in finished:
                finished[run] = t

        def on_run(run: dict, t: float) -> None:
            name = run["metadata"]["name"]
            if (run.get("status") or {}).get("phase") == "Running" and name not in running:
                running[name] = t

        threads = [
            threading.Thread(target=stream, args=args, daemon=True)
            for args in (
                ("batch", "v1", "jobs", on_job),
                ("kueue.x-k8s.io", "v1beta1", "workloads", on_workload),
                (GROUP, VERSION, PLURAL, on_run),
            )
        ]
        for t in threads:
            t.start()
        time.sleep(1)

        names = [f"run-{i:02d}" for i in range(a.runs + 1)]
        spec = {
            "queueName": "gpu",
            "epochs": 1,
            "resources": {"gpus": 1, "cpu": "1", "memory": "1Gi"},
            "source": {"fromInferences": {"onlyVerified": True}},
        }
        t0 = time.monotonic()
        for name in names:
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingRun", "metadata": {"name": name}}
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body | {"spec": spec})
        deadline = time.monotonic() + 60 + (a.runs + 1) * (a.seconds + 10)
        while len(complete) < len(names) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        stop.set()
        wall = round(time.monotonic() - t0, 2)

        # Kueue's order of admission, and each hand-over from one run to the next.
        order = sorted(unsuspended, key=unsuspended.get)
        to_unsuspend, to_running, finished_to_unsuspend, overlaps = [], [], [], 0
        for prev, nxt in zip(order, order[1:], strict=False):
            if prev not in complete:
                continue
            if unsuspended[nxt] < complete[prev]:
                overlaps += 1  # admitted before the quota was freed: would mean the quota was not one GPU
                continue
            to_unsuspend.append(unsuspended[nxt] - complete[prev])
            if nxt in running:
                to_running.append(running[nxt] - complete[prev])
            if prev in finished:
                finished_to_unsuspend.append(unsuspended[nxt] - finished[prev])
        figures = {
            "benchmark": "kueue_admission",
            "runs": len(names),
            "handovers": len(to_unsuspend),
            "admitted_while_quota_held": overlaps,
            "complete_to_unsuspended_p50_s": pct(to_unsuspend, 0.5),
            "complete_to_unsuspended_max_s": pct(to_unsuspend, 1.0),
            "complete_to_running_p50_s": pct(to_running, 0.5),
            "complete_to_running_max_s": pct(to_running, 1.0),
            "complete_to_running_mean_s": round(statistics.mean(to_running), 3) if to_running else None,
            "workload_finished_to_unsuspended_p50_s": pct(finished_to_unsuspend, 0.5),
            "trainer_seconds": a.seconds,
            "wall_s": wall,
            "kueue_start_s": round(manager.start_seconds, 2),
            "machine": machine(),
            "date": now(),
            "commit": commit(),
        }
        print(json.dumps(figures))
        update_results(
            "kueue_admission",
            f"""## Kueue: quota freed -> the next queued run going ({figures["handovers"]} hand-overs)

`python bench/kueue_admission.py --runs {a.runs}` on {figures["date"]}, commit {figures["commit"]}.
Machine: {figures["machine"]}. Real kube-apiserver, etcd, Job controller, scheduler and Kueue v0.15.2 manager
(ClusterQueue quota: one GPU; {len(names)} one-GPU runs queued at once); the operator under its ServiceAccount,
watching Workloads; the process kubelet runs a stand-in trainer that sleeps {a.seconds} s and reports.
"Quota freed" is the running Job's Complete condition as a watch sees it.

| from quota freed to | p50 (s) | max (s) |
|---|---|---|
| next run's Job unsuspended (Kueue admitted it) | {figures["complete_to_unsuspended_p50_s"]} | {figures["complete_to_unsuspended_max_s"]} |
| next run's status Running (operator) | {figures["complete_to_running_p50_s"]} | {figures["complete_to_running_max_s"]} |

Workload Finished -> next Job unsuspended: p50 {figures["workload_finished_to_unsuspended_p50_s"]} s.
Runs admitted while the quota was still held: {overlaps}.

```json
{json.dumps(figures)}
```""",
        )
    finally:
        if op is not None:
            op.stop()
        if manager is not None:
            manager.stop()
        kubelet.stop()
        cp.stop()


if __name__ == "__main__":
    main()
