"""Which processes are the machine's own: command lines read the way their programs read them.

A process wrongly taken for the system's would let a machine stop under a person's
work; one wrongly taken for work keeps an idle machine up. The probe-level cases
(real process titles) are in tests/agent/test_system.py; these pin the parsing.
"""

from __future__ import annotations

import pytest

from watchdog.core.processes import is_system

SYSTEM = [
    # python's own options before the script or module
    ["python3", "--", "/usr/bin/cloud-init", "init"],
    ["python3", "--check-hash-based-pycs", "always", "-m", "jupyter_server"],
    ["python3", "-X", "dev", "/usr/bin/unattended-upgrade"],
    ["python3", "-W", "ignore", "/usr/bin/unattended-upgrade"],
    ["python3", "-Xdev", "-m", "watchdog"],
    ["python3", "-OO", "-m", "jupyterlab.labapp"],
    ["python3", "-bb", "-E", "/usr/lib/apt/apt-helper"],  # a path pattern
    ["python3.12", "-mjupyter_server"],
    ["pypy3", "/usr/bin/cloud-init"],
    ["/usr/bin/python3", "-I", "-s", "/usr/bin/networkd-dispatcher"],
    # shells and their options before the script
    ["/bin/bash", "-e", "/usr/lib/apt/apt.systemd.daily"],
    ["sh", "-o", "errexit", "/usr/lib/apt/apt.systemd.daily"],
    ["sh", "-o", "errexit", "-e", "/usr/lib/apt/apt.systemd.daily"],
    ["bash", "-O", "extglob", "/usr/lib/apt/apt.systemd.daily"],
    ["dash", "+x", "/usr/lib/apt/apt.systemd.daily"],
    ["bash", "--norc", "/usr/lib/apt/apt.systemd.daily"],
    # titles
    ["sshd: alice@pts/0"],
    ["sshd:", "alice@notty"],
]

USER = [
    ["python3", "-", "/usr/bin/cloud-init"],  # a script on stdin; the rest are its args
    ["python3", "-c", "import cloudinit; work()"],
    ["python3", "-c", "/usr/bin/cloud-init"],  # the argument of -c is code, not a script
    ["python3", "--", "-mwatchdog"],  # after "--", even "-m..." is a script's name
    ["python3", "-uc", "import jupyter_server"],
    ["python3", "-m"],
    ["python3", "--"],
    ["python3", "-W", "ignore", "train.py"],
    ["python3", "-X", "dev"],
    ["python3", "--check-hash-based-pycs", "always", "train.py"],
    ["python3", "jupyterlab"],  # a script named like a module is not the module
    ["bash", "-ec", "/usr/lib/apt/apt.systemd.daily"],  # -c: the argument is a command
    ["bash", "-c", "exec cloud-init"],
    ["bash", "-c", "/usr/lib/apt/apt.systemd.daily"],
    ["bash", "-o", "errexit"],
    ["bash", "--", "train.sh"],
    ["   "],
    ["notpython3", "/usr/bin/cloud-init"],  # not an interpreter: the script is an argument
    ["train", "-m", "watchdog"],
]


@pytest.mark.parametrize("cmdline", SYSTEM, ids=" ".join)
def test_system_command_lines(cmdline: list[str]) -> None:
    assert is_system(None, cmdline, 1000, (), ())


@pytest.mark.parametrize("cmdline", USER, ids=" ".join)
def test_user_command_lines(cmdline: list[str]) -> None:
    assert not is_system(None, cmdline, 1000, (), ())


def test_kernel_threads_own_pids_and_unreadable_command_lines() -> None:
    work = ["python3", "train.py"]
    assert is_system(None, work, 2, (), ())  # kthreadd
    assert is_system(None, work, 1000, (), (), ppid=2)  # its children
    assert not is_system(None, work, 1000, (), (), ppid=1)
    assert is_system(None, work, 1000, {1000}, ())  # the agent and its children
    assert is_system("kworker/0:1", [], 1000, (), ())  # no command line: a kernel thread
    assert is_system("sshd", None, 1000, (), ())  # unreadable: the name still tells
    assert not is_system("python3", None, 1000, (), ())
    assert not is_system(None, None, 1000, (), ())
    assert not is_system("", None, 1000, (), ())


@pytest.mark.parametrize(
    ("ignore", "cmdline"),
    [
        (("train",), ["python3", "-u", "train.py"]),  # the script, .py dropped
        (("nightly_sync",), ["python3", "-m", "nightly_sync"]),  # a module
        (("/opt/backup/*",), ["/opt/backup/run"]),  # argv[0]'s path
        (("/srv/*",), ["bash", "/srv/job.sh"]),  # the script's path
        (("exporter",), ["exporter:", "serving"]),  # a title
        (("exporter:*",), ["exporter:", "serving"]),  # a title as ps shows it
    ],
)
def test_ignore_patterns_match_names_paths_and_modules(
    ignore: tuple[str, ...], cmdline: list[str]
) -> None:
    assert not is_system(None, cmdline, 1000, (), ())
    assert is_system(None, cmdline, 1000, (), ignore)
    assert not is_system(None, cmdline, 1000, (), ("something-else", "/elsewhere/*"))


def test_a_module_is_matched_whole_not_by_prefix() -> None:
    assert not is_system(None, ["python3", "-m", "watchdog.watchmedo"], 1000, (), ())
    assert not is_system(None, ["python3", "-m", "jupyter_server_proxy"], 1000, (), ())
    assert is_system(None, ["python3", "-m", "jupyter_server.serverapp"], 1000, (), ())
