"""The working-day calendar the case machine counts deadlines in.

行政许可法 §82: the periods of the law count working days (工作日), statutory
holidays excluded. Which days are working days is a national announcement each
year (节假日 and 调休), so the machine does not know it: it is given a calendar.
``node`` passes one backed by the chinese-calendar package; ``WeekdayCalendar``
(Monday to Friday) serves tests and regions that configure no holidays.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

__all__ = ["WeekdayCalendar", "WorkingCalendar"]


class WorkingCalendar(Protocol):
    def is_working_day(self, day: dt.date) -> bool:
        """True on a working day; raises ``ValueError`` for days the calendar does not cover."""
        ...


class WeekdayCalendar:
    """Monday to Friday are working days; no holidays."""

    def is_working_day(self, day: dt.date) -> bool:
        return day.weekday() < 5

    def __repr__(self) -> str:
        return "WeekdayCalendar()"


def add_working_days(calendar: WorkingCalendar, start: dt.date, days: int) -> dt.date:
    """The ``days``-th working day after ``start`` (``start`` itself not counted).

    行政许可法 and 民法典 §201: a period counted in days starts on the day after the
    event. Zero days gives ``start`` itself.
    """
    day = start
    remaining = days
    while remaining > 0:
        day += dt.timedelta(days=1)
        if calendar.is_working_day(day):
            remaining -= 1
    return day


def working_days_between(calendar: WorkingCalendar, start: dt.date, end: dt.date) -> int:
    """Working days in ``(start, end]``: how far a clock stopped on ``start`` must move."""
    count = 0
    day = start
    while day < end:
        day += dt.timedelta(days=1)
        if calendar.is_working_day(day):
            count += 1
    return count
