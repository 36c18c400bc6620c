"""Sections of ``genbayes demo``: one module per capability.

Each module exposes ``section(outdir: pathlib.Path, *, quick: bool, seed: int) -> Section``,
which runs its part of the tour on embedded or simulated data (no network), writes its PNG
files into ``outdir`` and returns a :class:`Section` for the report. The CLI runs the modules
listed in ``SECTIONS`` in order.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

SECTIONS = ["conjugate", "gibbs", "cv", "evidence", "vcd", "infomax"]


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
        >>> s = Section("Demo", "How to read it.", {"p": [1, 2], "value": [0.5, 0.25]})
        >>> print(s.table_markdown())
        | p | value |
        |---|---|
        | 1 | 0.5 |
        | 2 | 0.25 |
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
        """One table cell as text: floats to 6 significant digits, anything else by ``str``."""
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    def table_markdown(self) -> str:
        cols = list(self.table)
        rows = list(zip(*[self.table[c] for c in cols]))
        # a literal "|" (as in the column "|error|/SE") would split a cell: escape it
        fmt = lambda v: self.cell(v).replace("|", "\\|")  # noqa: E731
        lines = ["| " + " | ".join(fmt(c) for c in cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
        return "\n".join(lines)

    def table_text(self) -> str:
        cells = [[c] + [self.cell(v) for v in self.table[c]] for c in self.table]
        widths = [max(len(x) for x in col) for col in cells]
        out = []
        for i in range(len(cells[0])):
            out.append("  ".join(col[i].rjust(w) for col, w in zip(cells, widths)))
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
        return "\n".join(out)


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
