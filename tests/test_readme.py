"""The README's 30-second tour runs as written, prints no warning, and gives what it promises.

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

CHECKS = """
import math
assert cal.learning_rate > 0 and math.isfinite(cal.learning_rate), cal
assert abs(float(rep.gap)) < 1e-3, rep          # float32: the identity holds to rounding
assert abs(float(rep.total) - float(rep.log_evidence)) < 1e-3
assert math.isfinite(float(run.losses[-1]))
print("TOUR OK", cal.learning_rate, float(rep.gap))
"""


def tour_code() -> str:
    text = README.read_text()
    start = text.index("## 30-second tour")
    m = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert m, "the README's tour has no python code block"
    return m.group(1)


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
