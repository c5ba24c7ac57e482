"""The run report: the compact result of docs/CONTRACTS.md, the termination file, log lines."""

from __future__ import annotations

import json

import pytest

from trainer.report import TERMINATION_LIMIT, RunReport, logfmt

CONTRACT_KEYS = {
    "status",
    "reason",
    "message",
    "modelVersion",
    "modelUri",
    "baseVersion",
    "promoted",
    "promotionReason",
    "metrics",
    "championMAP50",
    "dataset",
    "epochs",
}


def full_report() -> RunReport:
    r = RunReport(run_id="ns/nightly", mode="inferences", status="Succeeded")
    r.selection = {"selected": 120, "new": 60, "replayed": 60, "history_val": 30}
    r.data = {"train": 96, "val": 24, "skipped": {"bad_image": 1, "missing_label": 1}}
    r.training = {"epochs_completed": 12, "epochs": 50, "early_stopped": True, "resumed_from_epoch": None}
    r.metrics = {"map50": 0.41, "map50_95": 0.29, "precision": 0.5, "recall": 0.4}
    r.champion = {"map50": 0.39}
    r.promotion = {"promoted": True, "reason": "not worse"}
    r.model = {"version": "v3", "uri": "gs://bucket/models/v3/yolov8n_waste.pt", "base_version": "v2"}
    return r


def test_compact_has_exactly_the_contract_keys_and_values():
    c = full_report().compact()
    assert set(c) == CONTRACT_KEYS
    assert c["dataset"] == {
        "selected": 120,
        "new": 60,
        "replayed": 60,
        "historyVal": 30,
        "train": 96,
        "val": 24,
        "skipped": 2,
    }
    assert c["epochs"] == {"completed": 12, "requested": 50, "earlyStopped": True, "resumedFromEpoch": None}
    assert c["metrics"] == {"mAP50": 0.41, "mAP50_95": 0.29, "precision": 0.5, "recall": 0.4}
    assert (c["modelVersion"], c["baseVersion"], c["championMAP50"], c["promoted"]) == (
        "v3",
        "v2",
        0.39,
        True,
    )


def test_compact_of_an_early_failure_has_the_contract_keys():
    r = RunReport(run_id="r", mode="dataset")
    r.fail("InvalidInput", "bad flag")
    c = r.compact()
    assert set(c) == CONTRACT_KEYS
    assert (c["status"], c["reason"], c["promoted"], c["modelVersion"]) == (
        "Failed",
        "InvalidInput",
        False,
        None,
    )
    json.dumps(c)


def test_compact_stays_under_4096_bytes_with_a_huge_message():
    r = full_report()
    r.fail("TrainingError", "x" * 100_000)
    r.promotion["reason"] = "y" * 100_000
    c = r.compact()
    assert len(c["message"]) <= 512
    assert len(json.dumps(c).encode()) < TERMINATION_LIMIT == 4096


def test_compact_message_is_one_line():
    r = RunReport(run_id="r", mode="dataset")
    r.fail("TrainingError", "CUDA error: out of memory\nTraceback (most recent call last):\n  File x")
    assert "\n" not in r.compact()["message"]


def test_fail_redacts_passwords_from_the_message():
    r = RunReport(run_id="r", mode="inferences")
    r.fail("RegistryError", "cannot reach postgresql://u:hunter2@db/x")
    assert "hunter2" not in r.message
    assert "hunter2" not in json.dumps(r.compact())


def test_write_writes_the_full_report_and_the_termination_file(tmp_path, capsys):
    r = full_report()
    report, term = tmp_path / "out" / "report.json", tmp_path / "termination-log"
    r.write(report, term)
    compact = json.loads(term.read_text())
    assert compact == json.loads(json.dumps(r.compact()))
    assert json.loads(report.read_text())["model"]["version"] == "v3"
    assert json.loads(capsys.readouterr().out)["run_id"] == "ns/nightly"


