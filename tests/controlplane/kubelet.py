"""What the kubelet would compute for a Pod: the container's environment and the Pod status objects."""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
Reader = Callable[[str, str], Obj | None]  # (namespace, name) -> object or None when missing

DEFAULT_TERMINATION_PATH = "/dev/termination-log"
_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ContainerConfigError(Exception):
    """The kubelet's CreateContainerConfigError: a referenced Secret/ConfigMap or key is missing."""


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: known names are replaced, $$ escapes, unknown refs stay as they are."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _REF.sub(sub, value)


def _source_data(kind: str, obj: Obj) -> dict[str, str]:
    if kind == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    return dict(obj.get("data") or {})


def _lookup(
    kind: str, reader: Reader, namespace: str, ref: Obj, key: str | None
) -> dict[str, str] | str | None:
    name = ref.get("name", "")
    optional = bool(ref.get("optional"))
    obj = reader(namespace, name)
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
    data = _source_data(kind, obj)
    if key is None:
        return data
    if key not in data:
        if optional:
            return None
        raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return data[key]


def _field(pod: Obj, path: str) -> str:
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    values = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP") or "127.0.0.1",
        "status.hostIP": status.get("hostIP") or "127.0.0.1",
    }
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    return str(values.get(path) or "")


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNITS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _quantity(text: str) -> float:
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f"not a quantity: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _resource_field(pod: Obj, container: Obj, ref: Obj) -> str | None:
    """A Downward API resourceFieldRef as the kubelet resolves it: the named container's request or limit
    divided by the divisor, rounded up. (A real kubelet falls back to the node's allocatable when the
    value is unset; this node has none to offer, so the variable stays unset.)"""
    name = ref.get("containerName") or container["name"]
    target = next((c for c in pod["spec"]["containers"] if c["name"] == name), container)
    kind, _, resource = ref["resource"].partition(".")
    value = ((target.get("resources") or {}).get(kind) or {}).get(resource)
    if value is None:
        return None
    return str(math.ceil(_quantity(value) / _quantity(ref.get("divisor") or "1") - 1e-9))


def container_env(pod: Obj, container: Obj, secrets: Reader, configmaps: Reader) -> dict[str, str]:
    """The environment the kubelet gives the container (envFrom, then env, with $(VAR) expansion)."""
    namespace = pod["metadata"]["namespace"]
    readers = {"Secret": secrets, "ConfigMap": configmaps}
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            if field in src:
                data = _lookup(kind, readers[kind], namespace, src[field], None)
                for k, v in (data or {}).items():  # type: ignore[union-attr]
                    env[prefix + k] = v
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = _lookup("Secret", secrets, namespace, ref, ref["key"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            value = _lookup("ConfigMap", configmaps, namespace, ref, ref["key"])
        elif "fieldRef" in source:
            value = _field(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            value = _resource_field(pod, container, source["resourceFieldRef"])
        else:
            value = ""
        if value is not None:
            env[name] = str(value)
    return env


# -- Pod status -----------------------------------------------------------------------------------
def _cond(type_: str, status: bool, reason: str | None = None, message: str | None = None) -> Obj:
    c: Obj = {"type": type_, "status": "True" if status else "False", "lastTransitionTime": now()}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def container_status(container: Obj, state: Obj, *, ready: bool = False, pid: int | None = None) -> Obj:
    s: Obj = {
        "name": container["name"],
        "image": container.get("image") or "local",
        "imageID": "",
        "ready": ready,
        "restartCount": 0,
        "started": "running" in state,
        "state": state,
    }
    if pid is not None:
        s["containerID"] = f"local://{pid}"
    return s


def pod_status(
    phase: str,
    *,
    start_time: str,
    container: Obj | None = None,
    scheduled: bool = True,
    ready: bool = False,
    reason: str | None = None,
    message: str | None = None,
) -> Obj:
    """A Pod status as the scheduler and kubelet would leave it."""
    status: Obj = {"phase": phase, "qosClass": "BestEffort"}
    if not scheduled:
        status["conditions"] = [_cond("PodScheduled", False, "Unschedulable", message)]
        return status
    status["startTime"] = start_time
    status["hostIP"] = status["podIP"] = "127.0.0.1"
    status["hostIPs"] = status["podIPs"] = [{"ip": "127.0.0.1"}]
    not_ready = (
        None if ready else ("PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady")
    )
    status["conditions"] = [
        _cond("PodReadyToStartContainers", phase in ("Pending", "Running")),
        _cond("Initialized", True),
        _cond("Ready", ready, not_ready),
        _cond("ContainersReady", ready, not_ready),
        _cond("PodScheduled", True),
    ]
    if container is not None:
        status["containerStatuses"] = [container]
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    return status


def termination_message(path_content: str, log_text: str, policy: str | None, exit_code: int) -> str:
    """What the kubelet reports: the file (at most 4096 bytes), or with FallbackToLogsOnError and an
    empty file and a failed container, the end of the log (at most 80 lines / 2048 bytes)."""
    msg = path_content.encode()[:4096].decode(errors="ignore")
    if not msg.strip() and policy == "FallbackToLogsOnError" and exit_code != 0:
        tail = "\n".join(log_text.splitlines()[-80:])
        msg = tail.encode()[-2048:].decode(errors="ignore")
    return msg
