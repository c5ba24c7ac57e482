"""TrainingSchedule decisions with a fake clock: ticks, thresholds, Forbid/Replace, suspend, deadlines,
history limits, crash recovery, and one Event per change of reason."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from waste_operator.schedule import (
    SCHEDULE_LABEL,
    SCHEDULED_AT,
    SampleCount,
    counts_samples,
    decide,
    name_taken,
    parse_duration,
    run_name,
)

CREATED = datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC)
TEMPLATE = {"epochs": 2, "resources": {"gpus": 0}, "source": {"fromInferences": {"onlyVerified": True}}}
DNS = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, second, tzinfo=UTC)


def schedule(
    spec: dict | None = None, status: dict | None = None, generation: int = 1, name: str = "nightly"
):
    return {
        "apiVersion": "training.wastedetection.io/v1alpha1",
        "kind": "TrainingSchedule",
        "metadata": {
            "name": name,
            "namespace": "waste-detection",
            "uid": "sched-uid",
            "generation": generation,
            "creationTimestamp": "2026-12-01T00:00:05Z",
            "labels": {"app.kubernetes.io/instance": "argocd-app"},
        },
        "spec": {"schedule": "0 3 * * *", "minNewSamples": 200, "template": TEMPLATE} | (spec or {}),
        "status": status or {},
    }


def run_of(sched: dict, tick: datetime, phase: str | None, uid: str = "sched-uid") -> dict:
    name = run_name(sched["metadata"]["name"], tick)
    return {
        "metadata": {
            "name": name,
            "annotations": {SCHEDULED_AT: tick.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "creationTimestamp": tick.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ownerReferences": [{"uid": uid, "kind": "TrainingSchedule", "name": sched["metadata"]["name"]}],
        },
        "status": {"phase": phase} if phase else {},
    }


def count(new: int, limit: int = 200) -> SampleCount:
    return SampleCount(new=min(new, limit), limit=limit, cutoff=datetime(2026, 11, 30, tzinfo=UTC))


def applied(sched: dict, decision) -> dict:
    """The schedule as the next pass reads it: the decision's status patch merged in."""
    return sched | {"status": (sched.get("status") or {}) | decision.status}


def reasons(decision) -> list[str]:
    return [reason for _, reason, _ in decision.events]


def test_before_the_first_tick_it_waits_and_says_when():
    d = decide(schedule(), [], at(1, 2), count(0))
    assert d.create is None
    assert d.status["reason"] == "Waiting" and d.status["nextScheduleTime"] == "2026-12-01T03:00:00Z"
    assert d.status["pending"] == "0/200"
    assert reasons(d) == ["Waiting"]


