"""The cron dialect of TrainingSchedule.spec.schedule: parsing, next and previous firings, time zones, DST."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from waste_operator.cron import CronError, parse


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def brute_next(cron, expression: str, moment: datetime) -> datetime:
    """Minute by minute in UTC (no DST), with cron's day rule written out again: slow and obviously right."""
    dom, dow = expression.split()[2], expression.split()[4]

    def day_ok(t: datetime) -> bool:
        in_month, in_week = t.day in cron.days, t.isoweekday() % 7 in cron.weekdays
        either = dom != "*" and dow != "*"
        return t.month in cron.months and ((in_month or in_week) if either else (in_month and in_week))

    t = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while True:
        if not day_ok(t):
            t = t.replace(hour=0, minute=0) + timedelta(days=1)
        elif t.minute in cron.minutes and t.hour in cron.hours:
            return t
        else:
            t += timedelta(minutes=1)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 3 * * *", utc(2026, 12, 1, 2, 59), utc(2026, 12, 1, 3, 0)),
        ("0 3 * * *", utc(2026, 12, 1, 3, 0), utc(2026, 12, 2, 3, 0)),  # strictly after
        ("*/15 * * * *", utc(2026, 12, 1, 10, 7, 30), utc(2026, 12, 1, 10, 15)),
        ("5/20 * * * *", utc(2026, 12, 1, 10, 26), utc(2026, 12, 1, 10, 45)),  # N/step runs to the end
        ("0 0 1 * *", utc(2026, 12, 15), utc(2027, 1, 1)),
        ("@weekly", utc(2026, 12, 1), utc(2026, 12, 6)),  # a Sunday
        ("@hourly", utc(2026, 12, 1, 10, 0, 1), utc(2026, 12, 1, 11)),
        ("0 4 * * MON-FRI", utc(2026, 12, 4, 5), utc(2026, 12, 7, 4)),  # Friday evening -> Monday
        ("0 4 * * 7", utc(2026, 12, 1), utc(2026, 12, 6, 4)),  # 7 is Sunday too
        ("0 0 29 feb *", utc(2026, 3, 1), utc(2028, 2, 29)),
        ("0 0 13 * FRI", utc(2026, 11, 1), utc(2026, 11, 6)),  # both restricted: either matches
        ("0 0 ? * FRI", utc(2026, 11, 1), utc(2026, 11, 6)),
        ("30 2 1,15 1-6/2 *", utc(2026, 1, 1, 3), utc(2026, 1, 15, 2, 30)),
    ],
)
def test_next_firing(expression, after, expected):
    assert parse(expression).next_after(after) == expected


def test_next_and_previous_agree_with_a_minute_by_minute_scan():
    rng = random.Random(7)
    fields = [
        ["*", "0", "*/5", "7,31,59", "10-20/3", "45/5"],
        ["*", "3", "*/6", "0-5", "22,23"],
        ["*", "1", "15", "28-31", "*/10"],
        ["*", "2", "1-3", "JAN,JUL", "*/4"],
        ["*", "0", "1-5", "SAT,SUN", "3/2"],
    ]
    for _ in range(150):
        expression = " ".join(rng.choice(options) for options in fields)
        cron = parse(expression)
        moment = utc(2026, 1, 1) + timedelta(minutes=rng.randrange(0, 2 * 365 * 24 * 60), seconds=13)
        expected = brute_next(cron, expression, moment)
        assert cron.next_after(moment) == expected, expression
        assert cron.latest_at_or_before(expected) == expected, expression
        assert cron.latest_at_or_before(expected - timedelta(seconds=1)) < expected, expression


def test_time_zone_moves_the_firing():
    cron = parse("0 3 * * *", "Europe/Amsterdam")
    assert cron.next_after(utc(2026, 12, 1)) == utc(2026, 12, 1, 2)  # CET = UTC+1
    assert cron.next_after(utc(2026, 7, 1)) == utc(2026, 7, 1, 1)  # CEST = UTC+2


def test_a_time_skipped_by_daylight_saving_fires_once_at_the_end_of_the_gap():
    # Europe/Amsterdam, 29 March 2026: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
    cron = parse("30 2 * * *", "Europe/Amsterdam")
    assert cron.next_after(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)
    assert cron.next_after(utc(2026, 3, 29, 1)) == utc(2026, 3, 30, 0, 30)
    every = parse("*/20 * * * *", "Europe/Amsterdam")
    fired, t = [], utc(2026, 3, 29, 0, 30)
    while t < utc(2026, 3, 29, 1, 30):
        t = every.next_after(t)
        fired.append(t)
    # 01:40 CET, then the gap's 02:00/02:20/02:40 all land on 03:00 CEST: once; then 03:20 CEST.
    assert fired == [
        utc(2026, 3, 29, 0, 40),
        utc(2026, 3, 29, 1),
        utc(2026, 3, 29, 1, 20),
        utc(2026, 3, 29, 1, 40),
    ]


def test_a_time_repeated_by_daylight_saving_fires_once():
    # 25 October 2026: 03:00 CEST falls back to 02:00 CET; 02:30 happens at 00:30 and 01:30 UTC.
    cron = parse("30 2 * * *", "Europe/Amsterdam")
    first = cron.next_after(utc(2026, 10, 24, 12))
    assert first == utc(2026, 10, 25, 0, 30)
    assert cron.next_after(first) == utc(2026, 10, 26, 1, 30)
    assert cron.latest_at_or_before(utc(2026, 10, 25, 1, 45)) == first


def test_previous_firing():
    cron = parse("0 3 * * *")
    assert cron.latest_at_or_before(utc(2026, 12, 2, 2, 59)) == utc(2026, 12, 1, 3)
    assert cron.latest_at_or_before(utc(2026, 12, 2, 3)) == utc(2026, 12, 2, 3)


@pytest.mark.parametrize(
    ("expression", "zone", "words"),
    [
        ("0 3 * *", None, "has 4 fields; cron needs 5"),
        ("", None, "has 0 fields"),
        ("61 * * * *", None, "minute field '61': 61 is outside 0-59"),
        ("0 24 * * *", None, "hour field '24'"),
        ("0 0 0 * *", None, "day-of-month field '0'"),
        ("0 0 * 13 *", None, "month field '13'"),
        ("0 0 * * 8", None, "day-of-week field '8'"),
        ("0 0 * * FUN", None, "'FUN' is not a number or a name"),
        ("*/0 * * * *", None, "step '0' must be a positive whole number"),
        ("0 5-2 * * *", None, "range '5-2' runs backwards"),
        ("? * * * *", None, "'?' is allowed only in the day fields"),
        ("@every 1h", None, "unknown macro"),
        ("TZ=UTC 0 3 * * *", None, "spec.timeZone"),
        ("0 0 30 2 *", None, "does not fire"),
        ("0 3 * * *", "Mars/Olympus", "not a known IANA time zone"),
        ("0 3 * * *", "../../etc/passwd", "not a known IANA time zone"),
    ],
)
def test_bad_schedules_say_what_is_wrong(expression, zone, words):
    with pytest.raises(CronError) as error:
        parse(expression, zone)
    assert words in str(error.value)
