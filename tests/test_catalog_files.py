"""Catalog spreadsheets (routing/catalog_files.py): the shipped samples, round trips, error reports.
The application-form checks are in test_catalog_forms.py."""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from protocol import codes
from protocol.catalog import CatalogEntry, FormField, TimeLimit
from protocol.fields import check_credit_code, credit_check_char
from routing.catalog_files import (
    FIELD_COLUMNS,
    MATERIAL_COLUMNS,
    MATTER_COLUMNS,
    SHEETS,
    CatalogFileError,
    Problem,
    read_catalog,
    read_catalog_path,
    write_catalog_csv,
    write_catalog_xlsx,
)

ROOT = Path(__file__).parent.parent
CATALOGS = ROOT / "config" / "catalogs"
TEMPLATE = ROOT / "docs" / "catalog-template.md"
REGION = "410100"
YELLOW_RIVER = {"410100", "370100", "140100", "610100", "620100", "630100", "640100", "150100"}
SICHUAN_CHONGQING = {"510100", "500000"}

Sheets = dict[str, list[list[str]]]


def _sample(region: str = REGION) -> list[CatalogEntry]:
    return read_catalog_path(CATALOGS / region, region)


def _sheets(entries: list[CatalogEntry], folder: Path) -> Sheets:
    """The rows export writes, as ``read_catalog`` takes them (header first)."""
    write_catalog_csv(entries, folder)
    return {sheet: list(csv.reader(io.StringIO((folder / f"{sheet}.csv").read_text(encoding="utf-8-sig"))))
            for sheet in SHEETS}


def _set(sheets: Sheets, sheet: str, line: int, header: str, value: str) -> None:
    """Write a cell; ``line`` counts as a spreadsheet does (1 = the header row)."""
    rows = sheets[sheet]
    rows[line - 1][rows[0].index(header)] = value


def _get(sheets: Sheets, sheet: str, line: int, header: str) -> str:
    rows = sheets[sheet]
    return rows[line - 1][rows[0].index(header)]


def _problems(sheets: Sheets) -> list[Problem]:
    with pytest.raises(CatalogFileError) as caught:
        read_catalog(sheets, REGION)
    assert "未导入任何事项" in str(caught.value)  # nothing imported, and the message says so
    return caught.value.problems


def _has(problems: list[Problem], sheet: str, line: int, column: str, *words: str) -> bool:
    return any(p.sheet == sheet and p.line == line and p.column == column
               and all(w in p.reason for w in words) for p in problems)


# ---------------------------------------------------------------- the shipped samples

REGIONS = sorted(p.name for p in CATALOGS.iterdir() if p.is_dir())


def test_samples_cover_both_circles() -> None:
    assert set(REGIONS) == YELLOW_RIVER | SICHUAN_CHONGQING


@pytest.mark.parametrize("region", REGIONS)
def test_sample_catalog_reads_without_problems(region: str) -> None:
    entries = _sample(region)
    assert 8 <= len(entries) <= 12
    assert len({e.code for e in entries}) == len(entries)
    for entry in entries:
        assert entry.region == region
        assert entry.status == "active"
        assert entry.version == 1
        assert 3 <= len(entry.materials) <= 7, entry.name
        assert 2 <= len(entry.form) <= 6, entry.name
        assert len(entry.code) <= 64
        assert entry.code == f"{entry.basic_code}-{region}000000-000-{entry.authority_code}-1-00"
        assert check_credit_code(entry.authority_code) == entry.authority_code
        assert entry.authority_code[2:8] == region
        assert entry.promised_limit.days <= entry.legal_limit.days or (
            entry.promised_limit.unit != entry.legal_limit.unit)
        assert entry.case_type == 2 or entry.promised_limit.days == 0
        assert entry.consult_phone
        assert entry.supervise_phone


