"""A Pod's container run with podman, as a kubelet runs it through its container runtime.

For the test kubelet (it plugs in as a runtime) and the image tests. The kubelet's side stays with the
caller: it reads the Pod, resolves Secrets and ConfigMaps (`resolve_env` does the rest of the env rules),
prepares the non-emptyDir volumes as host folders, and writes the container's status from `Exit.state()`.
This module maps what the Pod asks for onto `podman run`, as the kubelet and runc would apply it:

- securityContext (pod level, container level winning): runAsUser/runAsGroup -> --user, fsGroup and
  supplementalGroups -> --group-add, runAsNonRoot checked against the image's user (refused as the kubelet
  refuses it), readOnlyRootFilesystem -> --read-only (without podman's extra tmpfs on /tmp, /run: a
  cluster gives none), allowPrivilegeEscalation: false -> no-new-privileges, capabilities, privileged,
  seccompProfile (none -> unconfined, as the kubelet's default; RuntimeDefault -> podman's profile);
- emptyDir: a 0777 folder under the pod's folder (as the kubelet makes it) or, with `disk_backing="tmpfs"`
  or medium Memory, a tmpfs sized by sizeLimit; a Memory emptyDir at /dev/shm sets --shm-size;
- the termination message path: a host file mounted read-write, read back after exit (policy File or
  FallbackToLogsOnError, the kubelet's 4096-byte and 80-line/2048-byte limits);
- env (values passed through podman's environment, never on its command line), $(VAR) expansion in
  command and args, command -> --entrypoint, args -> the image's CMD;
- resources.limits: memory -> --memory (swap off), cpu -> --cpus; OOM kills read back from podman;
- stop: SIGTERM, then SIGKILL after the grace period (terminationGracePeriodSeconds by default).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

DEFAULT_TERMINATION_PATH = "/dev/termination-log"
MAX_TERMINATION_BYTES = 4096  # the kubelet reads at most this much of the file
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048  # FallbackToLogsOnError: the log's tail, capped
LABEL = "io.waste-detection.podman"  # on every container this module starts, for clean-up
OWNER_LABEL = "io.waste-detection.podman.owner"  # which Podman() started it: clean-up leaves others' alone
# Names podman reads from its own environment: a container's value for one of them goes on the command line.
PODMAN_OWN_ENV = frozenset({"PATH", "HOME", "TMPDIR", "LD_LIBRARY_PATH", "LD_PRELOAD", "TZ"})
PODMAN_OWN_ENV_PREFIXES = ("CONTAINERS_", "XDG_", "BUILDAH_", "PODMAN_", "REGISTRY_AUTH", "STORAGE_")


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
) -> Launch:
    """The `podman run` for one container of `pod` (a Pod object as the API returns it, plain dicts).

    `env` is the resolved environment (`resolve_env`); `volumes` maps the names of the pod's volumes that
    are not emptyDir (secret, configMap, projected, persistentVolumeClaim) to host folders the caller
    prepared (hostPath volumes use their own path); `pod_dir` holds the emptyDir folders and the
    termination-message file; `image_user` is the image's USER (`Podman.image_user`); `devices` are passed
    as --device (a GPU's CDI name, for one). Creates the folders and the file; runs nothing.
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
    term_file = pod_dir / "containers" / container_name_ / f"termination-log-{attempt}"
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


# -- running ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exit:
    """How the container ended, as the kubelet reports it in containerStatuses[].state.terminated."""

    exit_code: int
    oom_killed: bool
    started_at: str
    finished_at: str
    message: str

    @property
    def reason(self) -> str:
        if self.oom_killed:
            return "OOMKilled"
        return "Completed" if self.exit_code == 0 else "Error"

    def state(self) -> dict[str, Any]:
        terminated = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }
        if self.message:
            terminated["message"] = self.message
        return {"terminated": terminated}


def termination_message(file_bytes: bytes, policy: str, exit_code: int, log_text: str) -> str:
    """The kubelet's rule: the file (at most 4096 bytes); with FallbackToLogsOnError, an empty file and a
    failure, the log's last 80 lines (at most 2048 bytes) instead."""
    message = file_bytes[:MAX_TERMINATION_BYTES].decode("utf-8", errors="replace")
    if not message and policy == "FallbackToLogsOnError" and exit_code != 0:
        tail = "\n".join(log_text.splitlines()[-FALLBACK_LOG_LINES:])
        message = tail.encode()[-FALLBACK_LOG_BYTES:].decode("utf-8", errors="ignore")
    return message


