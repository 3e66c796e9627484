"""The transfer daemon: a process that runs background sessions' tasks while apps come and go.

The server runs sessions with the same engine as in-process sessions; the
client is the second implementation of the task backend protocol
(``_engine/backend.py``). See docs/daemon.md and docs/design.md.
"""
