"""The operator as a process: a second instance on a taken port, and the README's command to run it locally."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import pytest
import yaml

from tests.controlplane.server import free_port
from tests.controlplane.util import wait_for
from tests.operator.harness import IMAGE, ROOT, OperatorProcess, phase_is, wait_run
from tests.operator.test_operator_run import create_run

pytestmark = pytest.mark.controlplane


def test_a_second_operator_on_the_same_liveness_port_exits_at_once_saying_why(
    control_plane, run_namespace, operator, tmp_path
):
    (tmp_path / "second").mkdir()
    second = OperatorProcess(control_plane, run_namespace, tmp_path / "second")
    second.port = operator.port  # the first one's
    try:
        try:
            second.start()  # may return early: the first instance answers on that port
        except AssertionError:
            pass
        assert second.proc.wait(30) == 2, second.log()
    finally:
        second.stop()
    log = second.log()
    assert f"cannot listen on LIVENESS_ENDPOINT http://127.0.0.1:{operator.port}/healthz" in log, log
    assert "another operator instance on this port?" in log
    assert operator.alive(), "the first instance keeps running"


def test_the_readme_command_runs_the_operator_locally_as_its_service_account(
    control_plane, run_namespace, standin_runner, api, tmp_path
):
    ns = run_namespace
    port = free_port()
    config = yaml.safe_load((ROOT / "manifests" / "operator-config.yaml").read_text())
    config["metadata"]["namespace"] = ns
    config["data"] |= {
        "WATCH_NAMESPACES": ns,
        "TRAINER_IMAGE": IMAGE,
        "LIVENESS_ENDPOINT": f"http://0.0.0.0:{port}/healthz",  # the script serves it on 127.0.0.1
        "RESYNC_SECONDS": "1",
    }
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(config))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "TRAINER_", "GCS_", "WATCH_"))
    }
    env |= {"KUBECONFIG": control_plane.kubeconfig, "KUBECTL": str(control_plane.bin_dir / "kubectl"),
            "PYTHON": sys.executable}  # fmt: skip
    log = tmp_path / "local-operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "run-operator-locally.sh"), ns],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def alive() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(alive, timeout=60, message="the locally run operator's liveness endpoint")
        assert f"as system:serviceaccount:{ns}:waste-operator" in log.read_text()
        create_run(api, ns, "local", {"epochs": 1})
        status = wait_run(api.custom, ns, "local", phase_is("Succeeded", "Failed"), 45)["status"]
        assert status["phase"] == "Succeeded", (status, log.read_text())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
