"""Jupyter kernels and terminals, read from every Jupyter server running on this machine.

Servers are found through the ``jpserver-<pid>.json`` files they write into their
runtime directory (url, token, pid), then asked over the REST API. Every request
carries ``no_track_activity=1``: without it the agent's own polling would count as
API activity and keep the server "active" for ever (and feed its own culling).

Failure semantics, which the reducer relies on:

* no server found, or a server that is gone (its pid died, or it refuses
  connections): nothing there, so its kernels are simply absent;
* a server that is alive but cannot be read (HTTP error, wrong token, garbage,
  time-out): ``ProbeError``, i.e. *unknown*, which is never idle. It is raised only
  after every other server has been tried, so the log names all that failed.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psutil
import requests
import structlog
import urllib3

from watchdog.core.sample import Kernel, ProbeError, Terminal

log = structlog.get_logger("watchdog.agent.jupyter")

#: Jupyter Server writes ``jpserver-<pid>.json``, the classic Notebook (< 7) ``nbserver-<pid>.json``
RUNTIME_FILE_PATTERNS = ("jpserver-*.json", "nbserver-*.json")
_UNTRACKED = {"no_track_activity": "1"}
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 (we only recognise them)


class _ServerGone(Exception):
    """The server refused the connection or its process has exited: nothing to report."""


@dataclass(frozen=True)
class ServerInfo:
    """One running server, as its runtime file describes it."""

    url: str  # where to reach it, base_url included, ending in "/"
    token: str
    pid: int | None
    path: Path  # the runtime file it came from


def default_runtime_dirs() -> list[Path]:
    """Where Jupyter servers of any local user leave their runtime files.

    The agent runs as root beside servers started by other users, so it looks in every
    home directory, not only its own; ``/run/user/<uid>/jupyter`` is where older
    jupyter_core releases put them (under ``$XDG_RUNTIME_DIR``).
    """
    dirs: list[Path] = []
    env = os.environ.get("JUPYTER_RUNTIME_DIR")
    if env:
        dirs.append(Path(env))
    homes = [entry.pw_dir for entry in pwd.getpwall() if entry.pw_dir]
    for home in [*homes, "/root"]:
        dirs.append(Path(home) / ".local" / "share" / "jupyter" / "runtime")
    for run_user in sorted(Path("/run/user").glob("*/jupyter")):
        dirs.extend((run_user, run_user / "runtime"))
    return list(dict.fromkeys(dirs))


def discover(dirs: Iterable[str | Path]) -> list[ServerInfo]:
    """Live servers described by runtime files in exactly ``dirs`` (missing dirs are fine).

    A file that cannot be read or parsed is skipped with a warning; a file whose pid
    has exited is a leftover of a crashed server (they are only removed on a clean
    exit) and is skipped quietly. Several files naming one URL count once.
    """
    servers: dict[str, ServerInfo] = {}
    seen_dirs: set[Path] = set()
    for raw in dirs:
        directory = Path(raw).expanduser()
        try:
            resolved = directory.resolve()
        except OSError:
            continue
        if resolved in seen_dirs:
            continue
        seen_dirs.add(resolved)
        try:
            files = sorted(f for pattern in RUNTIME_FILE_PATTERNS for f in directory.glob(pattern))
        except OSError as exc:
            log.warning("Jupyter runtime dir unreadable", path=str(directory), error=str(exc))
            continue
        for path in files:
            info = _read_runtime_file(path)
            if info is None:
                continue
            if info.pid is not None and not _alive(info.pid):
                log.debug("Jupyter runtime file left by an exited server", path=str(path))
                continue
            servers.setdefault(info.url, info)
    return list(servers.values())


def _read_runtime_file(path: Path) -> ServerInfo | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return _server_info(data, path)
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        log.warning("Jupyter runtime file skipped", path=str(path), error=str(exc) or repr(exc))
        return None


def _server_info(data: dict[str, Any], path: Path) -> ServerInfo:
    """Build the URL to call; a server bound to a wildcard address is reached on loopback,
    because its recorded URL then names the host, which need not resolve."""
    url = data["url"]
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"url is not a URL: {url!r}")
    host = data.get("hostname")
    port = data.get("port")
    if host in _WILDCARD_HOSTS and isinstance(port, int):
        scheme = url.split("://", 1)[0]
        loopback = "[::1]" if ":" in str(host) else "127.0.0.1"
        base = str(data.get("base_url") or "/")
        url = f"{scheme}://{loopback}:{port}/{base.lstrip('/')}"
    if not url.endswith("/"):
        url += "/"
    token = data.get("token") or ""
    pid = data.get("pid")
    if not isinstance(token, str):
        raise ValueError("token is not a string")
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0):
        raise ValueError(f"pid is not a positive integer: {pid!r}")
    return ServerInfo(url=url, token=token, pid=pid, path=path)


def _alive(pid: int) -> bool:
    """A zombie has exited, even if its parent has not reaped it yet."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # exists, but we may not inspect it


