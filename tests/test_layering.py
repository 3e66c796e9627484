"""The package's layers, pinned by reading its imports (nothing is imported to check).

From the bottom up: ``_core`` (sans-IO rules, values) and ``_exceptions``; ``_io``
(the thin shell of files, sockets, SQLite, threads); ``_engine`` (records,
scheduling, the download); ``_daemon`` (the transfer daemon's server and its
client, a second task backend, above the engine); the front (``Session``,
``DownloadTask``, the CLI and the package's front door). ``testing`` stands
beside them and uses only the public API. An arrow may only point down, no
modules import each other in a loop (not even for type checking only), and no
module is over ``MAX_LINES`` lines. ``docs/design.md`` ("Layout") says why.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import bgtransfer

PACKAGE_DIR = Path(bgtransfer.__file__).parent
FRONT = {
    "bgtransfer",
    "bgtransfer.__main__",
    "bgtransfer._cli",
    "bgtransfer._session",
    "bgtransfer._state_dir",
    "bgtransfer._task",
}

# The front's imports of ``_io`` that are still allowed: none since the session's
# start-up (lock, private directories, journal, resume key, SIGTERM) became one
# function of the engine package (``_engine/startup.py``). An entry that is no
# longer true fails (test_allow_list_is_current), so the list can only shrink.
FRONT_IMPORTS_OF_IO: set[tuple[str, str]] = set()

# Import loops still allowed, each as the sorted pair of modules that import each
# other: none. Shrink-only: an entry that is no longer a loop fails
# (test_cycle_allow_list_is_current).
ALLOWED_CYCLES: set[frozenset[str]] = set()

MAX_LINES = 500
# Modules still over MAX_LINES, with their size when listed: none. An entry may
# shrink, never grow, and one whose module is back under the limit fails
# (test_size_allow_list_is_current).
OVERSIZED: dict[str, int] = {}


@attrs.frozen
class Import:
    importer: str
    imported: str  # a module of the package (a name taken from a package: that package)
    typing_only: bool  # under ``if TYPE_CHECKING:``: never imported at run time
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def _typing_only_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
            if name == "TYPE_CHECKING":
                for inner in node.body:
                    lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """Every import of a module of the package by ``name`` (at any depth: a
    function's own imports count). ``from a import b`` imports ``a.b`` when that
    is a module, else ``a``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = _typing_only_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top = next(iter(modules)).split(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                targets.append(submodule if submodule in modules else source)
        for target in targets:
            if target == top or target.startswith(top + "."):
                yield Import(name, target, node.lineno in typing_only, node.lineno)


def all_imports(root: Path) -> list[Import]:
    modules = package_modules(root)
    return [found for name, path in modules.items() for found in imports_of(name, path, modules)]


# Packages of the front: every module in them is front (the command line's
# commands, the terminal demo app).
FRONT_PACKAGES = {"bgtransfer._cli", "bgtransfer._demo"}


def layer(module: str) -> str:
    if module in FRONT or module in FRONT_PACKAGES:
        return "front"
    if any(module.startswith(f"{package}.") for package in FRONT_PACKAGES):
        return "front"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "front"


def violations(imports: list[Import]) -> list[str]:
    """Each import that points the wrong way, as ``importer -> imported (line)``."""
    allowed = {
        "_core": {"_core", "_exceptions"},
        "_exceptions": {"_exceptions"},
        "_io": {"_io", "_core", "_exceptions"},
        "_engine": {"_engine", "_io", "_core", "_exceptions"},
        "_daemon": {"_daemon", "_engine", "_io", "_core", "_exceptions"},
    }
    found = []
    for edge in imports:
        source, target = layer(edge.importer), layer(edge.imported)
        if source in allowed:
            wrong = target not in allowed[source]
        elif source == "testing":
            parts = edge.imported.split(".")
            wrong = target != "testing" and len(parts) > 1 and parts[1].startswith("_")
        else:  # the front: anything but _io (and the allow-list's remains)
            # (bgtransfer.testing is public API: the CLI's demo serves from it)
            wrong = target == "_io" and (edge.importer, edge.imported) not in FRONT_IMPORTS_OF_IO
        if wrong:
            found.append(f"{edge.importer} -> {edge.imported} (line {edge.line})")
    return sorted(set(found))


def cycles(imports: list[Import], *, typing_only: bool = False) -> list[list[str]]:
    """The import loops at run time, or (``typing_only``) counting the imports
    for type checking too: those cannot fail at run time, but a loop among them
    still means two modules each need the other's names (a type or a protocol
    that belongs in a module below both)."""
    graph: dict[str, set[str]] = {}
    for edge in imports:
        if (typing_only or not edge.typing_only) and edge.importer != edge.imported:
            graph.setdefault(edge.importer, set()).add(edge.imported)
    loops: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                loops.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return loops


IMPORTS = all_imports(PACKAGE_DIR)


def test_the_package_is_read() -> None:
    importers = {edge.importer for edge in IMPORTS}
    assert {"bgtransfer._session", "bgtransfer._engine.engine", "bgtransfer._io.transfer"} <= (
        importers
    )
    layers = {layer(name) for name in package_modules(PACKAGE_DIR)}
    assert layers == {"front", "_core", "_exceptions", "_io", "_engine", "_daemon", "testing"}


def test_layers_point_down() -> None:
    """``_core`` imports only itself and ``_exceptions``; ``_io`` nothing above it;
    ``_engine`` not the front; the front not ``_io`` (but the allow-list);
    ``testing`` no private module of the package."""
    assert violations(IMPORTS) == []


def test_allow_list_is_current() -> None:
    """Every allowed front import of ``_io`` still exists: once one goes, its
    entry must go too (it is empty since "one start-up path")."""
    present = {(edge.importer, edge.imported) for edge in IMPORTS}
    assert FRONT_IMPORTS_OF_IO - present == set()


def test_no_import_cycles() -> None:
    assert cycles(IMPORTS) == []


def _loop_pairs(loops: list[list[str]]) -> set[frozenset[str]]:
    return {frozenset(loop) for loop in loops}


def test_no_import_cycles_even_for_type_checking() -> None:
    """Imports under ``if TYPE_CHECKING:`` make no loop either (but the allow-list)."""
    loops = cycles(IMPORTS, typing_only=True)
    assert [loop for loop in loops if frozenset(loop) not in ALLOWED_CYCLES] == []


def test_cycle_allow_list_is_current() -> None:
    assert ALLOWED_CYCLES - _loop_pairs(cycles(IMPORTS, typing_only=True)) == set()


def module_sizes(root: Path) -> dict[str, int]:
    return {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in package_modules(root).items()
    }


SIZES = module_sizes(PACKAGE_DIR)


def test_no_module_is_over_the_line_limit() -> None:
    """One job per module: none over ``MAX_LINES`` (but the allow-list, which
    may only shrink: a listed module may not grow past its listed size)."""
    over = {name: size for name, size in SIZES.items() if size > MAX_LINES}
    assert {name for name in over if name not in OVERSIZED} == set()
    assert {name: size for name, size in over.items() if size > OVERSIZED[name]} == {}


def test_size_allow_list_is_current() -> None:
    """A listed module that is back under the limit must leave the list."""
    assert {name for name in OVERSIZED if SIZES.get(name, 0) <= MAX_LINES} == set()


def test_engine_sets_up_no_http_client() -> None:
    """aiohttp's client is built in ``_io/client.py``: the engine names its types
    only (under TYPE_CHECKING)."""
    for path in sorted((PACKAGE_DIR / "_engine").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = _typing_only_lines(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                module = getattr(node, "module", None) or ""
                if any(n.split(".")[0] == "aiohttp" for n in [*names, module]):
                    assert node.lineno in typing_only, f"{path.name}:{node.lineno}"


# What the engine may take from ``os``: names and text, no system calls.
PURE_OS = {"PathLike", "fsdecode", "fsencode", "sep"}
# Methods that ask the file system (of ``Path`` and ``os.path``); names that other
# objects also have (``remove``, ``replace``, ``open``) are left out.
FILE_SYSTEM_METHODS = {
    "chmod",
    "exists",
    "is_dir",
    "is_file",
    "isdir",
    "isfile",
    "iterdir",
    "lexists",
    "listdir",
    "lstat",
    "mkdir",
    "read_bytes",
    "read_text",
    "rename",
    "resolve",
    "rmdir",
    "scandir",
    "stat",
    "touch",
    "unlink",
    "write_bytes",
    "write_text",
}


def file_system_calls(path: Path) -> list[str]:
    """Where a module calls the file system itself (``os``, ``shutil``, ``open``,
    ``Path`` methods), as ``name:line what``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        what = None
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "shutil" or (node.value.id == "os" and node.attr not in PURE_OS):
                what = ast.unparse(node)
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "open":
                what = "open()"
            elif isinstance(func, ast.Attribute) and func.attr in FILE_SYSTEM_METHODS:
                what = ast.unparse(func)
        if what is not None:
            found.append(f"{path.name}:{node.lineno} {what}")
    return sorted(set(found))


def test_engine_makes_no_file_system_calls() -> None:
    """The engine asks ``_io`` (``partials``, ``paths``, ``files``) for every file
    system call: the blocking ones run where ``_io`` says, and a second
    implementation of the engine's seams finds them in one place."""
    engine_modules = sorted((PACKAGE_DIR / "_engine").glob("*.py"))
    assert [call for path in engine_modules for call in file_system_calls(path)] == []


# -- the checks themselves, on a made-up package ------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "bgtransfer"
    for relative, text in {"__init__.py": "", **files}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"_core/a.py": "from .._io import b\n", "_io/b.py": ""}, "bgtransfer._core.a"),
        ({"_io/b.py": "from .._engine.e import X\n", "_engine/e.py": ""}, "bgtransfer._io.b"),
        ({"_io/b.py": "from bgtransfer import _session\n", "_session.py": ""}, "bgtransfer._io.b"),
        ({"_task.py": "from ._io.files import f\n", "_io/files.py": ""}, "bgtransfer._task"),
        ({"testing/_s.py": "from .._core import x\n", "_core/x.py": ""}, "bgtransfer.testing._s"),
        ({"_engine/e.py": "def f():\n    from .._task import T\n", "_task.py": ""}, "_engine.e"),
    ],
)
def test_a_wrong_way_import_is_found(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    found = violations(all_imports(_package(tmp_path, files)))
    assert len(found) == 1
    assert expected in found[0]


def test_a_file_system_call_is_found(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text(
        "import os\nos.sep\nos.lstat(p)\nopen(p)\np.resolve()\nq.remove(1)\n", encoding="utf-8"
    )
    assert file_system_calls(path) == ["m.py:3 os.lstat", "m.py:4 open()", "m.py:5 p.resolve"]


def test_the_testing_package_may_use_its_own_private_modules(tmp_path: Path) -> None:
    root = _package(tmp_path, {"testing/__init__.py": "from ._s import S\n", "testing/_s.py": ""})
    assert violations(all_imports(root)) == []


def test_a_cycle_is_found_and_a_typing_only_one_is_not(tmp_path: Path) -> None:
    typing_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n"
    root = _package(tmp_path, {"_io/a.py": "from . import b\n", "_io/b.py": typing_only})
    assert cycles(all_imports(root)) == []
    (root / "_io/b.py").write_text("from .a import A\n", encoding="utf-8")
    assert cycles(all_imports(root)) == [
        ["bgtransfer._io.a", "bgtransfer._io.b", "bgtransfer._io.a"]
    ]


def test_a_typing_only_cycle_is_found_when_asked(tmp_path: Path) -> None:
    typing_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n"
    root = _package(tmp_path, {"_io/a.py": "from . import b\n", "_io/b.py": typing_only})
    assert cycles(all_imports(root), typing_only=True) == [
        ["bgtransfer._io.a", "bgtransfer._io.b", "bgtransfer._io.a"]
    ]


def test_an_oversized_module_is_found(tmp_path: Path) -> None:
    root = _package(tmp_path, {"_core/big.py": "x = 1\n" * (MAX_LINES + 1), "_core/ok.py": ""})
    sizes = module_sizes(root)
    assert [name for name, size in sizes.items() if size > MAX_LINES] == ["bgtransfer._core.big"]
