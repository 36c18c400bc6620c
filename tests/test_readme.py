"""The README's Python snippets run as written, print no warning, and give what they promise.

A new user's first contact is that code block: it is run here in a fresh interpreter (as a user
would paste it), with every warning shown, so a renamed argument, a slow path or an alarming
warning shows up in the suite rather than in a user's terminal.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

# What each printed sentence promises, checked on the values it printed about (not on new runs).
CHECKS = """
import math
assert cal.learning_rate > 0 and math.isfinite(cal.learning_rate), cal
assert abs(float(jnp.median(y)) - float(mu.mean())) < 3 * float(mu.std()), (jnp.median(y), mu.mean(), mu.std())
assert abs(float(rep.gap)) < 1e-3, rep          # float32: the identity holds to rounding
assert ev.valid and abs(z) < 3, ev
assert np.all(np.abs(sd - 0.559) < 0.05), sd    # the symmetrised-KL optimum (tests/test_vcd.py derives it)
assert math.isfinite(float(loss))
print("TOUR OK", cal.learning_rate, float(rep.gap))
"""

CORE_CHECKS = """
assert U.num_units == 20 and G.num_units == 4
m = res.samples["theta"][:, :, 0].mean(axis=1)
# with group 0 held out (row 0) theta[0] shrinks to mu; with it (rows 1-3) it follows group 0's data
assert abs(float(m[1:].mean()) - float(y[:5].mean())) < 1.0 and float(m[0]) > float(m[1:].mean())
print("CORE OK")
"""


def python_blocks() -> list[str]:
    text = README.read_text()
    start = text.index("## 30-second tour")
    return re.findall(r"```python\n(.*?)```", text[start:text.index("## Capabilities")], re.S)


def tour_code() -> str:
    blocks = python_blocks()
    assert blocks, "the README's tour has no python code block"
    return blocks[0]


@pytest.mark.slow
def test_readme_tour_runs_without_warnings(tmp_path):
    script = tmp_path / "tour.py"
    script.write_text(tour_code() + CHECKS)
    out = subprocess.run([sys.executable, "-W", "always", str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, f"the README tour failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    assert "TOUR OK" in out.stdout
    # tqdm's progress bars go to stderr; anything else there is a warning or a message a user would see
    lines = [ln for ln in out.stderr.replace("\r", "\n").splitlines() if ln.strip() and "it/s" not in ln]
    assert not lines, "the README tour printed:\n" + "\n".join(lines[:20])
    # every step prints a sentence saying how to read its number
    for step in ("1. learning rate", "2. sum_p S_CV(p)", "standard errors from the exact value", "3. VCD's fitted sds",
                 "4. beta-ELBO loss"):
        assert step in out.stdout, out.stdout


@pytest.mark.slow
def test_readme_core_block_runs(tmp_path):
    blocks = python_blocks()
    assert len(blocks) == 2, "the tour section has the tour and the core block"
    script = tmp_path / "core.py"
    script.write_text(blocks[1] + CORE_CHECKS)
    out = subprocess.run([sys.executable, "-W", "always", str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, f"the README core block failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    assert "CORE OK" in out.stdout and "observation units" in out.stdout


@pytest.mark.slow
def test_readme_own_model_block_runs_from_the_command_line(tmp_path, monkeypatch, capsys):
    """The "Your own model" section: its model file, written as shown, with the data file it describes
    (the numbers of its `load_data`), gives the printed Laplace value from `genbayes evidence`."""
    text = README.read_text()
    start = text.index("## Your own model from the command line")
    block = re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)
    (tmp_path / "mymodel.py").write_text(block)
    ns = {}
    exec(compile(block, "mymodel.py", "exec"), ns)
    d = ns["load_data"]()
    rows = ["X[0],X[1],y"] + [f"{int(x0)},{float(x1)!r},{float(y)!r}" for (x0, x1), y in zip(d["X"], d["y"])]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    head = text[start:].split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    assert rows[:3] == head[:3], "the README's data.csv excerpt is not load_data's numbers"
    from genbayes.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["evidence", "mymodel.py:model", "--data", "data.csv", "--methods", "laplace"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^laplace\s+-22\.3008\s", out, re.M), out       # the value the README prints
    assert main(["evidence", "mymodel.py:model", "--data", ":load_data", "--methods", "laplace"]) == 0
    assert re.search(r"^laplace\s+-22\.3008\s", capsys.readouterr().out, re.M)