@pytest.mark.parametrize("circle", [YELLOW_RIVER, SICHUAN_CHONGQING])
def test_each_circle_has_matters_the_collecting_window_accepts(circle: set[str]) -> None:
    entries = [e for region in circle for e in _sample(region)]
    assert sum(e.acceptance == "collecting_decides" for e in entries) >= 2
    assert {e.scope for e in entries} >= {"national", "inter_provincial"}
    assert {m for e in entries for m in e.modes} == {"online", "proxy", "joint"}


def test_a_basic_code_names_one_national_matter_everywhere() -> None:
    names: dict[str, set[str]] = {}
    for region in REGIONS:
        for entry in _sample(region):
            names.setdefault(entry.basic_code, set()).add(entry.name)
    assert len(names) >= 10
    assert all(len(found) == 1 for found in names.values()), names


def test_samples_use_every_kind_of_form_field() -> None:
    kinds = {f.kind for region in REGIONS for e in _sample(region) for f in e.form}
    assert kinds >= {"text", "long_text", "region", "choice", "date", "id_number", "phone", "number",
                     "yes_no"}


# ---------------------------------------------------------------- round trips


def test_csv_round_trip(tmp_path: Path) -> None:
    entries = _sample("510100")
    write_catalog_csv(entries, tmp_path / "catalog")
    assert read_catalog_path(tmp_path / "catalog", "510100") == entries


def test_xlsx_round_trip(tmp_path: Path) -> None:
    entries = _sample("510100")
    write_catalog_xlsx(entries, tmp_path / "catalog.xlsx")
    assert read_catalog_path(tmp_path / "catalog.xlsx", "510100") == entries
    assert not (tmp_path / "catalog.part").exists()
    write_catalog_xlsx(entries[:2], tmp_path / "catalog.xlsx")  # written again: replaced
    assert read_catalog_path(tmp_path / "catalog.xlsx", "510100") == entries[:2]


def test_round_trip_keeps_what_the_samples_do_not_use(tmp_path: Path) -> None:
    entry = _sample()[0]
    changed = entry.model_copy(update={
        "version": 2, "status": "withdrawn", "effective_to": "2026-06-30", "item_code": "0000107001-01",
        "conditions": "第一行\n第二行，含“引号”, 逗号", "online_url": None,
        "legal_limit": TimeLimit(days=30, unit="natural", note="自然日"),
        "form": (*entry.form, FormField(name="remark", label="备注", kind="long_text", required=False,
                                        max_length=500, pattern=r"[^<>]*", help="选填"))})
    changed = CatalogEntry.model_validate(changed.model_dump())  # checked again
    write_catalog_csv([changed], tmp_path / "csv")
    assert read_catalog_path(tmp_path / "csv", REGION) == [changed]
    write_catalog_xlsx([changed], tmp_path / "book.xlsx")
    assert read_catalog_path(tmp_path / "book.xlsx", REGION) == [changed]


def test_a_code_reads_the_same_by_code_or_by_chinese_name(tmp_path: Path) -> None:
    sheets = _sheets(_sample()[:1], tmp_path / "a")
    by_name = {sheet: [list(row) for row in rows] for sheet, rows in sheets.items()}
    for header, code, name in (("事项类型代码", "07", "行政确认"), ("行使层级代码", "3", "市级"),
                               ("实施主体性质代码", "1", "法定机关"), ("办件类型代码", "2", "承诺件"),
                               ("服务对象代码", "1", "自然人"),
                               ("办理形式代码", "1;2;3", "窗口办理；电脑端网上办理；移动端网上申请")):
        assert _get(sheets, "事项", 2, header) == code
        _set(by_name, "事项", 2, header, name)
    for header, name, code in (("事项状态", "在用", "active"), ("通办范围", "跨省通办", "inter_provincial"),
                               ("通办模式", "多地联办", "joint"),
                               ("受理模式", "异地收件、远程受理（办理地受理）", "handling_decides"),
                               ("法定时限单位", "工作日", "working"), ("审批结果类型", "证照", "licence")):
        assert _get(sheets, "事项", 2, header) == name
        _set(sheets, "事项", 2, header, code)
    _set(sheets, "材料", 2, "材料必要性", "required")
    _set(by_name, "表单字段", 2, "类型", "choice")
    _set(by_name, "事项", 2, "事项类型代码", "7")  # 07 typed as a number into Excel
    assert read_catalog(sheets, REGION) == read_catalog(by_name, REGION) == _sample()[:1]


def test_lists_take_either_semicolon_and_ignore_blanks(tmp_path: Path) -> None:
    sheets = _sheets(_sample()[:1], tmp_path / "a")
    _set(sheets, "事项", 2, "办理形式代码", " 1；2; ;3 ")
    assert read_catalog(sheets, REGION)[0].handling_forms == (1, 2, 3)


def test_columns_may_come_in_any_order_and_optional_ones_may_be_left_out(tmp_path: Path) -> None:
    entry = _sample()[0]
    sheets = _sheets([entry], tmp_path / "a")
    for sheet in SHEETS:
        sheets[sheet] = [list(reversed(row)) for row in sheets[sheet]]
    assert read_catalog(sheets, REGION) == [entry]
    optional = {c.header for c in MATTER_COLUMNS if not c.required}
    keep = [i for i, h in enumerate(sheets["事项"][0]) if h not in optional]
    sheets["事项"] = [[row[i] for i in keep] for row in sheets["事项"]]
    [bare] = read_catalog(sheets, REGION)
    assert (bare.status, bare.case_type, bare.acceptance, bare.fee.charged) == (
        "active", 2, "handling_decides", False)
    assert (bare.materials, bare.form) == (entry.materials, entry.form)


# ---------------------------------------------------------------- bad rows


@pytest.fixture
def sheets(tmp_path: Path) -> Sheets:
    """The 郑州 sample's first two matters (事项 lines 2 and 3), with their materials and fields."""
    return _sheets(_sample()[:2], tmp_path / "catalog")


def test_bad_code_set_value(sheets: Sheets) -> None:
    _set(sheets, "事项", 2, "事项类型代码", "99")
    _set(sheets, "材料", 3, "材料必要性", "可有可无")
    problems = _problems(sheets)
    assert _has(problems, "事项", 2, "事项类型代码", "不在代码集中", "07 行政确认")
    assert _has(problems, "材料", 3, "材料必要性", "不在代码集中", "情形必要")
    assert {p.sheet for p in problems} <= {"事项", "材料"}


def test_missing_required_cell(sheets: Sheets) -> None:
    _set(sheets, "事项", 3, "事项名称", "  ")
    _set(sheets, "表单字段", 2, "标签", "")
    problems = _problems(sheets)
    assert _has(problems, "事项", 3, "事项名称", "必填")
    assert _has(problems, "表单字段", 2, "标签", "必填")


def test_copies_must_be_a_whole_number(sheets: Sheets) -> None:
    _set(sheets, "材料", 2, "原件份数", "两份")
    _set(sheets, "材料", 3, "复印件份数", "100")
    problems = _problems(sheets)
    assert _has(problems, "材料", 2, "原件份数", "整数", "两份")
    assert _has(problems, "材料", 3, "复印件份数", "99")


def test_duplicate_code(sheets: Sheets) -> None:
    _set(sheets, "事项", 3, "实施编码", _get(sheets, "事项", 2, "实施编码"))
    problems = _problems(sheets)
    assert _has(problems, "事项", 3, "实施编码", "重复", "line 2")


def test_material_of_an_unknown_matter(sheets: Sheets) -> None:
    unknown = "0000199999-410100000000-000-X"
    _set(sheets, "材料", 2, "实施编码", unknown)
    _set(sheets, "表单字段", 4, "实施编码", unknown)
    problems = _problems(sheets)
    assert _has(problems, "材料", 2, "实施编码", unknown)
    assert _has(problems, "表单字段", 4, "实施编码", "no matter")


