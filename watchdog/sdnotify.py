"""The systemd notify protocol in a few lines (READY, WATCHDOG, STATUS).

Modelled on systemd's self-contained example (MIT-0). Without
``$NOTIFY_SOCKET`` every call is a no-op, so the daemon runs the same way
outside systemd.
"""

from __future__ import annotations

import os
import socket


def notify(*messages: str) -> bool:
    """Send ``messages`` to systemd; ``False`` when not under systemd or on error."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in ("/", "@"):
        return False
    target = "\0" + address[1:] if address[0] == "@" else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall("\n".join(messages).encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings systemd expects (half its timeout), or None."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
