"""A Pod's container as a `podman run` command line, as the kubelet and runc would apply the Pod. Pure,
except that it creates the emptyDir folders and the termination-message file it mounts.

- securityContext (pod level, container level winning): runAsUser/runAsGroup -> --user, fsGroup and
  supplementalGroups -> --group-add, runAsNonRoot checked against the image's user (refused as the kubelet
  refuses it), readOnlyRootFilesystem -> --read-only (without podman's extra tmpfs on /tmp, /run: a
  cluster gives none), allowPrivilegeEscalation: false -> no-new-privileges, capabilities, privileged,
  seccompProfile (none -> unconfined, as the kubelet's default; RuntimeDefault -> podman's profile);
- emptyDir: a 0777 folder under the pod's folder (as the kubelet makes it) or, with `disk_backing="tmpfs"`
  or medium Memory, a tmpfs sized by sizeLimit; a Memory emptyDir at /dev/shm sets --shm-size;
- the termination message path: a host file mounted read-write;
- env: values through podman's environment, not its command line (except names podman reads itself);
  $(VAR) expansion in command and args; command -> --entrypoint, args -> the image's CMD;
- resources.limits: memory -> --memory (swap off), cpu -> --cpus; `devices` (a GPU's CDI name) -> --device.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tests.images.podspec import PodSpecError, expand, parse_quantity, quantity_bytes

DEFAULT_TERMINATION_PATH = "/dev/termination-log"
LABEL = "io.waste-detection.podman"  # on every container started this way, for clean-up
# Names podman reads from its own environment: a container's value for one of them goes on the command line.
PODMAN_OWN_ENV = frozenset({"PATH", "HOME", "TMPDIR", "LD_LIBRARY_PATH", "LD_PRELOAD", "TZ"})
PODMAN_OWN_ENV_PREFIXES = ("CONTAINERS_", "XDG_", "BUILDAH_", "PODMAN_", "REGISTRY_AUTH", "STORAGE_")


def podman_reads(name: str) -> bool:
    return name in PODMAN_OWN_ENV or name.startswith(PODMAN_OWN_ENV_PREFIXES)


# -- the podman run command ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Launch:
    """What `run_command` decided: the command line, the environment podman reads the values from, and
    the host files and folders it prepared."""

    name: str
    argv: list[str]
    env: dict[str, str]
    termination_log: Path
    termination_policy: str
    grace_seconds: float
    folders: list[Path] = field(default_factory=list)


def security(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    """The effective securityContext: the pod's fields, overridden by the container's."""
    pod_level = dict(pod_spec.get("securityContext") or {})
    merged = {
        k: pod_level[k]
        for k in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile")
        if k in pod_level
    }
    merged.update(container.get("securityContext") or {})
    merged["fsGroup"] = pod_level.get("fsGroup")
    merged["supplementalGroups"] = list(pod_level.get("supplementalGroups") or [])
    return merged


def check_non_root(sec: Mapping[str, Any], image_user: str, where: str) -> None:
    """The kubelet's runAsNonRoot check, against the uid it will run as."""
    if not sec.get("runAsNonRoot"):
        return
    if sec.get("runAsUser") is not None:
        if int(sec["runAsUser"]) == 0:
            raise PodSpecError(f"{where}: container's runAsUser breaks non-root policy")
        return
    user = (image_user or "").split(":")[0]
    if not user:
        raise PodSpecError(f"{where}: container has runAsNonRoot and image will run as root")
    if not user.isdigit():
        raise PodSpecError(
            f"{where}: container has runAsNonRoot and image has non-numeric user ({user}), "
            "cannot verify user is non-root"
        )
    if int(user) == 0:
        raise PodSpecError(f"{where}: container has runAsNonRoot and image will run as root")


def container_name(pod: Mapping[str, Any], container: Mapping[str, Any], attempt: int = 0) -> str:
    """The kubelet's naming: k8s_<container>_<pod>_<namespace>_<uid>_<attempt>."""
    meta = pod.get("metadata") or {}
    return "_".join(
        [
            "k8s",
            container["name"],
            meta["name"],
            meta.get("namespace", "default"),
            meta.get("uid", "0"),
            str(attempt),
        ]
    )


