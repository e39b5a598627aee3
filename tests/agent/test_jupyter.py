"""The Jupyter probe against real jupyter_server processes running real ipykernels.

Each server runs on 127.0.0.1 with its own runtime, data and config dirs and HOME,
so nothing from the machine leaks in (and the probe's default search of every
home directory is switched off here). Kernels are driven the way a browser does:
over the kernel's websocket, with Jupyter messages as JSON.

A kernel started through the REST API stays ``starting`` until a client connects
(jupyter_server only learns the state from a status message on IOPub), so the
tests connect a client to every kernel whose state they check.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, TypeVar

import psutil
import pytest
import requests
import websocket
from structlog.testing import capture_logs

from watchdog.agent.probes import jupyter
from watchdog.agent.probes.jupyter import (
    JupyterProbe,
    ServerInfo,
    default_runtime_dirs,
    discover,
    parse_timestamp,
)
from watchdog.core.sample import Kernel, ProbeError, Terminal

T = TypeVar("T")
UTC = timezone.utc
START_TIMEOUT = 30.0  # a cold server or kernel start on a loaded CI machine
STATE_TIMEOUT = 10.0  # the server learning a kernel's new state from IOPub


def now() -> datetime:
    return datetime.now(UTC)


def until(read: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str) -> T:
    """Poll ``read`` until ``done`` says so: state changes in Jupyter are asynchronous."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {value}")
        time.sleep(0.05)


# --- a real Jupyter server -------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: Path  # runtime/, data/, config/, home/, root/ and the server's log live here
    token: str
    log_file: IO[bytes]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def runtime_dir(self) -> Path:
        return self.base / "runtime"

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def api(self, method: str, path: str, *, track: bool = False, **kwargs: Any) -> Any:
        """Call the REST API as a client would; untracked unless ``track``."""
        params = {} if track else {"no_track_activity": "1"}
        resp = requests.request(
            method,
            self.url + path,
            params=params,
            headers={"Authorization": f"token {self.token}"},
            timeout=START_TIMEOUT,
            **kwargs,
        )
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def status(self) -> dict[str, Any]:
        """``/api/status`` never tracks activity itself, so it can watch the others."""
        body: dict[str, Any] = self.api("GET", "api/status")
        return body

    def start_kernel(self) -> str:
        kernel_id: str = self.api("POST", "api/kernels", json={"name": "python3"})["id"]
        return kernel_id

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server and every kernel or terminal it started (they are our processes)."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(children, timeout=5)
        self.log_file.close()


