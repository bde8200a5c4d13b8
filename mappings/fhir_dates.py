"""FHIR date, dateTime and instant values as the half-open time range they stand for (pure).

A FHIR date is as precise as it is written: `2024` is the whole year, `2024-03-15` the whole day,
`2024-03-15T10:00` the minute, `2024-03-15T10:00:00.25Z` a quarter of a second on. Search
compares these ranges (FHIR R4 search, "date"): `fhir_range` turns a written value into
`[start, end)` in UTC, for search values and for the stored resources' own dates alike. A value
without a time zone is read in the zone given (the hospital's, RADBRIDGE_SOURCE_TIMEZONE).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

from mappings.errors import FhirMappingError

EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
"""The bounds of the store's time columns: an open Period end is stored as LATEST, an open
start as EARLIEST."""

_VALUE = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def _zone(text: str | None, default: tzinfo) -> tzinfo:
    if text is None:
        return default
    if text == "Z":
        return UTC
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 14 or minutes > 59:
        raise ValueError("time zone offset out of range")
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if text[0] == "-" else offset)


def _plus_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    try:
        return moment.replace(year=moment.year + month // 12, month=month % 12 + 1)
    except ValueError:  # past year 9999
        return LATEST


def _plus(moment: datetime, step: timedelta) -> datetime:
    try:
        return moment + step
    except OverflowError:
        return LATEST


def fhir_range(text: str, default_zone: tzinfo = UTC) -> tuple[datetime, datetime]:
    """`[start, end)` in UTC of a FHIR date / dateTime / instant written as `text` (seconds and
    the zone may be left out of a dateTime, as search values do). FhirMappingError when it is not
    one (the message names the expected form, never the value)."""
    found = _VALUE.match(text)
    if found is None:
        raise FhirMappingError(
            "a date must be YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.fff]][Z|+hh:mm]"
        )
    parts = found.groupdict()
    try:
        zone = _zone(parts["zone"], default_zone)
        month = int(parts["month"] or 1)
        day = int(parts["day"] or 1)
        hour = int(parts["hour"] or 0)
        minute = int(parts["minute"] or 0)
        second = int(parts["second"] or 0)
        fraction = parts["fraction"] or ""
        micro = int((fraction + "000000")[:6]) if fraction else 0
        start = datetime(int(parts["year"]), month, day, hour, minute, second, micro, tzinfo=zone)
    except ValueError:
        raise FhirMappingError("the date is not a valid calendar date or time") from None
    if parts["month"] is None:
        end = _plus_months(start, 12)
    elif parts["day"] is None:
        end = _plus_months(start, 1)
    elif parts["hour"] is None:
        end = _plus(start, timedelta(days=1))
    elif parts["second"] is None:
        end = _plus(start, timedelta(minutes=1))
    elif not fraction:
        end = _plus(start, timedelta(seconds=1))
    else:
        end = _plus(start, timedelta(microseconds=10 ** max(0, 6 - len(fraction))))
    return _utc(start), _utc(end)


def _utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01 in a zone east of UTC, or 9999-12-31 west of it
        return EARLIEST if moment.year == 1 else LATEST
