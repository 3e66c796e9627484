"""The sans-IO core: pure values, rules and state machines.

Nothing in this package imports asyncio, aiohttp or aiofiles, or touches the
network or the file system; every function is tested without an event loop.
The I/O shell (``bgtransfer._io``, ``bgtransfer._engine``) drives it.
"""
