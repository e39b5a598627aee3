"""ssh, scp and ~/.ssh/config: the argv and the config block, built from data.

Known hosts are keyed by the instance id, not its address, which changes at
every start; the config block is put first so a later ``Host *`` cannot
override it. Only ``update_ssh_config_file`` touches the disk.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from watchdog.launch.plan import JUPYTER_PORT, REMOTE_INSTALL_DIR

if TYPE_CHECKING:
    from watchdog.launch.steps import Launched


def ssh_options(key_path: Path | None, instance_id: str) -> list[str]:
    """Known-hosts entries keyed by the instance, not its address: the address changes at
    every start and AWS reuses addresses, so keying by IP would prompt or collide."""
    options = ["-o", f"HostKeyAlias={instance_id}", "-o", "StrictHostKeyChecking=accept-new"]
    if key_path is not None:
        options = ["-i", str(key_path), "-o", "IdentitiesOnly=yes", *options]
    return options


def ssh_argv(
    host: str,
    *,
    user: str,
    instance_id: str,
    key_path: Path | None,
    command: Sequence[str] = (),
) -> list[str]:
    return ["ssh", *ssh_options(key_path, instance_id), f"{user}@{host}", *command]


def tunnel_argv(
    host: str,
    *,
    user: str,
    instance_id: str,
    key_path: Path | None,
    local_port: int = JUPYTER_PORT,
    remote_port: int = JUPYTER_PORT,
) -> list[str]:
    forward = f"{local_port}:localhost:{remote_port}"
    return ["ssh", *ssh_options(key_path, instance_id), "-N", "-L", forward, f"{user}@{host}"]


def scp_argv(
    files: Sequence[Path],
    host: str,
    remote_dir: str,
    *,
    user: str,
    instance_id: str,
    key_path: Path | None,
) -> list[str]:
    return [
        "scp",
        *ssh_options(key_path, instance_id),
        *map(str, files),
        f"{user}@{host}:{remote_dir}/",
    ]


def install_commands(
    host: str,
    *,
    user: str,
    instance_id: str,
    key_path: Path | None,
    script: Path,
    unit: Path,
    source: str,
    idle_minutes: int,
) -> list[list[str]]:
    """The three steps of install-agent: make a directory, copy the files, run the script."""
    remote = REMOTE_INSTALL_DIR
    run = shlex.join(
        [
            "sudo",
            "bash",
            f"{remote}/{script.name}",
            "--source",
            source,
            "--idle-minutes",
            str(idle_minutes),
            "--unit",
            f"{remote}/{unit.name}",
            "--python",
            "/usr/bin/python3",  # not a conda python first on PATH (DLAMI)
        ]
    )
    mkdir = ["mkdir", "-p", remote]
    return [
        ssh_argv(host, user=user, instance_id=instance_id, key_path=key_path, command=mkdir),
        scp_argv(
            [script, unit], host, remote, user=user, instance_id=instance_id, key_path=key_path
        ),
        ssh_argv(host, user=user, instance_id=instance_id, key_path=key_path, command=[run]),
    ]


def _markers(name: str) -> tuple[str, str]:
    return f"# >>> idle-watchdog {name} >>>", f"# <<< idle-watchdog {name} <<<"


def ssh_config_block(name: str, host: str, *, user: str, key_path: Path, instance_id: str) -> str:
    begin, end = _markers(name)
    lines = [
        begin,
        f"# {instance_id}; `idle-watchdog start {name}` rewrites HostName when the address changes",
        f"Host {name}",
        f"    HostName {host}",
        f"    User {user}",
        f"    IdentityFile {key_path}",
        "    IdentitiesOnly yes",
        f"    HostKeyAlias {instance_id}",
        "    StrictHostKeyChecking accept-new",
        end,
    ]
    return "\n".join(lines) + "\n"


def update_ssh_config(text: str, name: str, block: str) -> str:
    """Replace this name's block, or put it first (ssh takes the first value it finds, so
    a ``Host *`` further down cannot override it)."""
    begin, end = _markers(name)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return block + ("\n" + text if text else "")


def ssh_config_entry(text: str, name: str) -> dict[str, str]:
    """The settings of this name's block (empty if there is none), e.g. to keep its
    User and IdentityFile when only the address changes."""
    begin, end = _markers(name)
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        return {}
    entry: dict[str, str] = {}
    for line in text[start:stop].splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and not parts[0].startswith("#"):
            entry[parts[0]] = parts[1]
    return entry


def connection_help(launched: Launched) -> str:
    """What to type next: ssh, the Jupyter tunnel and its URL."""
    host = launched.public_ip or launched.public_dns
    ssh = shlex.join(
        ssh_argv(
            host, user=launched.user, instance_id=launched.instance_id, key_path=launched.key_path
        )
    )
    tunnel = shlex.join(
        tunnel_argv(
            host, user=launched.user, instance_id=launched.instance_id, key_path=launched.key_path
        )
    )
    lines = [
        f"{launched.name} ({launched.instance_id}) is running in {launched.zone}: {host}",
        f"  ssh:      {ssh}",
        f"            (or: idle-watchdog ssh {launched.name})",
        f"  jupyter:  {tunnel}",
        f"            (or: idle-watchdog tunnel {launched.name}), then open "
        f"http://localhost:{JUPYTER_PORT}/",
        "  the agent installs itself during the first minutes (log: "
        "/var/log/cloud-init-output.log); the address changes at every start",
    ]
    if launched.spot and not launched.persistent:
        lines.append(
            "  note: a one-time spot instance cannot be stopped, only terminated; the "
            "watchdog will warn about it instead of stopping it (use --persistent to allow stop)"
        )
    return "\n".join(lines)


def update_ssh_config_file(path: Path, name: str, block: str) -> None:
    """Rewrite ~/.ssh/config with the block, atomically, keeping it private (0600)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    updated = update_ssh_config(text, name, block)
    tmp = path.with_name(f".{path.name}.idle-watchdog.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(updated)
    tmp.replace(path)
