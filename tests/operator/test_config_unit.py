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
