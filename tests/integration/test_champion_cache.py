"""The champion is evaluated once per (weights, validation set, settings): a run that meets the same
latest on the same validation images reads the earlier result instead of validating again."""

from __future__ import annotations

import pytest

from tests.fixtures.data import write_yolo_folder
from tests.fixtures.inference_api import run_trainer

FAST = ["--epochs", "1", "--img-size", "64", "--batch-size", "8", "--workers", "0"]


@pytest.mark.slow
def test_a_second_run_against_the_same_latest_and_val_set_reuses_the_champions_evaluation(tmp_path):
    folder = write_yolo_folder(tmp_path / "ds", 12)
    env = {
        "TRAINER_WORK_DIR": str(tmp_path / "work"),
        "TRAINER_LOCAL_DIR": str(tmp_path),
        "TRAINER_REPORT_PATH": str(tmp_path / "report.json"),
    }
    base = ["--dataset", str(folder), "--base-model", "yolov8n.yaml", *FAST]
    code, _, err = run_trainer([*base, "--promotion", "force"], env)  # v1 becomes latest
    assert code == 0, err

    # --promotion skip keeps latest at v1: both runs meet the same champion on the same val images.
    code, first, err = run_trainer([*base, "--promotion", "skip"], env)
    assert code == 0, err
    code, second, err = run_trainer([*base, "--promotion", "skip"], env)
    assert code == 0, err

    assert first["champion"]["version"] == second["champion"]["version"] == "v1"
    assert (first["champion"]["cached"], second["champion"]["cached"]) == (False, True)
    strip = lambda c: {k: v for k, v in c.items() if k != "cached"}  # noqa: E731
    assert strip(second["champion"]) == strip(first["champion"])
    stored = list((tmp_path / "models-bucket" / "models" / "v1" / "evaluations").glob("*.json"))
    assert len(stored) == 1
    assert "evaluate_champion" in second["timings"]


def test_the_validation_digest_follows_the_val_files_only(tmp_path):
    from trainer.champion import validation_digest

    root = write_yolo_folder(tmp_path / "ds", 10)
    before = validation_digest(root)
    (root / "labels" / "train" / "img0001.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # a training label
    assert validation_digest(root) == before
    (root / "labels" / "val" / "img0000.txt").write_text("1 0.5 0.5 0.2 0.2\n")  # a corrected val label
    changed = validation_digest(root)
    assert changed != before
    (root / "images" / "val" / "img0000.jpg").rename(root / "images" / "val" / "img9999.jpg")
    assert validation_digest(root) not in (before, changed)
