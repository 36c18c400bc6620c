"""Writing the demo report: ``report.md`` and a self-contained ``index.html`` (images embedded)."""

from __future__ import annotations

import base64
import html
import os
import tempfile
from pathlib import Path


def _write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file in ``path``'s folder, fsync it, and rename it onto ``path``.

    A kill leaves the old file or the new one, never a truncated one; a symbolic link at ``path``
    is replaced by the file, never followed out of the folder.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_report(out: Path, sections, *, quick: bool, seed: int) -> list[Path]:
    """Write ``report.md`` and a self-contained ``index.html`` (PNGs embedded as base64) into ``out``.

    Args:
        out: the report folder (must exist; the sections' PNGs are already there). Each file is
            written to a temporary file and renamed into place (a link there is replaced, not followed).
        sections: the :class:`genbayes.demos.Section` objects, in order.
        quick: whether this was a ``--quick`` run (stated at the top of the report).
        seed: the run's seed (stated at the top of the report).

    Returns:
        ``[report.md path, index.html path]``.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from genbayes.demos import Section
        >>> from genbayes.report import write_report
        >>> with tempfile.TemporaryDirectory() as d:
        ...     paths = write_report(Path(d), [Section("S", "Read it so.", {"a": [1]})], quick=True, seed=0)
        ...     [p.name for p in paths], "<h2>S</h2>" in paths[1].read_text()
        (['report.md', 'index.html'], True)
    """
    out = Path(out)
    md = [f"# genbayes demo report\n\nRun: {'quick' if quick else 'full'}, seed {seed}.\n"]
    for s in sections:
        md.append(f"## {s.title}\n\n{s.text}\n\n{s.table_markdown()}\n")
        md += [f"![{Path(p).stem}]({Path(p).name})\n" for p in s.images]
        md.append(f"Checks: {'passed' if s.ok else 'FAILED'}\n")
    md_path = out / "report.md"
    _write_text_atomic(md_path, "\n".join(md))

    body = []
    for s in sections:
        cols = list(s.table)
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(s.cell(v))}</td>" for v in r) + "</tr>"
            for r in zip(*[s.table[c] for c in cols])
        )
        imgs = "".join(
            f'<img alt="{html.escape(Path(p).stem)}" src="data:image/png;base64,'
            f'{base64.b64encode(Path(p).read_bytes()).decode()}">'
            for p in s.images
        )
        status = "passed" if s.ok else "FAILED"
        body.append(
            f'<section><h2>{html.escape(s.title)}</h2><p>{html.escape(s.text)}</p>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{imgs}"
            f'<p class="{status}">Checks: {status}</p></section>'
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>genbayes demo report</title>"
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:3px 6px}"
        "img{max-width:100%;display:block;margin:1em 0}.FAILED{color:#b00;font-weight:bold}</style></head>"
        f"<body><h1>genbayes demo report</h1><p>Run: {'quick' if quick else 'full'}, seed {seed}.</p>"
        + "".join(body)
        + "</body></html>"
    )
    html_path = out / "index.html"
    _write_text_atomic(html_path, page)
    return [md_path, html_path]
