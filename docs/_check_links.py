"""Check that relative Markdown links in README.md and docs/ resolve to existing files.

Usage: ``python docs/_check_links.py [FILE.md ...]`` (default: README.md and
docs/**/*.md).  External links (``scheme:``), pure in-page anchors (``#...``) and
anything inside code spans or fenced code blocks are ignored; ``#fragment`` and
``?query`` suffixes are stripped before checking the file.  Exits 1 listing every
broken link.  Standard library only, so it runs in a bare virtualenv.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent

# [text](target "title") and ![alt](target); target may be wrapped in <...>.
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]"  # [text], allowing one level of nested [...]
    r"\(\s*(<[^>]*>|[^)\s]+)"  # (target
    r"(?:\s+[\"'(][^)]*)?\)"  # optional "title")
)
# [label]: target "title"
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
# <a href="..."> / <img src="...">
HTML_LINK = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)
FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def default_files() -> list[Path]:
    files = [ROOT / "README.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    return [f for f in files if f.is_file()]


def links(text: str) -> Iterator[tuple[int, str]]:
    """Yield (line number, link target) outside code blocks and code spans."""
    fence: str | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if match:
            marker = match.group(1)
            if fence is None:
                fence = marker[0] * len(marker)
            elif marker.startswith(fence):
                fence = None
            continue
        if fence is not None:
            continue
        stripped = CODE_SPAN.sub("", line)
        for pattern in (INLINE_LINK, REFERENCE_DEF, HTML_LINK):
            for found in pattern.finditer(stripped):
                yield lineno, found.group(1).strip("<>")


def broken_links(md_file: Path) -> Iterator[str]:
    for lineno, target in links(md_file.read_text(encoding="utf-8")):
        if not target or target.startswith("#") or SCHEME.match(target):
            continue
        path_part = unquote(re.split(r"[#?]", target, maxsplit=1)[0])
        if not path_part:
            continue
        base = ROOT if path_part.startswith("/") else md_file.parent
        resolved = (base / path_part.lstrip("/")).resolve()
        if not resolved.exists():
            shown = md_file.relative_to(ROOT) if md_file.is_relative_to(ROOT) else md_file
            yield f"{shown}:{lineno}: broken link {target!r}"


def main(argv: list[str]) -> int:
    files = [Path(arg).resolve() for arg in argv] or default_files()
    problems = [problem for md_file in files for problem in broken_links(md_file)]
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"checked {len(files)} Markdown file(s): {len(problems)} broken link(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
