"""One pass of the scheduler, shell-agnostic: scan -> decide -> act -> record -> tell.

It works over two small interfaces, ``History`` and ``Notifier``; the
desktop shell (``watchdog.desktop``) provides SQLite and desktop bubbles.
"""

from watchdog.scheduler.history import History
from watchdog.scheduler.notifier import Button, Message, Notifier, OnAction
from watchdog.scheduler.passes import Done, PassReport, mark_stopped, run_pass, tell

__all__ = [
    "Button",
    "Done",
    "History",
    "Message",
    "Notifier",
    "OnAction",
    "PassReport",
    "mark_stopped",
    "run_pass",
    "tell",
]