class Podman:
    """The podman command with the storage and settings scripts/build-images.sh made."""

    def __init__(self, cache_dir: Path, binary: str | None = None, owner: str | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.owner = owner or f"pid-{os.getpid()}"
        self.binary = binary or shutil.which("podman") or "podman"
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(self.cache_dir / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.cache_dir / "storage.conf"),
        }

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        result = subprocess.run(
            [self.binary, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"podman {' '.join(args[:3])} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result.stdout

    def image_user(self, image: str) -> str:
        return self("image", "inspect", "--format", "{{.Config.User}}", image).strip()

    def image_size(self, image: str) -> int:
        return int(self("image", "inspect", "--format", "{{.Size}}", image).strip())

    def start(self, launch: Launch, log_path: Path) -> Container:
        return Container(self, launch, Path(log_path)).start()

    def remove_all(self) -> None:
        """Force-removes every container this Podman started (after a crashed test, for one)."""
        names = self(
            "ps",
            "--all",
            "--filter",
            f"label={OWNER_LABEL}={self.owner}",
            "--format",
            "{{.Names}}",
            check=False,
        ).split()
        for name in names:
            self("rm", "--force", "--time", "0", name, check=False)


class Container:
    """One started container: wait for it, stop it, read its exit; removed once its exit is read."""

    def __init__(self, podman: Podman, launch: Launch, log_path: Path) -> None:
        self.podman, self.launch, self.log_path = podman, launch, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit: Exit | None = None

    def start(self) -> Container:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**self.podman.env}
        env.update((k, v) for k, v in self.launch.env.items() if not podman_reads(k))
        argv = list(self.launch.argv)
        argv[1:1] = ["--label", f"{OWNER_LABEL}={self.podman.owner}"]  # after "run"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.podman.binary, *argv],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> Exit:
        """Blocks until the container exits (subprocess.TimeoutExpired after `timeout` seconds)."""
        if self.exit is not None:
            return self.exit
        assert self.proc is not None, "start() first"
        self.proc.wait(timeout)
        return self._read_exit()

    def stop(self, grace: float | None = None) -> Exit:
        """SIGTERM, then SIGKILL after `grace` seconds (the pod's terminationGracePeriodSeconds by default)."""
        if self.exit is not None:
            return self.exit
        grace = self.launch.grace_seconds if grace is None else grace
        self.podman("stop", "--time", str(int(grace)), self.launch.name, check=False, timeout=grace + 60)
        return self.wait(timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _read_exit(self) -> Exit:
        raw = self.podman("inspect", "--type", "container", self.launch.name, check=False)
        state: dict[str, Any] = {}
        container_id = ""
        with contextlib.suppress(ValueError, IndexError, KeyError):
            found = json.loads(raw)[0]
            state, container_id = found["State"], found["Id"]
        exit_code = int(state.get("ExitCode", self.proc.returncode if self.proc else -1))
        oom_killed = bool(state.get("OOMKilled"))
        if not oom_killed and exit_code == 128 + 9 and container_id:
            oom_killed = oom_killed_in_kernel_log(container_id)
        file_bytes = self.launch.termination_log.read_bytes() if self.launch.termination_log.exists() else b""
        self.exit = Exit(
            exit_code=exit_code,
            oom_killed=oom_killed,
            started_at=_rfc3339(state.get("StartedAt")),
            finished_at=_rfc3339(state.get("FinishedAt")),
            message=termination_message(file_bytes, self.launch.termination_policy, exit_code, self.log()),
        )
        self.podman("rm", "--force", "--time", "0", self.launch.name, check=False)
        return self.exit


def oom_killed_in_kernel_log(container_id: str) -> bool:
    """Whether the kernel's OOM killer killed a process of this container's memory cgroup. podman misses
    these under cgroup v1 on newer kernels (conmon's event registration); the kubelet's OOM watcher
    (cAdvisor) reads the same kernel log."""
    try:
        kernel_log = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(
        "oom-kill:" in line and "oom_memcg=" in line and container_id in line.split("oom_memcg=", 1)[1]
        for line in kernel_log.splitlines()
    )


def _rfc3339(stamp: str | None) -> str:
    """podman's "2026-12-02T10:11:12.123456789Z" (or with an offset) as the API's second-precision UTC."""
    if not stamp:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?", stamp)
    if not match:
        return stamp
    moment = datetime.fromisoformat(match.group(1) + (match.group(2) or "Z").replace("Z", "+00:00"))
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
