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
