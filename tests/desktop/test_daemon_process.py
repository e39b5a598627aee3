"""``idle-watchdog run`` as a real process against a moto server: SIGHUP, the pass lock,
two passes at once, a read-only history, and a daemon killed with SIGKILL mid-way."""

from __future__ import annotations

import os
import shutil
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.dbus_session import (  # noqa: F401 - fixtures, used by name
    dbus_session_fixture,
    run_fake_notifications,
    session_bus_fixture,
)
from tests.desktop.processes import (
    command,
    query,
    read_only,
    run_once,
    until,
    watchdog,
    write_config,
)
from tests.helpers import MANAGED, beat, launch, state
from watchdog.aws.fake import set_launch_time
from watchdog.core.timeutil import utcnow
from watchdog.desktop.lock import pass_lock

pytestmark = pytest.mark.usefixtures("aws")

REGION = "us-east-1"
EXIT_BUSY = 75


def passes(database: Path) -> list[tuple[int]]:
    return query(database, "SELECT dry_run FROM passes ORDER BY rowid")


def idle_for_an_hour(count: int) -> list[str]:
    """Managed instances started 2 h ago whose agents say idle for an hour: due now."""
    ids = launch(REGION, tags=MANAGED, count=count)
    now = utcnow()
    for iid in ids:
        set_launch_time(REGION, iid, now - timedelta(hours=2))
        beat(REGION, iid, now, active=False, last_active=now - timedelta(hours=1))
    return ids


def test_sighup_reloads_a_valid_config_and_keeps_the_old_one_when_invalid(
    tmp_path: Path,
) -> None:
    database = tmp_path / "h.sqlite3"
    sections: dict[str, dict[str, Any]] = {
        "aws": {"regions": [REGION]},
        "scheduler": {"poll_seconds": 3600},
        "notify": {"backend": "log"},
    }
    config = write_config(tmp_path / "c.toml", database=database, **sections)
    with watchdog(command(config, "run")) as daemon:
        until(lambda: passes(database), "the first pass")

        config.write_text('[idle]\nminutes = "soon"\n', encoding="utf-8")
        seen = len(daemon.events)
        daemon.proc.send_signal(signal.SIGHUP)
        refused = daemon.wait_for_event("config not reloaded; keeping the running one", after=seen)
        assert "minutes" in refused["error"] and str(config) in refused["error"]
        told = daemon.wait_for_event("notification", after=seen, key="config-invalid")
        assert "not loaded" in told["body"]
        assert daemon.proc.poll() is None, "SIGHUP must not end the daemon"

        sections["scheduler"] = {"poll_seconds": 10, "dry_run": True}
        write_config(config, database=database, **sections)
        seen = len(daemon.events)
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_event("config reloaded", after=seen, poll_seconds=10, dry_run=True)
        # The next pass comes on the new schedule (not in an hour), with the new settings.
        until(lambda: len(passes(database)) >= 2, "the next pass")
        assert passes(database)[1] == (1,)
    assert passes(database)[0] == (0,)


def test_run_once_says_another_pass_is_running_and_exits_75(tmp_path: Path) -> None:
    database = tmp_path / "h.sqlite3"
    config = write_config(
        tmp_path / "c.toml",
        database=database,
        aws={"regions": [REGION]},
        notify={"backend": "log"},
    )
    with pass_lock(str(database), wait=False):  # a daemon's pass in progress
        done = run_once(config)
    assert done.returncode == EXIT_BUSY
    assert "another pass over this history is running" in done.stderr
    assert f"pid {os.getpid()}" in done.stderr
    assert "Traceback" not in done.stderr


def test_two_run_once_started_together_stop_each_instance_once(tmp_path: Path) -> None:
    ids = idle_for_an_hour(30)
    database = tmp_path / "h.sqlite3"
    config = write_config(
        tmp_path / "c.toml",
        database=database,
        aws={"regions": [REGION]},
        idle={"minutes": 30, "warn_minutes": 0},
        notify={"backend": "log"},
    )
    with (
        watchdog(command(config, "run", "--once")) as first,
        watchdog(command(config, "run", "--once")) as second,
    ):
        codes = sorted((first.finish(), second.finish()))
    assert codes in ([0, 0], [0, EXIT_BUSY]), (first.log, second.log)
    if EXIT_BUSY in codes:
        busy = first if first.proc.returncode == EXIT_BUSY else second
        assert "another pass over this history is running" in busy.log
    stops = query(database, "SELECT target, ok FROM actions WHERE kind='stop'")
    assert sorted(stops) == sorted((iid, 1) for iid in ids)  # one StopInstances each
    told = query(database, "SELECT key, sent_at IS NOT NULL FROM outbox")
    assert sorted(told) == sorted((f"stopped:{iid}", 1) for iid in ids)  # one message each
    assert all(state(REGION, iid) in ("stopping", "stopped") for iid in ids)


