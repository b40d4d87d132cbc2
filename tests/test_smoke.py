"""Repository layout rules: folders exist and the import boundaries hold.

- ``protocol/`` is sans-IO: it must not import asyncio, nats, aiohttp,
  sqlite3, sqlite_utils or socket.
- ``protocol/``, ``receipts/``, ``routing/`` and ``config/`` must not import
  ``node`` (all I/O lives there and depends on them, not the other way round).
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TOP_LEVEL_FOLDERS = ("protocol", "receipts", "routing", "node", "config", "docs", "tests", "docker")
IO_MODULES = frozenset({"asyncio", "nats", "aiohttp", "sqlite3", "sqlite_utils", "socket"})
CORE_FOLDERS = ("protocol", "receipts", "routing", "config")


def _python_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _imported_top_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line, top-level module name) for every absolute import in ``path``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.partition(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.partition(".")[0]


def _violations(folders: tuple[str, ...], forbidden: frozenset[str]) -> list[str]:
    found = []
    for folder in folders:
        for path in _python_files(folder):
            for lineno, module in _imported_top_modules(path):
                if module in forbidden:
                    found.append(f"{path.relative_to(ROOT)}:{lineno} imports {module}")
    return found


@pytest.mark.parametrize("folder", TOP_LEVEL_FOLDERS)
def test_top_level_folder_exists(folder: str) -> None:
    assert (ROOT / folder).is_dir(), f"missing top-level folder {folder}/"


def test_protocol_is_sans_io() -> None:
    assert _violations(("protocol",), IO_MODULES) == []


def test_core_does_not_import_node() -> None:
    assert _violations(CORE_FOLDERS, frozenset({"node"})) == []
