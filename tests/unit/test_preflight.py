"""Preflight's pure part: which checks a run needs, and which devices a --device value asks for."""

from __future__ import annotations

import pytest

from trainer.preflight import cuda_indices, required_checks, resolve_base_model
from trainer.settings import Settings


@pytest.mark.parametrize(
    "device, wanted",
    [
        ("auto", None),
        ("cpu", None),
        ("mps", None),
        ("cuda", [0]),
        ("cuda:1", [1]),
        ("0", [0]),
        ("0,1", [0, 1]),
        ("3,1,3", [1, 3]),
        ("CUDA", [0]),
    ],
)
def test_cuda_indices_of_each_device_value(device, wanted):
    assert cuda_indices(device) == wanted


def test_an_inference_run_checks_the_table_both_buckets_and_the_base_model():
    s = Settings(from_inferences=True)
    assert required_checks(s) == ["inferences_table", "images_bucket", "models_bucket", "base_model"]


def test_a_dataset_run_checks_its_dataset_instead_of_the_inference_api():
    assert required_checks(Settings(dataset="gs://d/x")) == ["dataset", "models_bucket", "base_model"]


@pytest.mark.parametrize("device", ["cuda", "0", "0,1", "cuda:0"])
def test_a_cuda_request_adds_the_device_check_last(device):
    assert required_checks(Settings(from_inferences=True, device=device))[-1] == "device"


@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_auto_and_cpu_need_no_device_check(device):
    assert "device" not in required_checks(Settings(from_inferences=True, device=device))


def test_a_base_model_is_found_offline_where_the_base_model_step_looks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        resolve_base_model("yolov8n.yaml", None, tmp_path) == "yolov8n.yaml"
    )  # Ultralytics ships yolov8.yaml
    assert resolve_base_model("yolov99z.yaml", None, tmp_path) is None
    assert resolve_base_model("yolov8n.pt", None, tmp_path) is None
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "yolov8n.pt").write_bytes(b"weights")
    assert resolve_base_model("yolov8n.pt", None, tmp_path) == str(tmp_path / "weights" / "yolov8n.pt")


def test_the_image_s_baked_weights_come_first(tmp_path, monkeypatch):
    """TRAINER_WEIGHTS_DIR (the trainer image's /opt/weights) is where a Job's first run finds yolov8n.pt."""
    monkeypatch.chdir(tmp_path)
    baked = tmp_path / "opt-weights"
    baked.mkdir()
    (baked / "yolov8n.pt").write_bytes(b"weights")
    assert resolve_base_model("yolov8n.pt", baked, tmp_path / "local") == str(baked / "yolov8n.pt")
    assert resolve_base_model("yolov8s.pt", baked, tmp_path / "local") is None
