"""What the kubelet computes from a Pod before any runtime is involved: the container's environment, its
mounts and security settings, gathered in a `ContainerSpec` that every runtime takes. Pure functions."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
Reader = Callable[[str, str], Obj | None]  # (namespace, name) -> object or None when missing

DEFAULT_TERMINATION_PATH = "/dev/termination-log"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ContainerConfigError(Exception):
    """The kubelet's CreateContainerConfigError: a referenced Secret/ConfigMap or key is missing."""


@dataclass(frozen=True)
class Mount:
    container_path: str
    host_path: Path
    read_only: bool = False


@dataclass(frozen=True)
class Security:
    """The container's effective securityContext (container fields over the Pod's)."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool = False
    read_only_root_filesystem: bool = False
    allow_privilege_escalation: bool = True
    drop_capabilities: tuple[str, ...] = ()
    seccomp: str | None = None


@dataclass(frozen=True)
class ContainerSpec:
    """Everything a runtime needs to start one container; runtime-neutral (paths are container paths,
    `mounts` says where each lives on the host)."""

    pod: str  # namespace/name
    name: str
    image: str
    command: tuple[str, ...] | None  # None: the image's entrypoint
    args: tuple[str, ...] | None  # None: the image's default arguments
    env: dict[str, str]
    working_dir: str | None
    mounts: tuple[Mount, ...]
    security: Security
    log_path: Path
    limits: dict[str, str] = field(default_factory=dict)
    # For a runtime that maps the Pod itself (the podman runtime, through tests/images/podman_args): the Pod
    # as the API returned it, its volumes' host folders by volume name, its folder, the restart count.
    pod_object: Obj = field(default_factory=dict)
    volume_dirs: dict[str, Path] = field(default_factory=dict)
    pod_dir: Path | None = None
    restarts: int = 0


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: known names are replaced, $$ escapes, unknown refs stay as they are."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _REF.sub(sub, value)


def source_data(kind: str, obj: Obj) -> dict[str, str]:
    """The data of a Secret (decoded) or ConfigMap."""
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
    data = source_data(kind, obj)
    if key is None:
        return data
    if key not in data:
        if optional:
            return None
        raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return data[key]


def field_value(pod: Obj, path: str) -> str:
    """A fieldRef of the downward API."""
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
        for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            if key in src:
                data = _lookup(kind, readers[kind], namespace, src[key], None)
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
            value = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            value = _resource_field(pod, container, source["resourceFieldRef"])
        else:
            value = ""
        if value is not None:
            env[name] = str(value)
    return env


def service_env(api_host: str, api_port: int) -> dict[str, str]:
    """The variables every container gets for the `kubernetes` Service, enableServiceLinks or not."""
    return {
        "KUBERNETES_SERVICE_HOST": api_host,
        "KUBERNETES_SERVICE_PORT": str(api_port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(api_port),
    }


def security(pod: Obj, container: Obj) -> Security:
    pod_sc = pod["spec"].get("securityContext") or {}
    sc = container.get("securityContext") or {}

    def pick(key: str) -> Any:
        return sc.get(key, pod_sc.get(key))

    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    return Security(
        run_as_user=pick("runAsUser"),
        run_as_group=pick("runAsGroup"),
        run_as_non_root=bool(pick("runAsNonRoot")),
        read_only_root_filesystem=bool(sc.get("readOnlyRootFilesystem")),
        allow_privilege_escalation=sc.get("allowPrivilegeEscalation", True),
        drop_capabilities=tuple((sc.get("capabilities") or {}).get("drop") or ()),
        seccomp=seccomp,
    )


def mounts(container: Obj, volume_dirs: dict[str, Path], termination_file: Path) -> tuple[Mount, ...]:
    """The container's volumeMounts on the host folders of its volumes, and its termination message file."""
    found = [
        Mount(
            m["mountPath"],
            volume_dirs[m["name"]] / m.get("subPath", ""),
            bool(m.get("readOnly")),
        )
        for m in container.get("volumeMounts") or []
    ]
    path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH
    return (*found, Mount(path, termination_file))


def termination_message(path_content: str, log_text: str, policy: str | None, exit_code: int) -> str:
    """What the kubelet reports: the file (at most 4096 bytes), or with FallbackToLogsOnError and an
    empty file and a failed container, the end of the log (at most 80 lines / 2048 bytes)."""
    msg = path_content.encode()[:4096].decode(errors="ignore")
    if not msg.strip() and policy == "FallbackToLogsOnError" and exit_code != 0:
        tail = "\n".join(log_text.splitlines()[-80:])
        msg = tail.encode()[-2048:].decode(errors="ignore")
    return msg
