"""The built images, run with podman as a cluster runs them: hardened, and holding only what they need."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.images.fixtures import ROOT, Images, lock_images
from tests.images.podman_args import run_command

pytestmark = [pytest.mark.images, pytest.mark.timeout(3600)]

# The securityContext the operator gives the trainer's Job and manifests/ give the operator.
HARDENED = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

PROBE = r"""
import json, os, socket, sys
out = {"uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid()}
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
out["cap_eff"] = status["CapEff"].strip()
out["no_new_privs"] = status["NoNewPrivs"].strip()
out["seccomp"] = status["Seccomp"].strip()
for path in ("/probe", "/opt/venv/probe", "/tmp/probe"):
    try:
        open(path, "w").write("x")
        out[path] = "written"
    except OSError as e:
        out[path] = e.strerror
out["interfaces"] = sorted(os.listdir("/sys/class/net"))
try:
    socket.create_connection(("192.0.2.1", 80), timeout=2)
    out["outside"] = "connected"
except OSError as e:
    out["outside"] = type(e).__name__
print(json.dumps(out))
"""


def pod(image: str, command: list[str], args: list[str] | None = None, **container) -> dict:
    """A one-container Pod with the hardened securityContext and /tmp as an emptyDir."""
    return {
        "metadata": {"name": "probe", "namespace": "images", "uid": str(time.monotonic_ns())},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "securityContext": {"fsGroup": 10001},
            "containers": [
                {
                    "name": "c",
                    "image": image,
                    "command": command,
                    "args": args or [],
                    "securityContext": HARDENED,
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    **container,
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
        },
    }


def run_pod(images: Images, tmp_path: Path, the_pod: dict, network: str = "none", timeout: float = 300):
    image = the_pod["spec"]["containers"][0]["image"]
    launch = run_command(
        the_pod, "c", env={}, pod_dir=tmp_path, image_user=images.podman.image_user(image), network=network
    )
    container = images.podman.start(launch, tmp_path / "log")
    try:
        return container, container.wait(timeout)
    finally:
        container.stop(grace=0)


@pytest.mark.parametrize("which", ["operator", "trainer"])
def test_image_runs_as_10001_read_only_without_capabilities_or_network(images, tmp_path, which):
    image = getattr(images, which)
    assert images.podman.image_user(image) == "10001:10001"
    container, exit_ = run_pod(images, tmp_path, pod(image, ["python", "-c", PROBE]))
    assert exit_.exit_code == 0, container.log()
    seen = json.loads(container.log().strip().splitlines()[-1])
    assert (seen["uid"], seen["gid"], seen["euid"]) == (10001, 10001, 10001)
    assert int(seen["cap_eff"], 16) == 0, "capabilities left"
    assert seen["no_new_privs"] == "1" and seen["seccomp"] == "2", "no-new-privileges and a seccomp filter"
    assert seen["/probe"] == "Read-only file system" and seen["/opt/venv/probe"] == "Read-only file system"
    assert seen["/tmp/probe"] == "written"
    assert seen["interfaces"] == ["lo"] and seen["outside"] != "connected"


def test_the_runtime_reads_back_exit_codes_and_termination_messages(images, tmp_path):
    write = "open('/dev/termination-log', 'w').write('{\"status\": \"Failed\"}'); raise SystemExit(3)"
    _, exit_ = run_pod(images, tmp_path / "a", pod(images.operator, ["python", "-c", write]))
    assert exit_.exit_code == 3 and exit_.reason == "Error"
    assert exit_.message == '{"status": "Failed"}'
    assert exit_.state()["terminated"]["startedAt"] <= exit_.state()["terminated"]["finishedAt"]

    crash = "import sys; print('first'); print('the last words', file=sys.stderr); sys.exit(1)"
    fallback = pod(images.operator, ["python", "-c", crash], terminationMessagePolicy="FallbackToLogsOnError")
    _, exit_ = run_pod(images, tmp_path / "b", fallback)
    assert exit_.exit_code == 1 and exit_.message.splitlines()[-1] == "the last words"

    _, exit_ = run_pod(images, tmp_path / "c", pod(images.operator, ["python", "-c", "pass"]))
    assert exit_.exit_code == 0 and exit_.reason == "Completed" and exit_.message == ""


def test_a_container_over_its_memory_limit_is_oom_killed(images, tmp_path):
    hog = "blocks = []\nwhile True: blocks.append(bytearray(16 * 2**20))"
    the_pod = pod(images.operator, ["python", "-c", hog], resources={"limits": {"memory": "96Mi"}})
    _, exit_ = run_pod(images, tmp_path, the_pod)
    assert exit_.oom_killed and exit_.reason == "OOMKilled" and exit_.exit_code == 137


def test_stop_sends_sigterm_then_kills_after_the_grace_period(images, tmp_path):
    polite = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)"
    )
    deaf = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(600)"
    for name, code, expected in (("polite", polite, 42), ("deaf", deaf, 128 + signal.SIGKILL)):
        the_pod = pod(images.operator, ["python", "-c", code])
        launch = run_command(
            the_pod, "c", env={}, pod_dir=tmp_path / name, image_user="10001:10001", network="none"
        )
        container = images.podman.start(launch, tmp_path / f"{name}.log")
        deadline = time.monotonic() + 60
        while "ready" not in container.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        t0 = time.monotonic()
        exit_ = container.stop(grace=3)
        took = time.monotonic() - t0
        assert exit_.exit_code == expected, (name, exit_, container.log())
        if name == "deaf":
            assert took >= 3, "killed before the grace period ended"


def test_the_operator_entrypoint_prints_its_usage_offline(images, tmp_path):
    container, exit_ = run_pod(images, tmp_path, pod(images.operator, [], ["--help"]))
    out = container.log()
    assert exit_.exit_code == 0, out
    assert (
        out.startswith("usage: python -m waste_operator") and "TRAINER_IMAGE" in out and "KUBECONFIG" in out
    )


FINDINGS = r"""
import importlib.metadata as md, importlib.util, json, shutil, sys, sysconfig
from pathlib import Path
tools = ["gcc", "cc", "c++", "g++", "clang", "make", "ld", "as", "cpp", "pip", "pip3"]
print(json.dumps({
    "tools": {t: shutil.which(t) for t in tools if shutil.which(t)},
    "headers": Path(sysconfig.get_paths()["include"], "Python.h").exists(),
    "modules": [m for m in ("pip", "wheel", "setuptools", "Cython") if importlib.util.find_spec(m)],
    "packages": {d.metadata["Name"]: d.version for d in md.distributions()},
    "prefix": sys.prefix,
}))
"""


@pytest.mark.parametrize("which", ["operator", "trainer"])
def test_image_holds_exactly_its_lock_and_no_compiler_or_build_tool(images, tmp_path, which):
    container, exit_ = run_pod(images, tmp_path, pod(getattr(images, which), ["python", "-c", FINDINGS]))
    assert exit_.exit_code == 0, container.log()
    found = json.loads(container.log().strip().splitlines()[-1])
    assert found["prefix"] == "/opt/venv"
    assert found["tools"] == {}, f"build tools in the {which} image: {found['tools']}"
    assert not found["headers"], "Python's C headers are in the image"
    # setuptools is a runtime requirement of torch (the lock has it); nothing else of the kind.
    assert found["modules"] == (["setuptools"] if which == "trainer" else [])
    installed = {canonicalize_name(name): version for name, version in found["packages"].items()}
    locked = {
        name: version
        for name, (version, _) in lock_images.parse_pins(
            (ROOT / "locks" / f"{which}.txt").read_text()
        ).items()
    }
    assert installed == locked


def test_image_sizes_stay_in_their_budget(images):
    """Sizes as podman reports them (uncompressed). The trainer is dominated by the CUDA libraries that
    PyPI's torch wheel brings (nvidia-*), then torch itself."""
    operator, trainer = images.size(images.operator), images.size(images.trainer)
    print(f"operator image {operator / 1e6:,.0f} MB, trainer image {trainer / 1e6:,.0f} MB")
    assert operator < 400e6, f"operator image {operator / 1e6:,.0f} MB"
    assert trainer < 12e9, f"trainer image {trainer / 1e9:.1f} GB"


def test_trainer_image_has_weights_dir_and_offline_settings(images):
    env = json.loads(images.podman("image", "inspect", "--format", "{{json .Config.Env}}", images.trainer))
    settings = dict(e.split("=", 1) for e in env)
    assert settings["TRAINER_WEIGHTS_DIR"] == "/opt/weights"
    assert settings["YOLO_OFFLINE"] == "1" and settings["YOLO_AUTOINSTALL"] == "0"
    assert settings["HOME"] == "/tmp" and settings["YOLO_CONFIG_DIR"].startswith("/tmp/")


def test_a_second_build_reuses_both_images(images):
    """build-images.sh is a no-op when nothing changed: the same images, nothing rebuilt."""
    t0 = time.monotonic()
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-images.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**images.podman.env, "WD_IMAGES_CACHE": str(images.podman.cache_dir)},
    )
    took = time.monotonic() - t0
    assert result.returncode == 0, result.stderr
    assert f"operator={images.operator}" in result.stdout and f"trainer={images.trainer}" in result.stdout
    assert not re.search(r"built in", result.stderr), result.stderr
    print(f"warm build-images.sh: {took:.1f} s")


def test_the_container_sees_its_env_and_secrets_stay_off_podmans_command_line(images, tmp_path):
    show = "import json, os; print(json.dumps({k: os.environ.get(k) for k in ('PATH', 'HOME', 'TOKEN')}))"
    the_pod = pod(images.operator, ["python", "-c", show])
    env = {"PATH": "/opt/venv/bin:/usr/bin:/bin", "HOME": "/tmp/home", "TOKEN": "s3cret-value"}
    launch = run_command(the_pod, "c", env=env, pod_dir=tmp_path, image_user="10001:10001", network="none")
    assert "s3cret-value" not in " ".join(launch.argv)
    container = images.podman.start(launch, tmp_path / "log")
    exit_ = container.wait(120)
    assert exit_.exit_code == 0, container.log()
    assert json.loads(container.log().strip().splitlines()[-1]) == env


def test_the_runtime_tells_a_missing_image_from_a_present_one(images):
    """What the kubelet needs for ErrImageNeverPull: images are never pulled here."""
    assert images.podman.image_exists(images.operator) and images.podman.image_exists(images.trainer)
    assert not images.podman.image_exists("localhost/waste-trainer:never-built")
