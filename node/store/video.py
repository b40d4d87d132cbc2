"""Virtual-window video sessions (远程虚拟窗口): who asked, who joined when, how it ended.

One SQLite file per node (``video.db`` in the data dir), apart from the case
database: a session is a record of people meeting, not a step of a case; what the
reviewer confirms in it goes into the case's chain as a ``video_check`` (the
engine's business). Nothing of the media is stored, here or anywhere.

A session's row holds its state (``waiting`` → ``active`` → ``ended``) and outcome;
every change also writes an event row (who, what, when), in the same transaction.
Writes are rare (a few per session) and short, so they run on the caller's thread.
Times are milliseconds since the epoch, handed in by the caller.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

from node.store.base import SideStore

__all__ = ["FILENAME", "SessionEvent", "VideoSession", "VideoStore"]

FILENAME = "video.db"

MIGRATIONS: list[tuple[str, ...]] = [
    (  # version 1
        """CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('caller', 'callee')),
            peer TEXT NOT NULL, case_id TEXT, topic TEXT NOT NULL DEFAULT '',
            caller_label TEXT NOT NULL DEFAULT '', callee_label TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL CHECK (state IN ('waiting', 'active', 'ended')),
            outcome TEXT, created_at INTEGER NOT NULL, joined_at INTEGER, ended_at INTEGER,
            started_by TEXT NOT NULL DEFAULT '', joined_by TEXT NOT NULL DEFAULT '',
            ended_by TEXT NOT NULL DEFAULT '')""",
        "CREATE INDEX sessions_case ON sessions(case_id)",
        "CREATE INDEX sessions_open ON sessions(state) WHERE state != 'ended'",
        """CREATE TABLE session_events (
            id INTEGER PRIMARY KEY, session TEXT NOT NULL REFERENCES sessions(id),
            at INTEGER NOT NULL, who TEXT NOT NULL, what TEXT NOT NULL)""",
        "CREATE INDEX session_events_session ON session_events(session)",
    ),
]


@dataclasses.dataclass(frozen=True)
class VideoSession:
    id: str
    role: str  # caller: this node's window called; callee: a partner's window called us
    peer: str
    case_id: str | None
    topic: str
    caller_label: str  # e.g. 郑州市 通办专窗
    callee_label: str
    state: str  # waiting | active | ended
    outcome: str | None
    created_at: int
    joined_at: int | None
    ended_at: int | None
    started_by: str  # usernames of this node's staff (the other side's are not known)
    joined_by: str
    ended_by: str


@dataclasses.dataclass(frozen=True)
class SessionEvent:
    at: int
    who: str
    what: str


_COLUMNS = ", ".join(f.name for f in dataclasses.fields(VideoSession))


class VideoStore(SideStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, MIGRATIONS, synchronous="NORMAL", what="video sessions")

    def create(self, session: VideoSession, *, who: str) -> None:
        """A new session; a second one with the same id is ignored (a repeated invite)."""
        values = dataclasses.asdict(session)
        with self._write() as conn:
            done = conn.execute(
                f"INSERT OR IGNORE INTO sessions ({_COLUMNS}) VALUES "
                f"({', '.join('?' for _ in values)})", tuple(values.values()))
            if done.rowcount:
                _event(conn, session.id, session.created_at, who, "created")

    def join(self, session_id: str, at: int, *, who: str, joined_by: str,
             callee_label: str) -> bool:
        """``waiting`` → ``active``; False when the session is not waiting."""
        with self._write() as conn:
            done = conn.execute(
                "UPDATE sessions SET state = 'active', joined_at = ?, joined_by = ?, "
                "callee_label = ? WHERE id = ? AND state = 'waiting'",
                (at, joined_by, callee_label, session_id))
            if done.rowcount:
                _event(conn, session_id, at, who, "joined")
            return bool(done.rowcount)

    def end(self, session_id: str, at: int, outcome: str, *, who: str) -> bool:
        """Any open state → ``ended`` with ``outcome``; False when it had ended already."""
        with self._write() as conn:
            done = conn.execute(
                "UPDATE sessions SET state = 'ended', outcome = ?, ended_at = ?, ended_by = ? "
                "WHERE id = ? AND state != 'ended'", (outcome, at, who, session_id))
            if done.rowcount:
                _event(conn, session_id, at, who, f"ended:{outcome}")
            return bool(done.rowcount)

    def note(self, session_id: str, at: int, *, who: str, what: str) -> None:
        """Something that happened in the session (a check recorded, a reconnect)."""
        with self._write() as conn:
            _event(conn, session_id, at, who, what)

    def get(self, session_id: str) -> VideoSession | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id = ?",
                                     (session_id,)).fetchone()
        return None if row is None else VideoSession(*row)

    def open_sessions(self) -> list[VideoSession]:
        return self._select("WHERE state != 'ended' ORDER BY created_at")

    def of_case(self, case_id: str) -> list[VideoSession]:
        return self._select("WHERE case_id = ? ORDER BY created_at", case_id)

    def recent(self, limit: int = 50) -> list[VideoSession]:
        return self._select("ORDER BY created_at DESC LIMIT ?", limit)

    def version(self) -> int:
        """A number that grows with every change of any session (pages compare it)."""
        with self._lock:
            found = self._conn.execute("SELECT MAX(id) FROM session_events").fetchone()[0]
        return int(found or 0)

    def events(self, session_id: str) -> list[SessionEvent]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT at, who, what FROM session_events WHERE session = ? ORDER BY id",
                (session_id,)).fetchall()
        return [SessionEvent(*row) for row in rows]

    def _select(self, where: str, *args: Any) -> list[VideoSession]:
        with self._lock:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM sessions {where}", args).fetchall()
        return [VideoSession(*row) for row in rows]


def _event(conn: sqlite3.Connection, session_id: str, at: int, who: str, what: str) -> None:
    conn.execute("INSERT INTO session_events (session, at, who, what) VALUES (?, ?, ?, ?)",
                 (session_id, at, who, what))
