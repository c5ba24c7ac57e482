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
        ({"imgSize": 100}, "imgSize must be a multiple of 32"),
        ({"epochs": 5, "colour": "red"}, 'unknown field "spec.colour"'),
        ({"promotion": {"mode": "always"}}, 'supported values: "gate", "force", "skip"'),
        ({"source": {"fromInferences": {}, "dataset": {"uri": "gs://b/d"}}}, "set exactly one of source"),
        ({"source": {"dataset": {"uri": "http://x"}}}, "spec.source.dataset.uri"),
        ({"replayRatio": 11}, "spec.replayRatio"),
        ({"batchSize": "big"}, "batchSize must be a whole number from 1 to 1024, or auto"),
        ({"batchSize": 0}, "batchSize must be a whole number from 1 to 1024, or auto"),
        ({"device": "0,1", "resources": {"gpus": 1}}, "device names more GPUs than resources.gpus"),
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
