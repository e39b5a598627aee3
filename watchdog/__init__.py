"""idle-watchdog: stops paying for idle cloud GPUs without ever stopping real work.

The package is organised as a functional core (``config``, ``heartbeat``,
``policy``, ``billing``: pure functions of data and an explicit ``now``) and an
imperative shell (``aws``, ``store``, ``scheduler``, ``cli``, ``demo``).
"""

from __future__ import annotations

from importlib import metadata as _metadata

#: Marker that this is idle-watchdog's ``watchdog`` and not PyPI's filesystem library.
IDLE_WATCHDOG = True

try:
    __version__ = _metadata.version("idle-watchdog")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"


def _refuse_shared_environment() -> None:
    """Fail loudly if PyPI's ``watchdog`` is installed beside us (same import name)."""
    try:
        other = _metadata.distribution("watchdog")
    except _metadata.PackageNotFoundError:
        return
    raise ImportError(
        f"PyPI's 'watchdog' {other.version} is installed in this environment and shares "
        "the import name 'watchdog' with idle-watchdog; install idle-watchdog into its "
        "own virtual environment (pipx or python -m venv)."
    )


_refuse_shared_environment()
