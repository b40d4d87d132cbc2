"""The catalog routes of the JSON API: search, entry detail, what was ignored.

``GET /api/catalog/search?q=户口迁移&region=370100,510100&mode=proxy&type=07&limit=50``
    matters in force today whose name, materials or conditions hold every term;
``GET /api/catalog/{region}/{code}?version=N``
    one entry (the newest version, or the one an application pinned) and its versions;
``POST /api/catalog`` (an .xlsx workbook, or the three CSV files as multipart parts
    named 事项, 材料, 表单字段)
    check, sign and publish this region's catalog; 422 lists every bad row;
``GET /api/catalog/export?region=R``
    a region's catalog (newest versions) as an .xlsx workbook;
``GET /api/catalog/rejected``
    published entries this node ignored (bad signature, not a member's key ...);
``GET /api/catalog/stats``
    how much of the circle's catalog is indexed here.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from node.api_errors import error
from node.app import Node
from node.catalog import CatalogConflict
from protocol.codes import MATTER_TYPES, TONGBAN_MODES
from routing.catalog_files import (
    SHEETS,
    XLSX_MEDIA_TYPE,
    CatalogFileError,
    catalog_xlsx_bytes,
    csv_text,
    read_catalog_csv,
    read_catalog_xlsx,
)

__all__ = ["add_catalog_routes"]

_REGION = re.compile(r"^[0-9]{6}$")
#: A catalog upload may be larger than a message: 865 matters make about 1 MB of XLSX.
MAX_UPLOAD = 32 << 20


async def _read_limited(read_chunk: Callable[[int], Awaitable[bytes]], limit: int) -> bytes | None:
    """A whole body (or multipart part) by chunks, or ``None`` if it is larger than ``limit``."""
    data = bytearray()
    while chunk := await read_chunk(1 << 16):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)



def add_catalog_routes(app: web.Application, node_key: web.AppKey[Node]) -> None:
    async def search(request: web.Request) -> web.Response:
        node = request.app[node_key]
        query = request.query
        regions = tuple(r for r in query.get("region", "").split(",") if r)
        if any(not _REGION.match(r) for r in regions):
            return error(400, "bad_region", "地区应为 6 位行政区划代码，多个用逗号分隔",
                         "region must be six-digit GB/T 2260 codes, separated by commas")
        mode = query.get("mode") or None
        if mode is not None and mode not in TONGBAN_MODES:
            return error(400, "bad_mode", f"通办模式应为 {'、'.join(TONGBAN_MODES)} 之一",
                         f"mode must be one of {', '.join(TONGBAN_MODES)}")
        matter_type = query.get("type") or None
        if matter_type is not None and matter_type not in MATTER_TYPES:
            return error(400, "bad_type", "事项类型应为两位事项类型代码（GB/T 39046 A.1）",
                         "type must be a two-digit 事项类型代码 (GB/T 39046 A.1)")
        try:
            limit = int(query.get("limit", "50"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 200:
            return error(400, "bad_limit", "limit 应为 1 到 200 的整数",
                         "limit must be a whole number from 1 to 200")
        results = await asyncio.to_thread(node.catalog.search, query.get("q", ""),
                                          regions=regions, mode=mode, matter_type=matter_type,
                                          limit=limit)
        return web.json_response({"results": results})

    async def detail(request: web.Request) -> web.Response:
        node = request.app[node_key]
        region, code = request.match_info["region"], request.match_info["code"]
        version_text = request.query.get("version")
        version = None
        if version_text is not None:
            try:
                version = int(version_text)
            except ValueError:
                version = 0
            if not 1 <= version <= 1_000_000 or not version_text.isascii():
                return error(400, "bad_version", "version 应为 1 到 1000000 的整数",
                             "version must be a whole number from 1 to 1,000,000")
        entry = node.catalog.entry(region, code, version)
        if entry is None:
            return error(404, "no_matter", "没有这个事项（或这个版本）", "no such matter (or version)")
        return web.json_response({
            "entry": entry.model_dump(mode="json"),
            "versions": [{"version": v, "status": s}
                         for v, s in node.catalog.index.versions(region, code)]})

    async def rejected(request: web.Request) -> web.Response:
        return web.json_response(request.app[node_key].catalog.index.rejections())

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(request.app[node_key].catalog.index.counts))

    async def upload(request: web.Request) -> web.Response:
        node = request.app[node_key]
        too_large = error(413, "too_large", f"事项清单文件不能超过 {MAX_UPLOAD >> 20} MB",
                          f"a catalog upload is limited to {MAX_UPLOAD >> 20} MB")
        try:
            if request.content_type == XLSX_MEDIA_TYPE:
                data = await _read_limited(request.content.read, MAX_UPLOAD)
                if data is None:
                    return too_large
                entries = await asyncio.to_thread(read_catalog_xlsx, data, node.region)
            elif request.content_type == "multipart/form-data":
                texts: dict[str, str] = {}
                try:
                    async for part in await request.multipart():
                        if getattr(part, "name", None) not in SHEETS:
                            return error(400, "bad_part", f"表单部分应命名为 {'、'.join(SHEETS)}",
                                         f"multipart parts must be named {', '.join(SHEETS)}")
                        data = await _read_limited(part.read_chunk, MAX_UPLOAD)  # type: ignore[union-attr]
                        if data is None:
                            return too_large
                        texts[part.name] = csv_text(data)  # type: ignore[union-attr,index]
                except (ValueError, AssertionError, aiohttp.ClientPayloadError, EOFError,
                        HttpProcessingError):  # e.g. a part whose headers do not parse
                    return error(400, "bad_multipart", "上传内容不完整或格式有误",
                                 "the multipart body is malformed or incomplete")
                entries = await asyncio.to_thread(read_catalog_csv, texts, node.region)
            else:
                return error(415, "bad_media", "请上传 .xlsx 文件或三个 CSV 文件",
                             "send an .xlsx workbook or the three CSV files (multipart)")
        except CatalogFileError as exc:
            return web.json_response({
                "error": "bad_catalog", "zh": "事项清单有错误，未导入任何事项",
                "en": "the catalog has problems; nothing was imported",
                "problems": [{"sheet": p.sheet, "line": p.line, "column": p.column,
                              "reason": p.reason} for p in exc.problems]}, status=422)
        try:
            published = await node.catalog.publish(entries)
        except CatalogConflict as exc:
            return error(409, "version_conflict", "事项内容变化时须提高版本号", str(exc))
        except ConnectionError as exc:
            return error(503, "nats_unavailable", "消息服务暂不可用，请稍后重试", str(exc))
        return web.json_response({"entries": len(entries), "published": len(published),
                                  "codes": [e.code for e in published]})

    async def export(request: web.Request) -> web.Response:
        node = request.app[node_key]
        region = request.query.get("region", node.region)
        if not _REGION.match(region):
            return error(400, "bad_region", "地区应为 6 位行政区划代码",
                         "region must be a six-digit GB/T 2260 code")
        entries = node.catalog.entries_of(region)
        if not entries:
            return error(404, "no_catalog", "本节点没有该地区的事项清单",
                         "this node holds no catalog of that region")
        data = await asyncio.to_thread(catalog_xlsx_bytes, entries)
        return web.Response(body=data, content_type=XLSX_MEDIA_TYPE, headers={
            "Content-Disposition": f'attachment; filename="catalog-{region}.xlsx"'})

    app.router.add_post("/api/catalog", upload)
    app.router.add_get("/api/catalog/export", export)
    app.router.add_get("/api/catalog/search", search)
    app.router.add_get("/api/catalog/rejected", rejected)
    app.router.add_get("/api/catalog/stats", stats)
    app.router.add_get("/api/catalog/{region}/{code}", detail)
