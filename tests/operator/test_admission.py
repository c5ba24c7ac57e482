"""The admission policies of manifests/admission-policy.yaml on the real API server, driven by the operator's
ConfigMap: runs the operator will never see, trainer images outside the allow-list, and a trainer writing
beyond its own run's progress are refused with a message that says what to do."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
import yaml
from waste_operator import GROUP, PLURAL, VERSION

from tests.controlplane.util import wait_for
from tests.operator.admission import retire_bindings
from tests.operator.harness import IMAGE, ROOT

pytestmark = pytest.mark.controlplane
TRUSTED = "registry.example/trusted/"


def shipped() -> list[dict]:
    return list(yaml.safe_load_all((ROOT / "manifests" / "admission-policy.yaml").read_text()))


@pytest.fixture
def admission(control_plane, run_namespace, api):
    """The shipped policies, with the shipped bindings narrowed to this test's namespaces (the API server is
    shared by the whole session) and pointed at an operator ConfigMap in the test's namespace."""
    other = f"elsewhere-{secrets.token_hex(3)}"
    api.core.create_namespace({"metadata": {"name": other}})
    config = yaml.safe_load((ROOT / "manifests" / "operator-config.yaml").read_text())
    config["metadata"]["namespace"] = run_namespace
    config["data"] |= {
        "WATCH_NAMESPACES": run_namespace,
        "TRAINER_IMAGE": IMAGE,
        "TRAINER_IMAGE_PREFIXES": TRUSTED,
    }
    docs = [config]
    bindings = []
    for doc in shipped():
        if doc["kind"] == "ValidatingAdmissionPolicyBinding":
            doc["metadata"]["name"] += f"-{run_namespace}"
            doc["spec"]["paramRef"]["namespace"] = run_namespace
            selector = {
                "key": "kubernetes.io/metadata.name",
                "operator": "In",
                "values": [run_namespace, other],
            }
            doc["spec"]["matchResources"] = {"namespaceSelector": {"matchExpressions": [selector]}}
            bindings.append(doc["metadata"]["name"])
        docs.append(doc)
    control_plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(docs)
    )
    # A binding takes effect once the API server's informers have it and its ConfigMap: wait until it refuses
    # for the policy's own reason (before, it refuses with "no params found").
    wait_for(
        lambda: "is not watched" in create(control_plane, other, "probe", {}, dry_run=True).stderr,
        timeout=30,
        message="the admission policy to take effect",
    )
    yield run_namespace, other
    retire_bindings(control_plane, *bindings)


def create(control_plane, namespace: str, name: str, spec: dict, dry_run: bool = False):
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingRun",
        "metadata": {"name": name},
        "spec": spec,
    }
    args = ["create", "-n", namespace, "-f", "-"] + (["--dry-run=server"] if dry_run else [])
    return control_plane.kubectl(*args, input=json.dumps(body), check=False)


def test_a_run_outside_the_watched_namespaces_is_refused_with_where_to_put_it(control_plane, admission):
    watched, other = admission
    refused = create(control_plane, other, "lost", {"epochs": 1})
    assert refused.returncode != 0
    message = refused.stderr
    assert f"namespace {other} is not watched by the waste-detection operator" in message, message
    assert f"WATCH_NAMESPACES={watched}" in message and f"-n {watched}" in message
    assert f"{watched}/waste-operator-config" in message
    create(control_plane, watched, "found", {"epochs": 1}).check_returncode()


def test_only_the_configured_trainer_image_or_an_allowed_prefix_is_admitted(control_plane, admission):
    watched, _ = admission
    refused = create(control_plane, watched, "miner", {"image": "evil.example/miner:1"})
    assert refused.returncode != 0
    assert "spec.image evil.example/miner:1 is not an allowed trainer image" in refused.stderr, refused.stderr
    assert (
        IMAGE in refused.stderr and TRUSTED in refused.stderr and "TRAINER_IMAGE_PREFIXES" in refused.stderr
    )
    for name, image in (("same", IMAGE), ("trusted", TRUSTED + "trainer:2")):
        create(control_plane, watched, name, {"image": image}).check_returncode()
    create(control_plane, watched, "default-image", {}).check_returncode()


