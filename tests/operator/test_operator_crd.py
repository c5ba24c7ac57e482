"""The TrainingRun CRD on the real API server: defaults, validation messages, immutability."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.controlplane


def manifest(name: str, spec: dict) -> str:
    return json.dumps(
        {
            "apiVersion": "training.wastedetection.io/v1alpha1",
            "kind": "TrainingRun",
            "metadata": {"name": name},
            "spec": spec,
        }  # fmt: skip
    )


def create(control_plane, namespace: str, name: str, spec: dict):
    return control_plane.kubectl(
        "create", "-n", namespace, "-f", "-", input=manifest(name, spec), check=False
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"epochs": 0},
            "spec.epochs: Invalid value: 0: spec.epochs in body should be greater than or equal to 1",
        ),
        ({"trainSplit": 1.5}, "spec.trainSplit: Invalid value: 1.5"),
        (
            {"imgSize": 100},
            "spec.imgSize: Invalid value: 100: spec.imgSize in body should be a multiple of 32",
        ),
        ({"epochs": 5, "colour": "red"}, 'unknown field "spec.colour"'),
        ({"promotion": {"mode": "always"}}, 'supported values: "gate", "force", "skip"'),
        ({"source": {"fromInferences": {}, "dataset": {"uri": "gs://b/d"}}}, "set exactly one of source"),
        ({"source": {"dataset": {"uri": "http://x"}}}, "spec.source.dataset.uri"),
        ({"replayRatio": 11}, "spec.replayRatio"),
        ({"batchSize": "big"}, "batchSize must be a whole number from 1 to 1024, or auto"),
        ({"batchSize": 0}, "batchSize must be a whole number from 1 to 1024, or auto"),
        (
            {"device": "0,1", "resources": {"gpus": 1}},
            "spec.device lists more GPU indices than spec.resources.gpus",
        ),
    ],
)
def test_bad_specs_are_rejected_with_clear_messages(control_plane, run_namespace, spec, message):
    result = create(control_plane, run_namespace, "bad", spec)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_batch_size_auto_and_a_device_list_within_the_gpus_are_accepted(control_plane, run_namespace):
    spec = {"batchSize": "auto", "device": "0,1", "resources": {"gpus": 2}}
    create(control_plane, run_namespace, "multi-gpu", spec).check_returncode()
    got = json.loads(
        control_plane.kubectl("get", "tr", "multi-gpu", "-n", run_namespace, "-o", "json").stdout
    )
    assert (got["spec"]["batchSize"], got["spec"]["device"]) == ("auto", "0,1")
    control_plane.kubectl("delete", "tr", "multi-gpu", "-n", run_namespace)


def test_defaults_equal_the_trainers_and_the_spec_is_immutable_except_suspend(control_plane, run_namespace):
    create(control_plane, run_namespace, "good", {"epochs": 3}).check_returncode()
    got = json.loads(control_plane.kubectl("get", "tr", "good", "-n", run_namespace, "-o", "json").stdout)
    spec = got["spec"]
    assert (spec["epochs"], spec["batchSize"], spec["imgSize"], spec["device"]) == (3, 16, 640, "auto")
    assert spec["source"] == {"fromInferences": {"onlyVerified": True, "allTime": False}}
    assert spec["promotion"] == {"mode": "gate"} and spec["resources"] == {
        "gpus": 1,
        "cpu": "4",
        "memory": "16Gi",
    }
    assert spec["suspend"] is False and spec["replayRatio"] == 1.0

    changed = control_plane.kubectl(
        "patch", "tr", "good", "-n", run_namespace, "--type=merge", "-p", '{"spec":{"epochs":4}}', check=False
    )
    assert changed.returncode != 0 and "immutable except suspend" in changed.stderr, changed.stderr
    added = control_plane.kubectl(
        "patch",
        "tr",
        "good",
        "-n",
        run_namespace,
        "--type=merge",
        "-p",
        '{"spec":{"image":"x:1"}}',
        check=False,
    )
    assert added.returncode != 0 and "immutable except suspend" in added.stderr, added.stderr
    control_plane.kubectl(
        "patch", "tr", "good", "-n", run_namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    listed = control_plane.kubectl("get", "ml", "-n", run_namespace).stdout
    assert "good" in listed


# (value, accepted): the table of accepted forms (trainer/uris.py), tried on the API server and the trainer.
DATASET_URIS = [
    ("gs://waste-datasets/2025-06", True),
    ("gs://waste-datasets", True),
    ("gs://my.bucket.example/a/b/", True),
    ("2025-06", True),
    ("city_a/2025.06/", True),
    ("file:///data/waste", False),
    ("http://example.com/ds", False),
    ("s3://bucket/ds", False),
    ("/data/waste", False),
    ("../up", False),
    ("a/../b", False),
    ("gs://", False),
    ("gs://UPPER/x", False),
    ("two words", False),
]
BASE_MODELS = [
    ("yolov8n.pt", True),
    ("yolov8s.pt", True),
    ("yolov8n.yaml", True),
    ("gs://my-weights/runs/best.pt", True),
    ("https://github.com/ultralytics/assets/yolov8n.pt", False),
    ("/opt/weights/yolov8n.pt", False),
    ("v3", False),
    ("gs://my-weights/", False),
]


def trainer_accepts(argv: list[str]) -> bool:
    from trainer.errors import ConfigError
    from trainer.settings import load_settings

    env = {"TRAININGRUN_NAME": "r", "TRAININGRUN_NAMESPACE": "ns", "TRAININGRUN_UID": "u-1",
           "GCS_MODELS_BUCKET": "m", "GCS_DATASETS_BUCKET": "d"}  # fmt: skip
    try:
        load_settings(argv, env)
    except ConfigError:
        return False
    return True


def test_the_crd_accepts_exactly_the_dataset_uris_and_base_models_the_trainer_can_use(
    control_plane, run_namespace
):
    def api_accepts(spec: dict) -> bool:
        result = control_plane.kubectl(
            "create",
            "--dry-run=server",
            "-n",
            run_namespace,
            "-f",
            "-",
            input=manifest("forms", spec),
            check=False,
        )
        assert result.returncode == 0 or "Invalid value" in result.stderr, result.stderr
        return result.returncode == 0

    seen = []
    for uri, accepted in DATASET_URIS:
        spec = {"source": {"dataset": {"uri": uri}}}
        seen.append((uri, accepted, api_accepts(spec), trainer_accepts(["--dataset", uri])))
    for name, accepted in BASE_MODELS:
        spec = {"baseModel": name}
        seen.append(
            (name, accepted, api_accepts(spec), trainer_accepts(["--dataset", "ds", "--base-model", name]))
        )
    wrong = [
        (value, accepted, api, trainer)
        for value, accepted, api, trainer in seen
        if not accepted == api == trainer
    ]
    assert not wrong, "(value, expected, API server, trainer): " + repr(wrong)


@pytest.mark.parametrize(
    ("name", "spec", "expected"),
    [
        ("bad", {"imgSize": 100}, "spec.imgSize: Invalid value: 100: spec.imgSize in body should be a multiple of 32"),
        ("bad", {"learningRate": 0.02}, "spec.learningRate: Forbidden: learningRate needs a named optimizer"),
        ("n" * 70, {}, "metadata.name: Forbidden: a TrainingRun's name is at most 63 characters"),
        ("bad", {"source": {"fromInferences": {}, "dataset": {"uri": "gs://wd-data/d"}}},
         "spec.source: Forbidden: set exactly one of source.fromInferences and source.dataset"),
    ],
)  # fmt: skip
def test_rule_messages_name_the_field_and_the_value_not_its_type(
    control_plane, run_namespace, name, spec, expected
):
    result = create(control_plane, run_namespace, name, spec)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    for placeholder in ('"integer"', '"object"', '"number"', "<nil>"):
        assert placeholder not in result.stderr, result.stderr


def test_a_finished_run_cannot_be_suspended_and_a_changed_spec_says_what_to_do(
    control_plane, run_namespace, api
):
    from waste_operator import GROUP, PLURAL, VERSION

    ns = run_namespace
    create(control_plane, ns, "done", {"epochs": 1}).check_returncode()
    api.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, PLURAL, "done", {"status": {"phase": "Succeeded"}}
    )

    def patch(spec: dict):
        body = json.dumps({"spec": spec})
        return control_plane.kubectl("patch", "tr", "done", "-n", ns, "--type=merge", "-p", body, check=False)

    suspended = patch({"suspend": True})
    assert suspended.returncode != 0, "a finished run took suspend: true silently"
    assert "spec.suspend: Forbidden: the run has finished (Succeeded or Failed)" in suspended.stderr, (
        suspended.stderr
    )
    changed = patch({"epochs": 2})
    assert "spec: Forbidden: the spec of a TrainingRun is immutable except suspend" in changed.stderr
    assert "create it again" in changed.stderr and '"object"' not in changed.stderr, changed.stderr
    got = api.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "done")
    assert got["metadata"]["generation"] == 1 and got["spec"]["suspend"] is False
