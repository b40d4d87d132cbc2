"""Catalog spreadsheets: the 事项清单 workbooks regions keep, read and written.

A catalog is three sheets (an XLSX workbook with these sheet names, or a folder
with one UTF-8 CSV file per sheet, ``事项.csv``, ``材料.csv``, ``表单字段.csv``):

* ``事项``: one row per matter (the entry's current version);
* ``材料``: one row per material, naming its matter by 实施编码, in list order;
* ``表单字段``: one row per application-form field, likewise.

The columns are ``MATTER_COLUMNS``, ``MATERIAL_COLUMNS`` and ``FIELD_COLUMNS``
below (docs/catalog-template.md explains each). A code-set cell takes the code or
its Chinese name (``07`` or ``行政确认``); a list cell separates items with ``;``
or ``；``; a yes/no cell takes 是/否. Export writes what import reads, so a
round trip gives the same entries.

``read_catalog`` checks everything before returning anything: if any row is
bad, it raises ``CatalogFileError`` listing every problem with its sheet, line,
column and reason, and nothing is imported.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from protocol import codes
from protocol.catalog import CatalogEntry, CatalogMaterial, FormField

__all__ = [
    "FIELD_COLUMNS",
    "MATERIAL_COLUMNS",
    "MATTER_COLUMNS",
    "SHEETS",
    "XLSX_MEDIA_TYPE",
    "CatalogFileError",
    "Column",
    "Problem",
    "catalog_xlsx_bytes",
    "csv_text",
    "read_catalog",
    "read_catalog_csv",
    "read_catalog_path",
    "read_catalog_xlsx",
    "write_catalog_csv",
    "write_catalog_xlsx",
]

SHEETS = ("事项", "材料", "表单字段")
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclasses.dataclass(frozen=True)
class Problem:
    sheet: str
    line: int  # 1 = the header row
    column: str  # header name, or "" for the whole row
    reason: str

    def __str__(self) -> str:
        where = f"{self.sheet} 第 {self.line} 行" + (f"「{self.column}」" if self.column else "")
        return f"{where}：{self.reason}"


class CatalogFileError(ValueError):
    """A catalog file that cannot be imported; ``problems`` says where and why."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  … 另有 {len(problems) - 50} 处 / {len(problems) - 50} more" if len(
            problems) > 50 else ""
        super().__init__(f"事项清单有 {len(problems)} 处错误，未导入任何事项 / the catalog has "
                         f"{len(problems)} problems; nothing was imported:\n{shown}{more}")


# ---------------------------------------------------------------- cell conversions


def _text(cell: str) -> str:
    return cell


def _int(cell: str) -> int:
    try:
        return int(cell)
    except ValueError:
        raise ValueError(f"应为整数 / not a whole number: {cell!r}") from None


def _yes_no(cell: str) -> bool:
    if cell.lower() in ("是", "1", "y", "yes", "true"):
        return True
    if cell.lower() in ("否", "0", "n", "no", "false"):
        return False
    raise ValueError(f"填“是”或“否” / write 是 or 否, not {cell!r}")


def _code(table: dict[Any, str]) -> Callable[[str], Any]:
    """A code-set cell: the code itself or its Chinese name."""
    by_name = {name: code for code, name in table.items()}
    by_text = {str(code): code for code in table}

    def convert(cell: str) -> Any:
        if cell in by_text:
            return by_text[cell]
        if cell.isdigit() and cell.zfill(2) in by_text:  # 07 typed as a number shows as 7
            return by_text[cell.zfill(2)]
        if cell in by_name:
            return by_name[cell]
        allowed = "、".join(f"{code} {name}" for code, name in table.items())
        raise ValueError(f"不在代码集中 / not in the code set: {cell!r} (可填 / allowed: {allowed})")

    return convert


def _list(item: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    def convert(cell: str) -> tuple[Any, ...]:
        parts = [p.strip() for p in cell.replace("；", ";").split(";")]
        return tuple(item(p) for p in parts if p)

    return convert


def _show_code(table: dict[Any, str]) -> Callable[[Any], str]:
    return lambda value: table[value] if isinstance(value, str) else str(value)


def _show_list(show: Callable[[Any], str]) -> Callable[[Any], str]:
    return lambda values: ";".join(show(v) for v in values)


def _show_yes_no(value: Any) -> str:
    return "是" if value else "否"


@dataclasses.dataclass(frozen=True)
class Column:
    header: str  # as in the spreadsheet
    path: tuple[str, ...]  # where the value goes in the model (nested for time limits, fee)
    read: Callable[[str], Any] = _text
    show: Callable[[Any], str] = str
    required: bool = False


def _c(header: str, path: str, read: Callable[[str], Any] = _text,
       show: Callable[[Any], str] = str, required: bool = False) -> Column:
    return Column(header, tuple(path.split(".")), read, show, required)


def _coded(header: str, path: str, table: dict[Any, str], *, required: bool = False,
           many: bool = False, names: bool = False) -> Column:
    """A code-set column; ``names``: export the Chinese names (for word codes)."""
    read = _code(table)
    show: Callable[[Any], str] = _show_code(table) if names else str
    if many:
        return _c(header, path, _list(read), _show_list(show), required)
    return _c(header, path, read, show, required)


def _flag(header: str, path: str) -> Column:
    """A 是/否 column."""
    return _c(header, path, _yes_no, _show_yes_no)


MATTER_COLUMNS: tuple[Column, ...] = (
    _c("实施编码", "code", required=True),
    _c("事项版本", "version", _int, required=True),
    _coded("事项状态", "status", codes.ENTRY_STATUSES, names=True),
    _c("生效日期", "effective_from", required=True),
    _c("取消日期", "effective_to"),
    _c("基本编码", "basic_code", required=True),
    _c("业务办理项编码", "item_code"),
    _c("事项名称", "name", required=True),
    _coded("事项类型代码", "matter_type", codes.MATTER_TYPES, required=True),
    _coded("行使层级代码", "level", codes.EXERCISE_LEVELS, required=True),
    _c("实施主体", "authority", required=True),
    _c("实施主体代码", "authority_code", required=True),
    _coded("实施主体性质代码", "authority_nature", codes.AUTHORITY_NATURES),
    _coded("服务对象代码", "service_objects", codes.SERVICE_OBJECTS, required=True, many=True),
    _coded("办理形式代码", "handling_forms", codes.HANDLING_FORMS, required=True, many=True),
    _c("设定依据", "legal_basis"),
    _c("受理条件", "conditions"),
    _c("办理流程", "process"),
    _c("法定办结时限", "legal_limit.days", _int, required=True),
    _coded("法定时限单位", "legal_limit.unit", codes.DAY_UNITS, names=True),
    _c("法定时限说明", "legal_limit.note"),
    _c("承诺办结时限", "promised_limit.days", _int, required=True),
    _coded("承诺时限单位", "promised_limit.unit", codes.DAY_UNITS, names=True),
    _c("承诺时限说明", "promised_limit.note"),
    _coded("办件类型代码", "case_type", codes.CASE_TYPES),
    _flag("是否收费", "fee.charged"),
    _c("收费标准", "fee.standard"),
    _c("收费依据", "fee.basis"),
    _coded("审批结果类型", "result_type", codes.RESULT_TYPES, names=True),
    _c("结果名称", "result_name"),
    _flag("是否支持物流快递", "express"),
    _flag("是否网办", "online"),
    _flag("是否支持预约办理", "appointment"),
    _c("网办地址", "online_url"),
    _c("办理地点", "location"),
    _c("办理时间", "hours"),
    _c("咨询电话", "consult_phone"),
    _c("监督电话", "supervise_phone"),
    _coded("通办范围", "scope", codes.TONGBAN_SCOPES, required=True, names=True),
    _coded("通办模式", "modes", codes.TONGBAN_MODES, required=True, many=True, names=True),
    _coded("受理模式", "acceptance", codes.ACCEPTANCE_MODELS, names=True),
    _coded("联办失败处理", "joint_failure", codes.JOINT_FAILURES, names=True),
)

MATERIAL_COLUMNS: tuple[Column, ...] = (
    _c("实施编码", "code", required=True),
    _c("材料名称", "name", required=True),
    _coded("材料形式", "form", codes.MATERIAL_FORMS, names=True),
    _coded("材料必要性", "necessity", codes.MATERIAL_NECESSITY, names=True),
    _c("原件份数", "originals", _int),
    _c("复印件份数", "copies", _int),
    _c("受理标准", "standard"),
    _flag("是否容缺", "deferrable"),
    _coded("来源渠道", "source", codes.MATERIAL_SOURCES, names=True),
    _c("出具机构", "issuer"),
    _c("填报须知", "note"),
)

FIELD_COLUMNS: tuple[Column, ...] = (
    _c("实施编码", "code", required=True),
    _c("字段名", "name", required=True),
    _c("标签", "label", required=True),
    _coded("类型", "kind", codes.FIELD_KINDS, required=True, names=True),
    _flag("是否必填", "required"),
    _c("最大长度", "max_length", _int),
    _c("格式", "pattern"),
    _c("选项", "choices", _list(_text), _show_list(str)),
    _c("最小值", "minimum", _int),
    _c("最大值", "maximum", _int),
    _c("填写说明", "help"),
)

_COLUMNS = dict(zip(SHEETS, (MATTER_COLUMNS, MATERIAL_COLUMNS, FIELD_COLUMNS), strict=True))


# ---------------------------------------------------------------- reading

Rows = list[tuple[int, dict[str, str]]]  # (line, header -> cell)


def read_catalog_path(path: Path, region: str) -> list[CatalogEntry]:
    """Read an ``.xlsx`` workbook or a folder of the three CSV files."""
    if path.is_dir():
        sheets = {}
        for sheet in SHEETS:
            file = path / f"{sheet}.csv"
            if not file.exists():
                if sheet == "事项":
                    raise CatalogFileError([Problem(sheet, 0, "", f"缺少文件 {file.name} / "
                                                    f"{file.name} is missing")])
                sheets[sheet] = ""
                continue
            sheets[sheet] = csv_text(file.read_bytes())
        return read_catalog_csv(sheets, region)
    if path.suffix.lower() == ".xlsx":
        if not path.is_file():
            raise CatalogFileError([Problem("", 0, "", f"文件不存在 / no such file: {path}")])
        return read_catalog_xlsx(path.read_bytes(), region)
    raise CatalogFileError([Problem("", 0, "", f"应为 .xlsx 文件或含 CSV 的目录 / expected an "
                                    f".xlsx workbook or a folder of CSV files: {path.name}")])


def csv_text(data: bytes) -> str:
    """A CSV file's text: UTF-8 (with or without BOM), or GB 18030, which covers the GBK
    that Excel on Chinese Windows writes by default."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError:
        raise CatalogFileError([Problem("", 0, "", "CSV 文件应为 UTF-8 或 GBK 编码 / CSV files "
                                        "must be UTF-8 or GBK")]) from None


def read_catalog_csv(texts: dict[str, str], region: str) -> list[CatalogEntry]:
    """Entries from the three CSV files' texts, by sheet name (材料, 表单字段 may be "")."""
    try:
        sheets = {sheet: list(csv.reader(io.StringIO(text))) for sheet, text in texts.items()}
    except csv.Error as exc:
        raise CatalogFileError([Problem("", 0, "", f"CSV 格式错误 / malformed CSV: {exc}")]) from None
    return read_catalog(sheets, region)


def read_catalog_xlsx(data: bytes, region: str) -> list[CatalogEntry]:
    return read_catalog(_xlsx_sheets(data), region)


#: More rows than any region's catalog has (865 matters, their materials and fields).
MAX_ROWS = 50_000


def _xlsx_sheets(data: bytes) -> dict[str, list[list[str]]]:
    import zipfile
    from xml.etree.ElementTree import ParseError

    from openpyxl import load_workbook

    def broken(exc: Exception) -> CatalogFileError:
        return CatalogFileError([Problem("", 0, "", f"不是有效的 XLSX 文件 / not a valid XLSX "
                                         f"workbook: {type(exc).__name__} {exc}"[:300])])

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, ParseError, TypeError) as exc:
        raise broken(exc) from None
    sheets: dict[str, list[list[str]]] = {}
    try:
        for sheet in SHEETS:
            sheets[sheet] = _worksheet_rows(workbook[sheet], sheet) if sheet in workbook.sheetnames else []
    except CatalogFileError:
        raise
    except (KeyError, ValueError, OSError, ParseError, TypeError, zipfile.BadZipFile) as exc:
        raise broken(exc) from None
    finally:
        workbook.close()
    return sheets