def run_command(
    pod: Mapping[str, Any],
    container_name_: str,
    *,
    env: Mapping[str, str],
    pod_dir: Path,
    image_user: str = "",
    volumes: Mapping[str, Path] | None = None,
    disk_backing: str = "folder",
    network: str = "host",
    devices: Sequence[str] = (),
    attempt: int = 0,
    termination_file: Path | None = None,
) -> Launch:
    """The `podman run` for one container of `pod` (a Pod object as the API returns it, plain dicts).

    `env` is the resolved environment (`resolve_env`); `volumes` maps the names of the pod's volumes that
    are not emptyDir (secret, configMap, projected, persistentVolumeClaim) to host folders the caller
    prepared (hostPath volumes use their own path); `pod_dir` holds the emptyDir folders and the
    termination-message file; `image_user` is the image's USER (`Podman.image_user`); `devices` are passed
    as --device (a GPU's CDI name, for one); `termination_file`, the host file mounted at the container's
    terminationMessagePath (default: one under `pod_dir`). Creates the folders and the file; runs nothing.
    """
    if disk_backing not in ("folder", "tmpfs"):
        raise ValueError(f"disk_backing must be 'folder' or 'tmpfs', not {disk_backing!r}")
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    matches = [c for c in spec.get("containers") or [] if c.get("name") == container_name_]
    if not matches:
        raise PodSpecError(f"pod {meta.get('name')!r} has no container {container_name_!r}")
    container = matches[0]
    where = f"container {container_name_!r} of pod {meta.get('namespace')}/{meta.get('name')}"
    volumes = volumes or {}
    pod_dir = Path(pod_dir)
    name = container_name(pod, container, attempt)
    labels = {
        LABEL: "1",
        "io.kubernetes.pod.name": meta.get("name", ""),
        "io.kubernetes.pod.namespace": meta.get("namespace", "default"),
        "io.kubernetes.pod.uid": meta.get("uid", ""),
        "io.kubernetes.container.name": container_name_,
    }
    grace = float(spec.get("terminationGracePeriodSeconds", 30))
    argv = ["run", "--name", name, "--pull", "never", "--stop-timeout", str(int(grace))]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    argv += ["--network", network, "--pids-limit", "-1"]
    if network != "host":
        argv += ["--hostname", spec.get("hostname") or meta.get("name", "pod")]

    sec = security(spec, container)
    check_non_root(sec, image_user, where)
    argv += _security_args(sec, where)

    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        memory = quantity_bytes(limits["memory"])
        argv += ["--memory", str(memory), "--memory-swap", str(memory)]
    if "cpu" in limits:
        argv += ["--cpus", str(parse_quantity(limits["cpu"]))]
    for device in devices:
        argv += ["--device", device]

    folders: list[Path] = []
    argv += _mount_args(spec, container, pod_dir, volumes, disk_backing, limits, folders, where)

    term_path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH
    term_file = termination_file or pod_dir / "containers" / container_name_ / f"termination-log-{attempt}"
    term_file.parent.mkdir(parents=True, exist_ok=True)
    term_file.write_bytes(b"")
    term_file.chmod(0o666)  # the container's user writes it, whoever that is (as the kubelet makes it)
    argv += ["--volume", f"{term_file}:{term_path}:rw"]

    if container.get("workingDir"):
        argv += ["--workdir", container["workingDir"]]
    for key, value in env.items():
        if podman_reads(key):
            argv += ["--env", f"{key}={value}"]  # podman itself reads this name: the value goes inline
        else:
            argv += ["--env", key]  # the value comes from podman's environment: not visible in `ps`
    command = [expand(c, env) for c in container.get("command") or []]
    args = [expand(a, env) for a in container.get("args") or []]
    if command:
        argv += ["--entrypoint", json.dumps(command)]
    argv.append(container["image"])
    argv += args
    return Launch(
        name=name,
        argv=argv,
        env=dict(env),
        termination_log=term_file,
        termination_policy=container.get("terminationMessagePolicy") or "File",
        grace_seconds=grace,
        folders=folders,
    )


