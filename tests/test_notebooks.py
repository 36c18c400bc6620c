"""Every notebook in notebooks/ runs top to bottom at reduced size, so none can rot.

Running all of them takes several minutes on a 2-core machine, which does not fit the test
suite's budget yet; they run when ``GENBAYES_TEST_NOTEBOOKS=1`` is set (and are reported as
skipped otherwise). Bringing them into every CI run within budget is part of the "whole
product" issue.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("GENBAYES_TEST_NOTEBOOKS") != "1", reason="set GENBAYES_TEST_NOTEBOOKS=1 to run the notebooks")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    env = dict(os.environ, GENBAYES_NOTEBOOK_QUICK="1", MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{path.name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