def _worksheet_rows(worksheet: Any, sheet: str) -> list[list[str]]:
    """The rows, no wider than the header: a sheet can claim millions of empty cells."""
    rows = worksheet.iter_rows(values_only=True)
    header = next(rows, None)
    if header is None:
        return []
    width = len(header)
    while width and header[width - 1] in (None, ""):
        width -= 1
    table = [["" if v is None else _cell_text(v) for v in header[:width]]]
    blank = 0  # blank rows not yet added: only those before a filled one are kept
    for line, row in enumerate(worksheet.iter_rows(min_row=2, max_col=max(width, 1),
                                                   values_only=True), start=2):
        cells = ["" if v is None else _cell_text(v) for v in row]
        if not any(cell.strip() for cell in cells):
            blank += 1
            continue
        if line > MAX_ROWS:
            raise CatalogFileError([Problem(sheet, line, "", f"超过 {MAX_ROWS} 行 / more "
                                            f"than {MAX_ROWS} rows")])
        table += [[] for _ in range(blank)]  # keeps every row at its line
        blank = 0
        table.append(cells)
    return table


def _cell_text(value: Any) -> str:
    if isinstance(value, bool):  # a TRUE/FALSE cell
        return "是" if value else "否"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "date") and callable(value.date):  # a date typed into Excel
        return str(value.date().isoformat())
    return str(value)


