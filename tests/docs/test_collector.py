"""The docs' sample collector (tests/test_docs.py) finds and runs what it should."""

from __future__ import annotations

from pathlib import Path

import pytest

import test_docs
from test_docs import fenced_blocks, run_block

PAGE = """# A page

```python
print("top level")
```

* A list item with a sample in it:

  ```python
  import sys

  sys.exit(3)
  ```

```toml title="pyproject.toml"
[tool.pytest.ini_options]
asyncio_mode = "auto"
```

````python title="test_inside.py"
async def test_async_runs_in_auto_mode():
    assert True
````

```text
await not_a_program()
```
"""


def _page(tmp_path: Path) -> Path:
    page = tmp_path / "page.md"
    page.write_text(PAGE, encoding="utf-8")
    return page


def test_blocks_are_found_with_their_line_language_and_title(tmp_path: Path) -> None:
    blocks = list(fenced_blocks(_page(tmp_path)))
    assert [(b.line, b.language, b.title) for b in blocks] == [
        (3, "python", None),
        (9, "python", None),
        (15, "toml", "pyproject.toml"),
        (20, "python", "test_inside.py"),
        (25, "text", None),
    ]
    assert blocks[1].code == "import sys\n\nsys.exit(3)\n"  # the list's indent removed
    assert blocks[3].is_pytest_file


def test_a_failing_sample_is_reported_with_its_output(tmp_path: Path) -> None:
    program, failing = list(fenced_blocks(_page(tmp_path)))[:2]
    work = tmp_path / "work"
    work.mkdir()
    assert run_block(program, work).stdout == "top level\n"
    other = tmp_path / "other"
    other.mkdir()
    assert run_block(failing, other).returncode == 3


def test_a_pytest_block_runs_with_the_page_configuration(tmp_path: Path) -> None:
    block = list(fenced_blocks(_page(tmp_path)))[3]
    work = tmp_path / "work"
    work.mkdir()
    result = run_block(block, work)
    assert result.returncode == 0, result.stdout
    assert (work / "pyproject.toml").is_file()
    assert "1 passed" in result.stdout


def test_a_sample_that_hangs_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "hang.md"
    page.write_text("```python\nimport time\ntime.sleep(600)\n```\n", encoding="utf-8")
    [block] = fenced_blocks(page)
    monkeypatch.setattr(test_docs, "SAMPLE_TIMEOUT", 1.0)
    result = run_block(block, tmp_path)
    assert result.returncode != 0
    assert "timed out" in result.stdout
