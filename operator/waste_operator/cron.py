"""Five-field cron schedules in an IANA time zone, as a Kubernetes CronJob reads them. Pure.

The dialect of CronJob's parser (robfig/cron's standard one): `minute hour day-of-month month day-of-week`,
each field a list of `*`, `N`, `N-M`, each with an optional `/step` (`N/step` means N to the field's end);
month and weekday names (JAN, MON; any case); weekday 0 or 7 is Sunday; `?` is `*` in the day fields;
the macros @yearly (@annually), @monthly, @weekly, @daily (@midnight), @hourly. When both day fields are
restricted a day matches either of them (cron's rule); when one is `*` the other decides.

Wall-clock times are in the schedule's time zone. Daylight saving time: a time that does not exist (the hour
skipped in spring) fires at the end of the gap, once; a time that exists twice (the hour repeated in autumn)
fires once, at its first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = {m: i for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)}
WEEKDAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
FIELDS = (  # name, lowest, highest, names
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, MONTHS),
    ("day-of-week", 0, 7, WEEKDAYS),
)
# Far enough for the rarest schedule that fires at all (29 February: 8 years apart around 2100).
HORIZON_DAYS = 366 * 9


class CronError(ValueError):
    """The schedule or its time zone cannot be used; the message says which part and why."""


@dataclass(frozen=True)
class Cron:
    expression: str
    zone: ZoneInfo
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_month or in_week
        return in_month and in_week

    def next_after(self, moment: datetime) -> datetime:
        """The first firing strictly after `moment` (an aware datetime), in UTC."""
        start = moment.astimezone(self.zone).date() - timedelta(days=1)
        for fire in self._firings(start, forward=True):
            if fire > moment:
                return fire
        raise CronError(f"schedule {self.expression!r} does not fire within {HORIZON_DAYS // 366} years")

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The last firing at or before `moment` (an aware datetime), in UTC; None within the horizon."""
        start = moment.astimezone(self.zone).date() + timedelta(days=1)
        for fire in self._firings(start, forward=False):
            if fire <= moment:
                return fire
        return None

    def _firings(self, start: date, forward: bool) -> Iterator[datetime]:
        step = timedelta(days=1 if forward else -1)
        times = [(h, m) for h in self.hours for m in self.minutes]
        if not forward:
            times.reverse()
        day = start
        for _ in range(HORIZON_DAYS):
            if self.day_matches(day):
                for hour, minute in times:
                    yield self._instant(datetime(day.year, day.month, day.day, hour, minute))
            day += step

    def _instant(self, wall: datetime) -> datetime:
        """The UTC instant of a wall-clock time: its first occurrence, or the end of a DST gap it falls in."""
        first = wall.replace(tzinfo=self.zone, fold=0)
        if _exists(first):
            return first.astimezone(UTC)
        probe = wall
        for _ in range(24 * 60):  # gaps are an hour, rarely more; never a day
            probe += timedelta(minutes=1)
            candidate = probe.replace(tzinfo=self.zone, fold=0)
            if _exists(candidate):
                return candidate.astimezone(UTC)
        raise CronError(f"no valid time after {wall} in {self.zone.key}")  # pragma: no cover


def _exists(local: datetime) -> bool:
    back = local.astimezone(UTC).astimezone(local.tzinfo)
    return back.replace(tzinfo=None) == local.replace(tzinfo=None)


def zone_of(name: str | None) -> ZoneInfo:
    name = (name or "UTC").strip()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(
            f"timeZone {name!r} is not a known IANA time zone (such as UTC or Europe/Amsterdam)"
        ) from None


def parse(expression: str, time_zone: str | None = None) -> Cron:
    """Parses a schedule; CronError names the field and the part that is wrong."""
    zone = zone_of(time_zone)
    text = " ".join((expression or "").split())
    if text.upper().startswith("TZ=") or text.upper().startswith("CRON_TZ="):
        raise CronError("put the time zone in spec.timeZone, not in the schedule (TZ=... is not allowed)")
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise CronError(f"unknown macro {text!r}: use one of {', '.join(sorted(MACROS))}")
        text = MACROS[text.lower()]
    parts = text.split(" ")
    if len(parts) != 5:
        raise CronError(
            f"schedule {expression!r} has {len(parts) if text else 0} fields; cron needs 5: "
            "minute hour day-of-month month day-of-week (e.g. '0 3 * * *')"
        )
    values: list[set[int]] = []
    restricted: list[bool] = []
    for part, (name, low, high, names) in zip(parts, FIELDS, strict=True):
        found, star = _field(part, name, low, high, names)
        values.append(found)
        restricted.append(not star)
    minutes, hours, days, months, weekdays = values
    weekdays = {d % 7 for d in weekdays}
    cron = Cron(
        expression=expression,
        zone=zone,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(weekdays),
        days_restricted=restricted[2],
        weekdays_restricted=restricted[4],
    )
    cron.next_after(datetime(2000, 1, 1, tzinfo=UTC))  # "0 0 30 2 *" never fires: say so now
    return cron


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> tuple[set[int], bool]:
    found: set[int] = set()
    star = False
    for item in text.split(","):
        where = f"{name} field {text!r}"
        body, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{where}: step {step_text!r} must be a positive whole number")
            step = int(step_text)
        if body in ("*", "?"):
            if body == "?" and name not in ("day-of-month", "day-of-week"):
                raise CronError(f"{where}: '?' is allowed only in the day fields")
            first, last = low, high
            star = star or step == 1
        elif "-" in body:
            a, _, b = body.partition("-")
            first, last = _value(a, where, low, high, names), _value(b, where, low, high, names)
            if first > last:
                raise CronError(f"{where}: range {body!r} runs backwards")
        else:
            first = _value(body, where, low, high, names)
            last = high if slash else first  # N/step: from N to the field's end
        found.update(range(first, last + 1, step))
    return found, star


def _value(text: str, where: str, low: int, high: int, names: dict[str, int]) -> int:
    upper = text.upper()
    if upper in names:
        return names[upper]
    if not text.isdigit():
        raise CronError(f"{where}: {text!r} is not a number{' or a name' if names else ''}")
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"{where}: {value} is outside {low}-{high}")
    return value
