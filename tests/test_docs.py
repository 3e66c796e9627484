"""The docs say what the code does: generated parts are current, and every sample runs.

Every ```python block of README.md and docs/**/*.md is a complete program: it is
written to a temporary directory and run there with this interpreter (one test per
block, named ``file:line``), its state directory inside that directory. A block
titled ``test_*.py`` (```python title="test_app.py") is a pytest file: it runs
with ``python -m pytest`` in a directory holding, beside it, the page's other
titled blocks (the configuration the page tells the reader to use, such as a
```toml title="pyproject.toml"). Blocks in other languages are not run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from _helpers import kill_daemon
from bgtransfer._core.states import (
    markdown_table,
    mermaid_diagram,
    move_diagram,
    runner_diagram,
    stage_diagram,
)

ROOT = Path(__file__).resolve().parent.parent

# A sample that takes longer than this is too slow for the docs run anyway.
SAMPLE_TIMEOUT = 60.0

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_TITLE = re.compile(r"""\btitle=(?:"([^"]*)"|'([^']*)'|(\S+))""")
_RUNNABLE = {"python", "py"}


@attrs.frozen
class Block:
    """One fenced code block of a Markdown page."""

    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    title: str | None
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}"

    @property
    def is_pytest_file(self) -> bool:
        return self.title is not None and re.fullmatch(r"test_\w*\.py", self.title) is not None


def doc_pages() -> list[Path]:
    """README.md and every Markdown page under docs/, whoever added it."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def fenced_blocks(page: Path) -> Iterator[Block]:
    """Every fenced block of ``page``, its indentation (inside a list item) removed."""
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"].strip()
        opened_at = index + 1
        body: list[str] = []
        index += 1
        while index < len(lines):
            closing = _FENCE.match(lines[index])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            line = lines[index]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        language = info.split(maxsplit=1)[0].lower() if info else ""
        titled = _TITLE.search(info)
        title = next(name for name in titled.groups() if name is not None) if titled else None
        yield Block(
            page=page,
            line=opened_at,
            language=language,
            title=title,
            code="\n".join(body) + "\n",
        )
        index += 1


def runnable_blocks() -> list[Block]:
    return [
        block
        for page in doc_pages()
        for block in fenced_blocks(page)
        if block.language in _RUNNABLE
    ]


def _sample_env(workdir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "BGTRANSFER_"))
    }
    env["BGTRANSFER_STATE_DIR"] = str(workdir / "state")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTHONPATH", None)
    return env


def run_block(block: Block, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Write ``block`` (and its page's support files) into ``workdir`` and run it."""
    if block.is_pytest_file:
        assert block.title is not None
        for other in fenced_blocks(block.page):
            if other.title is not None and other.language not in _RUNNABLE:
                (workdir / other.title).write_text(other.code, encoding="utf-8")
        (workdir / block.title).write_text(block.code, encoding="utf-8")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", block.title]
    else:
        (workdir / "sample.py").write_text(block.code, encoding="utf-8")
        command = [sys.executable, "sample.py"]
    process = subprocess.Popen(
        command,
        cwd=workdir,
        env=_sample_env(workdir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a timeout kills the sample and whatever it started
    )
    try:
        output, _ = process.communicate(timeout=SAMPLE_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        output += f"\n[timed out after {SAMPLE_TIMEOUT:.0f} s]"
    finally:
        kill_daemon(workdir / "state")  # a daemon a sample started never outlives it
    return subprocess.CompletedProcess(command, process.returncode, output, None)


def test_no_python_sample_hides_under_another_label() -> None:
    """A ```python3, ```pycon or ```ipython block would be shown as Python and never run."""
    hidden = [
        f"{block.name} ({block.language})"
        for page in doc_pages()
        for block in fenced_blocks(page)
        if block.language not in _RUNNABLE and block.language.startswith(("py", "ipy"))
    ]
    assert not hidden, f"label these ```python (a complete program) or ```text: {hidden}"


@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda block: block.name)
def test_docs_sample_runs(block: Block, tmp_path: Path) -> None:
    result = run_block(block, tmp_path)
    if result.returncode != 0:
        pytest.fail(
            f"{block.name}: `{shlex.join(result.args[1:])}` exited {result.returncode}\n"
            f"{result.stdout}",
            pytrace=False,
        )


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
