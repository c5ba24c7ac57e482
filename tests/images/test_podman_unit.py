"""The podman runtime's pure half: what a Pod's container becomes as a `podman run`. No podman needed."""

from __future__ import annotations

import json
import stat

import pytest
from waste_operator.config import OperatorConfig
from waste_operator.jobs import build_job

from tests.images.podman_args import container_name, run_command
from tests.images.podspec import PodSpecError, expand, quantity_bytes, resolve_env, termination_message

CONFIG = OperatorConfig(
    trainer_image="localhost/waste-trainer:test",
    models_bucket="wd-models",
    images_bucket="wd-images",
    datasets_bucket="wd-datasets",
    shm_size="1Gi",
    tmp_size="2Gi",
)


def trainer_pod(spec: dict | None = None) -> dict:
    """The Pod the Job controller makes from the operator's real Job for a TrainingRun."""
    run = {
        "apiVersion": "training.wastedetection.io/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "nightly", "namespace": "wd", "uid": "uid-1"},
        "spec": spec or {"resources": {"gpus": 0, "memory": "6Gi", "cpu": "2"}},
    }
    template = build_job(run, CONFIG)["spec"]["template"]
    return {
        "metadata": {**template["metadata"], "name": "tr-nightly-abc", "namespace": "wd", "uid": "pod-uid-9"},
        "spec": template["spec"],
    }


def flag_values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_the_operators_trainer_pod_runs_hardened_as_its_security_context_says(tmp_path):
    pod = trainer_pod()
    env = resolve_env(
        pod, pod["spec"]["containers"][0], secrets={"waste-detection-db": {"database-url": "pg://x"}}
    )
    launch = run_command(pod, "trainer", env=env, pod_dir=tmp_path, image_user="10001:10001")
    argv = launch.argv
    assert flag_values(argv, "--user") == ["10001:10001"]
    assert flag_values(argv, "--group-add") == ["10001"]  # fsGroup
    assert "--read-only" in argv and "--read-only-tmpfs=false" in argv
    assert flag_values(argv, "--cap-drop") == ["ALL"] and "--cap-add" not in argv
    security_opts = flag_values(argv, "--security-opt")
    assert "no-new-privileges" in security_opts
    assert not any(o.startswith("seccomp=") for o in security_opts), "RuntimeDefault is podman's own profile"
    assert flag_values(argv, "--network") == ["host"]
    assert flag_values(argv, "--memory") == [str(6 * 2**30)] == flag_values(argv, "--memory-swap")
    assert flag_values(argv, "--shm-size") == [str(2**30)], "the Memory emptyDir at /dev/shm sizes /dev/shm"
    # /tmp: an emptyDir folder the container's user can write, as the kubelet makes it
    volumes = flag_values(argv, "--volume")
    tmp_mount = next(v for v in volumes if v.endswith(":/tmp:rw"))
    folder = tmp_path / "volumes" / "kubernetes.io~empty-dir" / "tmp"
    assert tmp_mount == f"{folder}:/tmp:rw" and stat.S_IMODE(folder.stat().st_mode) == 0o777
    # the termination message file, world-writable, at the container's terminationMessagePath
    assert f"{launch.termination_log}:/dev/termination-log:rw" in volumes
    assert stat.S_IMODE(launch.termination_log.stat().st_mode) == 0o666
    assert launch.termination_policy == "FallbackToLogsOnError"
    # command -> entrypoint, args after the image; env values never on the command line
    image_at = argv.index("localhost/waste-trainer:test")
    assert json.loads(flag_values(argv, "--entrypoint")[0]) == ["python", "-m", "trainer"]
    assert argv[image_at + 1 : image_at + 3] == ["--epochs", "50"]
    assert "pg://x" not in " ".join(argv) and launch.env["DATABASE_URL"] == "pg://x"
    assert "DATABASE_URL" in flag_values(argv, "--env")
    assert launch.name == "k8s_trainer_tr-nightly-abc_wd_pod-uid-9_0"
    assert launch.grace_seconds == 30


def test_the_termination_file_can_be_the_callers(tmp_path):
    """The test kubelet hands its own file (the one it reads the message from): emptied, world-writable."""
    mine = tmp_path / "kubelet" / "termination-log"
    mine.parent.mkdir()
    mine.write_text("left from the last attempt")
    launch = run_command(trainer_pod(), "trainer", env={}, pod_dir=tmp_path, image_user="10001",
                         attempt=2, termination_file=mine)  # fmt: skip
    assert launch.termination_log == mine and mine.read_bytes() == b""
    assert stat.S_IMODE(mine.stat().st_mode) == 0o666
    assert f"{mine}:/dev/termination-log:rw" in flag_values(launch.argv, "--volume")
    assert launch.name.endswith("_2")


