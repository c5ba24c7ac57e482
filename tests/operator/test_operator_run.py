"""A TrainingRun end to end with the operator (its ServiceAccount only) and the stand-in trainer."""

from __future__ import annotations

import json
import urllib.request

import pytest
from waste_operator import GROUP, PLURAL, VERSION

from tests.controlplane.util import wait_for
from tests.operator.harness import DB_URL, IMAGE, phase_is, wait_run

pytestmark = pytest.mark.controlplane


def create_run(api, namespace: str, name: str, spec: dict, behaviour: dict | None = None) -> dict:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingRun",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/instance": "argocd-app", "team": "vision"},
            "annotations": {"test.waste-detection.io/standin": json.dumps(behaviour or {})},
        },
        "spec": spec,
    }
    return api.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def inference_api(api, namespace: str, labels: dict | None = None) -> dict:
    """A Deployment standing in for the inference API: its container sleeps (the process runtime has no
    image to run), enough for the deployment controller to roll it."""
    labels = labels or {"app": "inference-api"}
    container = {
        "name": "api",
        "image": "inference-api:1",
        "command": ["python", "-c", "import time; time.sleep(3600)"],
    }
    body = {
        "metadata": {"name": "inference-api"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }
    return api.apps.create_namespaced_deployment(namespace, body)


def replica_sets(api, namespace: str, name: str) -> list[dict]:
    sets = plain(api, api.apps.list_namespaced_replica_set(namespace))["items"]
    owned = [r for r in sets if any(o["name"] == name for o in r["metadata"].get("ownerReferences") or [])]
    return sorted(owned, key=lambda r: int(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]))


def plain(api, obj) -> dict:
    return api.raw.sanitize_for_serialization(obj)


def jobs_of(api, namespace: str, run: str | None = None) -> list[dict]:
    selector = f"training.wastedetection.io/trainingrun={run}" if run else None
    return plain(api, api.batch.list_namespaced_job(namespace, label_selector=selector))["items"]


def pods_of(api, namespace: str, run: str) -> list[dict]:
    pods = api.core.list_namespaced_pod(
        namespace, label_selector=f"training.wastedetection.io/trainingrun={run}"
    )
    return sorted(plain(api, pods)["items"], key=lambda p: p["metadata"]["creationTimestamp"])


def events_of(api, namespace: str, name: str) -> list[dict]:
    events = plain(api, api.core.list_namespaced_event(namespace))["items"]
    return [e for e in events if e["involvedObject"]["name"] == name]


def test_a_run_makes_one_hardened_job_reports_progress_and_restarts_the_inference_api(
    control_plane, run_namespace, operator, api
):
    ns = run_namespace
    inference_api(api, ns)
    wait_for(lambda: len(replica_sets(api, ns, "inference-api")) == 1, 20, "the first ReplicaSet")
    run = create_run(
        api,
        ns,
        "nightly",
        {"epochs": 4, "imgSize": 320, "resources": {"gpus": 1, "memory": "8Gi"},
         "restartDeployment": {"name": "inference-api"}},
        {"epochDelay": 0.5},
    )  # fmt: skip

    seen_progress = wait_run(
        api.custom, ns, "nightly", lambda s: (s.get("progress") or {}).get("stage") == "Training", 30
    )
    assert seen_progress["status"]["phase"] in ("Running", "Succeeded")
    done = wait_run(api.custom, ns, "nightly", phase_is("Succeeded", "Failed"), 45)
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["modelVersion"] == "v7" and status["promoted"] is True
    assert status["metrics"]["mAP50"] == pytest.approx(0.4) and status["dataset"]["train"] == 10
    assert status["progress"]["text"] == "4/4" or status["progress"]["stage"] == "Done"
    assert status["result"]["status"] == "Succeeded" and status["completionTime"] and status["startTime"]
    assert status["observedGeneration"] == 1
    assert not done["metadata"].get("finalizers"), "no finalizer: deleting a run needs no running operator"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Succeeded"] == "True" and conditions["Progressing"] == "False"

    # exactly one Job, as specified
    (job,) = jobs_of(api, ns)
    assert job["metadata"]["name"] == status["jobName"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]
    assert job["metadata"]["ownerReferences"][0]["controller"] is True
    labels = job["metadata"]["labels"]
    assert labels["training.wastedetection.io/trainingrun"] == "nightly" and labels["team"] == "vision"
    assert "app.kubernetes.io/instance" not in labels
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE and pod["serviceAccountName"] == "waste-trainer"
    assert container["args"][:2] == ["--epochs", "4"] and "--img-size" in container["args"]
    assert container["resources"]["limits"] == {"memory": "8Gi", "nvidia.com/gpu": "1"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e for e in container["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "waste-detection-db",
        "key": "database-url",
    }
    assert env["TRAININGRUN_NAMESPACE"]["value"] == ns
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])

    # the promoted model restarts the inference API, once, as kubectl rollout restart does
    restarted = wait_run(api.custom, ns, "nightly", lambda s: s.get("deploymentRestart"), 20)["status"]
    assert restarted["deploymentRestart"]["restartedAt"]
    deployment = plain(api, api.apps.read_namespaced_deployment("inference-api", ns))
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["kubectl.kubernetes.io/restartedAt"] == restarted["deploymentRestart"]["restartedAt"]
    # ... and the deployment controller rolls it: a second ReplicaSet takes over from the first.
    first, second = wait_for(
        lambda: (rs := replica_sets(api, ns, "inference-api")) and len(rs) == 2 and rs[1]["status"].get("readyReplicas") == 1
        and not rs[0]["status"].get("replicas") and rs,
        timeout=40,
        message="the new ReplicaSet ready and the old one scaled down",
    )  # fmt: skip
    stamp = second["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
    assert stamp == restarted["deploymentRestart"]["restartedAt"] and first["spec"]["replicas"] == 0

    # The trainer's log, as a user reads it: through the API server from the kubelet.
    logs = control_plane.kubectl("logs", f"job/{status['jobName']}", "-n", ns).stdout
    assert logs.startswith("stand-in trainer: succeed, 4 epochs"), logs

    reasons = wait_for(
        lambda: (
            {e["reason"] for e in events_of(api, ns, "nightly")}
            >= {"JobCreated", "Completed", "InferenceRestarted"}
            and {e["reason"] for e in events_of(api, ns, "nightly")}
        ),
        timeout=15,
        message="the run's Events",
    )
    assert "Running" in reasons

    table = control_plane.kubectl("get", "trainingruns", "-n", ns).stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "MAP50", "MODEL", "PROMOTED", "AGE"]
    assert row.split()[:6] == ["nightly", "Succeeded", "4/4", "0.4", "v7", "true"], table
    wide = control_plane.kubectl("get", "tr", "-n", ns, "-o", "wide").stdout
    assert (
        wide.splitlines()[0].split()[-4:] == ["REASON", "JOB", "QUEUE", "PREEMPTED"]
        and status["jobName"] in wide
    )

    with urllib.request.urlopen(operator.liveness_url, timeout=5) as response:
        assert response.status == 200
    # the secret stays in its Secret: not in status, Events or the operator's log
    assert DB_URL not in json.dumps(done) + json.dumps(events_of(api, ns, "nightly")) + operator.log()
    assert f"[{ns}/nightly]" in operator.log()


