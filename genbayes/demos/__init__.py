"""Sections of ``genbayes demo``: one module per capability.

Each module exposes ``section(outdir: pathlib.Path, *, quick: bool, seed: int) -> Section``,
which runs its part of the tour on embedded or simulated data (no network), writes its PNG
files into ``outdir`` and returns a :class:`Section` for the report. The CLI runs the modules
listed in ``SECTIONS`` in order.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np

SECTIONS = ["conjugate", "gibbs", "cv", "evidence", "bounds", "vcd", "infomax"]
"""The demo's sections, in report order (``genbayes demo --sections NAME ...`` picks some)."""


@dataclasses.dataclass(frozen=True)
class Section:
    """One part of the demo report.

    Attributes:
        title: section heading.
        text: one or two sentences on what was computed and how to read the table and plot.
        table: column name -> list of cell values (all columns of equal length).
        images: PNG files written into the report folder (paths).
        ok: whether every check in this section passed (printed, and reflected in the exit code).

    Example:
        >>> from genbayes.demos import Section
        >>> s = Section("Demo", "How to read it.", {"p": [1, 2], "value": [0.5, 2.84217e-13],
        ...                                          "mean": [Estimate(1.23399, 0.0061), None], "ok": [True, False]})
        >>> print(s.table_markdown())
        | p | value | mean | ok |
        |---|---|---|---|
        | 1 | 0.5 | 1.2340 ± 0.0061 | yes |
        | 2 | 3e-13 | - | no |
        >>> print(Section("Demo", "", {"|error|": [0.5]}).table_markdown())
        | \\|error\\| |
        |---|
        | 0.5 |
    """

    title: str
    text: str
    table: dict
    images: tuple = ()
    ok: bool = True

    @staticmethod
    def cell(v) -> str:
        """One table cell as text, in the report's one style (see :func:`format_cell`)."""
        return format_cell(v)

    def table_markdown(self) -> str:
        """The section's table as a Markdown table (for ``report.md``)."""
        cols = list(self.table)
        rows = list(zip(*[self.table[c] for c in cols]))
        # a literal "|" (as in the column "|error|/SE") would split a cell: escape it
        fmt = lambda v: self.cell(v).replace("|", "\\|")  # noqa: E731
        lines = ["| " + " | ".join(fmt(c) for c in cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
        return "\n".join(lines)

    def table_text(self) -> str:
        """The section's table as aligned plain text (printed as the section finishes)."""
        cells = [[c] + [self.cell(v) for v in self.table[c]] for c in self.table]
        widths = [max(len(x) for x in col) for col in cells]
        out = []
        for i in range(len(cells[0])):
            out.append("  ".join(col[i].rjust(w) for col, w in zip(cells, widths)))
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
        return "\n".join(out)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate and its standard error, shown as ``value ± se`` to the SE's precision.

    The SE is rounded to two significant digits and the value to the same decimal place; with
    ``se == 0`` (an exact or deterministic value) the value is shown to 6 significant digits.

    Attributes:
        value: the estimate.
        se: its Monte Carlo standard error (0 for an exact value).

    Example:
        >>> from genbayes.demos import Estimate
        >>> str(Estimate(-310.0964, 0.0732)), str(Estimate(0.0308227, 0.00122382)), str(Estimate(-310.12834, 0.0))
        ('-310.096 ± 0.073', '0.0308 ± 0.0012', '-310.128')
    """

    value: float
    se: float = 0.0

    def __str__(self) -> str:
        v, se = float(self.value), float(self.se)
        if not math.isfinite(v):
            return "-"
        if not (math.isfinite(se) and se > 0):
            return f"{v:.6g}"
        decimals = max(0, 1 - math.floor(math.log10(se)))  # two significant digits of the SE
        return f"{v:.{decimals}f} ± {se:.{decimals}f}"


def evidence_columns(results, exact=None) -> dict:
    """The estimator columns shared by the demo's evidence table and ``genbayes evidence``.

    ``method``, ``log Z ± SE`` (an :class:`Estimate`), ``error`` (to the SE's precision) and
    ``|error|/SE`` (to one decimal), the last two ``None`` without an ``exact`` value or, for
    ``|error|/SE``, when the SE is 0 (Laplace, exact).

    Example:
        >>> from genbayes.demos import evidence_columns
        >>> from genbayes.evidence import Evidence
        >>> cols = evidence_columns({"smc": Evidence(-310.141, 0.0173, "smc")}, exact=-310.1283)
        >>> [str(c[0]) for c in cols.values()]
        ['smc', '-310.141 ± 0.017', '-0.013', '0.7']
    """
    cols = {"method": [], "log Z ± SE": [], "error": [], "|error|/SE": []}
    for m, ev in results.items():
        err = None if exact is None else ev.log_z - exact
        places = max(0, 1 - math.floor(math.log10(ev.se))) if ev.se > 0 else 6  # to the SE's precision
        cols["method"].append(m)
        cols["log Z ± SE"].append(Estimate(ev.log_z, ev.se))
        cols["error"].append(None if err is None else float(round(err, places)))
        cols["|error|/SE"].append(None if err is None or not ev.se > 0 else float(round(abs(err) / ev.se, 1)))
    return cols


def format_cell(v) -> str:
    """A table cell in the report's style: meaningful digits, one convention for every section.

    - ``None``, NaN and ``"-"``: ``-`` (a cell the row does not have);
    - booleans: ``yes`` / ``no``;
    - integers as they are; :class:`Estimate`: ``value ± se`` to the SE's precision;
    - other floats: 4 significant digits (no exponent from 1e-3 to 1e6); smaller magnitudes, e.g.
      a rounding-level gap, one significant digit (``3e-13``); exactly 0 as ``0``;
    - anything else by ``str``.

    Example:
        >>> from genbayes.demos import format_cell
        >>> [format_cell(v) for v in (2.84217e-13, 0.100806, 2971.43, 0.0, float("nan"), True, 42, "ok")]
        ['3e-13', '0.1008', '2971', '0', '-', 'yes', '42', 'ok']
    """
    if v is None:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return "-" if math.isnan(v) else str(v)
        if v == 0:
            return "0"
        a = abs(v)
        if a < 1e-3:
            return f"{v:.0e}".replace("e-0", "e-")
        if a >= 1e4:
            return f"{v:.0f}"
        return f"{v:.4g}"
    return str(v)


def mc_summary(draws) -> tuple[Estimate, Estimate]:
    """The mean and the standard deviation of one chain of scalar draws, each with its Monte Carlo SE.

    ArviZ's ``mcse``: the mean's SE from the effective sample size of the draws, the sd's SE from
    that of their squared deviations (with the draws' own kurtosis), so an sd estimated from few
    effective draws gets a wide SE.

    Example:
        >>> import numpy as np
        >>> from genbayes.demos import mc_summary
        >>> m, s = mc_summary(np.random.default_rng(0).normal(size=1000))
        >>> abs(m.value) < 4 * m.se, round(s.se, 3)   # independent draws: SE(sd) ~ 1/sqrt(2 S)
        (True, 0.023)
    """
    from ..interop import _arviz

    az = _arviz()
    x = np.asarray(draws, float).reshape(1, -1)
    return (Estimate(float(x.mean()), float(az.mcse(x, method="mean"))),
            Estimate(float(x.std(ddof=1)), float(az.mcse(x, method="sd"))))


def coverage(draws, lo: float, hi: float, nominal: float) -> Estimate:
    """The fraction of draws in ``[lo, hi]`` (an exact ``nominal`` credible interval), with its Monte Carlo SE.

    SE ``sqrt(q (1 - q) / ESS)`` at the nominal level q, with the effective sample size of the
    indicator (the number of draws when the indicator is constant).

    Example:
        >>> import numpy as np
        >>> from genbayes.demos import coverage
        >>> c = coverage(np.random.default_rng(0).normal(size=2000), -1.645, 1.645, 0.9)
        >>> abs(c.value - 0.9) < 4 * c.se
        True
    """
    from ..interop import _arviz

    x = np.asarray(draws, float)
    ind = ((x >= lo) & (x <= hi)).astype(float)
    ess = float(_arviz().ess(ind[None], method="mean")) if 0 < ind.mean() < 1 else float(x.size)
    ess = ess if np.isfinite(ess) and ess > 0 else float(x.size)
    return Estimate(float(ind.mean()), float(np.sqrt(nominal * (1 - nominal) / ess)))


def z_score(est: Estimate, target: float) -> float:
    """``(est.value - target) / est.se``: the estimate's distance from ``target`` in its own SEs."""
    return (est.value - target) / est.se if est.se > 0 else (0.0 if est.value == target else float("inf"))


def save_figure(fig, path: Path, *, dpi: int = 110) -> Path:
    """Save a section's figure as PNG at ``path`` and close it.

    When the environment variable ``GENBAYES_DEMO_FIGURES`` names a folder, the Figure object is
    also pickled there (``<png stem>.pickle``): the test suite loads those and checks every panel
    with :func:`figure_problems`.

    Returns:
        ``path``.
    """
    import pickle

    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=dpi)
    keep = os.environ.get("GENBAYES_DEMO_FIGURES")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        with open(Path(keep) / f"{Path(path).stem}.pickle", "wb") as fh:
            pickle.dump(fig, fh)
    plt.close(fig)
    return Path(path)


def figure_problems(fig) -> list[str]:
    """What a reader would miss in ``fig``: each data panel needs an x label, a y label and a legend
    that names every line, contour, band, histogram and marker set drawn in it.

    A data panel is an Axes with lines, collections (scatter, contours, bands, error bars) or
    patches (histograms). An artist is named when its label is one of the legend's entries, or when
    it is part of a container (error bar, histogram) whose label is; contours are named through a
    proxy entry carrying the contour set's label. Colour bars are not checked.

    Returns:
        a list of problems, each naming the panel by its title (empty when the figure is fine).

    Example:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> from genbayes.demos import figure_problems
        >>> fig, ax = plt.subplots()
        >>> _ = ax.plot([0, 1], [0, 1], label="fit"); _ = ax.plot([0, 1], [1, 0]); _ = ax.set_title("t")
        >>> figure_problems(fig)
        ["panel 't': no x label", "panel 't': no y label", "panel 't': no legend"]
        >>> _ = ax.set(xlabel="x", ylabel="y"); _ = ax.legend()
        >>> figure_problems(fig)  # the second line has no entry
        ["panel 't': 1 line(s)/set(s) not in the legend (Line2D)"]
        >>> _ = ax.lines[1].set_label("truth"); _ = ax.legend()
        >>> figure_problems(fig)
        []
        >>> plt.close(fig)
    """
    out = []
    for i, ax in enumerate(fig.axes):
        if ax.get_label() == "<colorbar>" or not ax.get_visible():
            continue
        artists = [a for a in (*ax.lines, *ax.collections, *ax.patches) if a.get_visible()]
        if not artists:
            continue
        where = f"panel {(ax.get_title() or f'#{i}')!r}"
        if not ax.get_xlabel().strip():
            out.append(f"{where}: no x label")
        if not ax.get_ylabel().strip():
            out.append(f"{where}: no y label")
        leg = ax.get_legend()
        if leg is None:
            out.append(f"{where}: no legend")
            continue
        shown = {t.get_text() for t in leg.get_texts()}
        covered = set()
        for c in ax.containers:  # an error bar or a histogram is one entry, under any of its parts' labels
            parts = [g for child in c.get_children() for g in (child, *getattr(child, "get_children", list)())]
            if c.get_label() in shown or any(g.get_label() in shown for g in parts):
                covered.update(id(g) for g in parts)
        missing = [a for a in artists if a.get_label() not in shown and id(a) not in covered]
        if missing:
            kinds = sorted({type(a).__name__ for a in missing})
            out.append(f"{where}: {len(missing)} line(s)/set(s) not in the legend ({', '.join(kinds)})")
    return out


def image_path(outdir: Path, name: str) -> Path:
    """``outdir / name``, creating ``outdir`` if needed: where a section writes a PNG.

    Args:
        outdir: the report folder.
        name: the file name, e.g. ``"cv_identity.png"``.

    Returns:
        pathlib.Path.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from genbayes.demos import image_path
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = image_path(Path(d) / "report", "plot.png")
        ...     p.parent.is_dir(), p.name
        (True, 'plot.png')
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    return outdir / name
