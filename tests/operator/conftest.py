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


@pytest.fixture
def run_namespace(control_plane, namespace, trainingrun_crd):
    """A fresh namespace with the operator's and trainer's RBAC from manifests/ and the database Secret."""
    from tests.operator.harness import prepare_namespace

    prepare_namespace(control_plane, namespace)
    return namespace


@pytest.fixture
def standin_runner(control_plane, run_namespace):
    """The job runner for this namespace's Jobs, running the stand-in trainer."""
    from tests.controlplane.jobrunner import JobRunner
    from tests.operator.harness import STANDIN

    runner = JobRunner(control_plane, namespace=run_namespace, cwd=STANDIN).start()
    yield runner
    runner.stop()


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


@pytest.fixture(scope="session")
def admission_params_kept(control_plane, trainingrun_crd):
    """The shipped admission policies, and one binding of each that matches no namespace, kept for the whole
    session: the API server stops resolving ConfigMap parameters for good once no binding uses them
    (kubernetes/kubernetes#130887), so the tests' own bindings come and go only while these stay."""
    import yaml

    from tests.operator.harness import ROOT

    docs = list(yaml.safe_load_all((ROOT / "manifests" / "admission-policy.yaml").read_text()))
    for doc in docs:
        if doc["kind"] == "ValidatingAdmissionPolicyBinding":
            doc["metadata"]["name"] += "-kept-by-tests"
            doc["spec"]["paramRef"]["namespace"] = "default"
            nothing = {"matchLabels": {"test.waste-detection.io/no-namespace-has-this": "true"}}
            doc["spec"]["matchResources"] = {"namespaceSelector": nothing}
    control_plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(docs)
    )
    return docs
