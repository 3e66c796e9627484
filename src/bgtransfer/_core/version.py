"""The package's version, below every layer: the front door re-exports it as
``bgtransfer.__version__`` and the I/O shell names it in the User-Agent.

(A constant, not ``importlib.metadata.version()``: importing that and reading the
installed distribution cost every process that makes a client about 2% of its
start; docs/benchmarks.md, "Start-up".) ``pyproject.toml`` reads the version
from this line (``[tool.hatch.version]``): change it here only.
"""

from __future__ import annotations

from typing import Final

__all__ = ["VERSION"]

VERSION: Final = "0.1.0.dev0"
