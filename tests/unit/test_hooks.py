"""The training hooks cross into Ultralytics' DDP workers by pickle and by environment, and act on rank 0 only."""

from __future__ import annotations

import pickle
import threading
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="module")
def hooks_module(tmp_path_factory):
    from trainer import yolo

    yolo.prepare_offline(tmp_path_factory.mktemp("ultralytics"))
    from trainer import hooks

    return hooks


def test_hooks_pickle_without_their_clients_and_the_config_survives_the_environment(hooks_module):
    config = hooks_module.HookConfig(outcome_path="/tmp/o.json", run_name="r", checkpoint_object="c/last.pt")
    assert hooks_module.HookConfig.from_json(config.to_json()) == config
    h = hooks_module.TrainHooks(config)
    h._store = threading.Lock()  # stands for a client holding sockets and locks: not picklable
    h.best_map50 = 0.3
    copy = pickle.loads(pickle.dumps(h))
    assert copy.config == config and copy.best_map50 == 0.3 and copy._store is None


def test_only_rank_zero_reports(hooks_module, monkeypatch, tmp_path):
    calls = []
    h = hooks_module.TrainHooks(hooks_module.HookConfig(outcome_path=str(tmp_path / "o.json")))
    h._reporter = SimpleNamespace(progress=lambda *a: calls.append(a))
    tr = SimpleNamespace(epoch=0, epochs=3, stop=False, metrics={"metrics/mAP50(B)": 0.2}, world_size=2,
                         last=str(tmp_path / "last.pt"))  # fmt: skip
    monkeypatch.setenv("RANK", "1")
    h.on_fit_epoch_end(tr)
    assert calls == [] and h.epoch == 0
    monkeypatch.setenv("RANK", "0")
    h.on_fit_epoch_end(tr)
    assert calls == [("Training", 1, 3, 0.2)]
    tr.epoch = 3  # Ultralytics' extra call after validating best.pt is not an epoch
    h.on_fit_epoch_end(tr)
    assert len(calls) == 1


def test_rank_zero_uploads_the_checkpoint_and_beats_the_runs_heart_other_ranks_do_not(
    hooks_module, monkeypatch, tmp_path
):
    from trainer.db import connect, migrate
    from trainer.registry import Registry

    monkeypatch.delenv("DATABASE_URL", raising=False)  # the local SQLite registry under local_dir
    db = connect(None, tmp_path)
    migrate(db)
    registry = Registry(db)
    registry.start_run("uid-1", "dataset", "wd", "nightly")
    db.execute("UPDATE training_runs SET heartbeat_at = NULL WHERE id = 'uid-1'")
    config = hooks_module.HookConfig(
        outcome_path=str(tmp_path / "o.json"),
        local_dir=str(tmp_path),
        checkpoint_object="checkpoints/uid-1/last.pt",
        heartbeat_run_id="uid-1",
    )
    assert "postgresql" not in config.to_json()  # the database stays in the environment, not in TRAINER_HOOKS
    last = tmp_path / "last.pt"
    last.write_bytes(b"weights")
    tr = SimpleNamespace(epoch=0, epochs=3, stop=False, metrics={}, world_size=2, last=str(last))
    h = pickle.loads(pickle.dumps(hooks_module.TrainHooks(config)))  # as a DDP worker receives it
    h._reporter = SimpleNamespace(progress=lambda *a: None)
    uploaded = tmp_path / "models-bucket" / "checkpoints" / "uid-1" / "last.pt"

    monkeypatch.setenv("RANK", "1")
    h.on_fit_epoch_end(tr)
    assert not uploaded.exists() and registry.runs_by_id(["uid-1"])["uid-1"].heartbeat_at is None
    monkeypatch.setenv("RANK", "0")
    h.on_fit_epoch_end(tr)
    assert uploaded.read_bytes() == b"weights"
    assert registry.runs_by_id(["uid-1"])["uid-1"].heartbeat_at is not None
    db.close()
    h._registry.db.close()
