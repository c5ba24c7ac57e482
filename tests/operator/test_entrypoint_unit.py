"""`python -m waste_operator --help`: usage and every setting it reads, without connecting anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from waste_operator.config import ENV_HELP, OperatorConfig

ROOT = Path(__file__).resolve().parents[2]


class Recording(dict):
    """An environment that remembers every name looked up in it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def test_the_help_lists_exactly_the_variables_the_configuration_reads():
    env = Recording(TRAINER_IMAGE="i", GCS_MODELS_BUCKET="m", GCS_IMAGES_BUCKET="i", GCS_DATASETS_BUCKET="d")
    OperatorConfig.from_env(env)
    assert env.read == {name for name, _, _ in ENV_HELP}


def test_help_prints_usage_and_settings_and_exits_0_without_connecting(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "TRAINER_IMAGE")}
    env |= {
        "PYTHONPATH": f"{ROOT}:{ROOT / 'operator'}",
        "KUBECONFIG": str(tmp_path / "absent"),
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "waste_operator", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m waste_operator")
    for name, _, _ in ENV_HELP:
        assert name in result.stdout
    assert "TRAINER_IMAGE" in result.stdout and "(required)" in result.stdout
    assert "(default: waste-detection)" in result.stdout and "KUBECONFIG" in result.stdout
    assert result.stderr == ""


def test_an_unknown_flag_is_a_usage_error():
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'operator'}"}
    result = subprocess.run(
        [sys.executable, "-m", "waste_operator", "--bogus"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr
