#!/usr/bin/env python3
"""Container health check: exit 0 if URL answers 2xx within 3 s, else 1.

The node: ``http://127.0.0.1:8080/api/health``; a nats-server started with
``-m 8222``: ``http://127.0.0.1:8222/healthz`` (JetStream included). Standard
library only, so it runs in the image as it is.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

DEFAULT = "http://127.0.0.1:8080/api/health"


def healthy(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return 200 <= int(reply.status) < 300
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return False


if __name__ == "__main__":
    sys.exit(0 if healthy(sys.argv[1] if len(sys.argv) > 1 else DEFAULT) else 1)
