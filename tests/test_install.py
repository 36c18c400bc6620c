"""Both install modes put the top-level ``models/`` folder at ``genbayes.models``.

The example models live in the repository's ``models/`` folder; ``pyproject.toml`` maps it to the
``genbayes.models`` package (setuptools ``package-dir``). These tests check, from a working
directory outside the repository (so nothing is found through the current directory):

- the editable install (``pip install -e .``, what the README and CI use) imports
  ``genbayes.models`` from ``models/`` (the demo itself runs from another directory in
  ``tests/test_demo_report.py``);
- a wheel built from this checkout holds ``genbayes/models`` with its data files, and
  ``genbayes demo --quick --sections conjugate`` (which reads the bundled data) runs from it, installed
  on its own in a fresh folder.

The wheel is built offline with ``--no-build-isolation`` (setuptools and wheel are in the test
extra).
"""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def _where(tmp_path, env):
    code = "import genbayes, genbayes.models.radiata_pine as r; print(genbayes.__file__); print(r.__file__); print(len(r.load()['strength']))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split()


def test_editable_install_imports_models_from_the_top_level_folder(tmp_path):
    pkg, models_file, n = _where(tmp_path, _clean_env())
    if Path(pkg).resolve().parent.parent != ROOT:
        pytest.skip(f"genbayes is not installed editable from this checkout (it imports from {pkg})")
    assert Path(models_file).resolve() == ROOT / "models" / "radiata_pine.py"
    assert int(n) == 42                      # radiata pine's 42 specimens, read from models/data


@pytest.mark.slow
def test_wheel_holds_the_models_and_runs_the_quick_demo_from_another_directory(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(dist), "--quiet"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = dist.glob("genbayes-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("genbayes/models/__init__.py", "genbayes/models/radiata_pine.py",
              "genbayes/models/data/radiata_pine.csv", "genbayes/models/data/pima_friel_wyse.csv"):
        assert f in names, f"{f} missing from {wheel.name}"
    assert not any(n.startswith("models/") for n in names), "the models folder must not install as `models`"

    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target", str(site),
         str(wheel)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    env = _clean_env(PYTHONPATH=str(site))   # genbayes from the wheel; its dependencies from this environment
    pkg, models_file, n = _where(tmp_path, env)
    assert Path(pkg).resolve().is_relative_to(site.resolve()), pkg
    assert Path(models_file).resolve().is_relative_to(site.resolve()), models_file
    assert int(n) == 42

    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    # as a user runs it: the demo chooses each section's XLA flags from the flags the suite started with
    # (the suite's fast-compile ones would hold its run-bound evidence section at -O0 too; conftest.py)
    env["XLA_FLAGS"] = os.environ.get("GENBAYES_SUITE_USER_XLA_FLAGS", env.get("XLA_FLAGS", ""))
    # one section (it reads the bundled radiata pine data through genbayes.models and writes the report);
    # every section of the quick demo runs from the editable install in tests/test_demo_report.py
    demo = subprocess.run([sys.executable, "-c", "from genbayes.cli import main; main()", "demo", "--quick",
                           "--sections", "conjugate", "--out", "report"], capture_output=True, text=True, timeout=900,
                          cwd=run_dir, env=env)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert (run_dir / "report" / "index.html").is_file()
    assert "NormalGammaRegression (radiata pine)" in (run_dir / "report" / "report.md").read_text()
