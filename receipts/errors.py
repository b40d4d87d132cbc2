"""Errors of the receipts package.

Tree::

    ReceiptsError
    ├── KeyFileError     a key file is missing, unreadable, malformed or too open
    └── BundleError      an evidence bundle does not verify; ``link`` names the first
                         broken link ("envelope 3", "receipt 370100#4", ...)

A peer's bad signature, unknown key or undecryptable payload is the peer's fault
and raises ``protocol.errors.RemoteProtocolError`` with its reason code, so the
transport can answer it with a rejection.
"""

from __future__ import annotations

__all__ = ["BundleError", "KeyFileError", "ReceiptsError"]


class ReceiptsError(Exception):
    """Base of the errors this package raises itself."""


class KeyFileError(ReceiptsError):
    """A key file could not be used. The message says which file and what to do."""


class BundleError(ReceiptsError):
    def __init__(self, link: str, problem: str) -> None:
        self.link = link
        self.problem = problem
        super().__init__(f"{link}: {problem}")