def test_invalid_credit_code(sheets: Sheets) -> None:
    code = _get(sheets, "事项", 2, "实施主体代码")
    wrong = code[:17] + ("0" if code[17] != "0" else "1")
    _set(sheets, "事项", 2, "实施主体代码", wrong)
    _set(sheets, "事项", 3, "实施主体代码", "11410100ABCDEFGHIO")  # O is not in the alphabet
    problems = _problems(sheets)
    assert _has(problems, "事项", 2, "实施主体代码", "check character")
    assert _has(problems, "事项", 3, "实施主体代码", "18 characters")


def test_unknown_column(sheets: Sheets) -> None:
    sheets["事项"][0].append("备注")
    sheets["事项"][1].append("内部使用")
    problems = _problems(sheets)
    assert _has(problems, "事项", 1, "备注", "未知的列", f"column {len(MATTER_COLUMNS) + 1}")


def test_missing_required_column(sheets: Sheets) -> None:
    at = sheets["材料"][0].index("材料名称")
    sheets["材料"] = [row[:at] + row[at + 1:] for row in sheets["材料"]]
    problems = _problems(sheets)
    assert _has(problems, "材料", 1, "材料名称", "缺少必填列")


def test_promised_limit_longer_than_legal(sheets: Sheets) -> None:
    legal = int(_get(sheets, "事项", 2, "法定办结时限"))
    _set(sheets, "事项", 2, "承诺办结时限", str(legal + 1))
    problems = _problems(sheets)
    assert any(p.sheet == "事项" and p.line == 2 and "longer than the legal" in p.reason for p in problems)
    _set(sheets, "事项", 2, "承诺时限单位", "自然日")  # other units are not compared
    assert len(read_catalog(sheets, REGION)) == 2


def test_field_pattern_with_nested_quantifiers(sheets: Sheets) -> None:
    _set(sheets, "表单字段", 2, "格式", "(a+)+")
    _set(sheets, "表单字段", 3, "格式", "[0-9")
    problems = _problems(sheets)
    assert _has(problems, "表单字段", 2, "格式", "may not use")
    assert _has(problems, "表单字段", 3, "格式", "not a regular expression")


def test_a_repeated_column_is_reported(sheets: Sheets) -> None:
    sheets["事项"] = [[*row, row[7]] for row in sheets["事项"]]  # 事项名称 twice
    assert _has(_problems(sheets), "事项", 1, "事项名称", "appears twice")


def test_a_bad_cell_is_reported_once(sheets: Sheets) -> None:
    _set(sheets, "事项", 2, "事项类型代码", "99")
    problems = [p for p in _problems(sheets) if p.line == 2 and p.sheet == "事项"]
    assert [p.column for p in problems] == ["事项类型代码"]


def test_excel_true_false_cells_read_as_yes_no(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    entries = _sample()
    write_catalog_xlsx(entries, tmp_path / "c.xlsx")
    workbook = load_workbook(tmp_path / "c.xlsx")
    sheet = workbook["事项"]
    column = [c.value for c in sheet[1]].index("是否网办") + 1
    for row in range(2, sheet.max_row + 1):
        sheet.cell(row=row, column=column).value = True  # typed as TRUE in Excel
    workbook.save(tmp_path / "c.xlsx")
    assert all(e.online for e in read_catalog_path(tmp_path / "c.xlsx", REGION))


def test_a_missing_workbook_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogFileError, match="no such file"):
        read_catalog_path(tmp_path / "none.xlsx", REGION)


def test_choice_field_needs_choices_and_only_it_has_them(sheets: Sheets) -> None:
    assert _get(sheets, "表单字段", 2, "类型") == "选项"
    _set(sheets, "表单字段", 2, "选项", "")
    _set(sheets, "表单字段", 3, "选项", "甲;乙")
    problems = _problems(sheets)
    assert any(p.sheet == "表单字段" and p.line == 2 and "lists no choices" in p.reason for p in problems)
    assert any(p.sheet == "表单字段" and p.line == 3 and "only a choice field" in p.reason for p in problems)


