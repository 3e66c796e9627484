"""The I/O shell: aiohttp requests, aiofiles writes, file moves, error translation."""