def start_server(base: Path) -> Server:
    """A jupyter_server on a free loopback port, ready once its runtime file is written."""
    for sub in ("runtime", "data", "config", "home", "root"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    env.update(
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        IPYTHONDIR=str(base / "home" / ".ipython"),
        HOME=str(base / "home"),
    )
    token = secrets.token_hex(16)
    log_file = (base / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port=0",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={base / 'root'}",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    server = Server(proc=proc, base=base, token=token, log_file=log_file)
    info_file = base / "runtime" / f"jpserver-{proc.pid}.json"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"jupyter_server exited:\n{(base / 'server.log').read_text()}")
        try:
            server.info = json.loads(info_file.read_text())
            server.status()
        except (OSError, ValueError, requests.RequestException):
            return False
        return True

    try:
        until(ready, bool, START_TIMEOUT, "jupyter_server to start")
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Shared by most tests; each checks only the kernels and terminals it made."""
    srv = start_server(tmp_path_factory.mktemp("jupyter-a"))
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """For tests that kill their server or need its activity clock to themselves."""
    srv = start_server(tmp_path / "jupyter")
    yield srv
    if srv.proc.poll() is None:
        srv.stop()
    else:
        srv.log_file.close()


@pytest.fixture(autouse=True)
def _only_our_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers of the machine running the tests must not appear in the results."""
    monkeypatch.setattr(jupyter, "default_runtime_dirs", list)


# --- a client on a kernel's websocket, as a browser tab would be -----------------------


class Client:
    def __init__(self, server: Server, kernel_id: str) -> None:
        self.session = uuid.uuid4().hex
        ws_url = server.url.replace("http://", "ws://", 1)
        self.ws = websocket.create_connection(
            f"{ws_url}api/kernels/{kernel_id}/channels?session_id={self.session}",
            header={"Authorization": f"token {server.token}"},
            timeout=START_TIMEOUT,  # the server answers once the kernel is up
        )

    def execute(self, code: str) -> str:
        msg_id = uuid.uuid4().hex
        message = {
            "header": {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "username": "test",
                "session": self.session,
                "date": now().isoformat(),
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": code,
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            "channel": "shell",
            "buffers": [],
        }
        self.ws.send(json.dumps(message))
        return msg_id

    def wait_idle(self, msg_id: str, timeout: float = STATE_TIMEOUT) -> None:
        """Until the kernel reports it is done with ``msg_id``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            msg = json.loads(self.ws.recv())
            if (
                msg.get("channel") == "iopub"
                and msg["header"]["msg_type"] == "status"
                and msg["parent_header"].get("msg_id") == msg_id
                and msg["content"]["execution_state"] == "idle"
            ):
                return
        raise AssertionError(f"no idle status for {msg_id} within {timeout:g} s")

    def close(self) -> None:
        self.ws.close()


@dataclass
class LiveKernel:
    server: Server
    id: str
    client: Client


def open_kernel(server: Server) -> LiveKernel:
    kernel_id = server.start_kernel()
    return LiveKernel(server, kernel_id, Client(server, kernel_id))


def close_kernel(kernel: LiveKernel) -> None:
    kernel.client.close()
    if kernel.server.proc.poll() is None:
        kernel.server.api("DELETE", f"api/kernels/{kernel.id}")


@pytest.fixture
def kernel(server: Server) -> Iterator[LiveKernel]:
    """A fresh kernel on the shared server with one connected client."""
    live = open_kernel(server)
    yield live
    close_kernel(live)


def probe_for(*servers: Server, **kwargs: Any) -> JupyterProbe:
    return JupyterProbe([s.runtime_dir for s in servers], **kwargs)


def find_kernel(probe: JupyterProbe, kernel_id: str) -> Kernel:
    kernels, _ = probe.read()
    matches = [k for k in kernels if k.id == kernel_id]
    assert len(matches) == 1, kernels
    return matches[0]


def kernel_state(probe: JupyterProbe, kernel_id: str, state: str) -> Kernel:
    return until(
        lambda: find_kernel(probe, kernel_id),
        lambda k: k.execution_state == state,
        STATE_TIMEOUT,
        f"kernel {state}",
    )


# --- timestamps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:34:56.789012Z", datetime(2024, 5, 1, 12, 34, 56, 789012, UTC)),
        ("2024-05-01T12:34:56Z", datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC)),  # 0 µs: no fraction
        ("2024-05-01T12:34:56", datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC)),  # naive is UTC
        ("2024-05-01T12:34:56.5z", datetime(2024, 5, 1, 12, 34, 56, 500000, UTC)),
        ("2024-05-01T12:34:56.123456789Z", datetime(2024, 5, 1, 12, 34, 56, 123456, UTC)),
        ("2024-05-01T14:34:56.25+02:00", datetime(2024, 5, 1, 12, 34, 56, 250000, UTC)),
        ("2024-05-01T07:34:56-0500", datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC)),
        ("2024-05-01 12:34:56.789012+00:00", datetime(2024, 5, 1, 12, 34, 56, 789012, UTC)),
        (" 2024-05-01T12:34Z ", datetime(2024, 5, 1, 12, 34, tzinfo=UTC)),
    ],
)
def test_parse_timestamp(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.tzinfo == UTC


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2024-05-01", "2024-13-01T00:00:00Z", "2024-05-01T12:34:56Zjunk"]
)
def test_parse_timestamp_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


# --- discovery ------------------------------------------------------------------------------


def write_runtime_file(
    directory: Path, url: str, *, token: str = "", pid: int | None = None, name: str = ""
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pid = os.getpid() if pid is None else pid
    path = directory / (name or f"jpserver-{pid}.json")
    path.write_text(json.dumps({"url": url, "token": token, "pid": pid, "base_url": "/"}))
    return path


def test_default_runtime_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    dirs = default_runtime_dirs()
    assert dirs[0] == tmp_path
    assert Path("/root/.local/share/jupyter/runtime") in dirs
    assert len(dirs) == len(set(dirs))


def test_discover_finds_the_server(server: Server, tmp_path: Path) -> None:
    # The same server listed in two dirs, one of them twice, counts once.
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / f"jpserver-{server.pid}.json").write_text(json.dumps(server.info))
    found = discover([server.runtime_dir, server.runtime_dir, copy, tmp_path / "missing"])
    assert found == [
        ServerInfo(
            url=server.url,
            token=server.token,
            pid=server.pid,
            path=server.runtime_dir / f"jpserver-{server.pid}.json",
        )
    ]


def test_garbled_and_stale_runtime_files_are_skipped(server: Server, tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    (runtime / "jpserver-1.json").write_text('{"url": "http://127.0.0.1:1/", "tok')  # half written
    (runtime / "jpserver-2.json").write_text("[1, 2]")
    (runtime / "jpserver-3.json").write_bytes(b"\xff\xfe\x00")
    (runtime / "jpserver-4.json").write_text(json.dumps({"token": "x"}))  # no url
    (runtime / "jpserver-5.json").write_text(json.dumps({"url": 5}))
    exited = subprocess.Popen(["true"])
    exited.wait()
    write_runtime_file(runtime, "http://127.0.0.1:9/", pid=exited.pid)  # crashed: file left over
    good = runtime / f"jpserver-{server.pid}.json"
    good.write_text(json.dumps(server.info))

    with capture_logs() as logs:
        found = discover([runtime])
        kernels, terminals = JupyterProbe([runtime]).read()  # does not raise

    assert [s.path for s in found] == [good]
    skipped = [e["path"] for e in logs if e["event"] == "Jupyter runtime file skipped"]
    # Logged on each pass (discover, then read): a file may be fixed in between.
    assert sorted({Path(p).name for p in skipped}) == [f"jpserver-{i}.json" for i in range(1, 6)]
    assert all(k.server == server.url for k in kernels)
    assert all(t.server == server.url for t in terminals)


def test_no_servers_is_empty_not_unknown(tmp_path: Path) -> None:
    assert JupyterProbe([tmp_path, tmp_path / "missing"]).read() == ((), ())


# --- kernels and terminals of a real server -----------------------------------------------


def test_running_cell_is_busy(server: Server, kernel: LiveKernel, tmp_path: Path) -> None:
    probe = probe_for(server)
    started = now()
    # A silent cell that leaves a mark after each stretch of silence, so the test waits
    # on those marks rather than on a clock of its own.
    quiet, quieter = tmp_path / "quiet", tmp_path / "quieter"
    kernel.client.execute(
        "import pathlib, time\n"
        f"time.sleep(0.3); pathlib.Path({str(quiet)!r}).touch()\n"
        f"time.sleep(0.5); pathlib.Path({str(quieter)!r}).touch()\n"
        "time.sleep(30)"
    )
    busy = kernel_state(probe, kernel.id, "busy")
    assert busy.server == server.url
    assert busy.last_activity is not None
    assert started <= busy.last_activity <= now()
    # last_activity stays where the cell started (after the busy status and
    # execute_input, which may land just after the read above) while it runs.
    until(quiet.exists, bool, START_TIMEOUT, "the cell's first mark")
    first = find_kernel(probe, kernel.id)
    until(quieter.exists, bool, START_TIMEOUT, "the cell's second mark")
    second = find_kernel(probe, kernel.id)
    assert first.execution_state == second.execution_state == "busy"
    assert first.last_activity == second.last_activity
    server.api("POST", f"api/kernels/{kernel.id}/interrupt")
    kernel_state(probe, kernel.id, "idle")


def test_finished_cell_is_idle_with_recent_activity(server: Server, kernel: LiveKernel) -> None:
    probe = probe_for(server)
    started = now()
    kernel.client.wait_idle(kernel.client.execute("x = sum(range(1000))"))
    idle = until(
        lambda: find_kernel(probe, kernel.id),
        lambda k: (
            k.execution_state == "idle"
            and k.last_activity is not None
            and k.last_activity >= started
        ),
        STATE_TIMEOUT,
        "the finished cell to be recorded",
    )
    assert idle.last_activity is not None
    assert idle.last_activity.tzinfo == UTC
    assert started <= idle.last_activity <= now()


def test_connected_client_is_counted(server: Server) -> None:
    probe = probe_for(server)
    live = open_kernel(server)
    try:
        connected = kernel_state(probe, live.id, "idle")
        assert connected.connections == 1
    finally:
        live.client.close()
    until(
        lambda: find_kernel(probe, live.id),
        lambda k: k.connections == 0,
        STATE_TIMEOUT,
        "the closed websocket to be dropped",
    )
    server.api("DELETE", f"api/kernels/{live.id}")


def test_terminal(server: Server) -> None:
    probe = probe_for(server)
    before = now()
    name = str(server.api("POST", "api/terminals")["name"])
    try:
        _, terminals = probe.read()
        [term] = [t for t in terminals if t.name == name]
        assert term.server == server.url
        assert term.last_activity is not None
        assert before <= term.last_activity <= now()
    finally:
        server.api("DELETE", f"api/terminals/{name}")
    _, terminals = probe.read()
    assert name not in [t.name for t in terminals]


def test_two_servers(
    server: Server, kernel: LiveKernel, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = start_server(tmp_path_factory.mktemp("jupyter-b"))
    try:
        other_kernel = other.start_kernel()
        probe = probe_for(server, other)
        assert {s.url for s in probe.servers()} == {server.url, other.url}
        kernels, _ = probe.read()
        by_id = {k.id: k for k in kernels}
        assert by_id[kernel.id].server == server.url
        assert by_id[other_kernel].server == other.url
    finally:
        other.stop()


def test_server_killed_mid_poll(
    server: Server, fresh_server: Server, kernel: LiveKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    doomed = fresh_server
    doomed_kernel = doomed.start_kernel()
    probe = probe_for(doomed, server)
    found = probe.servers()
    assert {s.url for s in found} == {doomed.url, server.url}
    assert doomed_kernel in [k.id for k in probe.read()[0]]

    doomed.stop(signal.SIGKILL)  # no clean-up: its runtime file stays behind
    assert (doomed.runtime_dir / f"jpserver-{doomed.pid}.json").exists()

    # Discovered while alive, dead by the time it is asked: connection refused.
    with monkeypatch.context() as patch, capture_logs() as logs:
        patch.setattr(probe, "servers", lambda: found)
        kernels, _ = probe.read()
    ids = [k.id for k in kernels]
    assert doomed_kernel not in ids
    assert kernel.id in ids
    assert [e["server"] for e in logs if e["event"] == "Jupyter server gone"] == [doomed.url]

    # Next round the leftover file names a dead pid: not even asked.
    assert [s.url for s in probe.servers()] == [server.url]
    assert kernel.id in [k.id for k in probe.read()[0]]


def test_wrong_token_is_unknown_after_trying_the_others(server: Server, tmp_path: Path) -> None:
    # Same server under another name (so it is not deduplicated), with a bad token.
    port = server.info["port"]
    bad_url = f"http://localhost:{port}/"
    write_runtime_file(tmp_path / "bad", bad_url, token="wrong", pid=server.pid)
    asked: list[str] = []

    class Recording(requests.Session):
        def request(self, method: str | bytes, url: str | bytes, *a: Any, **kw: Any) -> Any:
            asked.append(str(url))
            return super().request(method, url, *a, **kw)

    probe = JupyterProbe([tmp_path / "bad", server.runtime_dir], session=Recording())
    with pytest.raises(ProbeError, match=f"{bad_url}.*HTTP 403") as info:
        probe.read()
    assert server.url not in str(info.value)
    assert f"{server.url}api/kernels" in asked
    assert f"{server.url}api/terminals" in asked


def test_polling_does_not_count_as_activity(fresh_server: Server) -> None:
    """The point of ``no_track_activity=1``: the agent must not keep the server awake."""
    srv = fresh_server
    live = open_kernel(srv)
    probe = probe_for(srv)
    started = now()
    live.client.wait_idle(live.client.execute("y = 1"))
    # The server hears IOPub on its own socket, possibly after the client did.
    settled = until(
        lambda: find_kernel(probe, live.id),
        lambda k: (
            k.execution_state == "idle"
            and k.last_activity is not None
            and k.last_activity >= started
        ),
        STATE_TIMEOUT,
        "the cell to be recorded",
    )
    status_before = srv.status()["last_activity"]
    # Each read is a request that would move the server's clock if it were tracked:
    # that clock is now past the one recorded, so a tracked request would show.
    until(now, lambda t: t > parse_timestamp(status_before), STATE_TIMEOUT, "the clock")

    for _ in range(5):
        kernels, _ = probe.read()
        [k] = [k for k in kernels if k.id == live.id]
        assert k.last_activity == settled.last_activity
        assert k.execution_state == "idle"
    assert srv.status()["last_activity"] == status_before

    # Control: the same request without the flag does move the server's clock.
    srv.api("GET", "api/kernels", track=True)
    assert parse_timestamp(srv.status()["last_activity"]) > parse_timestamp(status_before)
    assert find_kernel(probe, live.id).last_activity == settled.last_activity
    close_kernel(live)


# --- servers that answer badly (a stand-in HTTP server) ---------------------------------------


Route = tuple[int, bytes]


class Fake:
    """An HTTP server answering fixed bodies per path, to play misbehaving Jupyters."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code, body = routes.get(self.path.split("?", 1)[0], (404, b"not found"))
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[Fake, Path]]:
    stand_in = Fake()
    runtime = tmp_path / "fake"
    write_runtime_file(runtime, stand_in.url, token="t")
    yield stand_in, runtime
    stand_in.close()


def test_old_server_terminals_without_last_activity(fake: tuple[Fake, Path]) -> None:
    stand_in, runtime = fake
    stand_in.routes["/api/kernels"] = (
        200,
        json.dumps(
            [{"id": "k", "execution_state": "idle", "last_activity": "2024-05-01T12:00:00Z"}]
        ).encode(),
    )
    stand_in.routes["/api/terminals"] = (200, b'[{"name": "1"}]')
    kernels, terminals = JupyterProbe([runtime]).read()
    assert kernels == (
        Kernel("k", "idle", datetime(2024, 5, 1, 12, tzinfo=UTC), 0, server=stand_in.url),
    )
    assert terminals == (Terminal("1", None, server=stand_in.url),)


def test_terminals_switched_off_is_none(fake: tuple[Fake, Path]) -> None:
    stand_in, runtime = fake
    stand_in.routes["/api/kernels"] = (200, b"[]")  # /api/terminals: 404
    assert JupyterProbe([runtime]).read() == ((), ())


@pytest.mark.parametrize(
    ("kernels", "message"),
    [
        ((500, b"oops"), "HTTP 500"),
        ((200, b"<html>login</html>"), "not JSON"),
        ((200, b'{"kernels": []}'), "expected a list"),
        ((200, b'[{"execution_state": "idle"}]'), "id missing"),
        ((200, b'[{"id": "k", "last_activity": "last tuesday"}]'), "not a timestamp"),
        ((302, b""), "HTTP 302"),
    ],
)
def test_bad_answers_are_unknown(fake: tuple[Fake, Path], kernels: Route, message: str) -> None:
    stand_in, runtime = fake
    stand_in.routes["/api/kernels"] = kernels
    stand_in.routes["/api/terminals"] = (200, b"[]")
    with pytest.raises(ProbeError, match=message) as info:
        JupyterProbe([runtime]).read()
    assert stand_in.url in str(info.value)


def test_refused_connection_is_gone(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    write_runtime_file(tmp_path, f"http://127.0.0.1:{port}/")  # pid alive: ours
    assert JupyterProbe([tmp_path]).read() == ((), ())


def test_hanging_server_is_unknown(tmp_path: Path) -> None:
    with socket.socket() as sock:  # accepts connections (backlog) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        write_runtime_file(tmp_path, url)
        started = time.monotonic()
        with pytest.raises(ProbeError, match=r"no answer within 0\.3 s"):
            JupyterProbe([tmp_path], timeout=0.3).read()
        assert time.monotonic() - started < 5


def test_unix_socket_server_is_unknown(tmp_path: Path) -> None:
    """Alive but out of reach of plain HTTP: its kernels could be busy."""
    write_runtime_file(tmp_path, "http+unix://%2Ftmp%2Fjupyter.sock/")
    with pytest.raises(ProbeError, match="http\\+unix"):
        JupyterProbe([tmp_path]).read()


def test_unresolvable_name_is_unknown_not_gone(tmp_path: Path) -> None:
    """Only a refused connection (or a dead pid) proves a server gone."""
    write_runtime_file(tmp_path, "http://no-such-host.invalid:1/")  # pid alive: ours
    with pytest.raises(ProbeError, match="no-such-host"):
        JupyterProbe([tmp_path], timeout=1.0).read()


# --- the agent end to end: a busy kernel on a real server, a heartbeat in moto ----------


@pytest.mark.usefixtures("aws")
def test_agent_once_reports_a_busy_kernel_and_publishes_its_heartbeat(
    server: Server,
    kernel: LiveKernel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.helpers import launch, tags_of
    from watchdog.cli import main
    from watchdog.core import heartbeat as hb

    iid = launch("us-east-1")[0]
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\njupyter_runtime_dirs = ["{server.runtime_dir}"]\n')
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    kernel.client.execute("import time; time.sleep(30)")
    kernel_state(probe_for(server), kernel.id, "busy")

    assert main(["agent", "--once", "--json", "--instance-id", iid, "--config", str(config)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["active"] is True and report["state"] == "active"
    assert f"kernel:{kernel.id[:8]}" in report["reasons"]
    beat = hb.decode(tags_of("us-east-1", iid)["idle-watchdog:heartbeat"])
    assert beat.active is True and f"kernel:{kernel.id[:8]}" in beat.reasons
    server.api("POST", f"api/kernels/{kernel.id}/interrupt")