@pytest.mark.parametrize("char", ["x", "\u2603", "\U0001f5d1", '"'], ids=["ascii", "bmp", "emoji", "quote"])
def test_the_termination_file_never_exceeds_4096_bytes(tmp_path, char, capsys):
    r = full_report()
    r.fail("TrainingError", char * 10_000)
    r.promotion["reason"] = char * 10_000
    term = tmp_path / "termination-log"
    r.write(None, term)
    data = term.read_bytes()
    assert len(data) <= TERMINATION_LIMIT
    parsed = json.loads(data)
    assert (parsed["status"], parsed["reason"], parsed["modelVersion"]) == ("Failed", "TrainingError", "v3")


def test_an_unwritable_termination_file_does_not_raise(tmp_path, capsys):
    full_report().write(None, tmp_path / "missing-dir" / "termination-log")


def test_logfmt_quotes_values_with_spaces_and_formats_floats():
    assert (
        logfmt(step="train", seconds=1.23456, text="a b", empty="")
        == 'step=train seconds=1.235 text="a b" empty=""'
    )


def _pc(**ap50: float) -> dict:
    return {name: {"ap50": v} for name, v in ap50.items()}


def decided(outcome: str, reason: str, *, champion: bool = True, mode: str = "gate") -> RunReport:
    r = full_report()
    r.metrics = {"map50": 0.724, "per_class": _pc(Plastic=0.92, Glass=0.88, Metal=0.5)}
    r.champion = {"version": "v1", "map50": 0.612, "per_class": _pc(Plastic=0.3, Glass=0.9, Metal=0.5)}
    if not champion:
        r.champion, r.selection = None, {"history_val": 0}
    r.model = {"version": "v2"}
    r.data = {"val": 48}
    r.promotion = {
        "promoted": outcome == "promoted",
        "outcome": outcome,
        "mode": mode,
        "reason": reason,
        "latest": "v2" if outcome == "promoted" else "v1",
    }
    return r


def test_decision_line_of_a_promotion_gives_both_figures_on_the_same_images_and_each_class_change():
    line = decided("promoted", "mAP50 0.7240 vs deployed 0.6120: not worse within 0.02").decision_line()
    assert line == (
        "decision: promoted v2 over v1: mAP50 0.612 -> 0.724 on the same 48 validation images "
        "(30 from earlier runs); AP50 per class: Plastic +0.62, Glass -0.02, others within 0.01"
    )


def test_decision_line_of_a_refusal_says_what_stays_latest_and_why():
    line = decided("refused", "class AP50 dropped by more than 0.15: Plastic 0.900->0.200").decision_line()
    assert line.startswith("decision: refused v2, v1 stays latest: class AP50 dropped by more than 0.15: ")
    assert "mAP50 0.612 -> 0.724 on the same 48 validation images" in line
    assert line.endswith("Plastic +0.62, Glass -0.02, others within 0.01") and "\n" not in line


def test_decision_line_of_the_first_version_and_of_a_forced_or_skipped_promotion():
    first = decided("promoted", "first version: nothing deployed to compare with", champion=False)
    assert first.decision_line() == (
        "decision: promoted v2: first version: nothing deployed to compare with; mAP50 0.724 on 48 "
        "validation images"
    )
    forced = decided("promoted", "promotion forced by request (--promotion force)", mode="force")
    assert forced.decision_line().startswith(
        "decision: promoted v2 over v1: promotion forced by request (--promotion force); mAP50 0.612 -> 0.724"
    )
    skipped = decided("skipped", "promotion skipped by request (--promotion skip)", mode="skip")
    assert skipped.decision_line().startswith("decision: v2 not promoted, latest is v1: promotion skipped")


def test_class_changes_lists_the_largest_first_and_says_when_nothing_moved():
    from trainer.report import class_changes

    same = {"per_class": _pc(Glass=0.5)}
    assert class_changes(same, same) == "AP50 per class: every class within 0.01"
    assert class_changes({"per_class": _pc(Glass=0.5)}, {"per_class": _pc(Glass=0.2, Paper=0.4)}) == (
        "AP50 per class: Paper +0.40, Glass -0.30"
    )