def test_a_run_on_four_gpus_gets_them_with_its_cpu_request_and_shared_memory_for_every_loader(
    control_plane, run_namespace, operator, api
):
    """resources.gpus: 4 with batchSize auto, as the trainer needs it to train on all four: the GPUs as a
    limit the scheduler places, the CPU request reaching the trainer through the Downward API (it sizes
    the loader workers from it) and /dev/shm for the four GPU processes' loaders."""
    from trainer import resources

    ns = run_namespace
    spec = {"epochs": 1, "batchSize": "auto", "resources": {"gpus": 4, "cpu": "16", "memory": "64Gi"}}
    create_run(api, ns, "four-gpus", spec, {"epochDelay": 0.1})
    status = wait_run(api.custom, ns, "four-gpus", phase_is("Succeeded", "Failed"), 45)["status"]
    assert status["phase"] == "Succeeded", status

    (job,) = jobs_of(api, ns, "four-gpus")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"] == {"memory": "64Gi", "nvidia.com/gpu": "4"}
    assert container["resources"]["requests"]["cpu"] == "16" and "cpu" not in container["resources"]["limits"]
    args = container["args"]
    assert args[args.index("--batch-size") + 1] == "auto" and args[args.index("--device") + 1] == "auto"

    # The kubelet resolved the request for the trainer; the trainer's own rules turn it into workers.
    logs = control_plane.kubectl("logs", f"job/{status['jobName']}", "-n", ns).stdout
    assert "batch auto, device auto, TRAINER_CPU_REQUEST_MILLICORES=16000" in logs, logs
    request = resources.parse_cpu_request({"TRAINER_CPU_REQUEST_MILLICORES": "16000"})
    budget = resources.cpu_budget(affinity=64, quota=None, request=request)  # a 64-core node
    per_gpu = resources.auto_batch_per_gpu(640)
    workers = resources.loader_workers(budget.cpus, 4, 64 * 2**30, per_gpu, 640)
    assert (budget.cpus, budget.bound_by, per_gpu, workers) == (16, "request", 64, 4)

    # /dev/shm in memory, for 4 GPU processes x 4 workers x 4 prefetched batches of 64 images of 640 x 640
    # x 3 bytes, twice over: 9,600 MiB, above the 8Gi floor and within the 64Gi memory limit.
    (dshm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
    needed = 2 * 4 * workers * resources.PREFETCH * per_gpu * 640 * 640 * 3
    assert (
        dshm["emptyDir"]
        == {"medium": "Memory", "sizeLimit": f"{needed // 2**20}Mi"}
        == {
            "medium": "Memory",
            "sizeLimit": "9600Mi",
        }
    )
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "dshm"]
    assert mount["mountPath"] == "/dev/shm"
