"""What a starting trainer tidies: rows of runs that ended without their trainer, checkpoints nobody resumes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trainer.registry import RunRow
from trainer.sweep import (
    MAX_AGE,
    RETRY_GRACE,
    ClusterRun,
    checkpoint_folders,
    ended_runs,
    stale_checkpoints,
)

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


def row(id_: str, ns: str | None = "wd", name: str | None = "run", status: str = "running", **kw) -> RunRow:
    fields = {
        "reason": None,
        "started_at": NOW - timedelta(hours=1),
        "heartbeat_at": None,
        "finished_at": None,
    }
    return RunRow(id=id_, status=status, namespace=ns, name=name, **(fields | kw))


def test_rows_of_runs_deleted_or_failed_in_the_cluster_are_ended_with_the_clusters_reason():
    rows = [
        row("gone", name="deleted-run"),
        row("failed", name="oom-run"),
        row("alive", name="training-run"),
        row("suspended", name="later"),
        row("other-ns", ns="elsewhere", name="x"),
    ]
    cluster = [
        ClusterRun("failed", "oom-run", "Failed", "OOMKilled", "the trainer ran out of memory"),
        ClusterRun("alive", "training-run", "Running"),
        ClusterRun("suspended", "later", "Suspended", "Suspended"),
        # the same name created again: another uid, so the old row is still the deleted run's
        ClusterRun("new-uid", "deleted-run", "Running"),
    ]
    out = {e.run_id: e for e in ended_runs(rows, cluster, "wd", NOW)}
    assert set(out) == {"gone", "failed"}
    assert out["gone"].reason == "RunDeleted" and "wd/deleted-run" in out["gone"].message
    assert out["failed"].reason == "OOMKilled" and "ran out of memory" in out["failed"].message


def test_rows_without_a_sign_of_life_for_longer_than_any_run_may_last_are_abandoned_anywhere():
    old = NOW - MAX_AGE - timedelta(minutes=1)
    rows = [
        row("stale", ns="elsewhere", started_at=old),
        row("beating", ns="elsewhere", started_at=old, heartbeat_at=NOW - timedelta(hours=2)),
        row("local", ns=None, name=None, started_at=old),
    ]
    out = {e.run_id: e for e in ended_runs(rows, None, "wd", NOW)}
    assert set(out) == {"stale", "local"}
    assert out["stale"].reason == "Abandoned" and "more than 8 days" in out["stale"].message


def test_rows_written_before_uid_keys_are_matched_by_name_and_the_current_run_is_left_alone():
    rows = [row("wd/old-run", ns=None, name=None), row("wd/still", ns=None, name=None), row("me")]
    cluster = [ClusterRun("u-2", "still", "Running")]
    out = [e.run_id for e in ended_runs(rows, cluster, "wd", NOW, current="me")]
    assert out == ["wd/old-run"]


def test_without_the_cluster_only_the_age_rule_applies():
    assert ended_runs([row("gone")], None, "wd", NOW) == []
    assert ended_runs([row("gone")], [], None, NOW) == []


def test_checkpoint_folders_group_objects_and_keep_the_newest_write():
    names = [
        ("checkpoints/u-1/last.pt", NOW - timedelta(days=2)),
        ("checkpoints/u-1/extra.bin", NOW - timedelta(days=1)),
        ("checkpoints/stray.pt", NOW),  # not in a folder: no run's
        ("checkpoints/u-2/last.pt", None),
    ]
    assert checkpoint_folders(names) == {"u-1": NOW - timedelta(days=1), "u-2": None}


def test_checkpoints_of_finished_ended_or_forgotten_runs_are_stale_and_a_retry_window_is_kept():
    recent, old = NOW - timedelta(hours=3), NOW - MAX_AGE - timedelta(hours=1)
    folders = {
        "succeeded": recent,
        "failed-long-ago": recent,
        "failed-just-now": recent,  # its Job may retry and resume in a minute
        "running": recent,
        "ended-by-sweep": recent,
        "legacy-ns_name-1a2b3c4d": old,  # a name-keyed folder from before uid keys
        "me": old,
        "unknown-recent": recent,
    }
    rows = {
        "succeeded": row("succeeded", status="succeeded"),
        "failed-long-ago": row("failed-long-ago", status="failed", finished_at=NOW - RETRY_GRACE),
        "failed-just-now": row("failed-just-now", status="failed", finished_at=NOW - timedelta(minutes=5)),
        "running": row("running"),
    }
    stale = stale_checkpoints(folders, rows, NOW, current="me", ended=["ended-by-sweep"])
    assert stale == sorted(["succeeded", "failed-long-ago", "ended-by-sweep", "legacy-ns_name-1a2b3c4d"])
