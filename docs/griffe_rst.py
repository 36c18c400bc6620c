"""Griffe extension: render the reStructuredText bits of genbayes docstrings as Markdown.

genbayes docstrings are Google style (``Args:``, ``Returns:``, ``Raises:``) with Sphinx roles
for maths and cross-references, so that they read well in ``help()`` and in a terminal. This
extension rewrites, on the documentation side only (the source is not touched):

- ``:math:`x``` to ``\\(x\\)`` and ``.. math:: x`` to a display block ``\\[x\\]``
  (rendered by pymdownx.arithmatex + MathJax);
- ``:func:`name``` / ``:class:`` / ``:mod:`` / ``:meth:`` / ``:attr:`` / ``:data:`` /
  ``:exc:`` to inline code;
- ``a, b: description`` in an ``Args:`` section into one entry per parameter (griffe's Google
  parser reads one name per entry; Napoleon renders both);
- an ``Example:`` section title to ``Examples:``, the spelling griffe's Google parser knows
  (Napoleon accepts both), so doctest lines render as code rather than as Markdown text.

It also documents public functions that a module builds at import time rather than with
``def`` (``genbayes.losses.squared = _tag(_squared, ..., doc=...)``): static analysis sees an
attribute without a docstring, so the attribute is replaced by a function carrying the
runtime signature and ``__doc__``.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import sys
import tomllib
from pathlib import Path

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


_ARGS_TITLE = re.compile(r"^(\s*)(?:Args|Arguments|Parameters|Keyword Args|Keyword Arguments|Other Parameters):\s*$")
_GROUPED = re.compile(r"^(\s+)(\**\w+(?:, \**\w+)+):\s*(.*)$")


def _split_grouped_args(text: str) -> str:
    # "a, b: description" in an Args section -> "a: description" and "b: Same as `a`." (griffe's
    # Google parser takes one parameter per line and reports "a, b" as an unknown parameter)
    lines, out, in_args, indent = text.split("\n"), [], False, None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _ARGS_TITLE.match(line)
        if m:
            in_args, indent = True, len(m.group(1))
            out.append(line)
            i += 1
            continue
        if in_args and line.strip() and len(line) - len(line.lstrip()) <= indent:
            in_args = False
        g = _GROUPED.match(line) if in_args else None
        if not g:
            out.append(line)
            i += 1
            continue
        pad, names = g.group(1), g.group(2).split(", ")
        out.append(f"{pad}{names[0]}: {g.group(3)}")
        i += 1
        while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > len(pad):
            out.append(lines[i])
            i += 1
        out += [f"{pad}{n}: Same as `{names[0]}`." for n in names[1:]]
    return "\n".join(out)


def rst_to_markdown(text: str) -> str:
    """Rewrite the reStructuredText constructs used in genbayes docstrings as Markdown."""
    text = _split_grouped_args(_math_blocks(text))
    text = _MATH_ROLE.sub(lambda m: f"\\({m.group(1)}\\)", text)
    text = _XREF_ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    return _EXAMPLE_TITLE.sub(r"\1Examples:", text)


_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: griffe.ParameterKind.positional_only,
    inspect.Parameter.POSITIONAL_OR_KEYWORD: griffe.ParameterKind.positional_or_keyword,
    inspect.Parameter.VAR_POSITIONAL: griffe.ParameterKind.var_positional,
    inspect.Parameter.KEYWORD_ONLY: griffe.ParameterKind.keyword_only,
    inspect.Parameter.VAR_KEYWORD: griffe.ParameterKind.var_keyword,
}


def _runtime_function(attr, loader):
    """A griffe Function for a public module attribute whose runtime value is a documented function."""
    try:
        module = importlib.import_module(attr.parent.path)
        value = getattr(module, attr.name)
    except (ImportError, AttributeError):
        return None
    if Path(module.__file__).resolve() != Path(attr.parent.filepath).resolve():
        # e.g. another checkout installed in the environment: its docstrings are not these
        raise RuntimeError(
            f"{attr.parent.path} imports from {module.__file__}, not from the documented source "
            f"{attr.parent.filepath}; build the docs from the repository root"
        )
    if not inspect.isfunction(value) or not value.__doc__:
        return None
    params = griffe.Parameters(
        *(
            griffe.Parameter(
                p.name,
                kind=_KINDS[p.kind],
                default=None if p.default is inspect.Parameter.empty else repr(p.default),
            )
            for p in inspect.signature(value).parameters.values()
        )
    )
    func = griffe.Function(attr.name, parameters=params, lineno=attr.lineno, endlineno=attr.endlineno)
    func.docstring = griffe.Docstring(
        inspect.cleandoc(value.__doc__),
        lineno=attr.lineno,
        parent=func,
        parser=loader.docstring_parser,
        parser_options=loader.docstring_options,
    )
    return func


_TABLE_TITLE = re.compile(r"^(\s*)(?:Attributes|Args|Arguments|Parameters):\s*$")


def _documented_attributes(text: str) -> set[str]:
    """Names listed in a Google-style ``Attributes:`` or ``Args:`` section (a class's fields and
    constructor arguments, rendered in the class's tables)."""
    names, indent = set(), None
    for line in text.split("\n"):
        m = _TABLE_TITLE.match(line)
        if m:
            indent = len(m.group(1))
            continue
        if indent is None or not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth <= indent:
            indent = None
        elif entry := re.match(r"^\s*(\w+(?:, \w+)*)\s*(?:\([^)]*\))?:", line):
            names.update(entry.group(1).split(", "))
    return names


def _foreign_override(cls, name: str) -> bool:
    """Whether ``name`` is defined by a base class of ``cls`` that comes from another package."""
    runtime = _runtime_class(cls)
    if runtime is None:
        return False
    own = cls.module.path.split(".", 1)[0]
    return any(
        name in vars(base) for base in runtime.__mro__[1:] if base.__module__.split(".", 1)[0] not in (own, "builtins")
    )


def _runtime_class(cls):
    try:
        return getattr(importlib.import_module(cls.module.path), cls.name)
    except (ImportError, AttributeError):
        return None


def _inherited_doc(cls, name: str) -> str | None:
    """The docstring ``inspect.getdoc`` finds for ``cls.name`` on a base class of the same package."""
    runtime = _runtime_class(cls)
    if runtime is None or name not in vars(runtime):
        return None
    own = cls.module.path.split(".", 1)[0]
    for base in runtime.__mro__[1:]:
        if base.__module__.split(".", 1)[0] == own and name in vars(base):
            return inspect.getdoc(getattr(base, name))
    return None


def _mapped_subpackages(package: str, root: Path) -> dict[str, str]:
    """``{"models": "models"}`` for ``[tool.setuptools.package-dir] "genbayes.models" = "models"``."""
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    mapping = tomllib.loads(pyproject.read_text()).get("tool", {}).get("setuptools", {}).get("package-dir", {})
    return {
        name.split(".", 1)[1]: folder
        for name, folder in mapping.items()
        if name.startswith(package + ".") and name.count(".") == 1
    }


class _DropUnknownParams(logging.Filter):
    """Drop griffe's "Parameter ... does not appear in the function signature" for given lines."""

    def __init__(self, spans):
        super().__init__()
        self.spans = spans  # (relative file path, first line, last line)

    def filter(self, record):
        msg = record.getMessage()
        if "does not appear in the function signature" not in msg:
            return True
        m = re.search(r"(\S+\.py):(\d+):", msg)
        if not m:
            return True
        path, line = m.group(1), int(m.group(2))
        return not any(path == f and lo <= line <= hi for f, lo, hi in self.spans)


class RstToMarkdown(griffe.Extension):
    """Apply :func:`rst_to_markdown` to every docstring once the object tree is complete.

    Args:
        allow_unknown_params: object paths whose docstrings may document parameters that are
            not in the signature (taken through ``**kwargs``). Meant as a temporary, visible
            exception in ``mkdocs.yml`` until such a docstring is fixed.
    """

    def __init__(self, allow_unknown_params=()):
        super().__init__()
        self.allow_unknown_params = list(allow_unknown_params)

    def on_package(self, *, pkg, loader, **kwargs) -> None:  # noqa: ARG002
        # runtime docstrings must come from the source being documented, not from another install
        root = str(Path(pkg.filepath).resolve().parent.parent)
        if root not in sys.path:
            sys.path.insert(0, root)
        for name, folder in _mapped_subpackages(pkg.name, Path(root)).items():
            # e.g. genbayes.models, installed from the top-level models/ folder (pyproject's package-dir)
            if name not in pkg.members:
                sub = loader.load(folder, find_stubs_package=False)
                pkg.set_member(name, sub)
                sub.name = name
        if pkg.docstring is not None:
            pkg.docstring.value = rst_to_markdown(pkg.docstring.value)
        self._walk(pkg, loader)
        spans = []
        for path in self.allow_unknown_params:
            if path.split(".", 1)[0] != pkg.name:
                continue
            doc = pkg[path.split(".", 1)[1]].docstring
            spans.append((str(doc.parent.relative_filepath), doc.lineno, doc.endlineno))
        if spans:
            for name in ("griffe", "mkdocs.plugins.griffe"):
                logging.getLogger(name).addFilter(_DropUnknownParams(spans))

    def _walk(self, obj, loader) -> None:
        in_table = _documented_attributes(obj.docstring.value) if obj.is_class and obj.docstring else set()
        for name, member in list(obj.members.items()):
            if member.is_alias:
                continue
            if member.docstring is None and (
                (member.is_attribute and name in in_table) or (obj.is_class and not name.startswith("_") and _foreign_override(obj, name))
            ):
                # described in the class's Attributes/Args table, or an undocumented override of
                # NumPyro's own API (Messenger.process_message, Distribution.log_prob, ELBO.loss):
                # on its own it would render as an empty box holding just its name
                obj.del_member(name)
                continue
            if member.docstring is None and obj.is_class and (inherited := _inherited_doc(obj, name)):
                # an undocumented override of a documented method (as Sphinx's autodoc_inherit_docstrings)
                member.docstring = griffe.Docstring(inherited, parent=member)
            if member.is_module or member.is_class:
                self._walk(member, loader)
            if (
                obj.is_module
                and member.is_attribute
                and member.docstring is None
                and not name.startswith("_")
                and (obj.exports is None or name in obj.exports)
            ):
                func = _runtime_function(member, loader)
                if func is not None:
                    obj.set_member(name, func)
                    member = func
            if member.docstring is not None:
                member.docstring.value = rst_to_markdown(member.docstring.value)