def test_several_problems_are_all_reported(sheets: Sheets) -> None:
    _set(sheets, "事项", 2, "通办范围", "全省通办")
    _set(sheets, "事项", 3, "事项版本", "第一版")
    _set(sheets, "事项", 3, "生效日期", "2026-02-30")
    _set(sheets, "材料", 4, "是否容缺", "可以")
    _set(sheets, "表单字段", 5, "最小值", "十")
    _set(sheets, "表单字段", 6, "字段名", "联系电话")
    problems = _problems(sheets)
    assert _has(problems, "事项", 2, "通办范围", "不在代码集中")
    assert _has(problems, "事项", 3, "事项版本", "整数")
    assert _has(problems, "材料", 4, "是否容缺", "是", "否")
    assert _has(problems, "表单字段", 5, "最小值", "整数")
    assert _has(problems, "表单字段", 6, "字段名")
    assert [SHEETS.index(p.sheet) for p in problems] == sorted(SHEETS.index(p.sheet) for p in problems)
    message = str(CatalogFileError(problems))
    assert f"{len(problems)} 处错误" in message
    assert "事项 第 2 行「通办范围」" in message
    assert "表单字段 第 6 行「字段名」" in message


def test_a_bad_date_is_reported_once_the_row_converts(sheets: Sheets) -> None:
    _set(sheets, "事项", 3, "生效日期", "2026/01/01")
    _set(sheets, "事项", 3, "取消日期", "2025-12-31")
    problems = _problems(sheets)
    assert _has(problems, "事项", 3, "生效日期", "YYYY-MM-DD")


def test_an_empty_matter_sheet_is_refused() -> None:
    problems = _problems({"事项": [], "材料": [], "表单字段": []})
    assert _has(problems, "事项", 1, "", "empty")
    assert read_catalog({"事项": [[c.header for c in MATTER_COLUMNS]]}, REGION) == []  # headers only


def test_many_problems_are_shortened_in_the_message(sheets: Sheets) -> None:
    for line in range(2, len(sheets["材料"]) + 1):
        _set(sheets, "材料", line, "原件份数", "x")
    sheets["材料"] *= 6
    problems = _problems(sheets)
    assert len(problems) > 50
    assert f"另有 {len(problems) - 50} 处" in str(CatalogFileError(problems))


# ---------------------------------------------------------------- files


def test_a_broken_workbook_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "catalog.xlsx"
    broken.write_bytes(hashlib.sha256(b"not a workbook").digest() * 64)
    with pytest.raises(CatalogFileError) as caught:
        read_catalog_path(broken, REGION)
    assert "不是有效的 XLSX" in str(caught.value)
    [problem] = caught.value.problems
    assert problem.line == 0


def test_a_zip_that_is_not_a_workbook_is_a_clear_error(tmp_path: Path) -> None:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("readme.txt", "事项清单")
    (tmp_path / "catalog.xlsx").write_bytes(data.getvalue())
    with pytest.raises(CatalogFileError, match="XLSX"):
        read_catalog_path(tmp_path / "catalog.xlsx", REGION)


def test_a_workbook_without_the_matter_sheet(tmp_path: Path) -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.active.title = "Sheet1"
    workbook.save(tmp_path / "catalog.xlsx")
    with pytest.raises(CatalogFileError) as caught:
        read_catalog_path(tmp_path / "catalog.xlsx", REGION)
    assert _has(caught.value.problems, "事项", 1, "", "missing")


def test_a_path_that_is_neither_a_workbook_nor_a_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "事项.csv").write_text("实施编码\n", encoding="utf-8")
    for path in (tmp_path / "事项.csv", tmp_path / "catalog.xls", tmp_path / "nothing"):
        with pytest.raises(CatalogFileError, match=r"\.xlsx"):
            read_catalog_path(path, REGION)


