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