def pod_bound_kubeconfig(control_plane, namespace: str, pod: str, tmp: Path) -> str:
    """A kubeconfig for the trainer's ServiceAccount whose token is bound to `pod`, as the kubelet mounts it."""
    plain = Path(control_plane.service_account_kubeconfig(namespace, "waste-trainer"))
    token = control_plane.kubectl(
        "create",
        "token",
        "waste-trainer",
        "-n",
        namespace,
        "--bound-object-kind=Pod",
        f"--bound-object-name={pod}",
    ).stdout.strip()
    config = yaml.safe_load(plain.read_text())
    config["users"][0]["user"]["token"] = token
    path = tmp / f"{pod}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_the_trainer_may_write_only_its_own_runs_progress_and_result(control_plane, admission, api, tmp_path):
    watched, _ = admission
    for name in ("mine", "theirs"):
        create(control_plane, watched, name, {"epochs": 1}).check_returncode()
        api.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            watched,
            PLURAL,
            name,
            {"status": {"phase": "Running", "jobName": f"tr-{name}-1a2b3c4d"}},
        )
    pod = "tr-mine-1a2b3c4d-x7k2p"  # a Pod of run mine's Job, held before scheduling
    api.core.create_namespaced_pod(
        watched,
        {
            "metadata": {"name": pod},
            "spec": {
                "serviceAccountName": "waste-trainer",
                "schedulingGates": [{"name": "test.waste-detection.io/never"}],
                "containers": [{"name": "trainer", "image": IMAGE}],
            },
        },
    )
    trainer = pod_bound_kubeconfig(control_plane, watched, pod, tmp_path)

    def patch(name: str, status: dict, kubeconfig: str = trainer):
        return control_plane.kubectl(
            "patch", "tr", name, "-n", watched, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}), kubeconfig=kubeconfig, check=False,
        )  # fmt: skip

    progress = {"progress": {"stage": "Training", "epoch": 1, "epochs": 1, "text": "1/1"}}
    assert patch("mine", progress).returncode == 0
    assert patch("mine", {"result": {"status": "Succeeded"}}).returncode == 0

    owned = patch("mine", {"phase": "Succeeded"})
    assert owned.returncode != 0 and "status.progress and status.result only" in owned.stderr, owned.stderr
    other = patch("theirs", progress)
    assert other.returncode != 0 and "may write the status of its own run only" in other.stderr, other.stderr
    assert f"Pod {pod} is not of Job tr-theirs-1a2b3c4d" in other.stderr
    # a token bound to no Pod (minted by hand) is not narrowed to a run, but still to the trainer's fields
    unbound = control_plane.service_account_kubeconfig(watched, "waste-trainer")
    assert patch("theirs", progress, unbound).returncode == 0
    owned = patch("theirs", {"reason": "Hacked"}, unbound)
    assert owned.returncode != 0 and "status.progress and status.result only" in owned.stderr, owned.stderr
    # the operator (another identity) still writes every field
    api.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, watched, PLURAL, "mine", {"status": {"phase": "Succeeded"}}
    )


def test_where_no_policy_is_installed_the_operator_refuses_an_image_outside_the_allow_list(
    run_namespace, operator, api
):
    from tests.operator.harness import phase_is, wait_run
    from tests.operator.test_operator_run import create_run, events_of, jobs_of

    create_run(api, run_namespace, "miner", {"image": "evil.example/miner:1"})
    status = wait_run(api.custom, run_namespace, "miner", phase_is("Failed"), 30)["status"]
    assert status["reason"] == "ImageNotAllowed" and "evil.example/miner:1" in status["message"], status
    assert "TRAINER_IMAGE_PREFIXES" in status["message"]
    assert jobs_of(api, run_namespace) == [], "no Job, so the image never receives the database Secret"
    wait_for(
        lambda: any(e["reason"] == "ImageNotAllowed" for e in events_of(api, run_namespace, "miner")),
        timeout=15,
        message="a Warning Event ImageNotAllowed",
    )
