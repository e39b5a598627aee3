"""The daemon when its history goes wrong under it: read-only, deleted."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable, Coroutine, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
from structlog.testing import capture_logs

from tests.desktop.processes import query, read_only, until
from tests.helpers import config
from watchdog.aws.ec2 import Boto3Ec2
from watchdog.desktop.daemon import Daemon
from watchdog.desktop.lock import pass_lock
from watchdog.desktop.notify import LogBackend
from watchdog.desktop.store import Store

pytestmark = pytest.mark.usefixtures("aws")
T = TypeVar("T")
CFG = config(
    aws={"regions": ("us-east-1",)},
    scheduler={"poll_seconds": 3600},  # the first pass at start; the test runs the others
    notify={"backend": "log"},
)
UNWRITABLE = "history cannot be written; nothing is stopped until it can"
WRITABLE = "history writable again; passes resume"


def in_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)


def serve(daemon: Daemon, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        serving = asyncio.create_task(daemon.serve(stop))
        try:
            await scenario()
        finally:
            stop.set()
            await serving

    asyncio.run(main())


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


def test_a_read_only_history_is_told_once_and_its_recovery_once(tmp_path: Path) -> None:
    database = tmp_path / "h.sqlite3"
    Store(database).close()
    with capture_logs() as logs, contextlib.ExitStack() as unwritable:
        unwritable.enter_context(read_only(database))
        daemon = Daemon(Boto3Ec2(), Store(database), CFG, notifier=LogBackend())

        async def scenario() -> None:
            await in_thread(until, lambda: events(logs, UNWRITABLE), "the first pass")
            await in_thread(daemon.tick)  # still read-only: nothing new said
            await in_thread(daemon.tick)
            assert len(events(logs, UNWRITABLE)) == 1
            unwritable.close()  # the person fixed it
            await in_thread(daemon.tick)
            await in_thread(daemon.tick)

        serve(daemon, scenario)
    (told,) = [e for e in events(logs, "notification") if e["key"] == "history-unwritable"]
    assert str(database) in told["body"] and "chmod" in told["body"]
    assert told["urgent"] is True
    assert len(events(logs, UNWRITABLE)) == 1
    assert len(events(logs, WRITABLE)) == 1
    assert [e["key"] for e in events(logs, "notification")] == [
        "history-unwritable",
        "history-writable",
    ]
    assert len(query(database, "SELECT * FROM passes")) == 2  # the passes after it recovered
    assert not events(logs, "pass failed")


def test_a_history_deleted_under_the_daemon_is_recreated_before_the_next_pass(
    tmp_path: Path,
) -> None:
    database = tmp_path / "state" / "h.sqlite3"
    daemon = Daemon(Boto3Ec2(), Store(database), CFG, notifier=LogBackend())

    with capture_logs() as logs:

        async def scenario() -> None:
            await in_thread(until, lambda: query(database, "SELECT * FROM passes"), "a pass")
            shutil.rmtree(tmp_path / "state")
            await in_thread(daemon.tick)

        serve(daemon, scenario)
    (reopened,) = events(logs, "history file deleted or replaced since it was opened; reopening")
    assert reopened["path"] == str(database)
    assert len(query(database, "SELECT * FROM passes")) == 1  # written to the new file


def test_the_daemon_waits_for_another_process_pass_instead_of_skipping(tmp_path: Path) -> None:
    database = tmp_path / "h.sqlite3"
    daemon = Daemon(Boto3Ec2(), Store(database), CFG, notifier=LogBackend())
    lock_file = Path(f"{database}.lock")

    def waiting() -> bool:
        """The kernel lists a blocked flock on the lock file (``->`` in /proc/locks)."""
        inode = f":{lock_file.stat().st_ino} "
        return any("->" in line and inode in line for line in Path("/proc/locks").open())

    with capture_logs() as logs:

        async def scenario() -> None:
            await in_thread(until, lambda: query(database, "SELECT * FROM passes"), "a pass")
            with pass_lock(str(database), wait=False):  # `run --once` in another process
                ticking = in_thread(daemon.tick)
                await in_thread(until, waiting, "the daemon waiting for the lock")
                assert not ticking.done()
            await ticking

        serve(daemon, scenario)
    assert len(query(database, "SELECT * FROM passes")) == 2
    assert not events(logs, "pass failed")


def test_the_unit_reloads_the_config_with_sighup() -> None:
    unit = Path(__file__).parents[2] / "watchdog" / "deploy" / "idle-watchdog.service"
    assert "\nExecReload=/bin/kill -HUP $MAINPID\n" in unit.read_text(encoding="utf-8")
