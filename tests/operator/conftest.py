"""Shared helpers of the operator tests."""

from __future__ import annotations

import pytest
from waste_operator.config import OperatorConfig


@pytest.fixture
def config() -> OperatorConfig:
    return OperatorConfig(
        trainer_image="registry.example/waste-trainer:1.0",
        models_bucket="wd-models",
        images_bucket="wd-images",
        datasets_bucket="wd-datasets",
    )


def make_run(name: str = "nightly", spec: dict | None = None, **meta) -> dict:
    return {
        "apiVersion": "training.wastedetection.io/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {
            "name": name,
            "namespace": "waste-detection",
            "uid": "uid-1234",
            "generation": 1,
            **meta,
        },
        "spec": spec or {},
    }


# -- integration fixtures (real control plane) --------------------------------------------------------
@pytest.fixture(scope="session")
def trainingrun_crd(control_plane):
    from tests.operator.harness import ROOT

    control_plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "trainingrun.yaml"))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/trainingruns.training.wastedetection.io", "--timeout=30s"
    )
    return "trainingruns.training.wastedetection.io"


@pytest.fixture(scope="session")
def trainingschedule_crd(control_plane, trainingrun_crd):
    from tests.operator.harness import ROOT

    control_plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "trainingschedule.yaml"))
    control_plane.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/trainingschedules.training.wastedetection.io",
        "--timeout=30s",
    )
    return "trainingschedules.training.wastedetection.io"


@pytest.fixture
def run_namespace(control_plane, namespace, trainingrun_crd):
    """A fresh namespace with the operator's and trainer's RBAC from manifests/ and the database Secret."""
    from tests.operator.harness import prepare_namespace

    prepare_namespace(control_plane, namespace)
    return namespace


@pytest.fixture
def standin_runner(kubelet, run_namespace):
    """The process kubelet, running this namespace's containers from the stand-in trainer's folder (so
    `python -m trainer` is tests/operator/standin/trainer); `.simulate(match, kind)` for node faults."""
    from tests.controlplane.kubelet import NamespaceView
    from tests.operator.harness import STANDIN

    view = NamespaceView(kubelet, run_namespace, cwd=STANDIN)
    yield view
    view.close()


@pytest.fixture
def operator(control_plane, run_namespace, standin_runner, tmp_path):
    from tests.operator.harness import OperatorProcess

    process = OperatorProcess(control_plane, run_namespace, tmp_path).start()
    yield process
    process.stop()
    print(f"--- operator log ({process.log_path}) ---\n{process.tail(60)}")


@pytest.fixture
def api(control_plane):
    """Admin clients for the test's own reads and writes."""
    from kubernetes import client

    with control_plane.api_client() as api_client:
        yield type(
            "Clients",
            (),
            {
                "custom": client.CustomObjectsApi(api_client),
                "batch": client.BatchV1Api(api_client),
                "core": client.CoreV1Api(api_client),
                "apps": client.AppsV1Api(api_client),
                "raw": api_client,
            },
        )
