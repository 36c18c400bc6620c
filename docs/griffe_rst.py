"""Griffe extension: render the reStructuredText bits of genbayes docstrings as Markdown.

genbayes docstrings are Google style (``Args:``, ``Returns:``, ``Raises:``) with Sphinx roles
for maths and cross-references, so that they read well in ``help()`` and in a terminal. This
extension rewrites, on the documentation side only (the source is not touched):

- ``:math:`x``` to ``\\(x\\)`` and ``.. math:: x`` to a display block ``\\[x\\]``
  (rendered by pymdownx.arithmatex + MathJax);
- ``:func:`name``` / ``:class:`` / ``:mod:`` / ``:meth:`` / ``:attr:`` / ``:data:`` /
  ``:exc:`` to inline code;
- an ``Example:`` section title to ``Examples:``, the spelling griffe's Google parser knows
  (Napoleon accepts both), so doctest lines render as code rather than as Markdown text.
"""

from __future__ import annotations

import re

import griffe

_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_XREF_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):`~?([^`]+)`")
_EXAMPLE_TITLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


def _math_blocks(text: str) -> str:
    # ``.. math:: body`` (plus deeper-indented continuation lines) -> ``\[ body \]``, keeping the
    # line count so that griffe's warnings still point at the right source line
    lines, i = text.split("\n"), 0
    while i < len(lines):
        m = re.match(r"^(\s*)\.\. math::\s*(.*)$", lines[i])
        if not m:
            i += 1
            continue
        indent = m.group(1)
        lines[i] = f"{indent}\\[ {m.group(2)}"
        i += 1
        while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > len(indent):
            lines[i] = indent + lines[i].strip()
            i += 1
        lines[i - 1] += " \\]"
    return "\n".join(lines)


def rst_to_markdown(text: str) -> str:
    """Rewrite the reStructuredText constructs used in genbayes docstrings as Markdown."""
    text = _math_blocks(text)
    text = _MATH_ROLE.sub(lambda m: f"\\({m.group(1)}\\)", text)
    text = _XREF_ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    return _EXAMPLE_TITLE.sub(r"\1Examples:", text)


class RstToMarkdown(griffe.Extension):
    """Apply :func:`rst_to_markdown` to every docstring once the object tree is complete."""

    def on_object(self, *, obj, loader, **kwargs) -> None:  # noqa: ARG002
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
