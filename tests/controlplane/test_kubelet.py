"""The process kubelet's pure parts (no control plane needed)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.controlplane.kubelet import spec as kubelet
from tests.controlplane.kubelet import status
from tests.controlplane.kubelet.logs import tail
from tests.controlplane.kubelet.runtime import ProcessRuntime, image_repository, rewrite

POD = {
    "metadata": {"name": "p-abcde", "namespace": "ns", "labels": {"a": "b"}},
    "spec": {"serviceAccountName": "sa"},
}


def secrets(ns: str, name: str) -> dict | None:
    return {"data": {"url": base64.b64encode(b"pg://x").decode()}} if (ns, name) == ("ns", "db") else None


def configmaps(ns: str, name: str) -> dict | None:
    return {"data": {"level": "debug"}} if name == "cfg" else None


def test_env_sources_and_expansion() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "A", "value": "x"},
            {"name": "B", "value": "$(A)-$(NOPE)-$$(A)"},
            {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": True}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "LBL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['a']"}}},
        ],
    }
    env = kubelet.container_env(POD, container, secrets, configmaps)
    assert env == {
        "CFG_level": "debug",
        "A": "x",
        "B": "x-$(NOPE)-$(A)",
        "DB": "pg://x",
        "NAME": "p-abcde",
        "LBL": "b",
    }


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"secretKeyRef": {"name": "gone", "key": "k"}}, 'secret "gone" not found'),
        ({"secretKeyRef": {"name": "db", "key": "k"}}, "couldn't find key k in Secret ns/db"),
        ({"configMapKeyRef": {"name": "cfg", "key": "k"}}, "couldn't find key k in ConfigMap ns/cfg"),
    ],
)
def test_missing_refs_are_config_errors(ref: dict, message: str) -> None:
    with pytest.raises(kubelet.ContainerConfigError, match=message):
        kubelet.container_env(POD, {"env": [{"name": "X", "valueFrom": ref}]}, secrets, configmaps)


def test_termination_message_fallback() -> None:
    log = "\n".join(f"line {i}" for i in range(100))
    assert kubelet.termination_message("from file", log, "FallbackToLogsOnError", 1) == "from file"
    assert kubelet.termination_message("", log, "File", 1) == ""
    assert kubelet.termination_message("", log, "FallbackToLogsOnError", 0) == ""
    tail = kubelet.termination_message("", log, "FallbackToLogsOnError", 1)
    assert tail.splitlines()[0] == "line 20" and tail.endswith("line 99")
    assert len(kubelet.termination_message("x" * 5000, "", "File", 0)) == 4096


def test_resource_field_refs_resolve_like_the_kubelet() -> None:
    container = {
        "name": "trainer",
        "resources": {"requests": {"cpu": "1500m", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
        "env": [
            {
                "name": "CPU_M",
                "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}},
            },
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
            {
                "name": "MEM_MI",
                "valueFrom": {
                    "resourceFieldRef": {
                        "containerName": "trainer",
                        "resource": "limits.memory",
                        "divisor": "1Mi",
                    }
                },
            },
            {"name": "NONE", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        ],
    }
    pod = {**POD, "spec": {"containers": [container]}}
    env = kubelet.container_env(pod, container, secrets, configmaps)
    assert (env["CPU_M"], env["CPU"], env["MEM_MI"]) == (
        "1500",
        "2",
        "2048",
    )  # rounded up, as the kubelet does
    assert "NONE" not in env


def test_the_kubelet_keeps_conditions_it_does_not_own() -> None:
    scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    ready = {"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:01Z"}
    old = {"conditions": [scheduled, ready], "qosClass": "Burstable", "startTime": "2026-01-01T00:00:02Z"}
    running = status.container_status({"name": "main"}, {"running": {"startedAt": "x"}}, ready=True)
    new = status.pod_status(old, "Running", running, start_time="later")
    by_type = {c["type"]: c for c in new["conditions"]}
    assert by_type["PodScheduled"] == scheduled and by_type["Ready"]["status"] == "True"
    assert by_type["Ready"]["lastTransitionTime"] != ready["lastTransitionTime"]
    assert (new["qosClass"], new["startTime"], new["podIP"]) == ("Burstable", old["startTime"], "127.0.0.1")

    reason, message, disruption = status.eviction({"name": "main"})
    stopped = status.container_status({"name": "main"}, status.terminated(137, "Error", "x"))
    evicted = status.pod_status(
        new, "Failed", stopped, start_time="", reason=reason, extra_conditions=(disruption,)
    )
    by_type = {c["type"]: c for c in evicted["conditions"]}
    assert by_type["DisruptionTarget"]["reason"] == "TerminationByKubelet"
    assert by_type["Ready"]["reason"] == "PodCompleted" and by_type["PodScheduled"] == scheduled


def test_process_runtime_maps_container_paths_and_images() -> None:
    mounts = (kubelet.Mount("/tmp", Path("/h/tmp")), kubelet.Mount("/dev/termination-log", Path("/h/term")))
    assert rewrite("/tmp/report.json", mounts) == "/h/tmp/report.json"
    assert rewrite("/tmpfoo", mounts) == "/tmpfoo" and rewrite("/dev/termination-log", mounts) == "/h/term"
    assert image_repository("ghcr.io/waste-detection/operator:0.1.0") == "ghcr.io/waste-detection/operator"
    assert image_repository("localhost:5000/x@sha256:ab") == "localhost:5000/x"
    spec = kubelet.ContainerSpec(pod="ns/p", name="c", image="ghcr.io/waste-detection/operator:0.1.0", command=None,
                                 args=None, env={}, working_dir=None, mounts=mounts, security=kubelet.Security(),
                                 log_path=Path("/h/log"))  # fmt: skip
    runtime = ProcessRuntime(python="/py")
    assert runtime.argv(spec) == ["/py", "-m", "waste_operator"]
    with pytest.raises(Exception, match="no entrypoint for image"):
        runtime.argv(spec.__class__(**{**spec.__dict__, "image": "nginx:1"}))


def test_log_tail_and_limit() -> None:
    data = b"a\nb\nc\n"
    assert tail(data, 2, None) == b"b\nc\n" and tail(data, None, 3) == b"a\nb" and tail(data, 0, None) == b""
