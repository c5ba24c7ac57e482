"""The operator killed between two steps converges when it comes back: one Job, one rollout."""

from __future__ import annotations

import pytest

from tests.controlplane.util import wait_for
from tests.operator.harness import OperatorProcess, phase_is, wait_run
from tests.operator.test_operator_run import create_run, inference_api, jobs_of

pytestmark = pytest.mark.controlplane


@pytest.mark.parametrize("step", ["after-job-create", "before-status-write", "after-rollout-restart"])
def test_operator_crashing_at_a_step_converges_without_a_second_job_or_rollout(
    control_plane, run_namespace, standin_runner, api, tmp_path, step
):
    ns = run_namespace
    inference_api(api, ns, {"app": "api"})
    crashing = OperatorProcess(control_plane, ns, tmp_path, extra_env={"WD_OPERATOR_CRASH_AT": step}).start()
    create_run(
        api,
        ns,
        "crashy",
        {"epochs": 2, "resources": {"gpus": 0}, "restartDeployment": {"name": "inference-api"}},
    )
    assert crashing.proc.wait(60) == 86, crashing.tail()
    assert len(jobs_of(api, ns)) <= 1

    healthy = OperatorProcess(control_plane, ns, tmp_path).start()
    try:
        status = wait_run(api.custom, ns, "crashy", phase_is("Succeeded", "Failed"), 60)["status"]
        assert status["phase"] == "Succeeded", status
        wait_for(
            lambda: (wait_run(api.custom, ns, "crashy", lambda s: True)["status"]).get("deploymentRestart"),
            timeout=30,
            message="the restart recorded in status",
        )
    finally:
        healthy.stop()
        print(healthy.tail(80))
    assert len(jobs_of(api, ns)) == 1
    deployment = api.apps.read_namespaced_deployment("inference-api", ns)
    assert deployment.metadata.generation == 2, "the inference API must roll exactly once"
