"""The kubelet emulation's pure parts (no control plane needed)."""

from __future__ import annotations

import base64

import pytest

from tests.controlplane import kubelet

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
