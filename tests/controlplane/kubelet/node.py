"""The process kubelet's Node: registered with its capacity, Ready, and schedulable."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

from kubernetes import client

from tests.controlplane.kubelet.status import now

KUBELET_VERSION = "v1.34.4"


@dataclass(frozen=True)
class Capacity:
    """Room for several training runs at once (the scheduler keeps to it: a run asking for more GPUs than
    `gpus` stays Unschedulable)."""

    cpu: str = "64"
    memory: str = "512Gi"
    gpus: int = 8
    pods: int = 110

    def resources(self) -> dict[str, str]:
        return {"cpu": self.cpu, "memory": self.memory, "nvidia.com/gpu": str(self.gpus),
                "pods": str(self.pods), "ephemeral-storage": "1Ti"}  # fmt: skip


def node_status(port: int, capacity: Capacity, runtime: str) -> dict:
    stamp = now()

    def cond(type_: str, status: str, reason: str, message: str) -> dict:
        return {"type": type_, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}  # fmt: skip

    return {
        "capacity": capacity.resources(),
        "allocatable": capacity.resources(),
        "conditions": [
            cond(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": "",
            "osImage": "",
            "containerRuntimeVersion": f"{runtime}://",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },  # fmt: skip
    }


def register(core: client.CoreV1Api, name: str, port: int, capacity: Capacity, runtime: str) -> None:
    """Creates (or takes over) the Node, writes its status and removes the not-ready taint.

    The TaintNodesByCondition admission plugin taints every new Node not-ready:NoSchedule; in a cluster the
    node-lifecycle controller lifts it once the kubelet reports Ready. That controller is not run here (it
    would also want heartbeats), so the kubelet lifts it itself."""
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "spec": {},
    }
    with contextlib.suppress(client.ApiException):  # 409: a kubelet of the same name ran before
        core.create_node(body, _preload_content=False)
    status = node_status(port, capacity, runtime)
    core.patch_node_status(name, {"status": status}, _preload_content=False)
    node = json.loads(core.read_node(name, _preload_content=False).data)
    taints = [t for t in node["spec"].get("taints") or [] if t["key"] != "node.kubernetes.io/not-ready"]
    core.patch_node(
        name,
        [{"op": "add", "path": "/spec/taints", "value": taints}],
        _preload_content=False,
    )