def test_a_tick_with_enough_new_samples_creates_one_owned_labelled_run():
    sched = schedule()
    d = decide(sched, [], at(1, 3, 0, 20), count(250))
    run = d.create
    assert run["metadata"]["name"] == "nightly-202612010300"
    assert run["spec"] == TEMPLATE and run["spec"] is not TEMPLATE
    assert run["metadata"]["labels"][SCHEDULE_LABEL] == "nightly"
    assert "app.kubernetes.io/instance" not in run["metadata"]["labels"]  # ArgoCD would prune it
    assert run["metadata"]["annotations"][SCHEDULED_AT] == "2026-12-01T03:00:00Z"
    (owner,) = run["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "training.wastedetection.io/v1alpha1",
        "kind": "TrainingSchedule",
        "name": "nightly",
        "uid": "sched-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert d.status["lastTickTime"] == d.status["lastScheduleTime"] == "2026-12-01T03:00:00Z"
    assert d.status["reason"] == "Scheduled" and "at least 200 new samples" in d.status["message"]
    assert d.status["lastRun"]["text"] == "nightly-202612010300 Pending"
    assert d.status["active"] == ["nightly-202612010300"]
    assert d.status["pending"] == "200/200" and d.status["nextScheduleTime"] == "2026-12-02T03:00:00Z"
    assert d.events == [("Normal", "Scheduled", d.status["message"])]


def test_too_few_samples_skip_the_tick_and_records_inserted_before_the_next_tick_fire_it():
    sched = schedule()
    first = decide(sched, [], at(1, 3, 0, 20), count(37))
    assert first.create is None
    assert first.status["reason"] == "NotEnoughSamples"
    assert first.status["message"].startswith("37 of 200 new samples since the deployed model's data cutoff")
    assert first.status["pending"] == "37/200" and first.status["lastTickTime"] == "2026-12-01T03:00:00Z"
    assert reasons(first) == ["NotEnoughSamples"]
    sched = applied(sched, first)
    # Between ticks the count moves on, without an Event; a second short tick is no new Event either.
    between = decide(sched, [], at(1, 12), count(90))
    assert between.create is None and between.events == [] and between.status["pending"] == "90/200"
    sched = applied(sched, between)
    second = decide(sched, [], at(2, 3, 0, 1), count(150))
    assert second.create is None and second.events == [] and "150 of 200" in second.status["message"]
    sched = applied(sched, second)
    third = decide(sched, [], at(3, 3, 0, 1), count(200))
    assert third.create["metadata"]["name"] == "nightly-202612030300"
    assert reasons(third) == ["Scheduled"]


def test_forbid_holds_the_tick_while_a_run_is_active_then_runs_it_late():
    sched = schedule(status={"lastTickTime": "2026-12-01T03:00:00Z", "reason": "Scheduled"})
    busy = run_of(sched, at(1, 3), "Running")
    held = decide(sched, [busy], at(2, 3, 0, 10), count(500))
    assert held.create is None
    assert (
        held.status["reason"] == "RunActive" and "nightly-202612010300 is Running" in held.status["message"]
    )
    assert "lastTickTime" not in held.status  # held, not skipped
    sched = applied(sched, held)
    assert decide(sched, [busy], at(2, 4), count(500)).events == []  # still held: no second Event
    done = run_of(sched, at(1, 3), "Succeeded")
    late = decide(sched, [done], at(2, 5), count(500))
    assert late.create["metadata"]["name"] == "nightly-202612020300"


def test_a_held_tick_past_the_starting_deadline_is_skipped():
    sched = schedule({"startingDeadlineSeconds": 600}, {"lastTickTime": "2026-12-01T03:00:00Z"})
    done = run_of(sched, at(1, 3), "Failed")
    d = decide(sched, [done], at(2, 3, 11), count(500))
    assert d.create is None and d.status["reason"] == "MissedStartingDeadline"
    assert d.status["lastTickTime"] == "2026-12-02T03:00:00Z"
    assert d.events[0][0] == "Warning"


def test_replace_deletes_the_active_run_and_creates_the_new_one():
    sched = schedule({"concurrencyPolicy": "Replace"}, {"lastTickTime": "2026-12-01T03:00:00Z"})
    busy = run_of(sched, at(1, 3), "Running")
    d = decide(sched, [busy], at(2, 3, 0, 5), count(500))
    assert d.delete == ["nightly-202612010300"]
    assert d.create["metadata"]["name"] == "nightly-202612020300"
    assert (
        d.status["active"] == ["nightly-202612020300"]
        and "replacing nightly-202612010300" in d.status["message"]
    )


def test_missed_ticks_while_the_operator_was_down_make_one_catch_up_run():
    sched = schedule(status={"lastTickTime": "2026-12-01T03:00:00Z"})
    d = decide(sched, [], at(5, 10), count(500))
    assert d.create["metadata"]["name"] == "nightly-202612050300"  # the latest missed tick only
    sched = applied(sched, d)
    assert decide(sched, [run_of(sched, at(5, 3), None)], at(5, 10, 1), count(500)).create is None


def test_a_missed_tick_older_than_the_starting_deadline_is_not_run():
    sched = schedule({"startingDeadlineSeconds": 3600}, {"lastTickTime": "2026-12-01T03:00:00Z"})
    d = decide(sched, [], at(5, 10), count(500))
    assert d.create is None and d.status["reason"] == "MissedStartingDeadline"
    assert "past startingDeadlineSeconds=3600" in d.status["message"]


def test_a_crash_between_creating_the_run_and_writing_the_status_creates_nothing_twice():
    sched = schedule(status={"lastTickTime": "2026-12-01T03:00:00Z"})
    first = decide(sched, [], at(2, 3, 0, 5), count(500))
    assert first.create is not None
    # The run exists, the status write never happened: the next pass (after a restart) finds the run.
    made = run_of(sched, at(2, 3), None)
    again = decide(sched, [made], at(2, 3, 1), count(500))
    assert again.create is None
    assert again.status["lastTickTime"] == again.status["lastScheduleTime"] == "2026-12-02T03:00:00Z"
    assert again.status["reason"] == "Scheduled"
    # Forbid does not hold the tick on its own run.
    assert again.status["active"] == ["nightly-202612020300"]


def test_suspend_skips_ticks_and_resuming_does_not_catch_up():
    sched = schedule({"suspend": True}, {"lastTickTime": "2026-12-01T03:00:00Z", "observedGeneration": 2}, 2)
    assert not counts_samples(sched)
    d = decide(sched, [], at(3, 4), None)
    assert d.create is None and d.status["reason"] == "Suspended"
    assert d.status["lastTickTime"] == "2026-12-03T03:00:00Z"
    sched = applied(sched, d)
    resumed = schedule({"suspend": False}, sched["status"], generation=3)
    r = decide(resumed, [], at(4, 12), count(500))
    assert r.create is None and r.status["lastTickTime"] == "2026-12-04T12:00:00Z"
    nxt = decide(applied(resumed, r), [], at(5, 3, 0, 1), count(500))
    assert nxt.create["metadata"]["name"] == "nightly-202612050300"


def test_history_limits_prune_the_oldest_finished_runs_only():
    sched = schedule(
        {"successfulRunsHistoryLimit": 2, "failedRunsHistoryLimit": 0},
        {"lastTickTime": "2026-12-09T03:00:00Z"},
    )
    runs = [run_of(sched, at(day, 3), "Succeeded") for day in (1, 2, 3, 4)]
    runs += [run_of(sched, at(5, 3), "Failed"), run_of(sched, at(9, 3), "Running")]
    d = decide(sched, runs, at(9, 4), count(0))
    assert d.delete == ["nightly-202612010300", "nightly-202612020300", "nightly-202612050300"]
    assert d.status["lastRun"]["text"] == "nightly-202612090300 Running"


def test_max_interval_fires_with_anything_new_but_not_with_nothing():
    spec = {"maxInterval": "2d"}
    sched = schedule(
        spec, {"lastTickTime": "2026-12-02T03:00:00Z", "lastScheduleTime": "2026-12-01T03:00:00Z"}
    )
    nothing = decide(sched, [], at(3, 3, 0, 1), count(0))
    assert nothing.create is None and nothing.status["reason"] == "NotEnoughSamples"
    some = decide(sched, [], at(3, 3, 0, 1), count(5))
    assert some.create is not None and "maxInterval 2d reached with 5 new samples" in some.status["message"]
    early = schedule(
        spec, {"lastTickTime": "2026-12-02T03:00:00Z", "lastScheduleTime": "2026-12-02T03:00:00Z"}
    )
    assert decide(early, [], at(3, 3, 0, 1), count(5)).create is None


def test_a_database_that_is_down_holds_the_tick_creates_nothing_and_says_so_once():
    sched = schedule(status={"lastTickTime": "2026-12-01T03:00:00Z", "reason": "NotEnoughSamples"})
    down = SampleCount(problem="DatabaseUnavailable", detail="connection refused", limit=200)
    d = decide(sched, [], at(2, 3, 0, 1), down)
    assert d.create is None and "lastTickTime" not in d.status
    assert d.status["reason"] == "DatabaseUnavailable" and "connection refused" in d.status["message"]
    assert d.status["pending"] == "?/200"
    (ready,) = d.status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "DatabaseUnavailable")
    assert d.events == [("Warning", "DatabaseUnavailable", d.status["message"])]
    sched = applied(sched, d)
    assert decide(sched, [], at(2, 3, 5), down).events == []  # still down: no storm
    back = decide(sched, [], at(2, 3, 10), count(300))
    assert back.create["metadata"]["name"] == "nightly-202612020300"  # the held tick runs
    (ready,) = back.status["conditions"]
    assert ready["status"] == "True"
    assert reasons(back) == ["Scheduled", "Ready"]


