"""Staff accounts, their sign-in sessions and the audit log of administrative actions.

Theory of operation
-------------------
One SQLite file per node (``accounts.db`` in the data dir), apart from the case
database: it holds people, not cases, and is written by the web pages and by
``tongban accounts`` (another process) alike, so every write is one short
transaction and WAL with a busy timeout lets both work on it at once.

Passwords arrive here already hashed (Argon2id, ``node.web.auth``); this module
never sees one. A session is known by the SHA-256 of its random id: the id itself
lives only in the browser's cookie, so a copy of this file opens no session.

Every administrative change (an account created, a password reset, disabled,
enabled, unlocked, its roles changed) writes its audit row in the same transaction
as the change itself: there is no change without its row. Lock-outs, which the
system decides, are audited too, with ``-`` as the actor.

Times are milliseconds since the epoch, handed in by the caller (its clock).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from node.store.base import SideStore

__all__ = ["FILENAME", "ROLES", "Account", "AccountError", "AccountStore", "AuditRow", "SessionRow"]

#: The account database's name in a node's data dir.
FILENAME = "accounts.db"

#: Staff roles (architecture §9), by identifier; the Chinese name is what people see.
ROLES: dict[str, str] = {
    "clerk": "窗口收件员",
    "reviewer": "审核员",
    "department": "部门办理员",
    "operator": "运维",
    "admin": "管理员",
}

MIGRATIONS: list[tuple[str, ...]] = [
    (  # version 1
        """CREATE TABLE accounts (
            id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE,
            display_name TEXT NOT NULL, region TEXT NOT NULL, password_hash TEXT NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0, must_change_password INTEGER NOT NULL DEFAULT 0,
            failed_attempts INTEGER NOT NULL DEFAULT 0, locked_until INTEGER,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)""",
        """CREATE TABLE account_roles (
            account_id INTEGER NOT NULL REFERENCES accounts(id), role TEXT NOT NULL,
            PRIMARY KEY (account_id, role))""",
        """CREATE TABLE sessions (
            id_hash BLOB PRIMARY KEY, account_id INTEGER NOT NULL REFERENCES accounts(id),
            csrf_token TEXT NOT NULL, created_at INTEGER NOT NULL, last_seen INTEGER NOT NULL,
            expires_at INTEGER NOT NULL)""",
        "CREATE INDEX sessions_account ON sessions(account_id)",
        "CREATE INDEX sessions_expiry ON sessions(expires_at)",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL,
            action TEXT NOT NULL, target TEXT, detail TEXT NOT NULL DEFAULT '{}')""",
        "CREATE INDEX audit_at ON audit(at)",
    ),
]


class AccountError(Exception):
    """A change that cannot be made (no such account, a name taken, the last administrator).

    ``zh`` says what to do instead, for the page or the command line."""

    def __init__(self, code: str, zh: str) -> None:
        super().__init__(f"{code}: {zh}")
        self.code = code
        self.zh = zh


@dataclasses.dataclass(frozen=True)
class Account:
    id: int
    username: str
    display_name: str
    roles: frozenset[str]
    region: str
    password_hash: str
    disabled: bool
    must_change_password: bool
    failed_attempts: int
    locked_until: int | None
    created_at: int
    updated_at: int

    def __repr__(self) -> str:
        return (f"<Account {self.username} {','.join(sorted(self.roles))} {self.region}"
                f"{' disabled' if self.disabled else ''}>")

    def locked(self, now: int) -> bool:
        return self.locked_until is not None and self.locked_until > now

    @property
    def role_names(self) -> list[str]:
        return [name for role, name in ROLES.items() if role in self.roles]


@dataclasses.dataclass(frozen=True)
class SessionRow:
    account: Account
    csrf_token: str
    created_at: int
    last_seen: int
    expires_at: int  # the absolute limit; the idle limit is the caller's


@dataclasses.dataclass(frozen=True)
class AuditRow:
    at: int
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]


_ACCOUNT_COLUMNS = ("id, username, display_name, region, password_hash, disabled, "
                    "must_change_password, failed_attempts, locked_until, created_at, updated_at")


