"""A griffe extension for the API reference: the docstrings' reST roles, as Markdown.

bgtransfer's docstrings use Sphinx's cross-reference roles (``:class:`~bgtransfer.X```,
``:meth:`download```) and ``::`` before an indented example. mkdocstrings renders
docstrings as Markdown, where those would show as written. This turns a role into a
code span (the last component only, with ``~``, as Sphinx shows it) and a final
``::`` into ``:`` (the indented block after it is already a Markdown code block).
Loaded by mkdocs.yml (``extensions``); the docstrings themselves stay as they are.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|exc|data|mod|obj|const):`(~?)([^`]+)`")
_LITERAL_MARKER = re.compile(r"(\S)::$", re.MULTILINE)


def _markdown(text: str) -> str:
    def role(match: re.Match[str]) -> str:
        short, target = match.groups()
        target = target.removesuffix("()")
        if "<" in target:  # :meth:`text <target>`
            target = target.split("<", 1)[0].strip()
        elif short:
            target = target.rsplit(".", 1)[-1]
        return f"`{target}`"

    return _LITERAL_MARKER.sub(r"\1:", _ROLE.sub(role, text))


class ReSTRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _markdown(obj.docstring.value)
