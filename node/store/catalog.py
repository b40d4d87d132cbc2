"""The catalog index: every partner's matter catalog, searchable in Chinese.

Theory of operation
-------------------
``entries`` keeps every version of every entry the node has accepted (a case
stays pinned to the version it was filled against, even after a newer one or a
withdrawal); ``versions`` holds what search needs of each, and search shows, of
each matter, the newest version that has come into force.

Search text (事项名称, material names, 受理条件) is stored once per distinct text
in ``texts`` with an FTS5 **trigram** index, so any three consecutive characters
match: Chinese has no spaces to split words at. National 通办 matters carry the
same name, materials and conditions in every region, so the circle's 361,570
entries share a few thousand texts and the index stays small; a region's own
wording simply adds a text. Terms shorter than three characters (户口) cannot use
a trigram index and are matched with LIKE on ``texts``.

Results come text by text in rank order, each text's matters fetched through an
index until the page is full, so a query that matches everything still reads one
page's worth of rows. With a region filter, the region's own matters (a few
hundred) are read at once and ordered by their text's rank: a filter that matches
nothing then costs one region's rows, not a query per text.

The index can be rebuilt from the catalog bucket at any time, so it lives in its
own file with ``synchronous=NORMAL``; writes (bulk sync) run on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node.store.base import StoreError, migrate, open_database

__all__ = ["CatalogIndex", "IndexRow"]

#: The 通办 modes (protocol.codes.TONGBAN_MODES), each with a partial index.
MODES = ("online", "proxy", "joint")

MIGRATIONS: list[tuple[str, ...]] = [
    (  # version 1
        """CREATE TABLE entries (
            region TEXT NOT NULL, code TEXT NOT NULL, version INTEGER NOT NULL,
            status TEXT NOT NULL, digest BLOB NOT NULL, record BLOB NOT NULL,
            record_sha BLOB NOT NULL, received_at INTEGER NOT NULL,
            PRIMARY KEY (region, code, version))""",
        # What search needs of every version: the one a clerk sees is the newest that
        # has come into force (a version published ahead of its date waits for it).
        """CREATE TABLE versions (
            region TEXT NOT NULL, code TEXT NOT NULL, version INTEGER NOT NULL,
            status TEXT NOT NULL, name TEXT NOT NULL, matter_type TEXT NOT NULL,
            modes TEXT NOT NULL, effective_from TEXT NOT NULL, effective_to TEXT,
            text_id INTEGER NOT NULL, PRIMARY KEY (region, code, version))""",
        "CREATE INDEX versions_text ON versions(text_id, matter_type, region)",
        *(f"CREATE INDEX versions_{mode} ON versions(text_id, region) "
          f"WHERE modes LIKE '%;{mode};%'" for mode in MODES),
        "CREATE TABLE texts (id INTEGER PRIMARY KEY, digest BLOB NOT NULL UNIQUE, body TEXT NOT NULL)",
        "CREATE VIRTUAL TABLE texts_fts USING fts5(body, content='texts', content_rowid='id', "
        "tokenize='trigram')",
        """CREATE TABLE rejected (
            key TEXT NOT NULL, region TEXT, reason TEXT NOT NULL, at INTEGER NOT NULL,
            times INTEGER NOT NULL DEFAULT 1, UNIQUE (key, reason))""",
    ),
    (  # version 2: what routing needs (基本编码, 通办范围). Rows from before lack it, so
       # the index starts empty and is rebuilt from the catalog bucket at the next follow.
        "DELETE FROM entries",
        "DELETE FROM versions",
        "DELETE FROM texts",
        "INSERT INTO texts_fts(texts_fts) VALUES ('delete-all')",
        "ALTER TABLE versions ADD COLUMN basic_code TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE versions ADD COLUMN scope TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX versions_basic ON versions(basic_code, region)",
    ),
]


@dataclasses.dataclass(frozen=True)
class IndexRow:
    """One accepted entry version, as the index stores it (``record``: its canonical bytes)."""

    region: str
    code: str
    version: int
    status: str
    name: str
    matter_type: str
    modes: tuple[str, ...]
    effective_from: str
    effective_to: str | None
    digest: bytes
    record: bytes
    text: str  # what search matches: name, material names, conditions
    basic_code: str  # 基本编码: the same matter across regions (routing)
    scope: str  # 通办范围


class CatalogIndex:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._writer = open_database(path, synchronous="NORMAL").conn
        migrate(self._writer, MIGRATIONS)
        self._reader = open_database(path, synchronous="NORMAL").conn
        self._lock = threading.Lock()  # one write at a time, whichever thread
        self._text_ids: dict[bytes, int] = {}
        self.generation = 0  #: counts committed writes (routing drops cached offers)

    def __repr__(self) -> str:
        return f"<CatalogIndex {self.path.name}>"

    def close(self) -> None:
        with self._lock:
            self._writer.close()
        self._reader.close()

    # ---------------------------------------------------------------- writes

    async def add(self, rows: Sequence[IndexRow], now: int) -> int:
        """Store accepted entries in one transaction (off the event loop); returns how
        many versions were new."""
        return await asyncio.to_thread(self.add_now, rows, now)

    def add_now(self, rows: Sequence[IndexRow], now: int) -> int:
        with self._lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                conn.executemany(
                    "INSERT INTO entries (region, code, version, status, digest, record, "
                    "record_sha, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    [(r.region, r.code, r.version, r.status, r.digest, r.record,
                      hashlib.sha256(r.record).digest(), now) for r in rows])
                added = conn.total_changes - before
                conn.executemany(
                    "INSERT INTO versions (region, code, version, status, name, matter_type, "
                    "modes, effective_from, effective_to, text_id, basic_code, scope) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [(r.region, r.code, r.version, r.status, r.name, r.matter_type,
                      ";" + ";".join(r.modes) + ";", r.effective_from, r.effective_to,
                      self._text_id(conn, r.text), r.basic_code, r.scope) for r in rows])
                conn.execute("COMMIT")
                self.generation += 1
            except BaseException as exc:
                conn.execute("ROLLBACK")
                self._text_ids.clear()  # ids handed out in the rolled-back transaction
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"catalog index: {exc}") from exc
                raise
        return added

    def _text_id(self, conn: Any, text: str) -> int:
        digest = hashlib.sha256(text.encode()).digest()
        known = self._text_ids.get(digest)
        if known is not None:
            return known
        row = conn.execute("SELECT id FROM texts WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            text_id = int(conn.execute("INSERT INTO texts (digest, body) VALUES (?, ?)",
                                       (digest, text)).lastrowid)
            conn.execute("INSERT INTO texts_fts (rowid, body) VALUES (?, ?)", (text_id, text))
        else:
            text_id = int(row[0])
        self._text_ids[digest] = text_id
        return text_id

    def reject(self, key: str, region: str | None, reason: str, at: int) -> None:
        """Record a value ignored; the same one again only counts up (redeliveries)."""
        with self._lock:
            self._writer.execute(
                "INSERT INTO rejected (key, region, reason, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key, reason) DO UPDATE SET at = excluded.at, times = times + 1",
                (key, region, reason[:500], at))

    # ---------------------------------------------------------------- reads

    def has_record(self, key: str, record_sha: bytes) -> bool:
        """Whether the bucket value under ``key`` (``<region>.<code>``) is indexed already."""
        region, _, code = key.partition(".")
        return self._reader.execute(
            "SELECT 1 FROM entries WHERE region = ? AND code = ? AND record_sha = ?",
            (region, code, record_sha)).fetchone() is not None

    def version_digest(self, region: str, code: str, version: int) -> bytes | None:
        row = self._reader.execute(
            "SELECT digest FROM entries WHERE region = ? AND code = ? AND version = ?",
            (region, code, version)).fetchone()
        return None if row is None else bytes(row[0])

    def record(self, region: str, code: str, version: int | None = None) -> bytes | None:
        """An entry's signed record: the given version, or the newest."""
        if version is None:
            row = self._reader.execute(
                "SELECT record FROM entries WHERE region = ? AND code = ? ORDER BY version DESC "
                "LIMIT 1", (region, code)).fetchone()
        else:
            row = self._reader.execute(
                "SELECT record FROM entries WHERE region = ? AND code = ? AND version = ?",
                (region, code, version)).fetchone()
        return None if row is None else bytes(row[0])

    def versions(self, region: str, code: str) -> list[tuple[int, str]]:
        return [(int(v), s) for v, s in self._reader.execute(
            "SELECT version, status FROM entries WHERE region = ? AND code = ? ORDER BY version",
            (region, code))]

    def empty(self) -> bool:
        return self._reader.execute("SELECT 1 FROM entries LIMIT 1").fetchone() is None

    def has_region(self, region: str) -> bool:
        return self._reader.execute("SELECT 1 FROM versions WHERE region = ? LIMIT 1",
                                    (region,)).fetchone() is not None

    def records_of(self, region: str) -> list[bytes]:
        """The newest record of each of a region's matters (withdrawn ones included)."""
        return [bytes(r[0]) for r in self._reader.execute(
            "SELECT e.record FROM entries e WHERE e.region = ? AND e.version = (SELECT max(n.version) "
            "FROM entries n WHERE n.region = e.region AND n.code = e.code) ORDER BY e.code",
            (region,))]

    def version_in_force(self, region: str, code: str, today: str) -> int | None:
        """The newest version that has come into force by ``today``, else the newest."""
        row = self._reader.execute(
            "SELECT version FROM versions WHERE region = ? AND code = ? "
            "ORDER BY effective_from <= ? DESC, version DESC LIMIT 1",
            (region, code, today)).fetchone()
        return None if row is None else int(row[0])

    def offers(self, basic_code: str) -> list[tuple[Any, ...]]:
        """Every indexed version of every region's entry for one matter (基本编码):
        ``(region, code, version, status, scope, modes, effective_from, effective_to)``."""
        return [(region, code, version, status, scope, tuple(filter(None, modes.split(";"))),
                 start, end) for region, code, version, status, scope, modes, start, end
                in self._reader.execute(
                    "SELECT region, code, version, status, scope, modes, effective_from, "
                    "effective_to FROM versions WHERE basic_code = ?", (basic_code,))]

    def search(self, terms: Sequence[str], *, today: str, regions: Sequence[str] = (),
               mode: str | None = None, matter_type: str | None = None,
               limit: int = 50) -> list[dict[str, Any]]:
        """Matters in force today whose text holds every term, best texts first."""
        filters = ["c.status = 'active'", "c.effective_from <= ?",
                   "(c.effective_to IS NULL OR c.effective_to >= ?)",
                   "NOT EXISTS (SELECT 1 FROM versions n WHERE n.region = c.region AND "
                   "n.code = c.code AND n.version > c.version AND n.effective_from <= ?)"]
        args: list[Any] = [today, today, today]
        if regions:
            filters.append(f"c.region IN ({','.join('?' * len(regions))})")
            args += list(regions)
        if mode is not None:
            if mode not in MODES:
                raise ValueError(f"unknown mode {mode!r}")
            filters.append(f"c.modes LIKE '%;{mode};%'")  # a literal: the partial index applies
        if matter_type is not None:
            filters.append("c.matter_type = ?")
            args.append(matter_type)
        columns = "SELECT c.region, c.code, c.version, c.name, c.matter_type, c.modes"
        texts = self._matching_texts(terms)
        results: list[dict[str, Any]] = []
        if regions:  # a few regions' matters, ordered by how well their text matched
            rank = {text_id: position for position, text_id in enumerate(texts)}
            rows = self._reader.execute(f"{columns}, c.text_id FROM versions c WHERE " +
                                        " AND ".join(filters), args).fetchall()
            rows = sorted((row for row in rows if row[6] in rank),
                          key=lambda row: (rank[row[6]], row[0], row[1]))[:limit]
            return [_hit(*row[:6]) for row in rows]
        per_text = (f"{columns} FROM versions c WHERE c.text_id = ? AND " + " AND ".join(filters) +
                    " ORDER BY c.region LIMIT ?")
        for text_id in texts:
            results += [_hit(*row) for row in self._reader.execute(
                per_text, (text_id, *args, limit - len(results)))]
            if len(results) >= limit:
                break
        return results

    def _matching_texts(self, terms: Sequence[str]) -> list[int]:
        """Ids of the texts holding every term, best first (all texts if no terms)."""
        long_terms = [t for t in terms if len(t) >= 3]
        short_terms = [t for t in terms if len(t) < 3]
        if long_terms:
            match = " AND ".join('"' + t.replace('"', '""') + '"' for t in long_terms)
            sql = ("SELECT f.rowid FROM texts_fts f JOIN texts t ON t.id = f.rowid "
                   "WHERE texts_fts MATCH ?" + "".join(" AND t.body LIKE ?" for _ in short_terms) +
                   " ORDER BY f.rank")
            args = [match, *(f"%{_like(t)}%" for t in short_terms)]
        else:
            sql = ("SELECT id FROM texts" + (" WHERE " if short_terms else "") +
                   " AND ".join("body LIKE ? ESCAPE '\\'" for _ in short_terms) +
                   " ORDER BY length(body), id")
            args = [f"%{_like(t)}%" for t in short_terms]
        if long_terms and short_terms:
            sql = sql.replace("LIKE ?", "LIKE ? ESCAPE '\\'")
        return [int(row[0]) for row in self._reader.execute(sql, args)]

    def rejections(self, limit: int = 100) -> list[dict[str, Any]]:
        cursor = self._reader.execute(
            "SELECT key, region, reason, at, times FROM rejected ORDER BY at DESC LIMIT ?", (limit,))
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def counts(self) -> dict[str, int]:
        """How much is indexed (whole-table counts: for operators, not for a hot path)."""
        with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as reader:
            return self._counts(reader)  # a connection of its own: callable from any thread

    def _counts(self, reader: sqlite3.Connection) -> dict[str, int]:
        one = reader.execute
        return {"entries": int(one("SELECT count(*) FROM entries").fetchone()[0]),
                "matters": int(one("SELECT count(*) FROM (SELECT DISTINCT region, code FROM "
                                   "versions)").fetchone()[0]),
                "texts": int(one("SELECT count(*) FROM texts").fetchone()[0]),
                "rejected": int(one("SELECT count(*) FROM rejected").fetchone()[0])}


def _hit(region: str, code: str, version: int, name: str, matter_type: str,
         modes: str) -> dict[str, Any]:
    return {"region": region, "code": code, "version": version, "name": name,
            "matter_type": matter_type, "modes": modes.strip(";").split(";")}


def _like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
