"""``tongban catalog``: check, convert, publish, export and search 事项清单."""

from __future__ import annotations

import json
import urllib.parse
import uuid
from pathlib import Path

import click

from node.cli_http import fail, http_json, node_options, request
from protocol.codes import MATTER_TYPES, TONGBAN_MODES
from routing.catalog_files import (
    SHEETS,
    XLSX_MEDIA_TYPE,
    CatalogFileError,
    read_catalog_path,
    read_catalog_xlsx,
    write_catalog_csv,
    write_catalog_xlsx,
)

__all__ = ["catalog"]

NODE_OPTION = node_options("Web address of a running node.")


@click.group()
def catalog() -> None:
    """事项清单: check and convert spreadsheets, publish to the circle, export, search."""


@catalog.command("import")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--region", required=True, help="The region whose catalog this is (GB/T 2260 code).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Also write it out: a .xlsx file, or a folder for the three CSV files.")
def catalog_import(source: Path, region: str, out: Path | None) -> None:
    """Read and check a catalog (an .xlsx workbook or a folder of CSV files).

    Every bad row is listed with its sheet, line, column and reason; the command then
    fails and writes nothing. See docs/catalog-template.md for the columns."""
    try:
        entries = read_catalog_path(source, region)
    except CatalogFileError as exc:
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        fail(f"事项清单有 {len(exc.problems)} 处错误，未导入任何事项",
             f"the catalog has {len(exc.problems)} problems; nothing was imported")
    for entry in entries:
        click.echo(f"{entry.code}  v{entry.version}  {entry.name}  ({len(entry.materials)} 项材料, "
                   f"{len(entry.form)} 个表单字段)")
    click.echo(f"{len(entries)} 个事项无误 / {len(entries)} entries are valid")
    if out is not None:
        if out.suffix.lower() == ".xlsx":
            write_catalog_xlsx(entries, out)
        else:
            write_catalog_csv(entries, out)
        click.echo(f"已写出 / written: {out}")


@catalog.command("publish")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@NODE_OPTION
def catalog_publish(source: Path, url: str) -> None:
    """Send this region's catalog to its running node, which checks, signs and publishes it.

    A changed matter needs a new 事项版本; unchanged ones are left as they are."""
    if source.is_dir():
        boundary = uuid.uuid4().hex
        body = b""
        for sheet in SHEETS:
            file = source / f"{sheet}.csv"
            if file.exists():
                body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{sheet}\"; "
                         f"filename=\"{sheet}.csv\"\r\nContent-Type: text/csv\r\n\r\n").encode()
                body += file.read_bytes() + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        reply = request("POST", f"{url}/api/catalog", body,
                        f"multipart/form-data; boundary={boundary}")
    else:
        reply = request("POST", f"{url}/api/catalog", source.read_bytes(), XLSX_MEDIA_TYPE)
    result = json.loads(reply)
    click.echo(f"{result['entries']} 个事项，新发布 {result['published']} 个 / {result['entries']} "
               f"entries, {result['published']} published")
    for code in result["codes"]:
        click.echo(f"  {code}")


@catalog.command("export")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--region", help="Whose catalog (default: the node's own region).")
@NODE_OPTION
def catalog_export(out: Path, region: str | None, url: str) -> None:
    """Write a region's catalog as a node holds it: a .xlsx file, or a folder of CSV files."""
    query = f"?region={region}" if region else ""
    data = request("GET", f"{url}/api/catalog/export{query}")
    if out.suffix.lower() == ".xlsx":
        partial = out.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(out)
    else:
        write_catalog_csv(read_catalog_xlsx(data, region or _region_of(url)), out)
    click.echo(f"已写出 / written: {out}")


def _region_of(url: str) -> str:
    return str(http_json("GET", f"{url}/api/health")["region"])


@catalog.command("search")
@click.argument("query", default="")
@click.option("--region", "regions", multiple=True, help="Only this region (repeatable).")
@click.option("--mode", type=click.Choice(list(TONGBAN_MODES)), help="Only matters offering this mode.")
@click.option("--type", "matter_type", type=click.Choice(list(MATTER_TYPES)), help="事项类型代码.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 200))
@NODE_OPTION
def catalog_search(query: str, regions: tuple[str, ...], mode: str | None, matter_type: str | None,
                   limit: int, url: str) -> None:
    """Search every partner's catalog at a running node (Chinese keywords, e.g. 户口迁移)."""
    params = {"q": query, "limit": str(limit)}
    if regions:
        params["region"] = ",".join(regions)
    if mode:
        params["mode"] = mode
    if matter_type:
        params["type"] = matter_type
    reply = http_json("GET", f"{url}/api/catalog/search?{urllib.parse.urlencode(params)}")
    for hit in reply["results"]:
        modes = "、".join(TONGBAN_MODES.get(m, m) for m in hit["modes"])
        click.echo(f"{hit['region']}  {hit['name']}  v{hit['version']}  [{modes}]  {hit['code']}")
    if not reply["results"]:
        click.echo("没有找到 / nothing found")
