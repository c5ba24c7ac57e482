"""`kubectl apply -k manifests/` on the real API server, and the example TrainingRun against the CRD."""

from __future__ import annotations

import json

import pytest

from tests.operator.admission import SHIPPED_BINDINGS, activate_bindings, retire_bindings
from tests.operator.harness import ROOT

pytestmark = pytest.mark.controlplane


def test_kustomization_applies_and_the_example_run_is_valid(control_plane, trainingrun_crd):
    rendered = control_plane.kubectl("kustomize", str(ROOT / "manifests")).stdout
    kinds = {(d.split("kind: ")[1].splitlines()[0]) for d in rendered.split("\n---\n")}
    assert kinds >= {"CustomResourceDefinition", "Namespace", "ServiceAccount", "Role", "RoleBinding",
                     "ConfigMap", "Deployment", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
                     "NetworkPolicy"}  # fmt: skip
    assert "ClusterRole" not in kinds and "kind: Secret" not in rendered

    try:
        control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "manifests"))
        activate_bindings(control_plane, *SHIPPED_BINDINGS)  # in case an earlier test retired them
        _check_applied(control_plane)
    finally:
        # The shipped bindings act on every namespace: the session's other tests create runs elsewhere.
        retire_bindings(control_plane, *SHIPPED_BINDINGS)


def _check_applied(control_plane) -> None:
    deployment = json.loads(
        control_plane.kubectl(
            "get", "deployment", "waste-operator", "-n", "waste-detection", "-o", "json"
        ).stdout
    )
    assert deployment["spec"]["strategy"]["type"] == "Recreate"

    example = ROOT / "manifests" / "examples" / "trainingrun.yaml"
    control_plane.kubectl("apply", "--dry-run=server", "-f", str(example))
    # The kubelet would run this operator with the default settings for the rest of the session.
    control_plane.kubectl("delete", "deployment", "waste-operator", "-n", "waste-detection", "--wait=false")

    # The example without its namespace lands in "default", which the operator does not watch: refused.
    import yaml

    from tests.controlplane.util import wait_for

    run = yaml.safe_load(example.read_text())
    del run["metadata"]["namespace"]

    def refused() -> str:
        out = control_plane.kubectl(
            "create", "--dry-run=server", "-n", "default", "-f", "-", input=json.dumps(run), check=False
        )
        return out.stderr if "is not watched" in out.stderr else ""

    message = wait_for(refused, timeout=30, message="the shipped admission policy to refuse a run in default")
    assert "namespace default is not watched by the waste-detection operator" in message
    assert "-n waste-detection" in message and "waste-detection/waste-operator-config" in message


def test_trainer_and_operator_pods_meet_the_restricted_pod_security_standard(control_plane, trainingrun_crd):
    import yaml
    from waste_operator.config import OperatorConfig
    from waste_operator.jobs import build_job

    # The namespace and the ServiceAccounts: the ServiceAccount admission plugin refuses a Pod whose
    # ServiceAccount does not exist, dry run or not.
    for name in ("namespace.yaml", "operator-rbac.yaml", "trainer-rbac.yaml"):
        control_plane.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "manifests" / name)
        )
    run = {"metadata": {"name": "psa", "namespace": "waste-detection", "uid": "u-1"}, "spec": {}}
    config = OperatorConfig(trainer_image="t:1", models_bucket="m", images_bucket="i", datasets_bucket="d")
    job = build_job(run, config)
    deployment = yaml.safe_load((ROOT / "manifests" / "operator-deployment.yaml").read_text())
    for name, template in (
        ("trainer", job["spec"]["template"]),
        ("operator", deployment["spec"]["template"]),
    ):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"psa-{name}", **template["metadata"]},
               "spec": template["spec"]}  # fmt: skip
        result = control_plane.kubectl(
            "create",
            "--dry-run=server",
            "-n",
            "waste-detection",
            "-f",
            "-",
            input=json.dumps(pod),
            check=False,
        )
        assert result.returncode == 0 and "violate" not in result.stderr, (name, result.stderr)
