"""GPU quota and queueing with the real Kueue manager: TrainingRuns with spec.queueName share a ClusterQueue
with quota for one GPU; the operator (its ServiceAccount, with manifests/components/kueue's Workload RBAC),
the real Job controller and scheduler, the process kubelet and the stand-in trainer do the rest."""

from __future__ import annotations

import json

import pytest
import yaml
from waste_operator import GROUP, PLURAL, VERSION

from tests.controlplane.util import wait_for
from tests.operator.harness import ROOT, OperatorProcess, phase_is, wait_run
from tests.operator.test_operator_run import create_run

pytestmark = pytest.mark.controlplane

KUEUE_RBAC = ROOT / "manifests" / "components" / "kueue" / "workload-rbac.yaml"
# Each run asks for 1 GPU, 1 CPU, 1Gi and the operator's TRAINER_TMP_SIZE (2Gi) of ephemeral storage.
RESOURCES = {"gpus": 1, "cpu": "1", "memory": "1Gi"}


def gpu_pool(namespace: str, gpus: int = 1) -> list[dict]:
    """A ResourceFlavor, a ClusterQueue with quota for `gpus` GPUs that preempts lower priorities, the
    LocalQueue "gpu" in `namespace`, and two WorkloadPriorityClasses (cluster objects named after it)."""
    kueue = "kueue.x-k8s.io/v1beta1"
    quota = [
        {"name": "cpu", "nominalQuota": "16"},
        {"name": "memory", "nominalQuota": "64Gi"},
        {"name": "ephemeral-storage", "nominalQuota": "100Gi"},
        {"name": "nvidia.com/gpu", "nominalQuota": gpus},
    ]
    return [
        {"apiVersion": kueue, "kind": "ResourceFlavor", "metadata": {"name": f"{namespace}-a100"}},
        {
            "apiVersion": kueue,
            "kind": "ClusterQueue",
            "metadata": {"name": f"{namespace}-pool"},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "preemption": {"withinClusterQueue": "LowerPriority"},
                "resourceGroups": [
                    {
                        "coveredResources": [q["name"] for q in quota],
                        "flavors": [{"name": f"{namespace}-a100", "resources": quota}],
                    }
                ],
            },
        },
        {
            "apiVersion": kueue,
            "kind": "LocalQueue",
            "metadata": {"name": "gpu", "namespace": namespace},
            "spec": {"clusterQueue": f"{namespace}-pool"},
        },
        {"apiVersion": kueue, "kind": "WorkloadPriorityClass", "metadata": {"name": f"{namespace}-low"}, "value": 100},
        {"apiVersion": kueue, "kind": "WorkloadPriorityClass", "metadata": {"name": f"{namespace}-high"}, "value": 1000},
    ]  # fmt: skip


def workload_rbac(namespace: str) -> str:
    docs = []
    for doc in yaml.safe_load_all(KUEUE_RBAC.read_text()):
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects") or []:
            subject["namespace"] = namespace
        docs.append(doc)
    return yaml.safe_dump_all(docs)


@pytest.fixture
def queued(control_plane, kueue, run_namespace, standin_runner, tmp_path):
    """The GPU pool, the Workload RBAC, and the operator watching Workloads; yields the operator."""
    pool = yaml.safe_dump_all(gpu_pool(run_namespace))
    control_plane.kubectl("apply", "-f", "-", input=pool)
    control_plane.kubectl("apply", "-f", "-", input=workload_rbac(run_namespace))

    def queue_ready() -> bool:
        out = control_plane.kubectl(
            "get",
            "clusterqueue",
            f"{run_namespace}-pool",
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Active')].status}",
        ).stdout
        return out == "True"

    wait_for(queue_ready, 30, "the ClusterQueue to be active")
    process = OperatorProcess(
        control_plane, run_namespace, tmp_path, extra_env={"KUEUE_WORKLOADS": "watch"}
    ).start()
    yield process
    process.stop()
    print(f"--- operator log ({process.log_path}) ---\n{process.tail(80)}")
    print(f"--- kueue log ---\n{kueue.tail(40)}")
    control_plane.kubectl("delete", "-f", "-", "--wait=false", "--ignore-not-found", input=pool, check=False)


def events(api, namespace: str, name: str) -> list[tuple[str, str, str]]:
    listed = api.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [(e.type, e.reason, e.message) for e in listed]


def job_of(api, namespace: str, run: dict) -> dict:
    name = run["status"]["jobName"]
    return api.raw.sanitize_for_serialization(api.batch.read_namespaced_job(name, namespace))


def suspend_writers(job: dict) -> set[str]:
    """The field managers that own the Job's spec.suspend (the last to set it)."""
    return {
        entry["manager"]
        for entry in job["metadata"].get("managedFields") or []
        if "f:suspend" in json.dumps((entry.get("fieldsV1") or {}).get("f:spec") or {})
    }


