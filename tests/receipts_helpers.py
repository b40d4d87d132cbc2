"""Shared helpers for ``test_keys`` and ``test_receipts``: the region the keys belong to,
a day in milliseconds, and ``remote_error``, which expects a ``RemoteProtocolError`` with
a given reason."""

from __future__ import annotations

from typing import Any

import pytest

from protocol import examples as ex
from protocol.errors import Reason, RemoteProtocolError

DAY = ex.DAY
REGION = ex.HANDLING


def remote_error(reason: Reason) -> Any:
    return pytest.raises(RemoteProtocolError, check=lambda e: e.reason is reason)
