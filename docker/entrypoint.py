#!/usr/bin/env python3
"""Container entry point: run the command given, after a node's first-start chores.

For ``tongban node --config FILE`` it first makes the region's keys if its key
folder (``keys_dir``, by default ``<data_dir>/keys``, in the node's own volume) is
empty: the private keys are made where they are used and never leave the volume.
With ``CIRCLE_PUBLIC_DIR`` set (docker/compose.yaml: a volume every node of the
demo circle shares), the node's ``public.json`` is copied there as
``<region>.json``, where the other nodes find the convener's public key (their
``circle.anchor``). In a real deployment the anchor is handed over out of band
(docs/deploy.md). Any other command (``nats-server …``, ``tongban topology …``) is
run as it is.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path


def _config_path(argv: list[str]) -> Path | None:
    if argv[:2] != ["tongban", "node"]:
        return None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
    return None


def prepare_node(config_file: Path) -> None:
    """Make the node's keys if it has none; publish its public.json if asked to."""
    from config import ConfigError, load_config
    from receipts import KeyFileError, NodeKeys

    try:
        config = load_config(config_file)
    except ConfigError as exc:
        sys.exit(str(exc))
    keys = config.key_path
    # Only into an empty folder: after a rotation the first pair moves to retired/, and
    # a new "first" pair beside the later generations would stop the node from starting.
    if not keys.exists() or not any(keys.iterdir()):
        generated = NodeKeys.generate(config.region)  # as 'tongban keys new' does
        try:
            generated.save(keys, valid_from=int(time.time() * 1000))
        except (KeyFileError, OSError) as exc:
            sys.exit(f"密钥无法写入 / cannot write the node's keys to {keys}: {exc}")
        print(f"tongban: new keys for {config.region} in {keys} (signing key "
              f"{generated.sign_key_id})", flush=True)
    public_dir = os.environ.get("CIRCLE_PUBLIC_DIR")
    if public_dir and (keys / "public.json").exists():  # the first pair: a convener's anchor
        shutil.copyfile(keys / "public.json", Path(public_dir) / f"{config.region}.json")


def main() -> None:
    argv = sys.argv[1:] or ["tongban", "node", "--config", "/etc/tongban/node.toml"]
    config_file = _config_path(argv)
    if config_file is not None:
        prepare_node(config_file)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
