"""`genbayes demo --quick` end to end: exit code, report contents, and the page in a real headless browser.

The demo runs once per session (about a minute on 2 cores). The browser check loads
``index.html`` from disk in headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
installed by ``.ci/run``) and checks that every section, table and image renders: each
``<img>`` must have decoded (``complete`` and a non-zero ``naturalWidth``) and be visible.
Locally, without Chromium, that test skips with the reason; with ``GENBAYES_REQUIRE_BROWSER=1``
(set by ``.ci/run``) a missing browser is a failure instead.
"""

import os
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
    "vcd": "VCD",
    "infomax": "rate–distortion",
}


@pytest.fixture(scope="session")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "genbayes-report"
    exe = shutil.which("genbayes")
    cmd = [exe] if exe else [sys.executable, "-m", "genbayes.cli"]
    proc = subprocess.run(cmd + ["demo", "--quick", "--out", str(out)], capture_output=True, text=True,
                          timeout=600, cwd=out.parent)
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


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_index_html_renders_in_headless_chromium(quick_report):
    browser, driver_path = _chromium(), shutil.which("chromedriver")
    if browser is None or driver_path is None:
        msg = "headless browser check needs Chromium and ChromeDriver (apt install chromium chromium-driver)"
        if os.environ.get("GENBAYES_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (in the test extra)")
    from selenium.webdriver.chrome.service import Service

    out, _ = quick_report
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        drv.get((out / "index.html").resolve().as_uri())
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
    finally:
        drv.quit()
    assert len(state) == len(SECTIONS)
    for sec, want in zip(state, [TITLES[n] for n in SECTIONS]):
        assert sec["title"] and want in sec["title"], (sec["title"], want)
        assert sec["text"] > 40 and sec["rows"] >= 1, sec
        assert sec["imgs"] and all(i["ok"] and i["shown"] for i in sec["imgs"]), sec