class AccountStore(SideStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, MIGRATIONS, synchronous="FULL", what="accounts")

    # ---------------------------------------------------------------- accounts

    def account(self, username: str) -> Account | None:
        with self._lock:
            return self._account(self._conn, "username = ?", username.lower())

    def accounts(self) -> list[Account]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY region, username").fetchall()
            return [self._from_row(self._conn, row) for row in rows]

    def create(self, *, username: str, display_name: str, roles: Iterable[str], region: str,
               password_hash: str, now: int, actor: str,
               must_change_password: bool = False) -> Account:
        roles = _checked_roles(roles)
        with self._write() as conn:
            if self._account(conn, "username = ?", username.lower()) is not None:
                raise AccountError("username_taken", f"用户名 {username} 已被使用，请换一个用户名")
            account_id = int(conn.execute(
                "INSERT INTO accounts (username, display_name, region, password_hash, "
                "must_change_password, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (username.lower(), display_name, region, password_hash, int(must_change_password),
                 now, now)).lastrowid or 0)
            conn.executemany("INSERT INTO account_roles (account_id, role) VALUES (?, ?)",
                             [(account_id, role) for role in sorted(roles)])
            _audit(conn, now, actor, "create", username.lower(),
                   {"roles": sorted(roles), "region": region, "display_name": display_name})
            created = self._account(conn, "id = ?", account_id)
        assert created is not None
        return created

    def set_password(self, username: str, password_hash: str, now: int, *, actor: str,
                     must_change: bool) -> None:
        """A new password: every session of the account ends, and a lock-out with it.
        Audited when someone other than the account's holder set it (a reset)."""
        with self._write() as conn:
            account = self._existing(conn, username)
            conn.execute("UPDATE accounts SET password_hash = ?, must_change_password = ?, "
                         "failed_attempts = 0, locked_until = NULL, updated_at = ? WHERE id = ?",
                         (password_hash, int(must_change), now, account.id))
            conn.execute("DELETE FROM sessions WHERE account_id = ?", (account.id,))
            _audit(conn, now, actor, "reset_password" if actor != account.username
                   else "change_password", account.username, {})

    def rehash(self, account_id: int, password_hash: str) -> None:
        """The same password under newer hashing parameters (at a successful sign-in)."""
        with self._write() as conn:
            conn.execute("UPDATE accounts SET password_hash = ? WHERE id = ?",
                         (password_hash, account_id))

    def set_disabled(self, username: str, disabled: bool, now: int, *, actor: str) -> None:
        with self._write() as conn:
            account = self._existing(conn, username)
            if disabled and "admin" in account.roles and not account.disabled:
                self._keep_an_admin(conn, account, actor)
            conn.execute("UPDATE accounts SET disabled = ?, updated_at = ? WHERE id = ?",
                         (int(disabled), now, account.id))
            if disabled:
                conn.execute("DELETE FROM sessions WHERE account_id = ?", (account.id,))
            _audit(conn, now, actor, "disable" if disabled else "enable", account.username, {})

    def set_roles(self, username: str, roles: Iterable[str], now: int, *, actor: str) -> None:
        roles = _checked_roles(roles)
        with self._write() as conn:
            account = self._existing(conn, username)
            if "admin" in account.roles and "admin" not in roles:
                self._keep_an_admin(conn, account, actor)
            conn.execute("DELETE FROM account_roles WHERE account_id = ?", (account.id,))
            conn.executemany("INSERT INTO account_roles (account_id, role) VALUES (?, ?)",
                             [(account.id, role) for role in sorted(roles)])
            conn.execute("UPDATE accounts SET updated_at = ? WHERE id = ?", (now, account.id))
            _audit(conn, now, actor, "set_roles", account.username,
                   {"from": sorted(account.roles), "to": sorted(roles)})

    def unlock(self, username: str, now: int, *, actor: str) -> None:
        with self._write() as conn:
            account = self._existing(conn, username)
            conn.execute("UPDATE accounts SET failed_attempts = 0, locked_until = NULL, "
                         "updated_at = ? WHERE id = ?", (now, account.id))
            _audit(conn, now, actor, "unlock", account.username, {})

    def record_failure(self, account_id: int, now: int, *, limit: int,
                       lock_ms: int) -> tuple[int, int | None]:
        """One more wrong password: ``(failures so far, locked until)``. The ``limit``-th
        in a row locks the account and starts the count again."""
        with self._write() as conn:
            row = conn.execute("SELECT username, failed_attempts FROM accounts WHERE id = ?",
                               (account_id,)).fetchone()
            if row is None:
                return 0, None
            failures = int(row[1]) + 1
            if failures < limit:
                conn.execute("UPDATE accounts SET failed_attempts = ? WHERE id = ?",
                             (failures, account_id))
                return failures, None
            until = now + lock_ms
            conn.execute("UPDATE accounts SET failed_attempts = 0, locked_until = ? WHERE id = ?",
                         (until, account_id))
            _audit(conn, now, "-", "lock", row[0], {"failures": failures, "until": until})
            return failures, until

    def record_success(self, account_id: int) -> None:
        with self._write() as conn:
            conn.execute("UPDATE accounts SET failed_attempts = 0, locked_until = NULL "
                         "WHERE id = ? AND (failed_attempts != 0 OR locked_until IS NOT NULL)",
                         (account_id,))

    def admins(self) -> int:
        """How many enabled accounts hold the administrator role."""
        with self._lock:
            return self._admins(self._conn)

    # ---------------------------------------------------------------- sessions

    def create_session(self, id_hash: bytes, account_id: int, csrf_token: str, now: int,
                       expires_at: int) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            conn.execute("INSERT INTO sessions (id_hash, account_id, csrf_token, created_at, "
                         "last_seen, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                         (id_hash, account_id, csrf_token, now, now, expires_at))

    def session(self, id_hash: bytes) -> SessionRow | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT account_id, csrf_token, created_at, last_seen, expires_at FROM sessions "
                "WHERE id_hash = ?", (id_hash,)).fetchone()
            if row is None:
                return None
            account = self._account(self._conn, "id = ?", row[0])
        if account is None:
            return None
        return SessionRow(account, row[1], int(row[2]), int(row[3]), int(row[4]))

    def touch_session(self, id_hash: bytes, now: int) -> None:
        with self._write() as conn:
            conn.execute("UPDATE sessions SET last_seen = ? WHERE id_hash = ?", (now, id_hash))

    def end_session(self, id_hash: bytes) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,))

    def sessions_of(self, username: str) -> int:
        with self._lock:
            return int(self._conn.execute(
                "SELECT count(*) FROM sessions s JOIN accounts a ON a.id = s.account_id "
                "WHERE a.username = ?", (username.lower(),)).fetchone()[0])

    # ---------------------------------------------------------------- audit

    def audit(self, limit: int = 100) -> list[AuditRow]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT ?",
                (limit,)).fetchall()
        return [AuditRow(int(at), actor, action, target, json.loads(detail))
                for at, actor, action, target, detail in rows]

    def record(self, now: int, actor: str, action: str, target: str | None,
               detail: dict[str, Any]) -> None:
        """An operator's action on the node (a dead letter retried, a refused message
        marked handled ...): its audit row, alone."""
        with self._write() as conn:
            _audit(conn, now, actor, action, target, detail)

    def audit_of(self, actions: Iterable[str], limit: int = 50) -> list[AuditRow]:
        """The newest audit rows of the given actions."""
        chosen = sorted(set(actions))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT at, actor, action, target, detail FROM audit WHERE action IN "
                f"({','.join('?' * len(chosen))}) ORDER BY id DESC LIMIT ?",
                (*chosen, limit)).fetchall()
        return [AuditRow(int(at), actor, action, target, json.loads(detail))
                for at, actor, action, target, detail in rows]

    # ---------------------------------------------------------------- helpers

    def _existing(self, conn: sqlite3.Connection, username: str) -> Account:
        account = self._account(conn, "username = ?", username.lower())
        if account is None:
            raise AccountError("no_account", f"没有用户名为 {username} 的账户，请核对用户名")
        return account

    def _keep_an_admin(self, conn: sqlite3.Connection, account: Account, actor: str) -> None:
        """Refuse what would leave the node without an enabled administrator, and an
        administrator's taking their own administration away."""
        if actor == account.username:
            raise AccountError("own_admin", "不能停用自己的账户或取消自己的管理员角色，"
                                            "如确需调整，请由另一位管理员操作")
        if self._admins(conn) <= 1:
            raise AccountError("last_admin", "这是最后一个可用的管理员账户，不能停用或取消其管理员角色；"
                                             "请先为另一个账户添加管理员角色")

    @staticmethod
    def _admins(conn: sqlite3.Connection) -> int:
        return int(conn.execute(
            "SELECT count(*) FROM accounts a JOIN account_roles r ON r.account_id = a.id "
            "WHERE r.role = 'admin' AND a.disabled = 0").fetchone()[0])

    def _account(self, conn: sqlite3.Connection, where: str, value: Any) -> Account | None:
        row = conn.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE {where}",
                           (value,)).fetchone()
        return None if row is None else self._from_row(conn, row)

    @staticmethod
    def _from_row(conn: sqlite3.Connection, row: tuple[Any, ...]) -> Account:
        roles = frozenset(r for (r,) in conn.execute(
            "SELECT role FROM account_roles WHERE account_id = ?", (row[0],)))
        return Account(id=int(row[0]), username=row[1], display_name=row[2], roles=roles,
                       region=row[3], password_hash=row[4], disabled=bool(row[5]),
                       must_change_password=bool(row[6]), failed_attempts=int(row[7]),
                       locked_until=None if row[8] is None else int(row[8]),
                       created_at=int(row[9]), updated_at=int(row[10]))


def _checked_roles(roles: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(roles)
    unknown = chosen - ROLES.keys()
    if unknown:
        raise AccountError("bad_role", f"未知角色 {', '.join(sorted(unknown))}，"
                                       f"可选：{', '.join(ROLES)}")
    if not chosen:
        raise AccountError("no_role", "请至少选择一个角色")
    return chosen


def _audit(conn: sqlite3.Connection, at: int, actor: str, action: str, target: str | None,
           detail: dict[str, Any]) -> None:
    conn.execute("INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                 (at, actor, action, target, json.dumps(detail, ensure_ascii=False)))
