"""MkDocs hook: render the pages' math as MathML at build time, so the site needs no network.

``pymdownx.arithmatex`` (generic mode) wraps every formula of the Markdown pages and of the
docstrings (``:math:`` and ``.. math::``, see ``docs/griffe_rst.py``) in
``<span class="arithmatex">\\(...\\)</span>`` or ``<div class="arithmatex">\\[...\\]</div>``. This
hook replaces each body by the MathML that ``latex2mathml`` (a pure-Python package, in the docs
and test extras) builds from the LaTeX. Browsers render MathML natively (MathML Core: Chromium,
Firefox, Safari), so no JavaScript renderer and no CDN are involved. A formula the converter
cannot read stops the build (``mkdocs build --strict``) with the formula and the page named.
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert
from mkdocs.exceptions import PluginError

_MATH = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.DOTALL)
# operator names latex2mathml does not know, spelt with ones it does
_MACROS = {re.compile(r"\\arg(?![A-Za-z])"): r"\\operatorname{arg}"}
_DELIMITERS = {r"\(": (r"\)", "inline"), r"\[": (r"\]", "block")}


def tex_to_mathml(tex: str, display: str) -> str:
    """MathML for one formula (``display`` is ``"inline"`` or ``"block"``)."""
    for pattern, replacement in _MACROS.items():
        tex = pattern.sub(replacement, tex)
    mathml = convert(tex.strip(), display=display)
    # latex2mathml keeps a command it does not know as text: that would show raw LaTeX
    # (an alignment ``&`` outside an environment it knows comes out as a literal "&")
    leftover = re.search(r">[^<]*(?:\\[A-Za-z]+|&(?!#?\w+;))[^<]*<", mathml)
    if leftover:
        raise ValueError(f"unsupported LaTeX {leftover.group(0)[1:-1]!r}")
    return mathml


def on_page_content(html_text, page, config, files):  # noqa: ARG001 (MkDocs hook signature)
    def render(m: re.Match) -> str:
        tag, body = m.group(1), html.unescape(m.group(2)).strip()
        opening = body[:2]
        if opening not in _DELIMITERS or not body.endswith(_DELIMITERS[opening][0]):
            raise PluginError(f"{page.file.src_uri}: math without \\( \\) or \\[ \\] delimiters: {body[:80]!r}")
        try:
            mathml = tex_to_mathml(body[2:-2], _DELIMITERS[opening][1])
        except Exception as err:  # the converter raises several kinds; all mean "cannot render"
            raise PluginError(f"{page.file.src_uri}: cannot render the formula {body!r} as MathML: {err}") from err
        return f'<{tag} class="arithmatex">{mathml}</{tag}>'

    return _MATH.sub(render, html_text)
