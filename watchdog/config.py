"""TOML config -> frozen, typed ``Config``.

The dataclasses below are the single place where keys, types, defaults and
ranges live; ``config.example.toml`` documents the same keys and a test keeps
the two in step. Every error names the key path and, when the file has one,
the line, because a daemon that dies on "invalid config" helps nobody.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from watchdog import paths
from watchdog.core.settings import (
    AgentConfig,
    AwsConfig,
    BillingConfig,
    CloudConfig,
    Config,
    IdleConfig,
    NotifyConfig,
    SchedulerConfig,
    SpotConfig,
)
from watchdog.core.timeutil import parse_duration

__all__ = [
    "DEFAULT",
    "ENV_VAR",
    "AgentConfig",
    "AwsConfig",
    "BillingConfig",
    "CloudConfig",
    "Config",
    "ConfigError",
    "IdleConfig",
    "NotifyConfig",
    "SchedulerConfig",
    "SpotConfig",
    "database_path",
    "load",
    "parse",
]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_VAR = "IDLE_WATCHDOG_CONFIG"
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d+$")
_ACCOUNT = re.compile(r"^\d{12}$")
_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")
_INSTANCE_TYPE = re.compile(r"^([a-z0-9-]+/)?[a-z][a-z0-9-]*\.[a-z0-9-]+$")


class ConfigError(ValueError):
    """A config file is unreadable or invalid; the message says where."""

    def __init__(self, message: str, *, source: str = "", key: str = "", line: int = 0):
        self.source, self.key, self.line = source, key, line
        where = ":".join(p for p in (source, str(line) if line else "") if p)
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{key + ': ' if key else ''}{message}")


def database_path(cfg: Config) -> Path:
    """The history database: ``[scheduler] database``, else the platform's state directory."""
    if cfg.scheduler.database:
        return Path(cfg.scheduler.database).expanduser()
    return paths.state_dir() / "history.sqlite3"


DEFAULT = Config()


