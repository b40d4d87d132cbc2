"""The working-day clock with the official holiday arrangement (chinese-calendar).

Expected dates are counted by hand from the State Council's 2026 arrangement
(国办发明电〔2025〕7号): 春节 2月15日–23日 off, Saturday 2月14日 and 2月28日 worked;
国庆节 10月1日–7日 off, Sunday 9月20日 and Saturday 10月10日 worked.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from machine_helpers import CID, KEYS, C, H, envelope, ms, next_receipt, signed_with

from node.workdays import CalendarRangeError, ChinaCalendar
from protocol import Case, LocalProtocolError, Step, add_working_days
from protocol import examples as ex
from protocol.calendar import working_days_between
from protocol.fields import end_of_day

OFFICIAL = ChinaCalendar()
D = dt.date


def _handling(calendar: ChinaCalendar = OFFICIAL, **context: object) -> Case:
    return Case(case=CID, role="handling", ours=H, theirs=C, our_key=KEYS[H], calendar=calendar,
                **context)  # type: ignore[arg-type]


def test_holidays_and_make_up_working_days() -> None:
    assert OFFICIAL.is_working_day(D(2026, 2, 14))  # Saturday, worked (调休)
    assert not OFFICIAL.is_working_day(D(2026, 2, 16))  # Monday, Spring Festival
    assert OFFICIAL.is_working_day(D(2026, 9, 20))  # Sunday, worked
    assert not OFFICIAL.is_working_day(D(2026, 10, 7))  # Wednesday, National Day
    assert not OFFICIAL.is_working_day(D(2026, 11, 21))  # an ordinary Saturday
    assert OFFICIAL.is_working_day(D(2026, 11, 23))  # an ordinary Monday


@pytest.mark.parametrize(("start", "days", "expected"), [
    (D(2026, 9, 30), 5, D(2026, 10, 13)),  # 10-08, 10-09, 10-10 (Sat, worked), 10-12, 10-13
    (D(2026, 2, 13), 10, D(2026, 3, 5)),  # 02-14 (Sat), 02-24..27, 02-28 (Sat), 03-02..05
    (D(2026, 11, 20), 20, D(2026, 12, 18)),  # no holiday: four weeks
    (D(2026, 9, 30), 0, D(2026, 9, 30)),
])
def test_working_days_are_counted_with_the_official_arrangement(start: D, days: int,
                                                                 expected: D) -> None:
    assert add_working_days(OFFICIAL, start, days) == expected


def _receive_application(case: Case, received: int) -> Step:
    application = ex.application(received)
    receipt = next_receipt(case, signed_with(case.role, "application", application), now=received)
    step = case.receive(envelope("application", C, H), application, [receipt], received)
    assert step is not None
    return step


def test_the_supplement_notice_skips_the_national_day_holiday() -> None:
    case = _handling()
    step = _receive_application(case, ms(2026, 9, 30, 16))
    assert step.set_timers == {"notice": end_of_day(D(2026, 10, 13))}


def test_promised_dates_in_working_and_natural_days() -> None:
    accepted = ms(2026, 2, 13, 10)  # the Friday before the Spring Festival
    assert _handling(promise_days=10).promised_date_from(accepted) == "2026-03-05"
    assert _handling(promise_days=10, promise_unit="natural").promised_date_from(accepted) == "2026-02-23"


def test_a_special_procedure_stops_the_clock_for_the_working_days_it_lasts() -> None:
    stopped = working_days_between(OFFICIAL, D(2026, 9, 29), D(2026, 10, 12))
    assert stopped == 5  # 09-30, 10-08, 10-09, 10-10 (Sat, worked), 10-12
    case = _handling(state="processing", promised_date="2026-10-20", our_index=3, sent_index=3,
                     their_index=1)
    case.local("suspend", ex.progress(ms(2026, 9, 29, 10), "suspend"), ms(2026, 9, 29, 10))
    case.local("resume", ex.progress(ms(2026, 10, 12, 15), "resume"), ms(2026, 10, 12, 15))
    assert case.promised_date == "2026-10-27"  # 10-20 + 5 working days
    assert case.timers["promise"] == end_of_day(D(2026, 10, 27))


def test_dates_beyond_the_published_arrangement() -> None:
    with pytest.raises(CalendarRangeError, match=r"2027.*upgrade the package"):
        OFFICIAL.is_working_day(D(2027, 3, 1))
    # Through the case machine: a clear, local refusal naming the year; the case unchanged.
    case = _handling()
    before = case.snapshot()
    with pytest.raises(LocalProtocolError, match="2027"):
        _receive_application(case, ms(2026, 12, 28, 9))  # the notice would end in 2027
    assert case.snapshot() == before


def test_a_running_node_falls_back_to_weekdays_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    calendar = ChinaCalendar(fallback=True)
    with caplog.at_level(logging.WARNING, logger="tongban.workdays"):
        assert calendar.is_working_day(D(2027, 3, 1))  # a Monday
        assert not calendar.is_working_day(D(2027, 3, 6))  # a Saturday
        assert add_working_days(calendar, D(2026, 12, 30), 3) == D(2027, 1, 4)
    warnings = [r for r in caplog.records if "2027" in r.getMessage()]
    assert len(warnings) == 1  # once per year, not once per day
