"""Continual learning: replay keeps earlier classes in the data, and the gate keeps a worse model out of latest."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.fixtures.inference_api import REPO, psql, run_trainer
from tests.integration.conftest import FAST


@pytest.mark.slow
def test_new_data_without_a_class_is_mixed_with_replay_and_the_gate_refuses_a_model_not_better(world):
    api, models, env, _ = world
    dsn = env["DATABASE_URL"]
    for i in range(12):
        api.add(1, "verified", classes=((0, 1, 2), (3, 4), (1, 2))[i % 3])
    rare = api.add(4, "verified", classes=(5,))  # Plastic: rare
    code, report, err = run_trainer(
        ["--from-inferences", "--only-verified", "--base-model", "yolov8n.yaml", *FAST], env
    )
    assert code == 0, err
    assert report["promotion"]["promoted"] is True

    # New feedback holds only Biodegradable: trained alone, the model would forget Plastic.
    api.add(8, "verified", classes=(0,))
    # A gate that demands an improvement no one-epoch model can reach: the challenger must be refused.
    code, report, err = run_trainer(
        ["--from-inferences", "--only-verified", "--replay-ratio", "1.0", "--map50-tolerance", "-1", *FAST],
        env,
    )
    assert code == 0, err  # a refused promotion is a successful run
    assert report["selection"]["new"] == 8 and report["selection"]["replayed"] == 8
    assert report["data"]["replayed_by_class"].get("Plastic", 0) >= 1, report["data"]["replayed_by_class"]
    replayed = set(psql(dsn, "SELECT sample_id FROM training_samples WHERE replayed").split())
    assert replayed & set(rare), "stratified replay must include the rare class"
    promo = report["promotion"]
    assert promo["promoted"] is False and "below the deployed model's" in promo["reason"]
    assert report["champion"]["version"] == "v1" and "map50" in report["champion"]
    assert report["model"]["version"] == "v2"
    assert models.get_blob("models/latest/yolov8n_waste.pt").metadata["version"] == "v1"
    assert psql(dsn, "SELECT version FROM latest_model") == "1"
    assert psql(dsn, "SELECT name, promoted FROM model_versions ORDER BY number") == "v1|t\nv2|f"
    meta = json.loads(models.blob("models/v2/metadata.json").download_as_bytes())
    assert meta["promotion_decision"]["promote"] is False and meta["base_version"] == "v1"
    assert meta["metrics"]["per_class"] is not None and meta["metrics"]["confusion"] is not None
    assert models.get_blob("models/v2/map50_per_class.png").size > 1000

    # A person overrides the gate; the promotions log says who and why.
    code, report, err = run_trainer(
        ["--from-inferences", "--only-verified", "--all-time", "--promotion", "force", *FAST], env
    )
    assert code == 0, err
    assert report["promotion"]["promoted"] is True
    log = psql(dsn, "SELECT version, previous, actor, reason FROM promotions ORDER BY id").splitlines()
    assert log[0].startswith("1||cli|first version") and log[1].startswith("3|1|cli|promotion forced")

    table = subprocess.run(
        [sys.executable, "-m", "trainer", "versions"],
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert table[0].split()[:3] == ["VERSION", "BASE", "mAP50"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["v1"][-3] == "yes" and rows["v2"][-3] == "no" and rows["v3"][-3] == "latest"
