"""``python -m watchdog``: the same command line as ``idle-watchdog``."""

import sys

from watchdog.cli import main

sys.exit(main())
