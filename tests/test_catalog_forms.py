"""The application form a catalog entry defines (protocol/catalog.py): field checks, and the
patterns a partner may give its fields (refused when they could backtrack for ever)."""

from __future__ import annotations

import pytest
from test_catalog_files import _sample

from protocol.catalog import FormField


@pytest.mark.parametrize("pattern", ["((a+))+", "(?:(a+))+", "(a|a)+", "(a|ab)*c", r"(\d)\1",
                                     r"\d*\d*\d*$", "a{2,}b+c*", "a?b?c?", "[0-9]{0,99}" * 10 + "x",
                                     r"\\*" * 12])
def test_patterns_that_could_backtrack_for_ever_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"may not use|at most two variable repeats"):
        FormField(name="code", label="编号", kind="text", pattern=pattern)


@pytest.mark.parametrize("pattern", ["^[A-Z]{2}[0-9]+$", "[0-9]{6}", "(ab|cd)[0-9]{4,8}", "(a)*b",
                                     "^[A-Z]+[0-9]+$"])
def test_patterns_that_match_in_bounded_time_are_accepted(pattern: str) -> None:
    field = FormField(name="code", label="编号", kind="text", pattern=pattern)
    with pytest.raises(ValueError, match="格式不符"):
        field.check("A" * 199 + "!")  # a value built to make a bad pattern backtrack


def test_a_choice_may_not_hold_the_list_separator() -> None:
    with pytest.raises(ValueError, match="separate choices"):
        FormField(name="reason", label="原因", kind="choice", choices=("其他；请说明",))


# ---------------------------------------------------------------- the application form


def _id(first17: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return first17 + "10X98765432"[sum(int(d) * w for d, w in zip(first17, weights, strict=True)) % 11]


def test_form_field_required_and_optional() -> None:
    required = FormField(name="name", label="姓名", kind="text", max_length=4)
    with pytest.raises(ValueError, match="必填"):
        required.check("   ")
    assert required.check(" 张三 ") == "张三"
    with pytest.raises(ValueError, match="不超过 4 个字"):
        required.check("欧阳娜娜娜")
    assert FormField(name="note", label="备注", kind="text", required=False).check("") == ""


def test_form_field_choice_and_yes_no() -> None:
    field = FormField(name="reason", label="补领原因", kind="choice", choices=("遗失", "灭失"))
    assert field.check("遗失") == "遗失"
    with pytest.raises(ValueError, match="请从 遗失、灭失 中选择"):
        field.check("被盗")
    yes_no = FormField(name="again", label="是否再婚", kind="yes_no")
    assert yes_no.check("否") == "否"
    with pytest.raises(ValueError, match=r"是.*否"):
        yes_no.check("不是")
    with pytest.raises(ValueError, match="lists no choices"):
        FormField(name="x", label="x", kind="choice")


def test_form_field_id_number_check_digit() -> None:
    field = FormField(name="applicant_id", label="公民身份号码", kind="id_number")
    good = _id("41010519900307123")
    assert field.check(good.lower()) == good
    wrong = good[:17] + ("0" if good[17] != "0" else "1")
    with pytest.raises(ValueError, match="公民身份号码有误"):
        field.check(wrong)
    with pytest.raises(ValueError, match="公民身份号码有误"):
        field.check("41010519900307")


def test_form_field_number_bounds() -> None:
    field = FormField(name="persons", label="随迁人数", kind="number", minimum=0, maximum=10)
    assert field.check("007") == "7"
    assert field.check("0") == "0"
    with pytest.raises(ValueError, match="不大于 10"):
        field.check("11")
    with pytest.raises(ValueError, match="不小于 0"):
        field.check("-1")
    with pytest.raises(ValueError, match="整数"):
        field.check("3.5")
    with pytest.raises(ValueError, match="may not use"):
        FormField(name="n", label="n", kind="text", pattern=r"(\d*)*")
    with pytest.raises(ValueError, match="minimum above maximum"):
        FormField(name="n", label="n", kind="number", minimum=5, maximum=1)


def test_form_field_date_phone_region_and_pattern() -> None:
    date = FormField(name="day", label="日期", kind="date")
    assert date.check("2026-03-01") == "2026-03-01"
    for bad in ("2026-02-30", "2026/03/01", "明天"):
        with pytest.raises(ValueError, match="YYYY-MM-DD"):
            date.check(bad)
    phone = FormField(name="phone", label="联系电话", kind="phone")
    assert phone.check("13800138000") == "13800138000"
    assert phone.check("0371-67180000") == "0371-67180000"
    with pytest.raises(ValueError, match="电话号码有误"):
        phone.check("12345")
    region = FormField(name="from_region", label="迁出地", kind="region")
    with pytest.raises(ValueError, match="6 位数字"):
        region.check("4101")
    card = FormField(name="bank_account", label="银行卡号", kind="text", pattern="[0-9]{12,19}")
    assert card.check("6222020200112233445") == "6222020200112233445"
    with pytest.raises(ValueError, match="格式不符"):
        card.check("6222-0202")


def test_check_form_lists_every_problem_and_unknown_fields() -> None:
    entry = next(e for e in _sample() if e.name == "户口迁移（迁入）")
    values = {"move_reason": "购房落户", "from_region": "510104", "applicant_id": _id("51010419880512002"),
              "persons": "2", "phone": "13900000000"}
    assert entry.check_form(values) == values
    with pytest.raises(ValueError, match="随迁人数") as caught:
        entry.check_form({**values, "persons": "20", "move_reason": "", "hobby": "x", "age": "30"})
    message = str(caught.value)
    assert "随迁人数：不大于 10" in message
    assert "迁入类别：必填" in message
    assert "the form has no fields age, hobby" in message
