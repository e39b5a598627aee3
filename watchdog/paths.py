"""Where the desktop side keeps its config and state, by platform convention.

Linux follows the XDG base directories; macOS its Application Support folder.
The agent does not use these: systemd hands it ``$STATE_DIRECTORY`` and
``$CONFIGURATION_DIRECTORY``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "idle-watchdog"


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable, "")
    base = Path(value) if os.path.isabs(value) else Path.home() / fallback  # noqa: PTH117
    return base / APP


def config_dir() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP
    return _xdg("XDG_CONFIG_HOME", ".config")


def state_dir() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP
    return _xdg("XDG_STATE_HOME", ".local/state")
