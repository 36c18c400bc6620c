"""The ``genbayes`` command: ``genbayes demo`` (the tour) and one subcommand per capability."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

# modules that contribute a subcommand through ``add_cli(subparsers)``
SUBCOMMAND_MODULES: list[str] = ["genbayes.cv", "genbayes.evidence"]


def _demo(args) -> int:
    from .demos import SECTIONS
    from .report import write_report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.sections or SECTIONS
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        print(f"genbayes demo: unknown section(s) {unknown}; choose from {SECTIONS}", file=sys.stderr)
        return 2
    print(f"genbayes demo ({'quick' if args.quick else 'full'}, seed {args.seed}) -> {out.resolve()}")
    sections, t_all = [], time.perf_counter()
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ...", flush=True)
        t0 = time.perf_counter()
        mod = importlib.import_module(f"genbayes.demos.{name}")
        sec = mod.section(out, quick=args.quick, seed=args.seed)
        sections.append(sec)
        print(f"\n## {sec.title}  ({time.perf_counter() - t0:.1f} s, {'ok' if sec.ok else 'CHECK FAILED'})")
        print(sec.table_text())
        print(sec.text + "\n", flush=True)
    paths = write_report(out, sections, quick=args.quick, seed=args.seed)
    print(f"Report written in {time.perf_counter() - t_all:.0f} s: " + ", ".join(str(p) for p in paths))
    failed = [s.title for s in sections if not s.ok]
    if failed:
        print(f"Checks failed in: {failed}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``genbayes`` argument parser: ``demo`` plus the subcommands of ``SUBCOMMAND_MODULES``.

    Each module in ``SUBCOMMAND_MODULES`` contributes its subcommand through ``add_cli(subparsers)``.

    Returns:
        argparse.ArgumentParser.
    """
    parser = argparse.ArgumentParser(
        prog="genbayes",
        description="Generalized Bayesian inference for NumPyro: Gibbs posteriors, cross-validation "
        "and the marginal likelihood, VCD, beta-VAE/InfoMax.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="run the tour on embedded data and write a report",
        description="Run every capability on embedded or simulated data (no network), print each "
        "section's table, and write PNG plots and report.md (and index.html) into --out.",
    )
    demo.add_argument("--out", default="genbayes-report", help="report folder (default: ./genbayes-report)")
    demo.add_argument("--quick", action="store_true", help="smaller sizes, for a fast look")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--sections", nargs="+", metavar="NAME", help="run only these sections")
    demo.set_defaults(func=_demo)
    for modname in SUBCOMMAND_MODULES:
        importlib.import_module(modname).add_cli(sub)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``genbayes`` command; prints the help when no subcommand is given.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        int: the exit code (0 on success; 1 when a demo check failed; 2 for a usage error).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
