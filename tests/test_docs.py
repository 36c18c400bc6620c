"""The documentation: the MkDocs site builds with warnings as errors and documents every public
name, and every public name has a docstring with a reference and a runnable example.

The docstring examples themselves run as doctests (``--doctest-modules`` in pytest's addopts).
"""

from __future__ import annotations

import html
import importlib
import inspect
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# API page (docs/api/<page>.md) -> the modules it documents
PAGES = {
    "genbayes": ["genbayes"],
    "handlers": ["genbayes.handlers"],
    "units": ["genbayes.units"],
    "conjugate": ["genbayes.conjugate"],
    "batched": ["genbayes.batched"],
    "sgmcmc": ["genbayes.sgmcmc"],
    "losses": ["genbayes.losses"],
    "fisher": ["genbayes.fisher"],
    "calibration": ["genbayes.calibration"],
    "cv": ["genbayes.cv"],
    "evidence": ["genbayes.evidence"],
    "bridge": ["genbayes.bridge"],
    "bounds": ["genbayes.bounds"],
    "vcd": ["genbayes.vcd"],
    "infomax": ["genbayes.infomax"],
    "interop": ["genbayes.interop"],
    "models": ["genbayes.models"] + [f"genbayes.models.{m}" for m in importlib.import_module("genbayes.models").__all__],
    "report": ["genbayes.cli", "genbayes.report", "genbayes.demos"]
    + [f"genbayes.demos.{m}" for m in ("conjugate", "gibbs", "cv", "evidence", "bounds", "vcd", "infomax")],
}

# Modules other branches are editing while this one was written; their docstring gaps are known
# and listed in the docs branch report. The check runs for them (and reports XPASS once fixed).
PENDING: set = set()

# Plumbing with no formula and no literature behind it: a docstring and an example, no reference.
NO_REFERENCE = {
    "genbayes.losses.loss_name",
    "genbayes.conjugate.is_conjugate",
    "genbayes.cv.add_cli",
    "genbayes.evidence.add_cli",
    "genbayes.cli.build_parser",
    "genbayes.cli.main",
    "genbayes.cli.fast_compile_xla_flags",
    "genbayes.cli.compilation_cache_dir",
    "genbayes.report.write_report",
    "genbayes.demos.Section",
    "genbayes.demos.image_path",
    "genbayes.interop.batched_to_inference_data",
    "genbayes.interop.effective_sample_size",
    "genbayes.infomax.Estimate",
    "genbayes.batched.BatchedSamples",
    "genbayes.evidence.Evidence",
    "genbayes.cli.UsageError",
    "genbayes.cv.default_memory_budget",
    "genbayes.use_cpu_devices",
}

# Example-free by nature: the demo sections (each runs for seconds and writes PNGs; the CLI
# test runs them) and the command-line entry points (exercised by tests/test_cli.py).
NO_EXAMPLE_PREFIXES = ("genbayes.demos.",)
NO_EXAMPLE = {"genbayes.cli.main", "genbayes.cli.build_parser"}

# "Author (2016", "Author et al. (2019", "Author & Author 2016", "(1994, eq. 3)": a name then a year
_REFERENCE = re.compile(r"[A-Z][A-Za-z\-ü']+(?: et al\.)?,? (?:\(|& [^()]{1,60}?\(?)?(?:1[6-9]|20)\d\d")


def public_names(modname: str) -> list[tuple[str, object]]:
    """``(qualified name, object)`` for the public functions and classes of a module.

    Public means listed in ``__all__``, or, for a module without one, defined in it with a name
    that does not start with an underscore. Submodules and plain constants are skipped (modules
    are checked as modules; constants cannot carry docstrings).
    """
    mod = importlib.import_module(modname)
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [
            n
            for n, v in vars(mod).items()
            if not n.startswith("_")
            and (inspect.isfunction(v) or inspect.isclass(v))
            and getattr(v, "__module__", None) == modname
        ]
    out = []
    for n in names:
        obj = getattr(mod, n)
        if isinstance(obj, types.ModuleType) or not callable(obj):
            continue
        out.append((f"{modname}.{n}", obj))
    return out


def docstring_gaps(qualname: str, obj) -> list[str]:
    doc = inspect.getdoc(obj) or ""
    gaps = []
    if not doc.strip():
        return ["no docstring"]
    if not (qualname in NO_EXAMPLE or qualname.startswith(NO_EXAMPLE_PREFIXES)) and ">>>" not in doc:
        gaps.append("no example (>>>)")
    if qualname not in NO_REFERENCE and not qualname.startswith("genbayes.demos.") and not _REFERENCE.search(doc):
        gaps.append("no reference (author, year)")
    return gaps


ALL_MODULES = sorted({m for mods in PAGES.values() for m in mods})


@pytest.mark.parametrize(
    "modname",
    [pytest.param(m, marks=pytest.mark.xfail(reason="edited on another branch; gaps listed in the docs report", strict=False)) if m in PENDING else m for m in ALL_MODULES],
)
def test_public_docstrings_have_example_and_reference(modname):
    mod = importlib.import_module(modname)
    problems = [] if (mod.__doc__ or "").strip() else [f"{modname}: no module docstring"]
    for qualname, obj in public_names(modname):
        problems += [f"{qualname}: {g}" for g in docstring_gaps(qualname, obj)]
    assert not problems, "\n".join(problems)


