"""The desktop shell: the daemon, the SQLite history, desktop notifications,
the user service and the status table.
"""
