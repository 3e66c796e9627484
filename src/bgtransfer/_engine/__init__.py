"""The engine: runs tasks under the supervisor and fans their events out.

Separate from the :class:`~bgtransfer.Session` front so that the daemon can run
the same engine behind a Unix socket.
"""
