"""Every notebook in notebooks/ runs top to bottom at reduced size, so none can rot.

Each notebook (jupytext percent format, so a plain Python script) runs in a subprocess with
``GENBAYES_NOTEBOOK_QUICK=1``, which selects its small sizes, and the Agg backend for its plots.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))


def test_every_notebook_is_collected():
    assert len(NOTEBOOKS) >= 6, NOTEBOOKS


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    env = dict(os.environ, GENBAYES_NOTEBOOK_QUICK="1", MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{path.name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
