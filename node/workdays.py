"""Working days in mainland China (法定节假日 and 调休) from the chinese-calendar package.

The State Council announces each year's holidays late in the year before, so the
package covers a fixed range of years. For a day outside it ``ChinaCalendar``
raises ``CalendarRangeError``; ``ChinaCalendar(fallback=True)`` (what a node runs)
counts Monday to Friday instead and logs once per year that the official
arrangement is missing, so a case received in late December still gets its
deadlines, and operators know to update the package.
"""

from __future__ import annotations

import datetime as dt
import logging

import chinese_calendar

__all__ = ["CalendarRangeError", "ChinaCalendar"]

log = logging.getLogger("tongban.workdays")


class CalendarRangeError(ValueError):
    """A day outside the years whose holiday arrangement is known."""


class ChinaCalendar:
    def __init__(self, *, fallback: bool = False) -> None:
        self.fallback = fallback
        self._warned: set[int] = set()
        #: Days already looked up: the package validates every date it is asked about,
        #: which made deadline arithmetic (20 working days, day by day) a hot spot.
        self._known: dict[dt.date, bool] = {}

    def __repr__(self) -> str:
        return f"ChinaCalendar(fallback={self.fallback})"

    def is_working_day(self, day: dt.date) -> bool:
        known = self._known.get(day)
        if known is None:
            known = self._known[day] = self._look_up(day)
        return known

    def _look_up(self, day: dt.date) -> bool:
        try:
            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError as exc:
            if not self.fallback:
                raise CalendarRangeError(
                    f"{day.year} 年的节假日安排尚未收录 / no holiday arrangement for "
                    f"{day.year} in chinese-calendar {chinese_calendar.__version__}; "
                    f"upgrade the package") from exc
            if day.year not in self._warned:
                self._warned.add(day.year)
                log.warning("no official holiday arrangement for %d: counting Monday to "
                            "Friday as working days until chinese-calendar is upgraded", day.year)
            return day.weekday() < 5
