"""The node's case database (see the package docstring for the catalog index).

Theory of operation
-------------------
One database file per node, WAL mode, ``synchronous=FULL``: a commit that returned
is on disk. Writes go through one **writer thread** that does group commit: it
takes every ``Changes`` waiting in its queue, applies them all in one transaction
and fsyncs once, so one fsync serves a whole batch of applications and the event
loop never waits on the disk (``await store.commit(changes)``). If a batch fails,
each ``Changes`` is retried alone, so one bad one cannot sink the others.

Reads happen on the event loop's own connection (WAL lets readers run beside the
writer); they are short indexed lookups.

``Changes`` is plain data assembled by the engine: it says *what* to write, this
module says *how*. Schema versions are in ``MIGRATIONS``; a newer database than
the code understands is refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import queue
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import sqlite_utils

from node.store.base import StoreError, migrate, open_database

__all__ = ["Changes", "Store", "StoreError"]


MIGRATIONS: list[tuple[str, ...]] = [
    (  # version 1
        """CREATE TABLE cases (
            case_id TEXT PRIMARY KEY, role TEXT NOT NULL, peer TEXT NOT NULL,
            state TEXT NOT NULL, matter TEXT, window_no TEXT, snapshot BLOB NOT NULL,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)""",
        "CREATE INDEX cases_state ON cases(state, updated_at)",
        """CREATE TABLE bodies (
            case_id TEXT NOT NULL, name TEXT NOT NULL, body BLOB NOT NULL,
            PRIMARY KEY (case_id, name))""",
        """CREATE TABLE receipts (
            case_id TEXT NOT NULL, actor TEXT NOT NULL, idx INTEGER NOT NULL,
            kind TEXT NOT NULL, at INTEGER NOT NULL, digest BLOB NOT NULL, receipt BLOB NOT NULL,
            PRIMARY KEY (case_id, actor, idx))""",
        "CREATE UNIQUE INDEX receipts_digest ON receipts(digest)",
        """CREATE TABLE envelopes (
            digest BLOB PRIMARY KEY, case_id TEXT NOT NULL, direction TEXT NOT NULL,
            msg_id TEXT NOT NULL, kind TEXT NOT NULL, peer TEXT NOT NULL, at INTEGER NOT NULL,
            wire BLOB NOT NULL, content_key BLOB NOT NULL, plaintext BLOB NOT NULL)""",
        "CREATE INDEX envelopes_case ON envelopes(case_id, at)",
        """CREATE TABLE outbox (
            msg_id TEXT PRIMARY KEY, subject TEXT NOT NULL, wire BLOB NOT NULL,
            created_at INTEGER NOT NULL, sent_at INTEGER)""",
        "CREATE INDEX outbox_pending ON outbox(sent_at) WHERE sent_at IS NULL",
        """CREATE TABLE seen (
            msg_id TEXT PRIMARY KEY, digest BLOB NOT NULL, case_id TEXT,
            outcome TEXT NOT NULL, answers TEXT NOT NULL, at INTEGER NOT NULL)""",
        """CREATE TABLE events (
            case_id TEXT NOT NULL, at INTEGER NOT NULL, seq INTEGER NOT NULL,
            record BLOB NOT NULL, PRIMARY KEY (case_id, seq))""",
        """CREATE TABLE timers (
            case_id TEXT NOT NULL, name TEXT NOT NULL, due INTEGER NOT NULL,
            PRIMARY KEY (case_id, name))""",
        "CREATE INDEX timers_due ON timers(due)",
        """CREATE TABLE rejections (
            digest BLOB, msg_id TEXT, sender TEXT, case_id TEXT, code TEXT NOT NULL,
            detail TEXT NOT NULL, at INTEGER NOT NULL)""",
        """CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)""",
    ),
    (  # version 2: materials (scans), kept encrypted on disk and in the object store
        """CREATE TABLE materials (
            object TEXT PRIMARY KEY, case_id TEXT, peer TEXT, state TEXT NOT NULL,
            name TEXT NOT NULL, media_type TEXT NOT NULL, size INTEGER NOT NULL,
            sha256 BLOB NOT NULL, key BLOB NOT NULL, chunk_size INTEGER NOT NULL,
            updated_at INTEGER NOT NULL)""",
        "CREATE INDEX materials_state ON materials(state)",
    ),
    (  # version 3: 多地联办 joint cases; their parts are cases named <joint_id>.<n>
        """CREATE TABLE joints (
            joint_id TEXT PRIMARY KEY, matter TEXT NOT NULL, policy TEXT NOT NULL,
            state TEXT NOT NULL, parts TEXT NOT NULL, outcomes TEXT NOT NULL,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, closed_at INTEGER)""",
        "CREATE INDEX joints_open ON joints(joint_id) WHERE closed_at IS NULL",
    ),
    (  # version 4: 运维 — refused messages marked handled; why forwarding a case failed
        "ALTER TABLE rejections ADD COLUMN handled_at INTEGER",
        "ALTER TABLE rejections ADD COLUMN handled_by TEXT",
        """CREATE TABLE forward_errors (
            case_id TEXT NOT NULL, at INTEGER NOT NULL, attempt INTEGER NOT NULL,
            error TEXT NOT NULL)""",
        "CREATE INDEX forward_errors_case ON forward_errors(case_id, at)",
    ),
]


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


@dataclasses.dataclass
class Changes:
    """Everything one engine batch writes, applied atomically by ``Store.commit``."""

    cases: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    bodies: list[tuple[str, str, bytes]] = dataclasses.field(default_factory=list)
    receipts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    envelopes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    outbox: list[tuple[str, str, bytes, int]] = dataclasses.field(default_factory=list)
    resend: list[str] = dataclasses.field(default_factory=list)  # outbox ids to send again
    sent: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (PubAck time, id)
    seen: list[tuple[str, bytes, str | None, str, list[str], int]] = dataclasses.field(
        default_factory=list)
    events: list[tuple[str, int, bytes]] = dataclasses.field(default_factory=list)
    timers_set: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    timers_cancel: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    rejections: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Material rows to insert or move on (state: local, to_send, sent, to_fetch, fetched).
    materials: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: Scans uploaded but never used in an application, to forget.
    materials_forget: list[str] = dataclasses.field(default_factory=list)
    #: Joint cases (多地联办) to insert or update: joint_id, matter, policy, state, parts
    #: [(case_id, handling)], outcomes, at, closed_at.
    joints: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: Refused inbound messages an operator marked handled (运维: 忽略): (rowid, at, by).
    rejections_handled: list[tuple[int, int, str]] = dataclasses.field(default_factory=list)
    #: Failed attempts to forward a case to its department: (case_id, at, attempt, error).
    forward_errors: list[tuple[str, int, int, str]] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in dataclasses.fields(self))


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open()
        migrate(self._db.conn, MIGRATIONS)
        self._queue: queue.SimpleQueue[tuple[Changes, asyncio.Future[None]] | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0
        self.batches = 0
        #: The latest committed snapshot of recently changed cases: the engine reads a
        #: case back a moment after writing it (the next message of the same walk), and
        #: this spares the query and the unpacking. Filled only once a commit is on disk.
        self._snapshots: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.snapshot_cache_size = 10_000

    def __repr__(self) -> str:
        return f"<Store {self.path.name} commits={self.commits} batches={self.batches}>"

    def stats(self) -> dict[str, int]:
        return {"commits": self.commits, "batches": self.batches}

    def _open(self) -> sqlite_utils.Database:
        return open_database(self.path, synchronous="FULL")

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        writer = self._open()
        self._thread = threading.Thread(target=self._writer, args=(writer,), name="store-writer",
                                        daemon=True)
        self._thread.start()

    async def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        self._db.conn.close()

    async def commit(self, changes: Changes) -> None:
        """Write ``changes`` durably; returns once they are on disk."""
        if not changes:
            return
        assert self._loop is not None, "Store.start() first"
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((changes, future))
        await future
        cache = self._snapshots
        for row in changes.cases:
            cache[row["case_id"]] = row["snapshot"]
            cache.move_to_end(row["case_id"])  # the least recently written go first
        while len(cache) > self.snapshot_cache_size:
            cache.popitem(last=False)

    def _writer(self, db: sqlite_utils.Database) -> None:
        conn = db.conn
        while True:
            item = self._queue.get()
            if item is None:
                conn.close()
                return
            batch = [item]
            while len(batch) < 256:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            try:
                self._apply_all(conn, [changes for changes, _ in batch])
                results: list[BaseException | None] = [None] * len(batch)
            except sqlite3.Error:
                results = [self._apply_alone(conn, changes) for changes, _ in batch]
            self.batches += 1
            self.commits += len(batch)
            for (_, future), error in zip(batch, results, strict=True):
                assert self._loop is not None
                self._loop.call_soon_threadsafe(_settle, future, error)

    def _apply_all(self, conn: sqlite3.Connection, batch: list[Changes]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for changes in batch:
                _apply(conn, changes)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _apply_alone(self, conn: sqlite3.Connection, changes: Changes) -> BaseException | None:
        try:
            self._apply_all(conn, [changes])
        except sqlite3.Error as exc:
            return StoreError(f"写入失败 / write failed: {exc}")
        return None

    # ---------------------------------------------------------------- reads

    def case_snapshot(self, case_id: str) -> dict[str, Any] | None:
        cached = self._snapshots.get(case_id)
        if cached is not None:
            return dict(cached)
        row = self._db.conn.execute(
            "SELECT snapshot FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        return None if row is None else dict(_unpack(row[0]))

    def cases_in(self, role: str, states: tuple[str, ...]) -> list[tuple[dict[str, Any],
                                                                        dict[str, Any]]]:
        """Every case of ``role`` in one of ``states``, with its snapshot: (row, snapshot)."""
        marks = ", ".join("?" for _ in states)
        rows = self._db.conn.execute(
            f"SELECT case_id, role, peer, state, created_at, snapshot FROM cases WHERE state "
            f"IN ({marks}) AND role = ?", (*states, role)).fetchall()
        return [({"case_id": c, "role": r, "peer": p, "state": st, "created_at": at},
                 dict(_unpack(snapshot))) for c, r, p, st, at, snapshot in rows]

    def case_row(self, case_id: str) -> dict[str, Any] | None:
        cursor = self._db.conn.execute(
            "SELECT case_id, role, peer, state, matter, window_no, created_at, updated_at "
            "FROM cases WHERE case_id = ?", (case_id,))
        return _one(cursor)

    def cases(self, *, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql = ("SELECT case_id, role, peer, state, matter, window_no, created_at, updated_at "
               "FROM cases")
        args: tuple[Any, ...] = ()
        if state is not None:
            sql += " WHERE state = ?"
            args = (state,)
        cursor = self._db.conn.execute(sql + " ORDER BY updated_at DESC LIMIT ?", (*args, limit))
        return _all(cursor)

    def receipt_case(self, digest: bytes) -> str | None:
        """The case of the receipt with this digest (the public verification page)."""
        row = self._db.conn.execute("SELECT case_id FROM receipts WHERE digest = ?",
                                    (digest,)).fetchone()
        return None if row is None else str(row[0])

    def joint(self, joint_id: str) -> dict[str, Any] | None:
        """A joint case (多地联办): its parts as ``[(case_id, handling), ...]``."""
        row = _one(self._db.conn.execute(
            "SELECT joint_id, matter, policy, state, parts, outcomes, created_at, updated_at, "
            "closed_at FROM joints WHERE joint_id = ?", (joint_id,)))
        return None if row is None else _joint(row)

    def joints(self, *, open_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        sql = ("SELECT joint_id, matter, policy, state, parts, outcomes, created_at, updated_at, "
               "closed_at FROM joints")
        if open_only:
            sql += " WHERE closed_at IS NULL"
        cursor = self._db.conn.execute(sql + " ORDER BY updated_at DESC LIMIT ?", (limit,))
        return [_joint(row) for row in _all(cursor)]

    def count_states(self) -> dict[str, int]:
        return dict(self._db.conn.execute(
            "SELECT state, count(*) FROM cases GROUP BY state").fetchall())

    def body(self, case_id: str, name: str) -> bytes | None:
        row = self._db.conn.execute(
            "SELECT body FROM bodies WHERE case_id = ? AND name = ?", (case_id, name)).fetchone()
        return None if row is None else bytes(row[0])

    def receipts(self, case_id: str, actor: str | None = None, first: int = 0,
                 last: int | None = None) -> list[bytes]:
        """Canonical receipts of a case (of one actor, between two indexes), in order."""
        sql = "SELECT receipt FROM receipts WHERE case_id = ?"
        args: list[Any] = [case_id]
        if actor is not None:
            sql += " AND actor = ? AND idx >= ?"
            args += [actor, first]
            if last is not None:
                sql += " AND idx <= ?"
                args.append(last)
        sql += " ORDER BY actor, idx"
        return [bytes(row[0]) for row in self._db.conn.execute(sql, args)]

    def envelopes(self, case_id: str) -> list[tuple[bytes, bytes, bytes]]:
        return [(bytes(w), bytes(k), bytes(p)) for w, k, p in self._db.conn.execute(
            "SELECT wire, content_key, plaintext FROM envelopes WHERE case_id = ? ORDER BY at, "
            "rowid", (case_id,))]

    def events(self, case_id: str) -> list[bytes]:
        return [bytes(row[0]) for row in self._db.conn.execute(
            "SELECT record FROM events WHERE case_id = ? ORDER BY seq", (case_id,))]

    def seen(self, msg_id: str) -> tuple[str, list[str]] | None:
        """For a message id already processed: its outcome and the ids we answered with."""
        row = self._db.conn.execute(
            "SELECT outcome, answers FROM seen WHERE msg_id = ?", (msg_id,)).fetchone()
        return None if row is None else (row[0], [a for a in row[1].split(",") if a])

    def pending_outbox(self, limit: int, after: str = "") -> list[tuple[str, str, bytes]]:
        return [(m, s, bytes(w)) for m, s, w in self._db.conn.execute(
            "SELECT msg_id, subject, wire FROM outbox WHERE sent_at IS NULL AND msg_id > ? "
            "ORDER BY msg_id LIMIT ?", (after, limit))]

    def outbox_items(self, msg_ids: list[str]) -> list[tuple[str, str, bytes]]:
        rows = []
        for start in range(0, len(msg_ids), 500):
            chunk = msg_ids[start:start + 500]
            rows += self._db.conn.execute(
                f"SELECT msg_id, subject, wire FROM outbox WHERE msg_id IN "
                f"({','.join('?' * len(chunk))})", chunk).fetchall()
        return [(m, s, bytes(w)) for m, s, w in rows]

    def outbox_backlog(self) -> int:
        return int(self._db.conn.execute(
            "SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0])

    # ---------------------------------------------------------------- monitoring (node.metrics)

    def outbox_pending_by_subject(self) -> list[tuple[str, int, int]]:
        """Messages not yet acknowledged by JetStream: (subject, count, oldest created_at)."""
        return [(str(s), int(n), int(oldest)) for s, n, oldest in self._db.conn.execute(
            "SELECT subject, count(*), min(created_at) FROM outbox WHERE sent_at IS NULL "
            "GROUP BY subject")]

    def timers_due_by(self, soon: int, now: int) -> list[tuple[str, bool, int]]:
        """Timers due by ``soon``: (name, already due at ``now``, count)."""
        return [(str(name), bool(late), int(n)) for name, late, n in self._db.conn.execute(
            "SELECT name, due <= :now AS late, count(*) FROM timers WHERE due <= :soon "
            "GROUP BY name, late", {"now": now, "soon": soon})]

    def overdue_promises(self) -> int:
        """Open handling cases whose promise timer fired (an ``overdue`` receipt) and
        has not been set again since (a 特别程序 that moved the date on)."""
        return int(self._db.conn.execute(
            "SELECT count(*) FROM cases c WHERE c.role = 'handling' AND c.state IN "
            "('forwarding', 'dead_letter', 'processing') AND EXISTS (SELECT 1 FROM receipts r "
            "WHERE r.case_id = c.case_id AND r.kind = 'overdue') AND NOT EXISTS (SELECT 1 FROM "
            "timers t WHERE t.case_id = c.case_id AND t.name = 'promise')").fetchone()[0])

    def count_in_state_by_peer(self, state: str) -> dict[str, int]:
        return {str(peer): int(n) for peer, n in self._db.conn.execute(
            "SELECT peer, count(*) FROM cases WHERE state = ? GROUP BY peer", (state,))}

    def materials_backlog(self) -> dict[str, int]:
        """Materials still to put into a partner's object store, or to fetch from ours."""
        return {str(state): int(n) for state, n in self._db.conn.execute(
            "SELECT state, count(*) FROM materials WHERE state IN ('to_send', 'to_fetch') "
            "GROUP BY state")}

    def previous_receipt_at(self, case_id: str, actor: str, idx: int) -> int | None:
        """The time of a case's latest receipt before ``actor``'s receipt ``idx`` (either
        chain): when the step before it was taken."""
        row = self._db.conn.execute(
            "SELECT max(at) FROM receipts WHERE case_id = ? AND NOT (actor = ? AND idx >= ?)",
            (case_id, actor, idx)).fetchone()
        return None if row[0] is None else int(row[0])

    def due_timers(self, now: int, limit: int = 500) -> list[tuple[str, str, int]]:
        return list(self._db.conn.execute(
            "SELECT case_id, name, due FROM timers WHERE due <= ? ORDER BY due LIMIT ?",
            (now, limit)))

    def next_timer(self) -> int | None:
        row = self._db.conn.execute("SELECT min(due) FROM timers").fetchone()
        return None if row[0] is None else int(row[0])

    def material(self, obj: str) -> dict[str, Any] | None:
        cursor = self._db.conn.execute(
            "SELECT object, case_id, peer, state, name, media_type, size, sha256, key, chunk_size "
            "FROM materials WHERE object = ?", (obj,))
        return _one(cursor)

    def materials_in(self, state: str, limit: int = 100) -> list[dict[str, Any]]:
        cursor = self._db.conn.execute(
            "SELECT object, case_id, peer, state, name, media_type, size, sha256, key, chunk_size "
            "FROM materials WHERE state = ? ORDER BY updated_at LIMIT ?", (state, limit))
        return _all(cursor)

    def unused_materials(self, before: int, limit: int = 1000) -> list[str]:
        """Scans uploaded before ``before`` that no application uses."""
        return [str(row[0]) for row in self._db.conn.execute(
            "SELECT object FROM materials WHERE state = 'local' AND case_id IS NULL "
            "AND updated_at < ? LIMIT ?", (before, limit))]

    def counter(self, name: str) -> int:
        row = self._db.conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    # ---------------------------------------------------------------- operators (node.web.ops)

    def rejection_rows(self, *, handled: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        """Refused inbound messages with their row id, newest first: those not yet marked
        handled, or (``handled``) those that were, with who did it and when."""
        cursor = self._db.conn.execute(
            "SELECT rowid AS id, msg_id, sender, case_id, code, detail, at, handled_at, "
            "handled_by FROM rejections WHERE (handled_at IS NOT NULL) = ? "
            "ORDER BY at DESC LIMIT ?", (handled, limit))
        return _all(cursor)

    def rejection_row(self, rowid: int) -> dict[str, Any] | None:
        return _one(self._db.conn.execute(
            "SELECT rowid AS id, msg_id, sender, case_id, code, detail, at, handled_at, "
            "handled_by FROM rejections WHERE rowid = ?", (rowid,)))

    def envelope_log(self, case_id: str) -> list[dict[str, Any]]:
        """A case's messages both ways, oldest first: direction (in/out), kind, peer, time
        and, for ours, when JetStream stored it in the partner's inbox (``acked_at``)."""
        return _all(self._db.conn.execute(
            "SELECT e.direction, e.msg_id, e.kind, e.peer, e.at, o.sent_at AS acked_at "
            "FROM envelopes e LEFT JOIN outbox o ON o.msg_id = e.msg_id AND e.direction = 'out' "
            "WHERE e.case_id = ? ORDER BY e.at, e.rowid", (case_id,)))

    def forward_errors(self, case_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """Why forwarding the case failed, newest first (the dead-letter reason is the first)."""
        return _all(self._db.conn.execute(
            "SELECT at, attempt, error FROM forward_errors WHERE case_id = ? "
            "ORDER BY at DESC, rowid DESC LIMIT ?", (case_id, limit)))

    def rejections(self, limit: int = 100) -> list[dict[str, Any]]:
        cursor = self._db.conn.execute(
            "SELECT msg_id, sender, case_id, code, detail, at FROM rejections "
            "ORDER BY at DESC LIMIT ?", (limit,))
        return _all(cursor)


def _one(cursor: sqlite3.Cursor) -> dict[str, Any] | None:
    row = cursor.fetchone()
    return None if row is None else dict(zip([c[0] for c in cursor.description], row, strict=True))


def _all(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _apply(conn: sqlite3.Connection, changes: Changes) -> None:
    execute: Callable[..., Any] = conn.executemany
    if changes.sent:
        execute("UPDATE outbox SET sent_at = ? WHERE msg_id = ?", changes.sent)
    if changes.cases:
        execute(
            "INSERT INTO cases (case_id, role, peer, state, matter, window_no, snapshot, "
            "created_at, updated_at) VALUES (:case_id, :role, :peer, :state, :matter, :window_no, "
            ":snapshot, :at, :at) ON CONFLICT(case_id) DO UPDATE SET state = excluded.state, "
            "snapshot = excluded.snapshot, updated_at = excluded.updated_at, "
            "matter = coalesce(excluded.matter, matter), "
            "window_no = coalesce(excluded.window_no, window_no)",
            [{**c, "snapshot": _pack(c["snapshot"])} for c in changes.cases])
    if changes.bodies:
        execute("INSERT OR REPLACE INTO bodies (case_id, name, body) VALUES (?, ?, ?)",
                changes.bodies)
    if changes.receipts:
        execute("INSERT INTO receipts (case_id, actor, idx, kind, at, digest, receipt) VALUES "
                "(:case_id, :actor, :idx, :kind, :at, :digest, :receipt) "
                "ON CONFLICT DO NOTHING", changes.receipts)
    if changes.envelopes:
        execute("INSERT INTO envelopes (digest, case_id, direction, msg_id, kind, peer, at, wire, "
                "content_key, plaintext) VALUES (:digest, :case_id, :direction, :msg_id, :kind, "
                ":peer, :at, :wire, :content_key, :plaintext) ON CONFLICT DO NOTHING",
                changes.envelopes)
    if changes.outbox:
        execute("INSERT INTO outbox (msg_id, subject, wire, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING", changes.outbox)
    if changes.resend:
        execute("UPDATE outbox SET sent_at = NULL WHERE msg_id = ?",
                [(m,) for m in changes.resend])
    if changes.seen:
        execute("INSERT INTO seen (msg_id, digest, case_id, outcome, answers, at) VALUES "
                "(?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(m, d, c, o, ",".join(a), t) for m, d, c, o, a, t in changes.seen])
    if changes.events:
        for case_id, at, record in changes.events:
            conn.execute("INSERT INTO events (case_id, at, seq, record) VALUES (?, ?, "
                         "(SELECT coalesce(max(seq), 0) + 1 FROM events WHERE case_id = ?), ?)",
                         (case_id, at, case_id, record))
    if changes.timers_cancel:
        execute("DELETE FROM timers WHERE case_id = ? AND name = ?", changes.timers_cancel)
    if changes.timers_set:
        execute("INSERT OR REPLACE INTO timers (case_id, name, due) VALUES (?, ?, ?)",
                changes.timers_set)
    if changes.rejections:
        execute("INSERT INTO rejections (digest, msg_id, sender, case_id, code, detail, at) "
                "VALUES (:digest, :msg_id, :sender, :case_id, :code, :detail, :at)",
                changes.rejections)
    for row in changes.materials:
        conn.execute(
            "INSERT INTO materials (object, case_id, peer, state, name, media_type, size, sha256, "
            "key, chunk_size, updated_at) VALUES (:object, :case_id, :peer, :state, :name, "
            ":media_type, :size, :sha256, :key, :chunk_size, :at) ON CONFLICT(object) DO UPDATE "
            "SET state = excluded.state, case_id = coalesce(excluded.case_id, case_id), "
            "peer = coalesce(excluded.peer, peer), updated_at = excluded.updated_at",
            {"case_id": None, "peer": None, "name": "", "media_type": "", "size": 0,
             "sha256": b"", "key": b"", "chunk_size": 0, **row})
    if changes.materials_forget:  # only while still unused: not one an application took
        execute("DELETE FROM materials WHERE object = ? AND state = 'local' AND case_id IS NULL",
                [(o,) for o in changes.materials_forget])
    if changes.joints:
        execute(
            "INSERT INTO joints (joint_id, matter, policy, state, parts, outcomes, created_at, "
            "updated_at, closed_at) VALUES (:joint_id, :matter, :policy, :state, :parts, "
            ":outcomes, :at, :at, :closed_at) ON CONFLICT(joint_id) DO UPDATE SET "
            "state = excluded.state, outcomes = excluded.outcomes, "
            "updated_at = excluded.updated_at, closed_at = excluded.closed_at",
            [{**j, "parts": json.dumps(j["parts"]), "outcomes": json.dumps(j["outcomes"])}
             for j in changes.joints])
    if changes.rejections_handled:  # the first operator's mark stays
        execute("UPDATE rejections SET handled_at = ?, handled_by = ? WHERE rowid = ? "
                "AND handled_at IS NULL", [(at, by, rowid)
                                           for rowid, at, by in changes.rejections_handled])
    if changes.forward_errors:
        execute("INSERT INTO forward_errors (case_id, at, attempt, error) VALUES (?, ?, ?, ?)",
                [(c, at, n, error[:500]) for c, at, n, error in changes.forward_errors])
    for name, value in changes.counters.items():
        conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) "
                     "DO UPDATE SET value = max(value, excluded.value)", (name, value))


def _joint(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "parts": [tuple(p) for p in json.loads(row["parts"])],
            "outcomes": json.loads(row["outcomes"])}

