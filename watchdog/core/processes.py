"""Which processes are the machine's own rather than a person's work.

Pure: names, command lines and pids in, a yes or no out. The agent's probe
marks each process with it, and the reducer applies the config's extra
``ignore`` patterns to samples recorded without them.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from collections.abc import Collection, Sequence

# Built-in exclusions, as fnmatch patterns (case-sensitive). Matched against a
# process's name, the basename of its argv[0] and, for interpreters, of the
# script it runs; a pattern containing "/" is matched against full paths instead.
SYSTEM_PROCESSES: tuple[str, ...] = (
    # init, core services, logins
    "systemd*", "(sd-pam)", "init", "tini", "dumb-init", "docker-init",
    "journald", "udevd", "dbus-daemon", "dbus-broker*", "polkitd",
    "rsyslogd", "syslog-ng", "cron", "crond", "atd", "agetty", "acpid", "auditd",
    "sshd", "sshd-*",  # the daemon, "sshd: user@pts/0", OpenSSH 9.8+ sshd-session
    # package updates
    "apt", "apt-get", "apt-check", "apt.systemd.daily", "aptd", "/usr/lib/apt/*",
    "dpkg", "dpkg-*", "unattended-upgr*", "packagekitd", "snapd", "yum", "dnf",
    "dnf-automatic",
    # cloud agents
    "amazon-ssm-agent", "ssm-agent-worker", "ssm-session-worker",
    "amazon-cloudwatch-agent", "cloud-init", "google_*", "google-guest-agent",
    "google-osconfig-agent", "waagent",
    # containers and drivers: the daemons, not the containers they run
    "containerd", "containerd-shim*", "dockerd", "docker-proxy",
    "nvidia-persistenced", "nv-fabricmanager", "nv-hostengine",
    # housekeeping
    "chronyd", "ntpd", "irqbalance", "multipathd", "fwupd", "udisksd",
    "ModemManager", "NetworkManager", "networkd-dispatcher", "accounts-daemon",
    "thermald", "rngd",
    # a Jupyter server idling (its kernels, ipykernel_launcher, are user work)
    "jupyter-lab", "jupyter-notebook", "jupyter-server", "jupyter-labhub",
    "jupyterhub", "jupyterhub-singleuser", "configurable-http-proxy",
    # the agent itself
    "idle-watchdog",
)  # fmt: skip

# Python modules run with ``-m`` that are system processes (full dotted name).
SYSTEM_MODULES: tuple[str, ...] = (
    "watchdog",
    "watchdog.__main__",
    "jupyter_server",
    "jupyter_server.*",
    "jupyterlab",
    "jupyterlab.*",
    "notebook",
    "notebook.*",
    "nbclassic",
    "jupyterhub",
    "jupyterhub.*",
    "cloudinit.*",
)

_PYTHON = re.compile(r"(?:python|pypy)[\d.]*[dmu]?")
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "perl"})


# --- which processes are the system's ----------------------------------------


@functools.lru_cache(maxsize=64)
def _compile(patterns: tuple[str, ...]) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    """One regex for the name patterns and one for the path patterns: a read checks
    hundreds of processes against dozens of patterns."""

    def join(ps: list[str]) -> re.Pattern[str] | None:
        return re.compile("|".join(fnmatch.translate(p) for p in ps)) if ps else None

    return (
        join([p for p in patterns if "/" not in p]),
        join([p for p in patterns if "/" in p]),
    )


def _python_target(args: Sequence[str]) -> tuple[str | None, str | None]:
    """(script, module) that ``python args...`` runs, parsing options as CPython does."""
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            return (args[i] if i < len(args) else None), None
        if arg == "-" or not arg.startswith("-"):
            return (None if arg == "-" else arg), None
        if arg.startswith("--"):
            if arg == "--check-hash-based-pycs":
                i += 1
            continue
        for j, flag in enumerate(arg[1:], start=1):  # combined flags: -u, -OO, -um mod, -Wignore
            rest = arg[j + 1 :]
            if flag == "c":
                return None, None
            if flag == "m":
                return None, (rest or (args[i] if i < len(args) else None))
            if flag in "WX":
                i += 0 if rest else 1
                break
    return None, None


def _shell_script(args: Sequence[str]) -> str | None:
    """The script ``sh args...`` runs; None for ``sh -c``."""
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg[:1] in ("-", "+") and len(arg) > 1:
            if not arg.startswith("--") and "c" in arg[1:]:
                return None
            if arg[1:] in ("o", "O"):
                i += 1
            continue
        return arg
    return None


def _identities(
    name: str | None, cmdline: Sequence[str] | None
) -> tuple[set[str], set[str], str | None]:
    """(names, paths, module) a process can be recognised by."""
    names: set[str] = set()
    paths: set[str] = set()
    if name:
        names.add(name)
    module = None
    if cmdline:
        # "sshd: alice@pts/0" comes as one string when the title has no NULs
        argv0 = cmdline[0].split()[0] if cmdline[0].strip() else cmdline[0]
        paths.add(argv0)
        names.add(os.path.basename(argv0))  # noqa: PTH119 - a string from argv, not a file
        exe = os.path.basename(argv0)  # noqa: PTH119
        script: str | None = None
        if _PYTHON.fullmatch(exe):
            script, module = _python_target(cmdline[1:])
        elif exe in _SHELLS:
            script = _shell_script(cmdline[1:])
        if script:
            paths.add(script)
            base = os.path.basename(script)  # noqa: PTH119
            names.update({base, base.removesuffix(".py")})
    names |= {n.rstrip(":") for n in names}
    names.discard("")
    return names, paths, module


def _matches(patterns: tuple[str, ...], names: set[str], paths: set[str]) -> bool:
    by_name, by_path = _compile(patterns)
    return (by_name is not None and any(by_name.match(n) for n in names)) or (
        by_path is not None and any(by_path.match(p) for p in paths)
    )


def is_system(
    name: str | None,
    cmdline: Sequence[str] | None,
    pid: int,
    own_pids: Collection[int],
    ignore: Sequence[str] = (),
    *,
    ppid: int | None = None,
) -> bool:
    """Whether a process is the machine's own rather than a person's work.

    Kernel threads (no command line, or children of kthreadd), ``own_pids`` (the
    agent and its children), and anything matching ``SYSTEM_PROCESSES``,
    ``SYSTEM_MODULES`` or the extra ``ignore`` patterns (config
    ``[agent] ignore_processes``; matched against names, paths and modules alike).
    ``cmdline=None`` means unreadable, and then only the name can match.
    """
    if pid in own_pids or pid == 2 or ppid == 2:
        return True
    if cmdline is not None and not cmdline:
        return True
    names, paths, module = _identities(name, cmdline)
    if _matches(SYSTEM_PROCESSES, names, paths):
        return True
    if module is not None and _matches(SYSTEM_MODULES, {module}, set()):
        return True
    extra = tuple(ignore)
    return bool(extra) and _matches(extra, names | ({module} if module else set()), paths)