def test_empty_dirs_can_be_tmpfs_sized_by_their_limit(tmp_path):
    pod = trainer_pod()
    launch = run_command(pod, "trainer", env={}, pod_dir=tmp_path, image_user="10001", disk_backing="tmpfs")
    mounts = flag_values(launch.argv, "--mount")
    assert mounts == [f"type=tmpfs,destination=/tmp,tmpfs-mode=1777,tmpfs-size={2 * 2**30}"]
    assert not any(v.endswith(":/tmp:rw") for v in flag_values(launch.argv, "--volume"))


def test_no_seccomp_profile_means_unconfined_and_privileges_stay_unless_dropped(tmp_path):
    pod = {
        "metadata": {"name": "p", "namespace": "n", "uid": "u"},
        "spec": {"containers": [{"name": "c", "image": "img", "args": ["x"]}]},
    }
    argv = run_command(pod, "c", env={}, pod_dir=tmp_path, image_user="0").argv
    assert flag_values(argv, "--security-opt") == ["seccomp=unconfined"]
    assert "--read-only" not in argv and "--user" not in argv and "--cap-drop" not in argv
    assert "--entrypoint" not in argv and argv[-2:] == ["img", "x"], "args replace CMD, ENTRYPOINT stays"


@pytest.mark.parametrize(
    ("security", "image_user", "error"),
    [
        ({"runAsNonRoot": True}, "", "image will run as root"),
        ({"runAsNonRoot": True}, "0:0", "image will run as root"),
        ({"runAsNonRoot": True}, "trainer", r"non-numeric user \(trainer\)"),
        ({"runAsNonRoot": True, "runAsUser": 0}, "10001", "runAsUser breaks non-root policy"),
    ],
)
def test_run_as_non_root_is_refused_as_the_kubelet_refuses_it(tmp_path, security, image_user, error):
    pod = {
        "metadata": {"name": "p", "namespace": "n", "uid": "u"},
        "spec": {"containers": [{"name": "c", "image": "img", "securityContext": security}]},
    }
    with pytest.raises(PodSpecError, match=error):
        run_command(pod, "c", env={}, pod_dir=tmp_path, image_user=image_user)


def test_run_as_non_root_passes_with_a_numeric_non_root_image_user(tmp_path):
    pod = {
        "metadata": {"name": "p", "namespace": "n", "uid": "u"},
        "spec": {"containers": [{"name": "c", "image": "img", "securityContext": {"runAsNonRoot": True}}]},
    }
    assert run_command(pod, "c", env={}, pod_dir=tmp_path, image_user="10001:10001").argv[-1] == "img"


def test_volumes_prepared_by_the_caller_subpaths_and_read_only_mounts(tmp_path):
    secret_dir = tmp_path / "sa-token"
    pod = {
        "metadata": {"name": "p", "namespace": "n", "uid": "u"},
        "spec": {
            "volumes": [
                {"name": "token", "projected": {"sources": []}},
                {"name": "host", "hostPath": {"path": "/srv/data"}},
                {"name": "claim", "persistentVolumeClaim": {"claimName": "cache"}},
            ],
            "containers": [
                {
                    "name": "c",
                    "image": "img",
                    "volumeMounts": [
                        {
                            "name": "token",
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                            "readOnly": True,
                        },
                        {"name": "host", "mountPath": "/data", "subPath": "set-1"},
                    ],
                }
            ],
        },
    }
    argv = run_command(pod, "c", env={}, pod_dir=tmp_path, volumes={"token": secret_dir}).argv
    volumes = flag_values(argv, "--volume")
    assert f"{secret_dir}:/var/run/secrets/kubernetes.io/serviceaccount:ro" in volumes
    assert "/srv/data/set-1:/data:rw" in volumes

    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "host", "mountPath": "/d", "subPath": "../etc"}]
    with pytest.raises(PodSpecError, match="must stay inside the volume"):
        run_command(pod, "c", env={}, pod_dir=tmp_path)
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "claim", "mountPath": "/cache"}]
    with pytest.raises(PodSpecError, match="'claim' \\(persistentVolumeClaim\\) was not prepared"):
        run_command(pod, "c", env={}, pod_dir=tmp_path)
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "nope", "mountPath": "/x"}]
    with pytest.raises(PodSpecError, match="names no volume"):
        run_command(pod, "c", env={}, pod_dir=tmp_path)


