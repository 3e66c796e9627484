"""The reference pages name what exists: migration table, configuration, API."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import attrs
import pytest

import bgtransfer

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_CODE_SPAN = re.compile(r"`([^`]+)`")
_NAME = re.compile(r"[A-Za-z_][\w.]*")


def _table_rows(page: Path) -> list[list[str]]:
    """The cells of every body row of every Markdown table of ``page``."""
    rows = []
    for line in page.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return [row for row in rows if row[0] not in {"NSURLSession", "field"}]


def _resolve(dotted: str) -> object:
    """``Session.download`` -> bgtransfer.Session.download; ``bgtransfer.testing`` too."""
    parts = dotted.removeprefix("bgtransfer.").split(".")
    if dotted.startswith("bgtransfer.") and parts[0] == "testing":
        return importlib.import_module("bgtransfer.testing")
    obj: object = bgtransfer
    for part in parts:
        obj = getattr(obj, part)  # an attrs class with slots has its fields as attributes
    return obj


def _bgtransfer_names() -> list[str]:
    """Every name in the migration table's bgtransfer column (code spans that are a
    name, a call or an attribute; an expression such as ``async with ...`` is prose)."""
    names = []
    for row in _table_rows(DOCS / "migration.md"):
        for span in _CODE_SPAN.findall(row[-1]):
            head = span.split("(", 1)[0]
            if " " in head or '"' in head:
                continue
            match = _NAME.fullmatch(head)
            assert match is not None, f"migration.md: cannot read {span!r}"
            names.append(head)
    return names


def test_the_migration_table_has_the_issue_rows() -> None:
    names = set(_bgtransfer_names())
    for required in (
        "Session",
        "Configuration.max_connections_per_host",
        "DownloadTask.cancel_with_resume_data",
        "ProgressEvent",
        "Configuration.launch_command",
    ):
        assert required in names


@pytest.mark.parametrize("name", sorted(set(_bgtransfer_names())))
def test_every_bgtransfer_name_in_the_migration_table_exists(name: str) -> None:
    try:
        _resolve(name)
    except AttributeError as exc:
        pytest.fail(f"docs/migration.md names {name!r}, which bgtransfer does not have: {exc}")


def test_the_configuration_reference_lists_every_field() -> None:
    documented = {
        row[0].strip("`") for row in _table_rows(DOCS / "configuration.md") if len(row) == 3
    }
    fields = {field.name for field in attrs.fields(bgtransfer.Configuration)}
    missing = sorted(fields - documented)
    assert not missing, f"add a row to docs/configuration.md for: {', '.join(missing)}"
    unknown = sorted(documented - fields)
    assert not unknown, f"docs/configuration.md lists fields that do not exist: {unknown}"


def test_the_api_page_shows_every_public_name() -> None:
    page = (DOCS / "api.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"^::: bgtransfer\.(\w+)$", page, flags=re.MULTILINE))
    public = {name for name in bgtransfer.__all__ if not name.startswith("_")}
    public -= {"SessionEvent", "TaskEvent", "TerminalEvent"}  # unions: see events.md
    missing = sorted(public - shown)
    assert not missing, f"add `::: bgtransfer.NAME` to docs/api.md for: {', '.join(missing)}"
