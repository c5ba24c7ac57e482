"""Several GPUs: Ultralytics' DDP launch through the product's trainer class, two ranks on CPU (gloo).

What runs is the real path a multi-GPU pod takes (trainer.yolo.train -> Ultralytics' generated DDP
script -> torch.distributed.run -> two worker processes rebuilding the product's trainer from a pickle),
with the three CUDA-only details swapped for CPU ones in tests/fixtures/gloo_trainer.py. What it cannot
show: NCCL, one CUDA device per rank, and the speed of either.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.fixtures.data import write_yolo_folder

pytestmark = pytest.mark.slow


def _dataset(root: Path) -> Path:
    from trainer import CLASS_NAMES

    write_yolo_folder(root, 20)  # 16 train, 4 val
    data = root / "data.yaml"
    data.write_text(
        yaml.safe_dump(
            {"path": str(root), "train": "images/train", "val": "images/val", "names": list(CLASS_NAMES)}
        )
    )
    return data


@pytest.mark.parametrize("carried", [True, False], ids=["callbacks-pickled", "callbacks-not-carried"])
def test_two_ddp_ranks_train_and_only_rank0_reports_uploads_and_writes_the_outcome(
    tmp_path, monkeypatch, capfd, carried
):
    """Ultralytics 8.4 pickles the callbacks into its DDP state; older releases did not. Either way the
    hooks run in rank 0 only: one progress line and one checkpoint upload per epoch, and the outcome the
    launching process reads comes from the rank that validated."""
    from trainer import yolo
    from trainer.settings import Settings

    yolo.prepare_offline(tmp_path / "ultralytics")
    from ultralytics.utils import USER_CONFIG_DIR, callbacks, dist

    from tests.fixtures.gloo_trainer import RANKS_DIR_ENV, WORLD_ENV, GlooCpuTrainer
    from trainer.hooks import HookConfig

    monkeypatch.setenv(WORLD_ENV, "2")
    ranks_dir = tmp_path / "ranks"
    ranks_dir.mkdir()
    monkeypatch.setenv(RANKS_DIR_ENV, str(ranks_dir))
    launched: list[str] = []
    real_generate = dist.generate_ddp_file

    def generate(trainer):
        if carried:
            file = real_generate(trainer)
        else:  # what Ultralytics <= 8.3 did: the worker starts from the default callbacks
            own = trainer.callbacks
            trainer.callbacks = callbacks.get_default_callbacks()
            try:
                file = real_generate(trainer)
            finally:
                trainer.callbacks = own
        launched.append(Path(file).read_text())
        return file

    monkeypatch.setattr(dist, "generate_ddp_file", generate)
    data = _dataset(tmp_path / "data")
    settings = Settings(epochs=2, batch_size=8, img_size=64, workers=0, device="cpu", seed=0)
    # The run's registry row (local SQLite: no DATABASE_URL), whose heartbeat rank 0 refreshes at each checkpoint.
    from trainer.db import connect, migrate
    from trainer.registry import Registry

    monkeypatch.delenv("DATABASE_URL", raising=False)
    db = connect(None, tmp_path / "local")
    migrate(db)
    registry = Registry(db)
    registry.start_run("ddp-run", "dataset")
    db.execute("UPDATE training_runs SET heartbeat_at = NULL WHERE id = 'ddp-run'")
    hooks = HookConfig(
        outcome_path=str(tmp_path / "outcome.json"),
        local_dir=str(tmp_path / "local"),
        checkpoint_object="checkpoints/ddp-run/last.pt",
        heartbeat_run_id="ddp-run",
    )
    outcome = yolo.train(
        yolo.load_model("yolov8n.yaml"),
        data_yaml=data,
        project=tmp_path / "runs",
        settings=settings,
        device="cpu",
        resume=False,
        hooks=hooks,
        trainer_cls=GlooCpuTrainer,
    )

    # Ultralytics launched its generated script once, which rebuilt the product's class in the workers.
    assert len(launched) == 1 and 'state["trainer"](cfg=cfg' in launched[0]
    assert not list((USER_CONFIG_DIR / "DDP").glob("_temp_*")), "the DDP temp files were left behind"
    # Two ranks, each on its own half of the 16 training images (DistributedSampler).
    per_rank = sorted(
        (json.loads(p.read_text()) for p in ranks_dir.glob("rank*.json")), key=lambda r: r["rank"]
    )
    assert [(r["rank"], r["samples"], r["dataset"]) for r in per_rank] == [(0, 8, 16), (1, 8, 16)]

    assert outcome.epochs_completed == 2 and not outcome.early_stopped
    assert outcome.sizing["processes"] == 2
    assert outcome.sizing["batch"] == 8, "batchSize is the total over all ranks"
    assert set(outcome.metrics) >= {"map50", "map50_95", "precision", "recall", "per_class"}
    assert outcome.best.is_file()

    epoch_lines = [line for line in capfd.readouterr().err.splitlines() if "event=epoch " in line]
    assert len(epoch_lines) == 2, epoch_lines  # rank 1 reported nothing
    assert all("rank=0 world_size=2" in line for line in epoch_lines), epoch_lines
    checkpoint = tmp_path / "local" / "models-bucket" / "checkpoints" / "ddp-run" / "last.pt"
    assert checkpoint.is_file(), "rank 0 did not upload the epoch-1 checkpoint"
    assert registry.runs_by_id(["ddp-run"])["ddp-run"].heartbeat_at is not None, "no heartbeat from rank 0"
    db.close()
