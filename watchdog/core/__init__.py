"""The pure core: decisions and their data, functions of data and an explicit ``now``.

Imports nothing of the project outside ``watchdog.core`` and no I/O library;
the agent, the scheduler, the simulator and the demo all run these same functions.
"""
