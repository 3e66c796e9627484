"""The I/O shell: aiohttp requests, file writes and moves, the journal, error translation."""