def read_catalog(sheets: dict[str, list[list[str]]], region: str) -> list[CatalogEntry]:
    """Entries from the three sheets' rows (header first); all or ``CatalogFileError``."""
    problems: list[Problem] = []
    rows = {sheet: _rows(sheet, sheets.get(sheet, []), problems) for sheet in SHEETS}
    if not sheets.get("事项"):
        problems.append(Problem("事项", 1, "", "没有“事项”表或表为空 / the 事项 sheet is missing "
                                "or empty"))
    parsed = {sheet: [(line, _convert(sheet, line, cells, problems)) for line, cells in rows[sheet]]
              for sheet in SHEETS}
    reported = {(p.sheet, p.line) for p in problems}  # rows whose cells are wrong already
    children: dict[str, dict[str, list[tuple[int, dict[str, Any]]]]] = {"材料": {}, "表单字段": {}}
    for sheet in ("材料", "表单字段"):
        for line, values in parsed[sheet]:
            code = values.pop("code", None)
            if code is not None:
                children[sheet].setdefault(code, []).append((line, values))
    entries: list[CatalogEntry] = []
    codes_seen: dict[str, int] = {}
    for line, values in parsed["事项"]:
        code = values.get("code")
        if code in codes_seen:
            problems.append(Problem("事项", line, "实施编码", f"与第 {codes_seen[code]} 行重复 / "
                                    f"the same code as line {codes_seen[code]}"))
            continue
        if code is not None:
            codes_seen[code] = line
        materials = children["材料"].pop(code, []) if code else []
        fields = children["表单字段"].pop(code, []) if code else []
        entry = _entry(region, line, values, materials, fields, problems, reported)
        if entry is not None:
            entries.append(entry)
    for sheet in ("材料", "表单字段"):
        for code, orphans in children[sheet].items():
            for line, _ in orphans:
                problems.append(Problem(sheet, line, "实施编码", f"“事项”表中没有实施编码 {code} / "
                                        f"no matter {code} in the 事项 sheet"))
    if problems:
        raise CatalogFileError(sorted(problems, key=lambda p: (SHEETS.index(p.sheet)
                                                               if p.sheet in SHEETS else -1,
                                                               p.line)))
    return entries


def _rows(sheet: str, table: list[list[str]], problems: list[Problem]) -> Rows:
    if not table:
        return []
    header = [h.strip() for h in table[0]]
    known = {c.header for c in _COLUMNS[sheet]}
    for position, name in enumerate(header):
        if name and name not in known:
            problems.append(Problem(sheet, 1, name, f"未知的列（第 {position + 1} 列）/ unknown "
                                    f"column {position + 1}"))
        elif name and name in header[:position]:
            problems.append(Problem(sheet, 1, name, f"列名重复（第 {position + 1} 列）/ the column "
                                    f"appears twice (column {position + 1})"))
    for column in _COLUMNS[sheet]:
        if column.required and column.header not in header:
            problems.append(Problem(sheet, 1, column.header, "缺少必填列 / a required column is "
                                    "missing"))
    rows = []
    for number, row in enumerate(table[1:], start=2):
        cells = {name: (row[i] if i < len(row) else "").strip() for i, name in enumerate(header)
                 if name}
        if any(cells.values()):
            rows.append((number, cells))
    return rows


def _convert(sheet: str, line: int, cells: dict[str, str], problems: list[Problem]) -> dict[str, Any]:
    """A row's cells as model values (nested by ``Column.path``); problems recorded."""
    values: dict[str, Any] = {}
    for column in _COLUMNS[sheet]:
        cell = cells.get(column.header, "")
        if not cell:
            if column.required:
                problems.append(Problem(sheet, line, column.header, "必填 / required"))
            continue
        try:
            value = column.read(cell)
        except ValueError as exc:
            problems.append(Problem(sheet, line, column.header, str(exc)))
            continue
        target = values
        for part in column.path[:-1]:
            target = target.setdefault(part, {})
        target[column.path[-1]] = value
    return values