def test_two_gpu_runs_share_one_gpu_one_waits_with_kueues_reason_then_runs(
    control_plane, queued, api, run_namespace
):
    ns = run_namespace
    spec = {"epochs": 3, "resources": RESOURCES, "queueName": "gpu"}
    create_run(api, ns, "first", spec, {"epochDelay": 1.0})
    first = wait_run(api.custom, ns, "first", phase_is("Running"), 60, "the first run admitted and running")
    assert first["status"]["queue"]["admitted"] is True, first["status"]
    assert first["status"]["queue"]["clusterQueue"] == f"{ns}-pool"

    create_run(api, ns, "second", spec, {"epochDelay": 0.2})
    second = wait_run(
        api.custom,
        ns,
        "second",
        lambda s: s.get("phase") == "Queued" and s.get("reason") == "WaitingForQuota",
        30,
        "the second run queued for quota",
    )["status"]
    # Kueue's own words, where `kubectl get tr` and `describe` show them.
    assert "insufficient unused quota for nvidia.com/gpu" in second["message"], second
    assert "1 more needed" in second["message"] and second["message"].startswith("LocalQueue gpu: ")
    assert second["queue"]["admitted"] is False and second["queue"]["name"] == "gpu"
    waiting = [e for e in events(api, ns, "second") if e[1] == "WaitingForQuota"]
    assert waiting and waiting[0][0] == "Normal" and "insufficient unused quota" in waiting[0][2]
    print("$ kubectl get tr -o wide\n" + control_plane.kubectl("get", "tr", "-n", ns, "-o", "wide").stdout)
    job = job_of(api, ns, {"status": second})
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"

    # The first finishes and frees the GPU: Kueue admits the second, which runs to the end.
    wait_run(api.custom, ns, "first", phase_is("Succeeded"), 60)
    second = wait_run(api.custom, ns, "second", phase_is("Succeeded"), 60, "the second run to succeed")
    assert second["status"]["queue"]["admitted"] is True, second["status"]
    assert second["status"]["queue"].get("preemptions", 0) == 0
    reasons = [e[1] for e in events(api, ns, "second")]
    assert reasons.index("WaitingForQuota") < reasons.index("Admitted"), reasons
    # Only Kueue unsuspended the Jobs: the operator never wrote spec.suspend of a Job Kueue holds.
    for name in ("first", "second"):
        run = api.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        writers = suspend_writers(job_of(api, ns, run))
        assert writers and all("kueue" in w.lower() for w in writers if w != "kube-controller-manager"), (
            writers
        )


def test_a_higher_priority_run_preempts_and_the_preempted_run_resumes_from_its_checkpoint(
    control_plane, queued, api, run_namespace, tmp_path
):
    ns = run_namespace
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    low = {"epochs": 6, "resources": RESOURCES, "queueName": "gpu", "priorityClassName": f"{ns}-low"}
    create_run(api, ns, "routine", low, {"epochDelay": 1.0, "checkpointDir": str(checkpoints)})
    wait_run(
        api.custom,
        ns,
        "routine",
        lambda s: s.get("phase") == "Running" and (s.get("progress") or {}).get("epoch", 0) >= 2,
        90,
        "the routine run two epochs in",
    )

    high = {"epochs": 2, "resources": RESOURCES, "queueName": "gpu", "priorityClassName": f"{ns}-high"}
    create_run(api, ns, "urgent", high, {"epochDelay": 0.5})
    preempted = wait_run(
        api.custom,
        ns,
        "routine",
        lambda s: s.get("phase") == "Queued" and (s.get("queue") or {}).get("preemptions") == 1,
        60,
        "the routine run preempted and queued again",
    )["status"]
    assert preempted["queue"]["admitted"] is False
    assert "lastPreemptionTime" in preempted["queue"], preempted["queue"]
    warnings = [e for e in events(api, ns, "routine") if e[1] == "Preempted"]
    assert len(warnings) == 1 and warnings[0][0] == "Warning" and "1 so far" in warnings[0][2], warnings

    urgent = wait_run(api.custom, ns, "urgent", phase_is("Succeeded"), 60, "the urgent run to succeed")
    assert urgent["status"]["queue"]["priorityClass"] == f"{ns}-high"
    done = wait_run(api.custom, ns, "routine", phase_is("Succeeded"), 90, "the routine run to finish")[
        "status"
    ]
    # Back in the queue, admitted again, and resumed where its checkpoint left it (not from epoch 0).
    resumed = done["progress"]["resumedFromEpoch"]
    assert resumed is not None and 2 <= resumed < 6, done["progress"]
    assert done["result"]["epochs"]["resumedFromEpoch"] == resumed
    assert done["queue"]["preemptions"] == 1 and done["queue"]["admitted"] is True
    admitted = [e for e in events(api, ns, "routine") if e[1] == "Admitted"]
    assert len(admitted) == 2, admitted  # first admission, and again after the preemption
    print("$ kubectl get tr -o wide\n" + control_plane.kubectl("get", "tr", "-n", ns, "-o", "wide").stdout)


