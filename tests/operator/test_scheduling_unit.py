"""The schedules' clock hook and the counter without a database: small pieces of scheduling.py/samples.py."""

from __future__ import annotations

from datetime import UTC, datetime

from waste_operator.samples import SampleCounter
from waste_operator.scheduling import clock_from_env


def test_the_clock_is_real_unless_a_test_points_it_at_a_file(tmp_path):
    before = datetime.now(UTC)
    assert before <= clock_from_env({})() <= datetime.now(UTC)
    path = tmp_path / "now"
    path.write_text("2026-12-01T03:00:01Z")
    clock = clock_from_env({"WD_OPERATOR_CLOCK_FILE": str(path)})
    assert clock() == datetime(2026, 12, 1, 3, 0, 1, tzinfo=UTC)
    path.write_text("2026-12-02T03:00:01.5Z")
    assert clock() == datetime(2026, 12, 2, 3, 0, 1, 500000, tzinfo=UTC)


def test_a_counter_without_a_url_says_what_to_do():
    counter = SampleCounter(None)
    try:
        result = counter.count(1, 200)
        assert result.new is None and result.problem == "DatabaseNotConfigured"
        assert "DATABASE_URL" in result.detail
    finally:
        counter.close()


def test_an_unreachable_database_is_a_status_not_an_exception_and_hides_the_password():
    counter = SampleCounter("postgresql://reader:s3cret@127.0.0.1:9/waste", timeout=2)
    try:
        result = counter.count(1, 200)
        assert result.problem == "DatabaseUnavailable" and result.new is None
        assert "s3cret" not in result.detail
    finally:
        counter.close()


def test_a_malformed_url_never_echoes_its_text():
    counter = SampleCounter("postgresql://reader:s3cret@[bad/waste", timeout=2)
    try:
        result = counter.count(1, 200)
        assert result.problem is not None and "s3cret" not in result.detail
    finally:
        counter.close()


def test_the_operator_imports_the_shared_rule_without_the_trainers_heavy_dependencies():
    import subprocess
    import sys

    code = (
        "import sys, waste_operator.main, waste_operator.samples, trainer.feedback; "
        "heavy = [m for m in ('torch', 'ultralytics', 'google.cloud.storage', 'PIL') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