def _security_args(sec: Mapping[str, Any], where: str) -> list[str]:
    argv: list[str] = []
    if sec.get("runAsUser") is not None or sec.get("runAsGroup") is not None:
        if sec.get("runAsUser") is None:
            raise PodSpecError(f"{where}: runAsGroup without runAsUser is not supported here")
        user = str(int(sec["runAsUser"]))
        if sec.get("runAsGroup") is not None:
            user += f":{int(sec['runAsGroup'])}"
        argv += ["--user", user]
    for group in ([sec["fsGroup"]] if sec.get("fsGroup") is not None else []) + sec["supplementalGroups"]:
        argv += ["--group-add", str(int(group))]
    if sec.get("privileged"):
        argv.append("--privileged")
    if sec.get("readOnlyRootFilesystem"):
        # podman adds writable tmpfs on /tmp, /var/tmp and /run to a read-only root; a cluster does not.
        argv += ["--read-only", "--read-only-tmpfs=false"]
    if sec.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    caps = sec.get("capabilities") or {}
    for cap in caps.get("drop") or []:
        argv += ["--cap-drop", cap]
    for cap in caps.get("add") or []:
        argv += ["--cap-add", cap]
    profile = (sec.get("seccompProfile") or {}).get("type", "Unconfined")
    if profile == "Unconfined":
        argv += ["--security-opt", "seccomp=unconfined"]  # the kubelet's default without a profile
    elif profile == "Localhost":
        argv += ["--security-opt", f"seccomp={sec['seccompProfile']['localhostProfile']}"]
    elif profile != "RuntimeDefault":
        raise PodSpecError(f"{where}: unknown seccompProfile type {profile!r}")
    return argv


def _mount_args(
    spec: Mapping[str, Any],
    container: Mapping[str, Any],
    pod_dir: Path,
    volumes: Mapping[str, Path],
    disk_backing: str,
    limits: Mapping[str, Any],
    folders: list[Path],
    where: str,
) -> list[str]:
    declared = {v["name"]: v for v in spec.get("volumes") or []}
    argv: list[str] = []
    for mount in container.get("volumeMounts") or []:
        vol_name, path = mount["name"], mount["mountPath"]
        if not PurePosixPath(path).is_absolute():
            raise PodSpecError(f"{where}: mountPath {path!r} must be absolute")
        volume = declared.get(vol_name)
        if volume is None:
            raise PodSpecError(f"{where}: volumeMount {vol_name!r} names no volume of the pod")
        mode = "ro" if mount.get("readOnly") else "rw"
        if "emptyDir" in volume:
            empty = volume["emptyDir"] or {}
            size = empty.get("sizeLimit")
            memory = empty.get("medium") == "Memory"
            if memory and path == "/dev/shm":
                # The runtime's own /dev/shm, sized: what an emptyDir of medium Memory there gives.
                shm = size or limits.get("memory")
                argv += ["--shm-size", str(quantity_bytes(shm))] if shm else ["--shm-size", "0"]
                continue
            if memory or disk_backing == "tmpfs":
                argv += ["--mount", f"type=tmpfs,destination={path},tmpfs-mode=1777"
                         + (f",tmpfs-size={quantity_bytes(size)}" if size else "")]  # fmt: skip
                continue
            host = pod_dir / "volumes" / "kubernetes.io~empty-dir" / vol_name
            if host not in folders:
                host.mkdir(parents=True, exist_ok=True)
                host.chmod(0o777)  # the kubelet makes emptyDir folders world-writable
                folders.append(host)
        elif "hostPath" in volume:
            host = Path(volume["hostPath"]["path"])
        elif vol_name in volumes:
            host = Path(volumes[vol_name])
        else:
            kinds = sorted(set(volume) - {"name"})
            raise PodSpecError(
                f"{where}: volume {vol_name!r} ({', '.join(kinds)}) was not prepared by the caller"
            )
        if mount.get("subPath"):
            sub = PurePosixPath(mount["subPath"])
            if sub.is_absolute() or ".." in sub.parts:
                raise PodSpecError(f"{where}: subPath {mount['subPath']!r} must stay inside the volume")
            host = host / sub
        argv += ["--volume", f"{host}:{path}:{mode}"]
    return argv
