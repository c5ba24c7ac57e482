"""Dataset mode on the embedded default (local folders, SQLite): a dataset of new data (--incremental) trained
on top of a deployed model replays earlier datasets' training images and is validated on their validation
images too, as runs on inferences are. Real training (one epoch), nothing mocked."""

from __future__ import annotations

import re
import shutil
import sqlite3

import pytest

from tests.fixtures.data import write_yolo_folder
from tests.fixtures.inference_api import run_trainer
from tests.integration.conftest import FAST


@pytest.mark.slow
def test_a_new_dataset_replays_earlier_ones_and_is_compared_with_latest_on_their_validation_images(tmp_path):
    local = tmp_path / "local"
    local.mkdir()  # run_trainer runs the trainer in it, as a user would run it in their own folder
    env = {
        "TRAINER_LOCAL_DIR": str(local),
        "TRAINER_WORK_DIR": str(tmp_path / "work"),
        "TRAINER_REPORT_PATH": str(tmp_path / "report.json"),
    }
    # Both folders name their files img0000.jpg...: ids must not collide when one is replayed next to the other.
    first = write_yolo_folder(tmp_path / "first", 20)  # 16 train, 4 val (the folders' own split)
    feedback = write_yolo_folder(tmp_path / "feedback", 10, seed=1)  # 8 train, 2 val

    code, report, err = run_trainer(["--dataset", str(first), "--base-model", "yolov8n.yaml", *FAST], env)
    assert code == 0, err
    assert (report["selection"]["replayed"], report["selection"]["history_val"]) == (0, 0)
    assert "decision: promoted v1: first version: nothing deployed to compare with; mAP50 " in err

    # A complete dataset (the default) replays nothing: it is trained on alone, from latest.
    code, report, err = run_trainer(["--dataset", str(feedback), "--promotion", "skip", *FAST], env)
    assert code == 0, err
    assert (report["selection"]["replayed"], report["selection"]["history_val"]) == (0, 0)
    assert (report["data"]["train"], report["data"]["val"]) == (8, 2)

    args = ["--dataset", str(feedback), "--incremental", "--replay-ratio", "1.0", *FAST]
    code, report, err = run_trainer(args, env)
    assert code == 0, err
    sel, data = report["selection"], report["data"]
    assert (sel["new"], sel["replayed"], sel["history_val"]) == (10, 10, 4), sel
    assert (data["train"], data["val"]) == (8 + 10, 2 + 4), data
    assert sum(data["history_val_by_class"].values()) >= 4 and sum(data["replayed_by_class"].values()) >= 10
    assert report["model"]["base_version"] == "v1" and report["champion"]["version"] == "v1"
    [line] = [x for x in err.splitlines() if "decision: " in x]
    assert re.search(r"decision: (promoted v3 over v1|refused v3, v1 stays latest): ", line), line
    assert "on the same 6 validation images (4 from earlier runs); AP50 per class: " in line, line
    assert report["promotion"]["summary"] == line.split(" trainer ", 1)[1]

    with sqlite3.connect(local / "registry.sqlite") as db:
        rows = db.execute(
            "SELECT s.sample_id, s.split, s.replayed, s.source, s.image_object, s.label_object "
            "FROM training_samples s JOIN model_versions v ON v.run_id = s.run_id WHERE v.name = 'v3'"
        ).fetchall()
    by_source = {src: [r for r in rows if r[3] == src] for src in (str(first), str(feedback))}
    assert len(by_source[str(feedback)]) == 10 and not any(r[2] for r in by_source[str(feedback)])
    assert len(by_source[str(first)]) == 14 and all(r[2] for r in by_source[str(first)])
    assert {r[1] for r in by_source[str(first)] if r[0].split("/")[-2] == "val"} == {"val"}
    assert ("images/val/img0000.jpg", "labels/val/img0000.txt") in {r[4:] for r in by_source[str(first)]}

    # An earlier dataset removed since: its samples are counted missing, the run still trains on the new one.
    shutil.rmtree(first)
    third = write_yolo_folder(tmp_path / "third", 10, seed=2)
    code, report, err = run_trainer(
        ["--dataset", str(third), "--incremental", "--promotion", "skip", *FAST], env
    )
    assert code == 0, err
    assert report["data"]["skipped"].get("missing_image", 0) >= 1, report["data"]
    assert any("does not exist" in x for x in report["data"]["skipped_examples"]), report["data"]
    assert not first.exists(), "a removed dataset folder must not be created again"
    assert "decision: v4 not promoted, latest is v" in err
