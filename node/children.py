"""Child processes that die with their parent.

A node's nats-server, or a benchmark's second node, must not outlive the process
that started it, even when that process is killed with SIGKILL (no cleanup code
runs then). On Linux the kernel sends the child SIGKILL when the parent dies
(``prctl(PR_SET_PDEATHSIG)``); elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import signal
import sys

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for subprocesses: runs in the child just before exec."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
