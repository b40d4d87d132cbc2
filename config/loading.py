"""Load a ``NodeConfig`` from TOML and the environment, with errors a person can act on.

Environment variables override single keys: ``TONGBAN_<SECTION>__<KEY>`` (double
underscore between levels), e.g. ``TONGBAN_HTTP__PORT=8081`` or
``TONGBAN_NATS__URLS='["nats://10.0.0.5:4222"]'`` (lists and tables as JSON).
Relative paths in the file are relative to the file's folder.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from config.models import NodeConfig

__all__ = ["ConfigError", "load_config", "parse_config"]

PREFIX = "TONGBAN_"


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the key and the value."""


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> NodeConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"配置文件不存在 / config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"配置文件无法读取 / cannot read config file {path}: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"配置文件不是有效的 TOML / {path} is not valid TOML: {exc}") from exc
    return parse_config(data, base=path.parent, environ=environ)


def parse_config(data: dict[str, Any], *, base: Path, environ: Mapping[str, str] | None = None,
                 ) -> NodeConfig:
    merged = _apply_environment(data, os.environ if environ is None else environ)
    _resolve_paths(merged, base)
    try:
        return NodeConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    merged = json.loads(json.dumps(data, default=str))  # a deep copy of plain values
    for name, raw in environ.items():
        if not name.startswith(PREFIX):
            continue
        keys = name[len(PREFIX):].lower().split("__")
        target = merged
        for key in keys[:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise ConfigError(f"环境变量 {name} 指向的不是配置表 / {name} does not name a table")
        target[keys[-1]] = _env_value(raw)
    return merged  # type: ignore[no-any-return]


def _env_value(raw: str) -> Any:
    if raw[:1] in "[{":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


_PATH_KEYS = {("data_dir",), ("keys_dir",), ("catalog",), ("circle", "anchor"),
              ("nats", "credentials"), ("nats", "tls", "ca"), ("nats", "tls", "cert"),
              ("nats", "tls", "key"), ("http", "token_file"),
              ("alerts", "webhook_token_file")}


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    for keys in _PATH_KEYS:
        holder: Any = data
        for key in keys[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and isinstance(holder.get(keys[-1]), str):
            holder[keys[-1]] = str(base / holder[keys[-1]])
    for peer in data.get("peers", []) if isinstance(data.get("peers"), list) else []:
        if isinstance(peer, dict) and isinstance(peer.get("public"), str):
            peer["public"] = str(base / peer["public"])


def _describe(exc: ValidationError) -> str:
    lines = ["配置有误 / invalid configuration:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        value = error.get("input")
        shown = "(missing)" if error["type"] == "missing" else repr(value)[:80]
        lines.append(f"  {key} = {shown}: {error['msg']}")
    return "\n".join(lines)
