"""What the kubelet works out from a Pod before its runtime starts a container: Kubernetes quantities, the
container's environment (envFrom, env, valueFrom, $(VAR) expansion), the ServiceAccount token volume the
admission plugin adds, and the kubelet's termination-message rule. Pure, except the token folder's writer."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

MAX_TERMINATION_BYTES = 4096  # the kubelet reads at most this much of the file
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048  # FallbackToLogsOnError: the log's tail, capped


class PodSpecError(ValueError):
    """The Pod asks for something that cannot run as asked (the kubelet's CreateContainerConfigError)."""


# -- quantities ----------------------------------------------------------------------------------------
_SUFFIX = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|)$")


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes quantity ("8Gi", "500m", "1.5", "2e3") as a number."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise PodSpecError(f"{value!r} is not a Kubernetes quantity (examples: 512Mi, 8Gi, 500m, 2)")
    return Decimal(match.group(1)) * Decimal(_SUFFIX[match.group(2)])


def quantity_bytes(value: str | int | float) -> int:
    """Bytes, rounded up as the kubelet rounds memory quantities."""
    number = parse_quantity(value)
    return int(number.to_integral_value(rounding="ROUND_CEILING"))


# -- env ------------------------------------------------------------------------------------------------
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, unknown ones stay, $$ escapes a $."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR_REF.sub(one, text)


def resolve_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    config_maps: Mapping[str, Mapping[str, str]] | None = None,
    service_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment as the kubelet builds it: `service_env` first (KUBERNETES_SERVICE_HOST
    and _PORT), then envFrom, then env in order, each value $(VAR)-expanded against the ones before.
    `secrets` and `config_maps` map an object's name to its (decoded) data."""
    secrets, config_maps = secrets or {}, config_maps or {}
    meta = pod.get("metadata") or {}
    where = f"container {container.get('name')!r} of pod {meta.get('name')!r}"
    env: dict[str, str] = dict(service_env or {})

    def source(kind: str, objects: Mapping[str, Mapping[str, str]], name: str, optional: bool):
        if name in objects:
            return objects[name]
        if optional:
            return None
        raise PodSpecError(f"{where}: {kind} {name!r} not found")

    for item in container.get("envFrom") or []:
        ref = item.get("secretRef") or item.get("configMapRef")
        kind, objects = ("secret", secrets) if "secretRef" in item else ("configmap", config_maps)
        data = source(kind, objects, ref["name"], bool(ref.get("optional")))
        for key, value in (data or {}).items():
            env[item.get("prefix", "") + key] = value

    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        ref = var["valueFrom"]
        if "secretKeyRef" in ref or "configMapKeyRef" in ref:
            key_ref = ref.get("secretKeyRef") or ref["configMapKeyRef"]
            kind, objects = ("secret", secrets) if "secretKeyRef" in ref else ("configmap", config_maps)
            optional = bool(key_ref.get("optional"))
            data = source(kind, objects, key_ref["name"], optional)
            if data is None:
                continue
            if key_ref["key"] not in data:
                if optional:
                    continue
                raise PodSpecError(f"{where}: couldn't find key {key_ref['key']} in {kind} {key_ref['name']}")
            env[name] = data[key_ref["key"]]
        elif "fieldRef" in ref:
            env[name] = _field(pod, ref["fieldRef"]["fieldPath"], where)
        elif "resourceFieldRef" in ref:
            env[name] = _resource_field(container, ref["resourceFieldRef"], where)
        else:
            raise PodSpecError(f"{where}: env {name}: unsupported valueFrom {sorted(ref)}")
    return env


def _field(pod: Mapping[str, Any], path: str, where: str) -> str:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP", "127.0.0.1"),
        "status.podIP": status.get("podIP", "127.0.0.1"),
    }
    if path in simple:
        return str(simple[path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise PodSpecError(f"{where}: unsupported fieldRef {path!r}")


def _resource_field(container: Mapping[str, Any], ref: Mapping[str, Any], where: str) -> str:
    kind, _, name = ref["resource"].partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(name)
    if value is None:
        raise PodSpecError(f"{where}: resourceFieldRef {ref['resource']} is not set on the container")
    divisor = parse_quantity(ref.get("divisor", "1"))
    return str(int((parse_quantity(value) / divisor).to_integral_value(rounding="ROUND_CEILING")))


# -- the ServiceAccount token ---------------------------------------------------------------------------
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_ACCOUNT_VOLUME = "kube-api-access"


def with_service_account_volume(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The Pod as the ServiceAccount admission plugin leaves it: unless automountServiceAccountToken is
    false, a projected volume (token, ca.crt, namespace) mounted read-only at SERVICE_ACCOUNT_DIR in each
    container that does not mount something there already. The caller prepares the volume's folder
    (`write_service_account_files`) and passes it as volumes[SERVICE_ACCOUNT_VOLUME]."""
    pod = json.loads(json.dumps(pod))
    spec = pod.setdefault("spec", {})
    if spec.get("automountServiceAccountToken") is False:
        return pod
    spec.setdefault("volumes", []).append(
        {
            "name": SERVICE_ACCOUNT_VOLUME,
            "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
        }
    )
    for container in spec.get("containers") or []:
        mounts = container.setdefault("volumeMounts", [])
        if not any(m["mountPath"] == SERVICE_ACCOUNT_DIR for m in mounts):
            mounts.append(
                {"name": SERVICE_ACCOUNT_VOLUME, "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True}
            )
    return pod


def write_service_account_files(folder: Path, token: str, ca_pem: bytes, namespace: str) -> Path:
    """The projected volume's files, readable by any uid (the kubelet's defaultMode 0644)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (("token", token.encode()), ("ca.crt", ca_pem), ("namespace", namespace.encode())):
        (folder / name).write_bytes(data)
        (folder / name).chmod(0o644)
    folder.chmod(0o755)
    return folder


def termination_message(file_bytes: bytes, policy: str, exit_code: int, log_text: str) -> str:
    """The kubelet's rule: the file (at most 4096 bytes); with FallbackToLogsOnError, an empty file and a
    failure, the log's last 80 lines (at most 2048 bytes) instead."""
    message = file_bytes[:MAX_TERMINATION_BYTES].decode("utf-8", errors="replace")
    if not message and policy == "FallbackToLogsOnError" and exit_code != 0:
        tail = "\n".join(log_text.splitlines()[-FALLBACK_LOG_LINES:])
        message = tail.encode()[-FALLBACK_LOG_BYTES:].decode("utf-8", errors="ignore")
    return message