def test_env_is_resolved_in_order_with_expansion_secrets_config_maps_and_fields():
    pod = {
        "metadata": {"name": "p", "namespace": "ns1", "uid": "u", "labels": {"team": "vision"}},
        "spec": {"serviceAccountName": "waste-trainer", "nodeName": "node-a"},
    }
    container = {
        "name": "c",
        "resources": {"limits": {"memory": "2Gi"}},
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "A", "value": "one"},
            {"name": "B", "value": "$(A)-two-$(MISSING)-$$(A)"},
            {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k", "optional": True}}},
        ],
    }
    env = resolve_env(
        pod,
        container,
        secrets={"db": {"url": "postgresql://u:p@h/d"}},
        config_maps={"cfg": {"MODE": "gate"}},
        service_env={"KUBERNETES_SERVICE_HOST": "127.0.0.1"},
    )
    assert env == {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "CFG_MODE": "gate",
        "A": "one",
        "B": "one-two-$(MISSING)-$(A)",
        "DB": "postgresql://u:p@h/d",
        "NS": "ns1",
        "TEAM": "vision",
        "MEM": "2048",
    }
    assert list(env)[:3] == ["KUBERNETES_SERVICE_HOST", "CFG_MODE", "A"]
    with pytest.raises(PodSpecError, match="secret 'db' not found"):
        resolve_env(pod, container, secrets={}, config_maps={"cfg": {}})
    with pytest.raises(PodSpecError, match="couldn't find key url in secret db"):
        resolve_env(pod, container, secrets={"db": {}}, config_maps={"cfg": {}})


def test_command_and_args_expand_env_references(tmp_path):
    pod = {
        "metadata": {"name": "p", "namespace": "n", "uid": "u"},
        "spec": {
            "containers": [
                {"name": "c", "image": "img", "command": ["sh", "-c"], "args": ["echo $(X) $$(X)"]}
            ]
        },
    }
    argv = run_command(pod, "c", env={"X": "hi"}, pod_dir=tmp_path).argv
    assert argv[-2:] == ["img", "echo hi $(X)"]
    assert expand("$(A)$(B)", {"A": "1"}) == "1$(B)"


def test_termination_message_follows_the_kubelets_rules():
    log = "\n".join(f"line {i}" for i in range(200))
    assert termination_message(b'{"status": "Succeeded"}', "File", 0, log) == '{"status": "Succeeded"}'
    assert termination_message(b"x" * 5000, "File", 1, log) == "x" * 4096
    assert termination_message(b"", "File", 1, log) == ""
    assert termination_message(b"", "FallbackToLogsOnError", 0, log) == "", "only on failure"
    fallback = termination_message(b"", "FallbackToLogsOnError", 1, log)
    assert fallback.endswith("line 199") and "line 119" not in fallback and len(fallback.encode()) <= 2048
    assert fallback.splitlines()[0].endswith(str(199 - len(fallback.splitlines()) + 1))


def test_quantities_and_names():
    assert quantity_bytes("8Gi") == 8 * 2**30
    assert quantity_bytes("500M") == 500 * 10**6
    assert quantity_bytes("1.5Ki") == 1536
    assert quantity_bytes(1024) == 1024
    with pytest.raises(PodSpecError, match="not a Kubernetes quantity"):
        quantity_bytes("8 GB")
    pod = {"metadata": {"name": "p", "namespace": "n", "uid": "u"}}
    assert container_name(pod, {"name": "c"}, 2) == "k8s_c_p_n_u_2"


def test_env_names_podman_reads_itself_go_inline_the_rest_through_its_environment(tmp_path):
    pod = {
        "metadata": {"name": "p", "namespace": "n", "uid": "u"},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    env = {"PATH": "/opt/venv/bin:/usr/bin", "XDG_RUNTIME_DIR": "/x", "TOKEN": "s3cret"}
    argv = run_command(pod, "c", env=env, pod_dir=tmp_path).argv
    assert flag_values(argv, "--env") == ["PATH=/opt/venv/bin:/usr/bin", "XDG_RUNTIME_DIR=/x", "TOKEN"]
