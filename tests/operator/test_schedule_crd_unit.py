"""The TrainingSchedule CRD: generated from the TrainingRun's, so a template is validated as a run is."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml
from waste_operator import schedule

ROOT = Path(__file__).resolve().parents[2]
RUN_CRD = yaml.safe_load((ROOT / "crds" / "trainingrun.yaml").read_text())
CRD_TEXT = (ROOT / "crds" / "trainingschedule.yaml").read_text()
CRD = yaml.safe_load(CRD_TEXT)
VERSION = CRD["spec"]["versions"][0]
SPEC = VERSION["schema"]["openAPIV3Schema"]["properties"]["spec"]


def generator():
    path = ROOT / "scripts" / "generate_trainingschedule_crd.py"
    spec = importlib.util.spec_from_file_location("generate_trainingschedule_crd", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_checked_in_crd_is_what_the_generator_writes():
    expected = generator().render((ROOT / "crds" / "trainingrun.yaml").read_text())
    assert CRD_TEXT == expected, "run: python scripts/generate_trainingschedule_crd.py"


def test_the_template_is_the_trainingrun_spec_schema_without_its_immutability_rule():
    run_spec = RUN_CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    template = SPEC["properties"]["template"]
    assert template["properties"] == run_spec["properties"]
    assert template["type"] == run_spec["type"] and template.get("required") == run_spec.get("required")
    rules = [r for r in run_spec["x-kubernetes-validations"] if "oldSelf" not in r["rule"]]
    assert rules and template["x-kubernetes-validations"] == rules
    assert "oldSelf" not in yaml.safe_dump(template)


def test_names_columns_and_subresources():
    names = CRD["spec"]["names"]
    assert (CRD["spec"]["group"], VERSION["name"]) == ("training.wastedetection.io", "v1alpha1")
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "TrainingSchedule",
        "trainingschedules",
        ["ts"],
    )
    assert VERSION["subresources"] == {"status": {}}
    shown = [c["name"] for c in VERSION["additionalPrinterColumns"] if not c.get("priority")]
    assert shown == ["Schedule", "Suspended", "Pending", "Last Run", "Next", "Age"]


def test_schema_defaults_equal_the_operators():
    props = SPEC["properties"]
    assert props["successfulRunsHistoryLimit"]["default"] == schedule.DEFAULT_SUCCESS_HISTORY
    assert props["failedRunsHistoryLimit"]["default"] == schedule.DEFAULT_FAILED_HISTORY
    assert props["minNewSamples"]["default"] == schedule.needed({})
    assert props["concurrencyPolicy"]["default"] == "Forbid" and props["suspend"]["default"] is False


def test_every_status_field_the_operator_writes_is_declared():
    from datetime import UTC, datetime

    from tests.operator.test_schedule_unit import count, run_of
    from tests.operator.test_schedule_unit import schedule as make

    sched = make(status={"lastTickTime": "2026-12-01T03:00:00Z"})
    decision = schedule.decide(sched, [run_of(sched, datetime(2026, 12, 1, 3, tzinfo=UTC), "Running")],
                               datetime(2026, 12, 2, 3, 1, tzinfo=UTC), count(3))  # fmt: skip
    declared = VERSION["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert set(decision.status) <= set(declared), set(decision.status) - set(declared)
    assert set(decision.status["lastRun"]) <= set(declared["lastRun"]["properties"])


def test_the_crd_is_in_the_kustomization():
    kustomization = yaml.safe_load((ROOT / "crds" / "kustomization.yaml").read_text())
    assert "trainingschedule.yaml" in kustomization["resources"]
