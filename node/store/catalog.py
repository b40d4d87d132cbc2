"""The catalog index: every partner's matter catalog, searchable in Chinese.

Theory of operation
-------------------
``entries`` keeps every version of every entry the node has accepted (a case
stays pinned to the version it was filled against, even after a newer one or a
withdrawal); ``latest`` keeps the newest version of each matter, which is what
search looks at.

Search text (事项名称, material names, 受理条件) is stored once per distinct text
in ``texts`` with an FTS5 **trigram** index, so any three consecutive characters
match: Chinese has no spaces to split words at. National 通办 matters carry the
same name, materials and conditions in every region, so the circle's 361,570
entries share a few thousand texts and the index stays small; a region's own
wording simply adds a text. Terms shorter than three characters (户口) cannot use
a trigram index and are matched with LIKE on ``texts``.

Results come text by text in rank order, each text's matters fetched through an
index until the page is full, so a query that matches everything still reads one
page's worth of rows.

The index can be rebuilt from the catalog bucket at any time, so it lives in its
own file with ``synchronous=NORMAL``; writes (bulk sync) run on a worker thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node.store.cases import migrate, open_database

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
        """CREATE TABLE latest (
            region TEXT NOT NULL, code TEXT NOT NULL, version INTEGER NOT NULL,
            status TEXT NOT NULL, name TEXT NOT NULL, matter_type TEXT NOT NULL,
            modes TEXT NOT NULL, effective_from TEXT NOT NULL, effective_to TEXT,
            text_id INTEGER NOT NULL, PRIMARY KEY (region, code))""",
        "CREATE INDEX current_text ON latest(text_id, region)",
        "CREATE TABLE texts (id INTEGER PRIMARY KEY, digest BLOB NOT NULL UNIQUE, body TEXT NOT NULL)",
        "CREATE VIRTUAL TABLE texts_fts USING fts5(body, content='texts', content_rowid='id', "
        "tokenize='trigram')",
        """CREATE TABLE rejected (
            key TEXT NOT NULL, region TEXT, reason TEXT NOT NULL, at INTEGER NOT NULL)""",
    ),
    (  # version 2: filters that exclude most rows must not scan a text's every region
        "DROP INDEX current_text",  # (text_id, region): the one below serves it too
        "CREATE INDEX latest_type ON latest(text_id, matter_type, region)",
        *(f"CREATE INDEX latest_{mode} ON latest(text_id, region) WHERE modes LIKE '%;{mode};%'"
          for mode in MODES),
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


class CatalogIndex:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._writer = open_database(path, synchronous="NORMAL").conn
        migrate(self._writer, MIGRATIONS)
        self._reader = open_database(path, synchronous="NORMAL").conn
        self._lock = threading.Lock()  # one write at a time, whichever thread
        self._text_ids: dict[bytes, int] = {}

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
                # A version seen before (a restart, a redelivery) changes nothing below:
                # the newer-version condition keeps the row as it is.
                conn.executemany(
                    "INSERT INTO latest (region, code, version, status, name, matter_type, "
                    "modes, effective_from, effective_to, text_id) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(region, code) DO UPDATE SET "
                    "version = excluded.version, status = excluded.status, "
                    "name = excluded.name, matter_type = excluded.matter_type, "
                    "modes = excluded.modes, effective_from = excluded.effective_from, "
                    "effective_to = excluded.effective_to, text_id = excluded.text_id "
                    "WHERE excluded.version > latest.version",
                    [(r.region, r.code, r.version, r.status, r.name, r.matter_type,
                      ";" + ";".join(r.modes) + ";", r.effective_from, r.effective_to,
                      self._text_id(conn, r.text)) for r in rows])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self._text_ids.clear()  # ids handed out in the rolled-back transaction
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
        with self._lock:
            self._writer.execute("INSERT INTO rejected (key, region, reason, at) VALUES (?, ?, ?, ?)",
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

    def has_region(self, region: str) -> bool:
        return self._reader.execute("SELECT 1 FROM latest WHERE region = ? LIMIT 1",
                                    (region,)).fetchone() is not None

    def records_of(self, region: str) -> list[bytes]:
        """The newest record of each of a region's matters (withdrawn ones included)."""
        return [bytes(r[0]) for r in self._reader.execute(
            "SELECT e.record FROM latest c JOIN entries e ON e.region = c.region AND "
            "e.code = c.code AND e.version = c.version WHERE c.region = ? ORDER BY c.code",
            (region,))]

    def search(self, terms: Sequence[str], *, today: str, regions: Sequence[str] = (),
               mode: str | None = None, matter_type: str | None = None,
               limit: int = 50) -> list[dict[str, Any]]:
        """Matters in force today whose text holds every term, best texts first."""
        filters = ["c.status = 'active'", "c.effective_from <= ?",
                   "(c.effective_to IS NULL OR c.effective_to >= ?)"]
        args: list[Any] = [today, today]
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
        per_text = ("SELECT c.region, c.code, c.version, c.name, c.matter_type, c.modes "
                    "FROM latest c WHERE c.text_id = ? AND " + " AND ".join(filters) +
                    " ORDER BY c.region LIMIT ?")
        results: list[dict[str, Any]] = []
        for text_id in self._matching_texts(terms):
            for region, code, version, name, matter_type_, modes in self._reader.execute(
                    per_text, (text_id, *args, limit - len(results))):
                results.append({"region": region, "code": code, "version": version, "name": name,
                                "matter_type": matter_type_, "modes": modes.strip(";").split(";")})
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
            "SELECT key, region, reason, at FROM rejected ORDER BY at DESC LIMIT ?", (limit,))
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def counts(self) -> dict[str, int]:
        one = self._reader.execute
        return {"entries": int(one("SELECT count(*) FROM entries").fetchone()[0]),
                "latest": int(one("SELECT count(*) FROM latest").fetchone()[0]),
                "texts": int(one("SELECT count(*) FROM texts").fetchone()[0]),
                "rejected": int(one("SELECT count(*) FROM rejected").fetchone()[0])}


def _like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