_TIMESTAMP = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)"
    r"(?:[.,](?P<frac>\d+))?\s*(?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)?"
)


def parse_timestamp(text: str) -> datetime:
    """``2024-05-01T12:34:56.789012Z``, ``…:56Z`` (Jupyter drops a zero fraction), offsets,
    nanoseconds; naive means UTC. Works the same on every Python we support (3.10's
    ``fromisoformat`` refuses most of these)."""
    match = _TIMESTAMP.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a timestamp: {text!r}")
    frac = (match["frac"] or "")[:6].ljust(6, "0")
    tz = match["tz"] or "Z"
    offset = timezone.utc
    if tz not in ("Z", "z"):
        hours, minutes = int(tz[1:3]), int(tz[3:].lstrip(":") or 0)
        sign = -1 if tz[0] == "-" else 1
        offset = timezone(sign * timedelta(hours=hours, minutes=minutes))
    clock = match["time"] if match["time"].count(":") == 2 else match["time"] + ":00"
    naive = datetime.fromisoformat(f"{match['date']}T{clock}.{frac}")
    return naive.replace(tzinfo=offset).astimezone(timezone.utc)


class JupyterProbe:
    """Reads kernels and terminals of every Jupyter server on the machine, once per call."""

    def __init__(
        self,
        runtime_dirs: Sequence[str | Path] = (),
        timeout: float = 3.0,
        session: requests.Session | None = None,
    ) -> None:
        """``runtime_dirs`` are searched after :func:`default_runtime_dirs` (config
        ``[agent] jupyter_runtime_dirs``)."""
        self.runtime_dirs = tuple(Path(d) for d in runtime_dirs)
        self.timeout = timeout
        if session is None:
            session = requests.Session()
            # An HTTP(S)_PROXY meant for the internet must not be asked for localhost.
            session.trust_env = False
        self.session = session

    def servers(self) -> list[ServerInfo]:
        """Found afresh on every read: servers start and stop between samples."""
        return discover([*default_runtime_dirs(), *self.runtime_dirs])

    def read(self) -> tuple[tuple[Kernel, ...], tuple[Terminal, ...]]:
        """Kernels and terminals of all live servers; ``ProbeError`` if a live one is unreadable."""
        kernels: list[Kernel] = []
        terminals: list[Terminal] = []
        failures: list[str] = []
        for server in self.servers():
            try:
                k = tuple(self._kernels(server))
                t = tuple(self._terminals(server))
            except _ServerGone as exc:
                log.info("Jupyter server gone", server=server.url, reason=str(exc))
                continue
            except ProbeError as exc:
                log.warning("Jupyter server unreadable", server=server.url, error=str(exc))
                failures.append(f"{server.url}: {exc}")
                continue
            kernels.extend(k)
            terminals.extend(t)
        if failures:
            raise ProbeError("Jupyter server unreadable: " + "; ".join(failures))
        return tuple(kernels), tuple(terminals)

    def _kernels(self, server: ServerInfo) -> list[Kernel]:
        body = self._get(server, "api/kernels")
        try:
            return [
                Kernel(
                    id=_field(item, "id", str),
                    execution_state=str(item.get("execution_state") or "unknown"),
                    last_activity=_when(item.get("last_activity")),
                    connections=_count(item.get("connections")),
                    server=server.url,
                )
                for item in _objects(body)
            ]
        except (ValueError, TypeError) as exc:
            raise ProbeError(f"unexpected kernel list: {exc}") from exc

    def _terminals(self, server: ServerInfo) -> list[Terminal]:
        """Terminals may be switched off (``ServerApp.terminals_enabled = False``; then
        ``/api/terminals`` is a 404): that means "none", not "unknown"."""
        body = self._get(server, "api/terminals", absent_ok=True)
        try:
            return [
                # Older servers (the classic Notebook) report no last_activity for terminals.
                Terminal(
                    name=str(_field(item, "name", (str, int))),
                    last_activity=_when(item.get("last_activity")),
                    server=server.url,
                )
                for item in _objects(body)
            ]
        except (ValueError, TypeError) as exc:
            raise ProbeError(f"unexpected terminal list: {exc}") from exc

    def _get(self, server: ServerInfo, path: str, *, absent_ok: bool = False) -> Any:
        """The decoded JSON body; an empty list for a 404 if ``absent_ok``."""
        if not server.url.startswith(("http://", "https://")):
            # A live server we cannot ask (``--sock``: http+unix://) is unknown, not absent.
            raise ProbeError(f"cannot reach {server.url.split(':', 1)[0]} servers")
        headers = {"Accept": "application/json"}
        if server.token:
            headers["Authorization"] = f"token {server.token}"
        try:
            with warnings.catch_warnings():
                # A local server over https has a self-signed certificate as a rule; the
                # URL came from a runtime file on this machine, not from the network.
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                resp = self.session.get(
                    server.url + path,
                    params=_UNTRACKED,
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,  # a redirect goes to a login page: not our JSON
                    verify=False,
                )
        except requests.Timeout as exc:
            raise ProbeError(f"{path}: no answer within {self.timeout:g} s") from exc
        except requests.ConnectionError as exc:
            if _refused(exc) or (server.pid is not None and not _alive(server.pid)):
                raise _ServerGone(f"{path}: {_root_cause(exc)}") from exc
            raise ProbeError(f"{path}: {_root_cause(exc)}") from exc
        except requests.RequestException as exc:
            raise ProbeError(f"{path}: {exc}") from exc
        if resp.status_code == 404 and absent_ok:
            return []
        if resp.status_code != 200:
            raise ProbeError(f"{path}: HTTP {resp.status_code} {resp.reason}".rstrip())
        try:
            return resp.json()
        except ValueError as exc:
            raise ProbeError(f"{path}: not JSON ({resp.text[:80]!r})") from exc


