"""`genbayes demo --quick` end to end: exit code, report contents, and the page in a real headless browser.

The demo runs once per session (about a minute on 2 cores). The browser check loads
``index.html`` from disk in headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
installed by ``.ci/run``) and checks that every section, table and image renders: each
``<img>`` must have decoded (``complete`` and a non-zero ``naturalWidth``) and be visible.
Locally, without Chromium, that test skips with the reason; with ``GENBAYES_REQUIRE_BROWSER=1``
(set by ``.ci/run``) a missing browser is a failure instead.
"""

import os
import pickle
import re
import shutil
import subprocess
import sys

import pytest

from genbayes.demos import SECTIONS

TITLES = {
    "conjugate": "Exact conjugate families",
    "gibbs": "Gibbs posteriors",
    "cv": "Cross-validation and the marginal likelihood",
    "evidence": "Marginal likelihood estimators",
    "bounds": "Generalization bounds",
    "vcd": "VCD",
    "infomax": "rate–distortion",
}


@pytest.fixture(scope="session")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "genbayes-report"
    exe = shutil.which("genbayes")
    cmd = [exe] if exe else [sys.executable, "-m", "genbayes.cli"]
    # the sections also pickle their matplotlib Figures there (genbayes.demos.save_figure), for the figure checks
    env = {**os.environ, "GENBAYES_DEMO_FIGURES": str(out.parent / "figures")}
    # the demo chooses each section's XLA flags itself (fast compile, XLA's defaults for the run-bound
    # evidence section: genbayes.cli._RUN_BOUND_SECTIONS): give it the flags the suite started with,
    # not the suite's fast-compile ones, which would hold the evidence section at -O0 too (conftest.py;
    # that section alone: 43 -> 40 s CPU)
    env["XLA_FLAGS"] = os.environ.get("GENBAYES_SUITE_USER_XLA_FLAGS", env.get("XLA_FLAGS", ""))
    proc = subprocess.run(cmd + ["demo", "--quick", "--out", str(out)], capture_output=True, text=True,
                          timeout=600, cwd=out.parent, env=env)
    return out, proc


def test_quick_demo_exits_zero_and_prints_progress(quick_report):
    out, proc = quick_report
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Most of the time goes to JAX compiling" in proc.stdout
    for i in range(1, len(SECTIONS) + 1):
        assert f"[{i}/{len(SECTIONS)}]" in proc.stdout
    assert "Report written" in proc.stdout


def test_report_files(quick_report):
    out, _ = quick_report
    md = (out / "report.md").read_text()
    assert set(TITLES) == set(SECTIONS)
    for title in TITLES.values():
        assert title in md
    assert "FAILED" not in md
    assert "-310.128" in md  # radiata pine's closed-form log evidence (Friel & Wyse 2012: -310.1283)
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) >= len(SECTIONS) and all(p.stat().st_size > 10_000 for p in pngs)
    html = (out / "index.html").read_text()
    # self-contained: every image inline, nothing fetched from elsewhere
    assert html.count("data:image/png;base64,") >= len(SECTIONS)
    for needle in ('src="http', "src='http", 'href="http', "<link", "<script src"):
        assert needle not in html


def test_report_header_and_number_style(quick_report):
    out, _ = quick_report
    md = (out / "report.md").read_text()
    head = md.split("\n## ")[0]
    for needle in ("date: 20", "run: quick", "seed: 0", "genbayes ", "jax ", "numpyro ", "Python ", "run time: "):
        assert needle in head, (needle, head)
    tables = [line for line in md.splitlines() if line.startswith("|")]
    assert tables
    for line in tables:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        for c in cells:
            assert c not in ("True", "False", "nan", "None", ""), line
            # no raw float reprs: at most 2 significant digits in exponent form (2.84217e-13 was one),
            # at most 6 anywhere (exact values; estimates are shown to their SE's precision)
            for num, exp in re.findall(r"(\d+(?:\.\d+)?)(e[-+]?\d+)?", c):
                digits = len(num.replace(".", "").lstrip("0"))
                assert digits <= (2 if exp else 6), (num + exp, line)
    assert "same run as" in md  # the shared ladder run is said, not timed twice


def test_every_figure_has_axis_labels_and_a_legend(quick_report):
    """Every panel with data has x and y labels and a legend naming each line, contour, band and histogram."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from genbayes.demos import figure_problems

    out, _ = quick_report
    figs = sorted((out.parent / "figures").glob("*.pickle"))
    assert {f.stem for f in figs} == {p.stem for p in out.glob("*.png")}
    problems = {}
    for f in figs:
        with open(f, "rb") as fh:
            fig = pickle.load(fh)
        problems[f.stem] = figure_problems(fig)
        assert fig.axes and all(ax.get_title() for ax in fig.axes), f.stem
    assert not any(problems.values()), problems


def test_figure_problems_flags_an_unlabelled_panel():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genbayes.demos import figure_problems

    fig, (a, b) = plt.subplots(1, 2)
    a.plot([0, 1], [0, 1], label="fit")
    a.plot([0, 1], [1, 0], "k--")  # e.g. a reference line left out of the legend
    a.set(xlabel="x", ylabel="y", title="a")
    a.legend()
    b.contour([[0, 1], [1, 2]], levels=[0.5])
    b.set_title("b")
    got = figure_problems(fig)
    plt.close(fig)
    assert got == ["panel 'a': 1 line(s)/set(s) not in the legend (Line2D)", "panel 'b': no x label",
                   "panel 'b': no y label", "panel 'b': no legend"]


def test_index_html_renders_in_headless_chromium(quick_report, chromium):
    out, _ = quick_report
    drv = chromium   # tests/conftest.py: skips, or fails under GENBAYES_REQUIRE_BROWSER=1, without a browser
    drv.get((out / "index.html").resolve().as_uri())
    meta = drv.execute_script(
        "return [...document.querySelectorAll('table.meta th')].map(t => t.textContent);")
    state = drv.execute_script("""
        const secs = [...document.querySelectorAll('section')];
        return secs.map(s => ({
            title: s.querySelector('h2') ? s.querySelector('h2').textContent : null,
            text: s.querySelector('p') ? s.querySelector('p').textContent.length : 0,
            rows: s.querySelectorAll('table tbody tr').length,
            imgs: [...s.querySelectorAll('img')].map(i => ({
                ok: i.complete && i.naturalWidth > 0 && i.naturalHeight > 0,
                shown: i.getBoundingClientRect().width > 0 && i.getBoundingClientRect().height > 0})),
        }));""")
    assert {"date", "seed", "versions", "run time"} <= set(meta), meta
    assert len(state) == len(SECTIONS)
    for sec, want in zip(state, [TITLES[n] for n in SECTIONS]):
        assert sec["title"] and want in sec["title"], (sec["title"], want)
        assert sec["text"] > 40 and sec["rows"] >= 1, sec
        assert sec["imgs"] and all(i["ok"] and i["shown"] for i in sec["imgs"]), sec