def test_reference_pattern_recognises_citations():
    # the audit is only as good as this pattern: it must accept the citation forms used in the
    # docstrings and reject text without an author-year pair
    for text in [
        "Bissiri, Holmes & Walker (2016, eq. 1)",
        "Fong & Holmes (2020)",
        "Lyddon et al. (2019)",
        "Koenker & Bassett 1978",
        "Huber 1964",
        "Legendre 1805",
        "Williams' (1959)",
    ]:
        assert _REFERENCE.search(text), text
    for text in ["in 2016 somebody", "version 1.2", "(see the README)", "shape (2016, 3)"]:
        assert not _REFERENCE.search(text), text


def _mkdocs_available() -> str | None:
    for mod in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "material"):
        try:
            importlib.import_module(mod)
        except ImportError:
            return f"{mod} is not installed (pip install -e '.[docs]')"
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    reason = _mkdocs_available()
    if reason:
        pytest.skip(f"docs build not checked: {reason}")
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_docs_build_strict(site):
    assert (site / "index.html").is_file()
    assert (site / "notebooks" / "index.html").is_file()
    assert (site / "scaling" / "index.html").is_file()


@pytest.mark.parametrize("page", sorted(PAGES))
def test_api_page_documents_every_public_name(site, page):
    path = site / "api" / page / "index.html"
    assert path.is_file(), f"no page for {page}"
    text = html.unescape(path.read_text())
    missing = []
    for modname in PAGES[page]:
        mod = importlib.import_module(modname)
        names = getattr(mod, "__all__", None) or [q.rsplit(".", 1)[1] for q, _ in public_names(modname)]
        for n in names:
            if n.startswith("__") or isinstance(getattr(mod, n), types.ModuleType):
                continue  # submodules have their own pages; __version__ is not API
            # mkdocstrings gives every rendered object an anchor with its full path
            if f'id="{modname}.{n}"' not in text:
                missing.append(f"{modname}.{n}")
    assert not missing, f"api/{page}.md does not document: {missing}"


def test_notebooks_page_lists_every_notebook():
    text = (ROOT / "docs" / "notebooks.md").read_text()
    missing = [p.name for p in sorted((ROOT / "notebooks").glob("*.py")) if f"notebooks/{p.name}" not in text]
    assert not missing, f"docs/notebooks.md does not list {missing}"


def _page_state(driver):
    """What a page shows: raw LaTeX, its formulas (and how many have no width), empty object boxes,
    signatures wider than their box."""
    return driver.execute_script("""
            const text = document.querySelector('article').innerText;
            const raw = [...text.matchAll(/\\\\[\\(\\[]/g)].map(m => text.slice(Math.max(0, m.index - 30), m.index + 40));
            const math = [...document.querySelectorAll('math')];
            const unrendered = math.filter(m => m.getBoundingClientRect().width === 0).length;
            const empty = [...document.querySelectorAll('.doc-object')].filter(o => {
                const c = o.querySelector(':scope > .doc-contents');
                return c && c.innerText.trim() === '' && !o.classList.contains('doc-module');
            }).map(o => (o.querySelector('[id]') || o).id || o.innerText.slice(0, 40));
            const wide = [...document.querySelectorAll('.doc-signature')].filter(
                s => s.scrollWidth > s.clientWidth + 2).map(s => s.innerText.slice(0, 60));
            return {raw, maths: math.length, unrendered, empty, wide};""")


def test_pages_render_offline_in_headless_chromium(site, chromium):
    """Every page, opened from disk with no network: no raw LaTeX, math as MathML, no empty boxes.

    Math is rendered at build time (docs/hooks/mathml.py), so a page showing ``\\(`` or ``\\[``
    means a formula escaped the converter. An object entry whose only content is its own name
    (an undocumented attribute rendered as an empty "attr / value" box) fails too, as does a
    signature wider than its box.
    """
    pages = sorted(site.rglob("index.html"))
    assert len(pages) > 20
    problems, maths = [], 0
    for page in pages:
        chromium.get(page.resolve().as_uri())
        state = _page_state(chromium)
        if state["raw"] or state["empty"] or state["wide"] or state["unrendered"]:
            # on a loaded machine the theme's scripts can still be laying the page out when it is first
            # measured (seen once: one <math> of zero width); a real defect is still there a second later
            time.sleep(1.0)
            state = _page_state(chromium)
        maths += state["maths"]
        rel = page.relative_to(site)
        for key in ("raw", "empty", "wide"):
            if state[key]:
                problems.append(f"{rel}: {key}: {state[key][:5]}")
        if state["unrendered"]:
            problems.append(f"{rel}: {state['unrendered']} <math> elements with no width (not rendered)")
    assert maths > 200, f"only {maths} formulas rendered as MathML"
    assert not problems, "\n".join(problems)