def test_run_once_on_a_read_only_history_says_so_without_a_traceback(tmp_path: Path) -> None:
    database = tmp_path / "h.sqlite3"
    config = write_config(
        tmp_path / "c.toml",
        database=database,
        aws={"regions": [REGION]},
        notify={"backend": "log"},
    )
    first = run_once(config)
    assert first.returncode == 0, first.stderr
    with read_only(database):
        done = run_once(config)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("idle-watchdog:")]
    assert str(database) in line and "cannot be written" in line and "chmod" in line


def test_a_warning_recorded_but_never_shown_before_sigkill_is_shown_first_after_restart(
    tmp_path: Path, session_bus: str
) -> None:
    """The daemon dies between recording a warning and showing it. After the restart the
    warning is shown first, and the stop waits warn_minutes from that moment."""
    iid = launch(REGION, tags={**MANAGED, "Name": "nb"})[0]
    now = utcnow()
    set_launch_time(REGION, iid, now - timedelta(minutes=10))
    beat(REGION, iid, now, active=True)
    database = tmp_path / "h.sqlite3"
    config = write_config(
        tmp_path / "c.toml",
        database=database,
        aws={"regions": [REGION]},
        idle={"minutes": 2, "warn_minutes": 1},
        scheduler={"poll_seconds": 10},
        notify={"backend": "desktop"},
    )
    outbox = "SELECT key, sent_at, attempts FROM outbox"

    with watchdog(command(config, "run")) as crashed:
        with run_fake_notifications(session_bus):
            crashed.wait_for_event("scheduler started", notifications="desktop")
            until(lambda: passes(database), "the first pass (the machine is busy)")
        # The notification server is gone: the next warning is recorded, not shown.
        now = utcnow()  # the person walks away
        beat(REGION, iid, now, active=False, last_active=now - timedelta(seconds=90))
        until(
            lambda: [r for r in query(database, outbox) if r[0] == f"warn:{iid}" and r[2] >= 1],
            "a warning recorded and tried",
        )
        crashed.proc.send_signal(signal.SIGKILL)
        crashed.finish()
    ((key, sent_at, _),) = query(database, outbox)
    assert (key, sent_at) == (f"warn:{iid}", None)

    with run_fake_notifications(session_bus) as server, watchdog(command(config, "run")) as again:
        (shown,) = until(server.calls, "the warning shown after the restart")
        assert shown["summary"].startswith("nb stops in")
        # The server has it before the daemon marks it sent: wait for the mark.
        ((_, sent, _),) = until(
            lambda: [r for r in query(database, outbox) if r[1] is not None],
            "the warning marked delivered",
        )
        delivered = datetime.fromisoformat(sent)
        # The agent confirms idleness after the warning (heartbeats count whole seconds).
        now = max(utcnow(), delivered.replace(microsecond=0) + timedelta(seconds=1))
        beat(REGION, iid, now, active=False, last_active=now - timedelta(seconds=120))
        until(
            lambda: state(REGION, iid) in ("stopping", "stopped"),
            "the stop, a minute after the warning",
            timeout=180,
        )
        stopped = server.wait_for_calls(2, timeout=60)
        assert again.proc.poll() is None
    ((at,),) = query(database, "SELECT at FROM actions WHERE kind='stop' AND ok=1")
    assert datetime.fromisoformat(at) >= delivered.replace(microsecond=0) + timedelta(minutes=1)
    assert [c["summary"].split(" ")[0] for c in stopped] == ["nb", "Stopped"]
    assert delivered.tzinfo == timezone.utc


def test_a_history_directory_deleted_under_the_daemon_process_is_recreated(
    tmp_path: Path,
) -> None:
    """A real daemon: its history directory removed between passes; the next pass
    writes into a new file at the same path, not into the deleted one."""
    database = tmp_path / "state" / "h.sqlite3"
    database.parent.mkdir()
    config = write_config(
        tmp_path / "c.toml",
        database=database,
        aws={"regions": [REGION]},
        scheduler={"poll_seconds": 10},
        notify={"backend": "log"},
    )
    with watchdog(command(config, "run")) as daemon:
        until(lambda: passes(database), "the first pass")
        seen = len(daemon.events)
        shutil.rmtree(database.parent)
        daemon.wait_for_event(
            "history file deleted or replaced since it was opened; reopening", after=seen
        )
        until(lambda: passes(database), "a pass recorded in the new file")
        # The old file is gone with its directory: any pass here was written after.
        assert daemon.proc.poll() is None
