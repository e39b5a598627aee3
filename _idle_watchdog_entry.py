"""Console-script entry point, kept outside the ``watchdog`` package on purpose.

PyPI's filesystem-events library is also imported as ``watchdog``. Installed
into the same environment it overwrites our package files, and a plain
``watchdog.cli:main`` entry point would then die with a puzzling ImportError.
This shim checks first and says what is wrong.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        import watchdog
    except ImportError:  # pragma: no cover - broken install
        sys.exit("idle-watchdog: the 'watchdog' package is missing; reinstall idle-watchdog")
    if not getattr(watchdog, "IDLE_WATCHDOG", False):
        sys.exit(
            "idle-watchdog: 'import watchdog' resolves to another library "
            f"({getattr(watchdog, '__file__', '?')}), probably PyPI's filesystem 'watchdog'. "
            "They share an import name and cannot live in one environment: install "
            "idle-watchdog into its own virtual environment (pipx or python -m venv)."
        )
    from watchdog.cli import main as cli_main

    sys.exit(cli_main())


if __name__ == "__main__":  # pragma: no cover
    main()