def default_path() -> Path | None:
    """The config file used when none is named: ``$IDLE_WATCHDOG_CONFIG``, else the platform's."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    candidate = paths.config_dir() / "config.toml"
    return candidate if candidate.exists() else None


def load(path: str | Path | None = None) -> Config:
    """Load ``path`` (or the default location); defaults when there is no file at all."""
    chosen = Path(path).expanduser() if path is not None else default_path()
    if chosen is None:
        return DEFAULT
    try:
        data = chosen.read_bytes()
    except FileNotFoundError as exc:
        named = f" (named by ${ENV_VAR})" if path is None else ""
        raise ConfigError(
            f"no such file{named}: create it (`idle-watchdog config example > FILE` prints "
            "every key with its default) or name an existing one",
            source=str(chosen),
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=str(chosen)) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}): save the "
            "file as UTF-8",
            source=str(chosen),
            line=data.count(b"\n", 0, exc.start) + 1,
        ) from exc
    return parse(text, source=str(chosen))


def parse(text: str, *, source: str = "<string>") -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _decode_error_line(str(exc))
        raise ConfigError(f"not valid TOML: {exc}", source=source, line=line) from exc
    built: Config = _build(Config, raw, (), _Locator(text, source))
    return dataclasses.replace(built, source=source)


def _decode_error_line(message: str) -> int:
    match = re.search(r"line (\d+)", message)
    return int(match.group(1)) if match else 0


class _Locator:
    """Finds the line of a dotted key in TOML source (tomllib keeps no positions)."""

    _HEADER = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]\s*(#.*)?$")
    _KEY = re.compile(r"^\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_.\-\s\"']+?)\s*=")

    def __init__(self, text: str, source: str):
        self.source = source
        self.lines = text.splitlines()

    def line_of(self, path: tuple[str, ...]) -> int:
        table: tuple[str, ...] = ()
        best = 0
        for number, line in enumerate(self.lines, start=1):
            header = self._HEADER.match(line)
            if header:
                table = _split_key(header.group(1))
                if table == path:
                    best = best or number
                continue
            key = self._KEY.match(line)
            if key:
                full = table + _split_key(key.group(1))
                if full == path:
                    return number
                if full == path[: len(full)] and not best:
                    best = number  # an inline table holding the key
        return best

    def error(self, path: tuple[str, ...], message: str) -> ConfigError:
        line = self.line_of(path) or (self.line_of(path[:-1]) if len(path) > 1 else 0)
        return ConfigError(message, source=self.source, key=".".join(path), line=line)


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([^.\s]+)", text)
    return tuple(next(p for p in groups if p) if any(groups) else "" for groups in parts)


def _build(cls: type[Any], raw: Any, path: tuple[str, ...], loc: _Locator) -> Any:
    if not isinstance(raw, dict):
        raise loc.error(path, f"expected a table, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    for key in raw:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise loc.error((*path, key), f"unknown key (known here: {known})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        hint = hints[name]
        key_path = (*path, name)
        if dataclasses.is_dataclass(hint):
            values[name] = _build(typing.cast("type[Any]", hint), raw[name], key_path, loc)
        else:
            values[name] = _convert(hint, raw[name], key_path, loc, f.metadata)
    built = cls(**values)
    _check_relations(built, path, loc)
    return built


def _convert(
    hint: Any, value: Any, path: tuple[str, ...], loc: _Locator, meta: Mapping[str, Any]
) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise loc.error(path, f"expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise loc.error(path, f"expected a whole number, got {_show(value)}")
        return _in_range(value, path, loc, meta)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise loc.error(path, f"expected a number, got {_show(value)}")
        if not math.isfinite(value):
            raise loc.error(path, f"expected a finite number, got {value}")
        return _in_range(float(value), path, loc, meta)
    if hint is str:
        if not isinstance(value, str):
            raise loc.error(path, f"expected a string, got {_show(value)}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise loc.error(path, f"expected one of {', '.join(choices)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise loc.error(path, f"expected a list, got {_show(value)}")
        if meta.get("non_empty") and not value:
            raise loc.error(path, "must not be empty")
        item = typing.get_args(hint)[0]
        return tuple(_convert(item, v, path, loc, {}) for v in value)
    if origin in (Mapping, dict) or (isinstance(origin, type) and issubclass(origin, Mapping)):
        if not isinstance(value, dict):
            raise loc.error(path, f"expected a table, got {_show(value)}")
        item = typing.get_args(hint)[1]
        return types.MappingProxyType(
            {k: _convert(item, v, (*path, k), loc, meta) for k, v in value.items()}
        )
    raise TypeError(f"config schema uses an unsupported type {hint!r}")  # pragma: no cover


def _in_range(value: float, path: tuple[str, ...], loc: _Locator, meta: Mapping[str, Any]) -> Any:
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise loc.error(path, f"must be at least {lo}, got {value}")
    if hi is not None and value > hi:
        raise loc.error(path, f"must be at most {hi}, got {value}")
    return value


def _check_relations(section: Any, path: tuple[str, ...], loc: _Locator) -> None:
    """Checks that span keys or need more than a type: region names, price keys, lead time."""
    if isinstance(section, AwsConfig):
        for region in section.regions:
            if not _REGION.match(region):
                raise loc.error((*path, "regions"), f"{region!r} is not an AWS region name")
    if isinstance(section, IdleConfig) and section.warn_minutes > section.minutes:
        raise loc.error(
            (*path, "warn_minutes"),
            f"the warning lead time ({section.warn_minutes}) exceeds idle.minutes "
            f"({section.minutes})",
        )
    if isinstance(section, NotifyConfig):
        for text in section.keep_durations:
            try:
                parse_duration(text)
            except ValueError as exc:
                raise loc.error((*path, "keep_durations"), str(exc)) from exc
    if isinstance(section, AgentConfig) and section.http_listen:
        host, sep, port = section.http_listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise loc.error((*path, "http_listen"), 'expected "host:port" or "" (off)')
    if isinstance(section, CloudConfig):
        _check_cloud(section, path, loc)
    if isinstance(section, BillingConfig):
        for key in section.prices:
            if not _INSTANCE_TYPE.match(key):
                raise loc.error(
                    (*path, "prices", key),
                    'expected an instance type ("g5.xlarge") or "region/type"',
                )


def _check_cloud(section: CloudConfig, path: tuple[str, ...], loc: _Locator) -> None:
    accounts = section.accounts
    if "organization" in accounts and len(accounts) > 1:
        raise loc.error((*path, "accounts"), '"organization" lists every account: use it alone')
    for account in accounts:
        if account != "organization" and not _ACCOUNT.match(account):
            raise loc.error(
                (*path, "accounts"),
                f'{account!r} is not a 12-digit AWS account id (or "organization")',
            )
    if section.topic_arn and not _ARN.match(section.topic_arn):
        raise loc.error(
            (*path, "topic_arn"), "expected an SNS topic ARN, arn:aws:sns:REGION:ACCOUNT:NAME"
        )
    for key in ("slack_webhook_parameter", "link_secret_parameter"):
        name = getattr(section, key)
        if name and not re.match(r"^/?[A-Za-z0-9_.\-/]{1,2048}$", name):
            raise loc.error((*path, key), f"{name!r} is not an SSM parameter name")


def _show(value: Any) -> str:
    kind = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    return f"{kind.get(type(value), type(value).__name__)} ({value!r})"
