"""OperatorConfig.from_env: one typed settings object, clear errors."""

from __future__ import annotations

import pytest
from waste_operator.config import ConfigError, OperatorConfig

BASE = {
    "TRAINER_IMAGE": "img:1",
    "GCS_MODELS_BUCKET": "m",
    "GCS_IMAGES_BUCKET": "i",
    "GCS_DATASETS_BUCKET": "d",
}


def test_defaults_and_overrides():
    cfg = OperatorConfig.from_env(BASE)
    assert cfg.namespaces == ("waste-detection",)
    assert cfg.db_secret_name == "waste-detection-db" and cfg.db_secret_key == "database-url"
    assert cfg.trainer_service_account == "waste-trainer"
    cfg = OperatorConfig.from_env(BASE | {"WATCH_NAMESPACES": "a, b", "STUCK_SECONDS": "5"})
    assert cfg.namespaces == ("a", "b") and cfg.stuck_seconds == 5.0


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({k: v for k, v in BASE.items() if k != "TRAINER_IMAGE"}, "TRAINER_IMAGE"),
        (BASE | {"STUCK_SECONDS": "soon"}, "STUCK_SECONDS"),
        (BASE | {"RESYNC_SECONDS": "-1"}, "RESYNC_SECONDS"),
        (BASE | {"TRAINER_CACHE_MAX_GB": "lots"}, "TRAINER_CACHE_MAX_GB"),
        (BASE | {"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        (BASE | {"RESTART_ATTEMPTS": "0"}, "RESTART_ATTEMPTS"),
    ],
)
def test_bad_settings_name_the_variable(env, needle):
    with pytest.raises(ConfigError, match=needle):
        OperatorConfig.from_env(env)


def test_the_schedules_database_url_is_read_but_never_shown():
    url = "postgresql://reader:s3cret@db:5432/waste"
    cfg = OperatorConfig.from_env(BASE | {"DATABASE_URL": url, "SCHEDULE_RESYNC_SECONDS": "2"})
    assert cfg.database_url == url and cfg.schedule_seconds == 2.0
    assert "s3cret" not in repr(cfg)
    assert OperatorConfig.from_env(BASE).database_url is None
    with pytest.raises(ConfigError, match="SCHEDULE_RESYNC_SECONDS"):
        OperatorConfig.from_env(BASE | {"SCHEDULE_RESYNC_SECONDS": "0"})


def test_the_image_allow_list_is_the_configured_image_unless_prefixes_are_given():
    from waste_operator.config import image_allowed

    cfg = OperatorConfig.from_env(BASE)
    assert image_allowed(None, cfg) and image_allowed("img:1", cfg)
    assert not image_allowed("img:2", cfg) and not image_allowed("evil.example/x:1", cfg)
    cfg = OperatorConfig.from_env(BASE | {"TRAINER_IMAGE_PREFIXES": "registry.example/trainer:, ghcr.io/us/"})
    assert cfg.image_prefixes == ("registry.example/trainer:", "ghcr.io/us/")
    assert image_allowed("ghcr.io/us/trainer:9", cfg) and not image_allowed("ghcr.io/them/trainer:9", cfg)


def test_a_taken_liveness_port_is_found_before_kopf_starts():
    import socket

    from waste_operator.__main__ import liveness_problem

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        problem = liveness_problem(f"http://127.0.0.1:{port}/healthz")
    assert problem and "another operator instance on this port?" in problem
    assert liveness_problem(f"http://127.0.0.1:{port}/healthz") is None  # free again
    assert "must be http://HOST:PORT/PATH" in liveness_problem("tcp://0.0.0.0:80")
