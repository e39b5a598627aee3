"""One pass of the scheduler, shell-agnostic: scan -> decide -> act -> record -> tell.

It works over two small interfaces, ``History`` (with its outbox) and
``Notifier``; the desktop shell (``watchdog.desktop``) provides SQLite and
desktop bubbles, and delivers the outbox after each pass (``deliver``).
"""

from watchdog.scheduler.history import History, HistoryUnwritable
from watchdog.scheduler.notifier import Button, Message, Notifier, OnAction
from watchdog.scheduler.outbox import Delivery, deliver
from watchdog.scheduler.passes import Done, PassReport, mark_stopped, run_pass, tell

__all__ = [
    "Button",
    "Delivery",
    "Done",
    "History",
    "HistoryUnwritable",
    "Message",
    "Notifier",
    "OnAction",
    "PassReport",
    "deliver",
    "mark_stopped",
    "run_pass",
    "tell",
]
