"""The sans-IO promise of ``bgtransfer._core``: no event loop, no network, no files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bgtransfer._core

CORE_DIR = Path(bgtransfer._core.__file__).parent
CORE_MODULES = sorted(CORE_DIR.glob("*.py"))
FORBIDDEN = {
    "aiofiles",
    "aiohttp",
    "anyio",
    "asyncio",
    "os",
    "selectors",
    "shutil",
    "socket",
    "ssl",
    "subprocess",
    "threading",
    "time",
    "trio",
}


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_modules_found() -> None:
    names = {p.stem for p in CORE_MODULES}
    assert {"states", "events", "config", "naming", "supervisor", "progress", "response"} <= names


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_core_module_imports_nothing_that_does_io(path: Path) -> None:
    assert not _imported_modules(path) & FORBIDDEN


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_core_module_has_no_coroutines(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef | ast.Await)]


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_core_module_relative_imports_stay_inside_the_package(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            # ``from .x`` (core) or ``from .._exceptions`` (the pure exception tree) only
            target = "." * node.level + (node.module or "")
            assert node.level == 1 or target == ".._exceptions", target