def test_workload_access_comes_only_with_the_kueue_component(control_plane, run_namespace):
    operator = control_plane.service_account_kubeconfig(run_namespace, "waste-operator")

    def can(verb: str, namespace: str = run_namespace) -> bool:
        args = ("auth", "can-i", verb, "workloads.kueue.x-k8s.io", "-n", namespace)
        return control_plane.kubectl(*args, kubeconfig=operator, check=False).stdout.strip() == "yes"

    assert not can("get"), "manifests/ alone grant nothing on Workloads"
    control_plane.kubectl("apply", "-f", "-", input=workload_rbac(run_namespace))
    assert can("get") and can("watch") and can("patch")
    assert not can("create") and not can("delete") and not can("update")
    assert not can("get", "default"), "its own namespace only"


def test_suspending_a_queued_run_takes_it_out_of_the_queue_and_resuming_never_unsuspends_the_job(
    queued, api, run_namespace
):
    ns = run_namespace
    spec = {"epochs": 3, "resources": RESOURCES, "queueName": "gpu"}
    create_run(api, ns, "holder", spec, {"epochDelay": 1.5})
    wait_run(api.custom, ns, "holder", phase_is("Running"), 60, "the holder running")
    create_run(api, ns, "waiter", spec, {"epochDelay": 0.2})
    waiter = wait_run(api.custom, ns, "waiter", lambda s: s.get("reason") == "WaitingForQuota", 30)

    def workload_active() -> bool | None:
        job = job_of(api, ns, waiter)
        listed = api.custom.list_namespaced_custom_object(
            "kueue.x-k8s.io",
            "v1beta1",
            ns,
            "workloads",
            label_selector=f"kueue.x-k8s.io/job-uid={job['metadata']['uid']}",
        )["items"]
        return listed[0]["spec"].get("active", True) if listed else None

    # The run's own suspend: its Workload leaves the queue (spec.active false); Kueue's reason stays visible.
    patch = {"spec": {"suspend": True}}
    api.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "waiter", patch)
    suspended = wait_run(api.custom, ns, "waiter", phase_is("Suspended"), 30)["status"]
    assert suspended["reason"] == "Suspended" and "LocalQueue gpu" in suspended["message"], suspended
    wait_for(lambda: workload_active() is False, 30, "the waiter's Workload deactivated")

    # Resumed while the GPU is still taken: back in the queue, its Job still held by Kueue, not by us.
    api.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "waiter", {"spec": {"suspend": False}}
    )
    wait_run(api.custom, ns, "waiter", lambda s: s.get("phase") == "Queued", 30, "the waiter queued again")
    wait_for(lambda: workload_active() is True, 30, "the waiter's Workload active again")
    assert job_of(api, ns, waiter)["spec"]["suspend"] is True, "only Kueue may unsuspend a queued Job"
    assert wait_run(api.custom, ns, "holder", phase_is("Running"), 5)

    wait_run(api.custom, ns, "holder", phase_is("Succeeded"), 60)
    wait_run(api.custom, ns, "waiter", phase_is("Succeeded"), 60, "the waiter admitted and done")
    writers = suspend_writers(job_of(api, ns, waiter))
    assert writers and all("kueue" in w.lower() for w in writers if w != "kube-controller-manager"), writers


def test_the_kueue_components_render_on_the_manifests_and_the_example_pool_is_valid_for_kueue(
    control_plane, kueue, run_namespace, tmp_path
):
    """manifests/ with components/kueue and components/kueue-gpu-pool, as the README says to turn them on:
    the Workload Role and the ConfigMap settings are there, and Kueue's own CRDs accept the example pool."""
    import os

    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(ROOT / "manifests", overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [base],
                "components": [f"{base}/components/kueue", f"{base}/components/kueue-gpu-pool"],
            }
        )
    )
    rendered = control_plane.kubectl(
        "kustomize", "--load-restrictor=LoadRestrictionsNone", str(overlay)
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    config = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "waste-operator-config"
    )
    assert config["data"]["KUEUE_WORKLOADS"] == "watch" and config["data"]["DEFAULT_QUEUE_NAME"] == "gpu"
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "waste-operator-kueue")
    assert role["rules"] == [
        {
            "apiGroups": ["kueue.x-k8s.io"],
            "resources": ["workloads"],
            "verbs": ["get", "list", "watch", "patch"],
        }
    ]
    pool = [d for d in docs if d["apiVersion"].startswith("kueue.x-k8s.io/")]
    assert sorted(d["kind"] for d in pool) == [
        "ClusterQueue", "LocalQueue", "ResourceFlavor", "WorkloadPriorityClass", "WorkloadPriorityClass"
    ]  # fmt: skip
    for doc in pool:
        if doc["kind"] == "LocalQueue":
            doc["metadata"]["namespace"] = run_namespace  # waste-detection may not exist in this session
    control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(pool))
    # Without the components nothing of Kueue is in the manifests.
    plain = control_plane.kubectl("kustomize", str(ROOT / "manifests")).stdout
    assert "kueue.x-k8s.io" not in plain.replace("kueue.x-k8s.io/", "")
