"""A Pod's volumes as host folders, filled as the kubelet's volume plugins fill them: emptyDir, Secret,
ConfigMap, downward API, projected (with a ServiceAccount token bound to the Pod), hostPath, and a
PersistentVolumeClaim as a folder per claim shared by the Pods that use it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes import client

from tests.controlplane.kubelet.spec import field_value, source_data

if TYPE_CHECKING:
    from tests.controlplane.kubelet.kubelet import Kubelet

Obj = dict[str, Any]


class VolumeNotReady(Exception):
    """A volume cannot be set up yet (a missing Secret or ConfigMap): the kubelet retries."""


def _write(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = (folder / rel).resolve()
        if not path.is_relative_to(folder.resolve()):
            raise VolumeNotReady(f"path {rel!r} leaves the volume")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _keyed(
    kubelet: Kubelet, kind: str, namespace: str, name: str, items: list[Obj] | None, optional: bool
) -> dict[str, str]:
    read = kubelet.secret if kind == "Secret" else kubelet.config_map
    obj = read(namespace, name)
    if obj is None:
        if optional:
            return {}
        raise VolumeNotReady(f'{kind.lower()} "{name}" not found')
    data = source_data(kind, obj)
    if not items:
        return data
    missing = [i["key"] for i in items if i["key"] not in data]
    if missing and not optional:
        raise VolumeNotReady(f"{kind} {namespace}/{name} has no key {missing[0]}")
    return {i["path"]: data[i["key"]] for i in items if i["key"] in data}


def _downward(pod: Obj, items: list[Obj]) -> dict[str, str]:
    return {i["path"]: field_value(pod, i["fieldRef"]["fieldPath"]) for i in items if "fieldRef" in i}


def _token(kubelet: Kubelet, pod: Obj, source: Obj) -> str:
    meta = pod["metadata"]
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(
            audiences=[source["audience"]] if source.get("audience") else [],
            expiration_seconds=int(source.get("expirationSeconds") or 3600),
            bound_object_ref=client.V1BoundObjectReference(
                api_version="v1", kind="Pod", name=meta["name"], uid=meta["uid"]
            ),
        )
    )
    sa = pod["spec"].get("serviceAccountName") or "default"
    return str(
        kubelet.core.create_namespaced_service_account_token(sa, meta["namespace"], request).status.token
    )


def _projected(kubelet: Kubelet, pod: Obj, sources: list[Obj]) -> dict[str, str]:
    files: dict[str, str] = {}
    namespace = pod["metadata"]["namespace"]
    for src in sources:
        if "serviceAccountToken" in src:
            files[src["serviceAccountToken"]["path"]] = _token(kubelet, pod, src["serviceAccountToken"])
        for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
            if key in src:
                ref = src[key]
                files |= _keyed(
                    kubelet, kind, namespace, ref["name"], ref.get("items"), bool(ref.get("optional"))
                )
        if "downwardAPI" in src:
            files |= _downward(pod, src["downwardAPI"].get("items") or [])
    return files


def prepare_volumes(kubelet: Kubelet, pod: Obj, root: Path) -> dict[str, Path]:
    """Sets up every volume of `pod` under `root`; returns volume name -> host folder."""
    namespace = pod["metadata"]["namespace"]
    folders: dict[str, Path] = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        folder = root / name
        if "hostPath" in volume:
            folders[name] = Path(volume["hostPath"]["path"])
            continue
        if "persistentVolumeClaim" in volume:
            folder = kubelet.root / "claims" / namespace / volume["persistentVolumeClaim"]["claimName"]
        folder.mkdir(parents=True, exist_ok=True)
        if "secret" in volume:
            ref = volume["secret"]
            _write(
                folder,
                _keyed(
                    kubelet,
                    "Secret",
                    namespace,
                    ref["secretName"],
                    ref.get("items"),
                    bool(ref.get("optional")),
                ),
            )
        elif "configMap" in volume:
            ref = volume["configMap"]
            _write(
                folder,
                _keyed(
                    kubelet, "ConfigMap", namespace, ref["name"], ref.get("items"), bool(ref.get("optional"))
                ),
            )
        elif "downwardAPI" in volume:
            _write(folder, _downward(pod, volume["downwardAPI"].get("items") or []))
        elif "projected" in volume:
            _write(folder, _projected(kubelet, pod, volume["projected"].get("sources") or []))
        elif not ({"emptyDir", "persistentVolumeClaim"} & volume.keys()):
            raise VolumeNotReady(f"volume {name}: this kubelet supports emptyDir, secret, configMap, downwardAPI, "
                                 "projected, hostPath and persistentVolumeClaim")  # fmt: skip
        folders[name] = folder
    return folders