def _entry(region: str, line: int, values: dict[str, Any],
           materials: list[tuple[int, dict[str, Any]]], fields: list[tuple[int, dict[str, Any]]],
           problems: list[Problem], reported: set[tuple[str, int]]) -> CatalogEntry | None:
    """The entry of one 事项 row and its child rows. A row whose cells were reported
    already is not checked again as a whole (that would only say the same twice)."""
    before = len(problems)
    checked_materials = _children("材料", CatalogMaterial, materials, problems, reported)
    checked_fields = _children("表单字段", FormField, fields, problems, reported)
    if len(problems) > before or ("事项", line) in reported or "code" not in values or any(
            (sheet, row) in reported for sheet, rows in (("材料", materials), ("表单字段", fields))
            for row, _ in rows):
        return None
    try:
        return CatalogEntry.model_validate(
            {**values, "region": region, "materials": tuple(checked_materials),
             "form": tuple(checked_fields)}, strict=False)
    except ValidationError as exc:
        for error in exc.errors():
            problems.append(_problem("事项", line, MATTER_COLUMNS, error, materials, fields))
        return None


def _children(sheet: str, model: Any, rows: list[tuple[int, dict[str, Any]]],
              problems: list[Problem], reported: set[tuple[str, int]]) -> list[Any]:
    checked = []
    for line, values in rows:
        if (sheet, line) in reported:
            continue
        try:
            checked.append(model.model_validate(values, strict=False))
        except ValidationError as exc:
            for error in exc.errors():
                problems.append(_problem(sheet, line, _COLUMNS[sheet], error, [], []))
    return checked


def _problem(sheet: str, line: int, columns: Iterable[Column], error: Any,
             materials: list[tuple[int, dict[str, Any]]],
             fields: list[tuple[int, dict[str, Any]]]) -> Problem:
    """Name the column (or the child row) a pydantic error is about."""
    loc = tuple(str(part) for part in error.get("loc", ()))
    message = error.get("msg", "invalid").removeprefix("Value error, ")
    if loc and loc[0] in ("materials", "form") and len(loc) > 1 and loc[1].isdigit():
        children = materials if loc[0] == "materials" else fields
        child_sheet = "材料" if loc[0] == "materials" else "表单字段"
        index = int(loc[1])
        if index < len(children):
            return _problem(child_sheet, children[index][0], _COLUMNS[child_sheet],
                            {**error, "loc": loc[2:]}, [], [])
    for column in columns:
        if loc[:len(column.path)] == column.path or (len(column.path) > 1 and loc[:1] ==
                                                     column.path[:1] and len(loc) == 1):
            return Problem(sheet, line, column.header, message)
    return Problem(sheet, line, "", message if not loc else f"{'.'.join(loc)}: {message}")


# ---------------------------------------------------------------- writing


def _table(entries: Iterable[CatalogEntry]) -> dict[str, list[list[str]]]:
    tables = {sheet: [[c.header for c in _COLUMNS[sheet]]] for sheet in SHEETS}
    for entry in entries:
        data = entry.model_dump()
        tables["事项"].append([_cell(data, c) for c in MATTER_COLUMNS])
        for material in data["materials"]:
            tables["材料"].append([_cell({**material, "code": entry.code}, c)
                                 for c in MATERIAL_COLUMNS])
        for field in data["form"]:
            tables["表单字段"].append([_cell({**field, "code": entry.code}, c)
                                   for c in FIELD_COLUMNS])
    return tables


def _cell(data: dict[str, Any], column: Column) -> str:
    value: Any = data
    for part in column.path:
        value = value.get(part) if isinstance(value, dict) else None
    if value is None or value == () or value == "":
        return ""
    return column.show(value)


def write_catalog_csv(entries: Iterable[CatalogEntry], folder: Path) -> None:
    """The three CSV files (UTF-8 with BOM, which Excel opens as UTF-8)."""
    folder.mkdir(parents=True, exist_ok=True)
    for sheet, rows in _table(entries).items():
        with open(folder / f"{sheet}.csv", "w", encoding="utf-8-sig", newline="") as out:
            csv.writer(out).writerows(rows)


def catalog_xlsx_bytes(entries: Iterable[CatalogEntry]) -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.remove(workbook.active)
    for sheet, rows in _table(entries).items():
        worksheet = workbook.create_sheet(sheet)
        for row in rows:
            worksheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def write_catalog_xlsx(entries: Iterable[CatalogEntry], path: Path) -> None:
    partial = path.with_suffix(".part")
    partial.write_bytes(catalog_xlsx_bytes(entries))
    partial.replace(path)