def test_a_database_down_between_ticks_changes_the_condition_with_one_event():
    sched = schedule(status={"lastTickTime": "2026-12-01T03:00:00Z", "reason": "NotEnoughSamples"})
    down = SampleCount(problem="DatabaseUnavailable", detail="timeout", limit=200)
    d = decide(sched, [], at(1, 12), down)
    assert d.status.get("reason", "NotEnoughSamples") == "NotEnoughSamples"
    assert d.events == [("Warning", "DatabaseUnavailable", "timeout")]


def test_an_invalid_schedule_is_reported_and_creates_nothing():
    d = decide(schedule({"schedule": "0 3 * *"}), [], at(2, 3), count(500))
    assert d.create is None and d.status["reason"] == "InvalidSchedule"
    assert "has 4 fields" in d.status["message"] and d.status["nextScheduleTime"] is None
    assert d.events == [("Warning", "InvalidSchedule", d.status["message"])]
    bad_zone = decide(schedule({"timeZone": "Moon/Base"}), [], at(2, 3), count(500))
    assert "Moon/Base" in bad_zone.status["message"]


def test_a_clock_only_schedule_reads_no_database():
    sched = schedule({"minNewSamples": 0})
    assert not counts_samples(sched)
    d = decide(sched, [], at(1, 3, 0, 1), None)
    assert d.create is not None and d.status["pending"] == "-"
    assert "on the clock" in d.create["metadata"]["annotations"]["training.wastedetection.io/trigger"]