def test_a_folder_without_the_matter_file(tmp_path: Path) -> None:
    write_catalog_csv(_sample()[:1], tmp_path)
    (tmp_path / "表单字段.csv").unlink()
    assert read_catalog_path(tmp_path, REGION)[0].form == ()  # the other two sheets may be left out
    (tmp_path / "事项.csv").unlink()
    with pytest.raises(CatalogFileError, match=r"事项\.csv"):
        read_catalog_path(tmp_path, REGION)


def test_csv_without_bom_and_with_crlf_reads(tmp_path: Path) -> None:
    entries = _sample()[:3]
    write_catalog_csv(entries, tmp_path)
    for sheet in SHEETS:
        file = tmp_path / f"{sheet}.csv"
        file.write_bytes(file.read_text(encoding="utf-8-sig").encode())
    assert read_catalog_path(tmp_path, REGION) == entries


def test_the_template_documents_every_column() -> None:
    text = TEMPLATE.read_text(encoding="utf-8")
    for sheet in SHEETS:
        assert sheet in text
    missing = [c.header for c in (*MATTER_COLUMNS, *MATERIAL_COLUMNS, *FIELD_COLUMNS)
               if f"`{c.header}`" not in text]
    assert not missing


def test_the_template_lists_every_code_with_its_chinese_name() -> None:
    text = TEMPLATE.read_text(encoding="utf-8")
    tables = (codes.MATTER_TYPES, codes.EXERCISE_LEVELS, codes.AUTHORITY_NATURES, codes.SERVICE_OBJECTS,
              codes.HANDLING_FORMS, codes.CASE_TYPES, codes.ENTRY_STATUSES, codes.DAY_UNITS,
              codes.RESULT_TYPES, codes.TONGBAN_SCOPES, codes.TONGBAN_MODES, codes.ACCEPTANCE_MODELS,
              codes.JOINT_FAILURES,
              codes.MATERIAL_FORMS, codes.MATERIAL_NECESSITY, codes.MATERIAL_SOURCES, codes.FIELD_KINDS)
    missing = [f"{code} {name}" for table in tables for code, name in table.items()
               if f"`{code}` {name}" not in text]
    assert not missing


def test_credit_codes_of_the_samples_are_built_as_the_standard_says() -> None:
    for region in REGIONS:
        for entry in _sample(region):
            code = entry.authority_code
            assert code[:2] in ("11", "12")
            assert credit_check_char(code[:17]) == code[17]


def test_csv_written_by_excel_on_chinese_windows_reads(tmp_path: Path) -> None:
    entries = _sample()
    write_catalog_csv(entries, tmp_path / "utf8")
    (tmp_path / "gbk").mkdir()
    for file in (tmp_path / "utf8").iterdir():
        text = file.read_text(encoding="utf-8-sig")
        (tmp_path / "gbk" / file.name).write_bytes(text.encode("gb18030"))
    assert read_catalog_path(tmp_path / "gbk", REGION) == entries


def test_a_sheet_claiming_millions_of_cells_is_read_by_its_header(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    entries = _sample()
    write_catalog_xlsx(entries, tmp_path / "c.xlsx")
    workbook = load_workbook(tmp_path / "c.xlsx")
    workbook["事项"]["ZZ20000"] = ""  # a stray edit far away: the sheet's dimension explodes
    workbook["材料"]["XFD1048576"] = " "
    workbook.save(tmp_path / "c.xlsx")
    assert read_catalog_path(tmp_path / "c.xlsx", REGION) == entries


def test_a_workbook_with_a_broken_sheet_is_a_clear_error(tmp_path: Path) -> None:
    entries = _sample()
    write_catalog_xlsx(entries, tmp_path / "c.xlsx")
    broken = io.BytesIO()
    with zipfile.ZipFile(tmp_path / "c.xlsx") as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.startswith("xl/worksheets/sheet1"):
                data = data[: len(data) // 2]  # cut in the middle of the XML
            target.writestr(item, data)
    (tmp_path / "broken.xlsx").write_bytes(broken.getvalue())
    with pytest.raises(CatalogFileError, match="not a valid XLSX"):
        read_catalog_path(tmp_path / "broken.xlsx", REGION)
