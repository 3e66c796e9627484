"""The docs say what the code does: generated parts are current."""

from __future__ import annotations

from pathlib import Path

from bgtransfer._core.states import (
    markdown_table,
    mermaid_diagram,
    move_diagram,
    runner_diagram,
    stage_diagram,
)

ROOT = Path(__file__).resolve().parent.parent


def test_design_doc_state_diagram_is_generated_from_the_table() -> None:
    text = (ROOT / "docs" / "design.md").read_text()
    begin = "<!-- BEGIN GENERATED STATE DIAGRAM -->\n"
    end = "<!-- END GENERATED STATE DIAGRAM -->"
    generated = text[text.index(begin) + len(begin) : text.index(end)]
    expected = f"```mermaid\n{mermaid_diagram()}\n```\n\n{markdown_table()}\n"
    assert generated == expected, "regenerate the diagram: see docs/design.md"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "python -m pip install -e '.[test]' && python -m pytest"
    assert command in readme
    assert command in ci


def test_design_doc_stage_diagrams_are_generated_from_the_tables() -> None:
    text = (ROOT / "docs" / "design.md").read_text()
    begin = "<!-- BEGIN GENERATED STAGE DIAGRAMS -->\n"
    end = "<!-- END GENERATED STAGE DIAGRAMS -->"
    generated = text[text.index(begin) + len(begin) : text.index(end)]
    expected = "\n".join(
        f"```mermaid\n{diagram}\n```\n"
        for diagram in (stage_diagram(), runner_diagram(), move_diagram())
    )
    assert generated == expected, "regenerate the diagrams: see docs/design.md"
