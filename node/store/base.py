"""What every database of the node shares: opening one (WAL), bringing it to the
latest schema, the error that says it cannot be used, and ``SideStore``, the small
databases beside the case database (accounts, video sessions)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

__all__ = ["SideStore", "StoreError", "migrate", "open_database"]


class StoreError(Exception):
    """The database cannot be used (newer schema, corrupt file, disk full ...)."""


def open_database(path: Path, *, synchronous: str) -> sqlite_utils.Database:
    """A connection in WAL mode; ``StoreError`` if the file is not a usable database."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db = sqlite_utils.Database(conn)
        db.enable_wal()
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"数据库无法打开 / cannot open database {path}: {exc}") from exc
    return db


class SideStore:
    """A small database of its own beside the case database (accounts, video sessions):
    opened and migrated at once, written one short transaction at a time from any thread
    (``_write``), read under the same lock."""

    def __init__(self, path: Path, migrations: list[tuple[str, ...]], *, synchronous: str,
                 what: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._what = what
        self._conn = open_database(path, synchronous=synchronous).conn
        migrate(self._conn, migrations)
        self._lock = threading.Lock()  # one transaction at a time, whichever thread

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"{self._what}: {exc}") from exc
                raise


def migrate(conn: sqlite3.Connection, migrations: list[tuple[str, ...]]) -> None:
    """Bring a database to the latest schema; a newer one than the code knows is refused."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(migrations):
        raise StoreError(
            f"数据库版本 {version} 高于本程序支持的 {len(migrations)} / database schema "
            f"{version} is newer than this program ({len(migrations)}); upgrade tongban")
    for number, statements in enumerate(migrations[version:], start=version + 1):
        with conn:
            conn.execute("BEGIN")
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")
