"""Writing the demo report: ``report.md`` and a self-contained ``index.html`` (images embedded)."""

from __future__ import annotations

import base64
import datetime
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


def _run_header(*, quick: bool, seed: int, run_seconds: float | None = None, jobs: int | None = None,
               when: datetime.datetime | None = None) -> list[tuple[str, str]]:
    """What a reader needs to reproduce the report: date, package versions, seed, settings, run time.

    Versions are read from the installed distributions (nothing is imported).

    Returns:
        ``[(label, value), ...]``.

    Example:
        >>> import datetime
        >>> from genbayes.report import _run_header
        >>> h = dict(_run_header(quick=True, seed=3, run_seconds=41.6, jobs=2,
        ...                     when=datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.timezone.utc)))
        >>> h["date"], h["run"], h["seed"], h["run time"]
        ('2026-01-02 03:04 UTC', 'quick (genbayes demo --quick)', '3', '42 s wall clock, 2 processes')
        >>> sorted(k for k in h if k.startswith("version"))
        ['versions']
    """
    import importlib.metadata
    import platform

    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    when = when or datetime.datetime.now(datetime.timezone.utc)
    versions = ", ".join(f"{n} {version(n)}" for n in ("genbayes", "jax", "jaxlib", "numpyro"))
    header = [
        ("date", when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("run", "quick (genbayes demo --quick)" if quick else "full (genbayes demo)"),
        ("seed", str(seed)),
        ("versions", f"{versions}, Python {platform.python_version()}"),
        ("machine", f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"),
    ]
    if run_seconds is not None:
        procs = f", {jobs} process{'es' if jobs != 1 else ''}" if jobs else ""
        header.append(("run time", f"{run_seconds:.0f} s wall clock{procs}"))
    return header


def write_report(out: Path, sections, *, quick: bool, seed: int, run_seconds: float | None = None,
                 section_seconds=None, jobs: int | None = None) -> list[Path]:
    """Write ``report.md`` and a self-contained ``index.html`` (PNGs embedded as base64) into ``out``.

    Args:
        out: the report folder (must exist; the sections' PNGs are already there). Each file is
            written to a temporary file and renamed into place (a link there is replaced, not followed).
        sections: the :class:`genbayes.demos.Section` objects, in order.
        quick: whether this was a ``--quick`` run (stated at the top of the report).
        seed: the run's seed (stated at the top of the report).
        run_seconds: the whole run's wall-clock time (stated at the top when given).
        section_seconds: each section's wall-clock time, in the order of ``sections`` (stated under
            each section when given; it includes compiling the section's JAX programs).
        jobs: the number of processes the sections ran in.

    Returns:
        ``[report.md path, index.html path]``.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from genbayes.demos import Section
        >>> from genbayes.report import write_report
        >>> with tempfile.TemporaryDirectory() as d:
        ...     paths = write_report(Path(d), [Section("S", "Read it so.", {"a": [1]})], quick=True, seed=0)
        ...     [p.name for p in paths], "<h2>S</h2>" in paths[1].read_text(), "seed" in paths[0].read_text()
        (['report.md', 'index.html'], True, True)
    """
    out = Path(out)
    header = _run_header(quick=quick, seed=seed, run_seconds=run_seconds, jobs=jobs)
    times = list(section_seconds) if section_seconds is not None else [None] * len(sections)

    def timing(t):
        return "" if t is None else f" Section wall time {t:.1f} s (including compiling its JAX programs)."

    md = ["# genbayes demo report\n", "\n".join(f"- {k}: {v}" for k, v in header) + "\n"]
    for s, t in zip(sections, times):
        md.append(f"## {s.title}\n\n{s.text}\n\n{s.table_markdown()}\n")
        md += [f"![{Path(p).stem}]({Path(p).name})\n" for p in s.images]
        md.append(f"Checks: {'passed' if s.ok else 'FAILED'}.{timing(t)}\n")
    md_path = out / "report.md"
    _write_text_atomic(md_path, "\n".join(md))

    body = []
    for s, t in zip(sections, times):
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
            f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>{imgs}"
            f'<p class="{status}">Checks: {status}.{html.escape(timing(t))}</p></section>'
        )
    meta = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in header)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>genbayes demo report</title>"
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:3px 6px}"
        "td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}table.meta th{text-align:left}"
        "table.meta td{text-align:left}.scroll{overflow-x:auto}"
        "img{max-width:100%;display:block;margin:1em 0}.FAILED{color:#b00;font-weight:bold}</style></head>"
        f"<body><h1>genbayes demo report</h1><table class='meta'>{meta}</table>"
        + "".join(body)
        + "</body></html>"
    )
    html_path = out / "index.html"
    _write_text_atomic(html_path, page)
    return [md_path, html_path]