def test_a_changed_spec_does_not_catch_up_ticks_due_before_the_change():
    sched = schedule(
        {"schedule": "0 * * * *"}, {"lastTickTime": "2026-12-01T03:00:00Z", "observedGeneration": 1}, 2
    )
    d = decide(sched, [], at(1, 10, 30), count(500))
    assert d.create is None and d.status["lastTickTime"] == "2026-12-01T10:30:00Z"
    nxt = decide(applied(sched, d), [], at(1, 11, 0, 1), count(500))
    assert nxt.create["metadata"]["name"] == "nightly-202612011100"


def test_runs_owned_by_another_schedule_of_the_same_name_are_not_ours():
    sched = schedule(status={"lastTickTime": "2026-12-01T03:00:00Z"})
    stranger = run_of(sched, at(1, 3), "Running", uid="old-uid")
    d = decide(sched, [stranger], at(2, 3, 0, 1), count(500))
    assert d.create is not None and d.delete == [] and d.status["active"] == ["nightly-202612020300"]
    taken = name_taken(sched, at(2, 3), at(2, 3, 0, 2))
    assert taken.status["lastTickTime"] == "2026-12-02T03:00:00Z" and taken.status["reason"] == "RunNameTaken"
    assert taken.events[0][0] == "Warning"


@pytest.mark.parametrize("name", ["n", "nightly", "a" * 50, "a" * 51, "b" * 63, "x" * 40 + "-.y" + "z" * 20])
def test_run_names_are_deterministic_valid_and_at_most_63_characters(name):
    tick = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    made = run_name(name, tick)
    assert made == run_name(name, tick) and len(made) <= 63 and DNS.match(made), made
    assert made.endswith("-202612010300")
    if len(name) <= 50:
        assert made == f"{name}-202612010300"
    assert run_name(name, tick + timedelta(minutes=1)) != made


def test_long_names_that_share_a_prefix_stay_apart():
    tick = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    assert run_name("a" * 60 + "x", tick) != run_name("a" * 60 + "y", tick)


def test_time_zone_decides_the_tick_but_names_use_utc():
    sched = schedule({"timeZone": "Europe/Amsterdam"})
    d = decide(sched, [], at(1, 2, 0, 5), count(500))  # 03:00 in Amsterdam is 02:00 UTC
    assert d.create["metadata"]["name"] == "nightly-202612010200"


def test_durations():
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("1d12h30m") == timedelta(days=1, hours=12, minutes=30)
    with pytest.raises(ValueError, match="maxInterval"):
        parse_duration("7 days")
