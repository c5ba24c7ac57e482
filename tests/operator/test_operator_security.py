"""Least privilege, checked on the real API server, and bad input that must end with a reason."""

from __future__ import annotations

import pytest
import yaml

from tests.operator.harness import phase_is, wait_run
from tests.operator.test_operator_run import create_run

pytestmark = pytest.mark.controlplane


def test_the_operator_and_trainer_service_accounts_have_only_what_they_need(
    control_plane, run_namespace, trainingschedule_crd
):
    ns = run_namespace
    operator = control_plane.service_account_kubeconfig(ns, "waste-operator")
    trainer = control_plane.service_account_kubeconfig(ns, "waste-trainer")

    def can(kubeconfig: str, *args: str) -> bool:
        r = control_plane.kubectl("auth", "can-i", *args, "-n", ns, kubeconfig=kubeconfig, check=False)
        return r.stdout.strip() == "yes"

    for kubeconfig in (operator, trainer):
        assert not can(kubeconfig, "get", "secrets"), "no ServiceAccount reads Secrets"
        assert not can(kubeconfig, "list", "secrets")
        assert not can(kubeconfig, "create", "pods/exec")
        assert not can(kubeconfig, "create", "roles"), "nobody grants themselves more"
        assert not can(kubeconfig, "list", "trainingruns.training.wastedetection.io", "--all-namespaces")
    assert can(operator, "create", "jobs.batch") and can(
        operator, "patch", "trainingruns.training.wastedetection.io", "--subresource=status"
    )
    assert can(operator, "patch", "deployments.apps/inference-api")
    # Kueue's Workloads only with manifests/components/kueue (tests/operator/test_kueue.py).
    assert not can(operator, "get", "workloads.kueue.x-k8s.io")
    assert not can(operator, "patch", "deployments.apps/some-other-app")
    # The runs of TrainingSchedules: the operator creates them and deletes the ones it owns (Replace,
    # history limits); it never edits a run's spec, and never creates, edits or deletes a schedule.
    runs, schedules = (
        "trainingruns.training.wastedetection.io",
        "trainingschedules.training.wastedetection.io",
    )
    assert can(operator, "create", runs) and can(operator, "delete", runs)
    assert not can(operator, "patch", runs) and not can(operator, "update", runs)
    assert can(operator, "watch", schedules) and can(operator, "patch", schedules, "--subresource=status")
    for verb in ("create", "patch", "update", "delete"):
        assert not can(operator, verb, schedules), verb
    assert not can(trainer, "get", schedules), "the trainer has no business with schedules"
    assert can(trainer, "patch", "trainingruns.training.wastedetection.io", "--subresource=status")
    assert not can(trainer, "create", "jobs.batch") and not can(trainer, "get", "pods")
    assert not can(trainer, "patch", "trainingruns.training.wastedetection.io"), (
        "the trainer cannot edit specs"
    )

    # The full list, in another namespace: nothing beyond what every authenticated user may do.
    elsewhere = control_plane.kubectl("auth", "can-i", "--list", "-n", "default", kubeconfig=operator).stdout
    assert "jobs.batch" not in elsewhere and "trainingruns" not in elsewhere
    listed = control_plane.kubectl("auth", "can-i", "--list", "-n", ns, kubeconfig=trainer).stdout
    assert "secrets" not in listed and "pods" not in listed.replace("trainingruns", "")


def test_a_missing_database_secret_ends_the_run_with_a_reason(run_namespace, operator, standin_runner, api):
    api.core.delete_namespaced_secret("waste-detection-db", run_namespace)
    create_run(api, run_namespace, "nosecret", {"epochs": 1, "resources": {"gpus": 0}})
    status = wait_run(api.custom, run_namespace, "nosecret", phase_is("Failed"), 60)["status"]
    assert status["reason"] == "CreateContainerConfigError", status
    assert "waste-detection-db" in status["message"]


@pytest.mark.parametrize(("spec", "words"), [
    ({"epochs": "ten"}, "spec.epochs"),
    ({"learningRate": "fast"}, "spec.learningRate"),
    ({"learningRate": 0.02}, "learningRate needs a named optimizer"),
    ({"source": {"dataset": {"uri": 7}}}, "spec.source.dataset.uri"),
    ({"resources": {"gpus": -1}}, "spec.resources.gpus"),
])  # fmt: skip
def test_wrong_types_are_refused_by_the_api_server(control_plane, run_namespace, spec, words):
    body = {
        "apiVersion": "training.wastedetection.io/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "bad", "namespace": run_namespace},
        "spec": spec,
    }
    result = control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False)
    assert result.returncode != 0 and words in result.stderr, result.stderr