def _objects(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        raise ValueError(f"expected a list of objects, got {type(body).__name__}")
    return body


def _field(item: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = item.get(name)
    if not isinstance(value, kind) or value == "":
        raise ValueError(f"{name} missing or not {kind}: {value!r}")
    return value


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"last_activity is not a string: {value!r}")
    return parse_timestamp(value)


def _count(value: Any) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"connections is not a count: {value!r}")
    return value


def _wrapped(exc: BaseException) -> list[BaseException]:
    """What an exception wraps: requests → urllib3 (``reason``, args) → the OS error."""
    nested = [getattr(exc, "reason", None), exc.__cause__, *exc.args, exc.__context__]
    return [e for e in nested if isinstance(e, BaseException)]


def _refused(exc: BaseException) -> bool:
    """Only a refused connection proves the server gone; a name that does not resolve does not."""
    stack, seen = [exc], set()
    while stack:
        current = stack.pop()
        if isinstance(current, ConnectionRefusedError):
            return True
        if id(current) not in seen:
            seen.add(id(current))
            stack.extend(_wrapped(current))
    return False


def _root_cause(exc: BaseException) -> str:
    """The innermost error, which says what happened (``ConnectionRefusedError: …``)."""
    seen = {id(exc)}
    while True:
        inner = next((e for e in _wrapped(exc) if id(e) not in seen), None)
        if inner is None:
            return f"{type(exc).__name__}: {exc}"
        seen.add(id(inner))
        exc = inner
