"""Benchmark: ``genbayes demo`` with its fast-compile XLA flags against XLA's defaults.

The demo (like the test suite) is mostly XLA compiling small programs, so on the CPU it asks XLA to
compile fast rather than run fast (``genbayes.cli.FAST_COMPILE_FLAGS``: LLVM at -O0 and XLA's
legacy CPU emitters). The baseline is the same command with XLA's default settings spelled out in
``XLA_FLAGS`` (the demo never overrides a flag already there). The two alternate, ``--repeats``
times each, in fresh processes; the script prints each run's wall time and per-section times, then
the ratio of the medians (baseline / ours). Every run must pass its own checks.

Usage: python benchmarks/bench_demo.py [--full] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from genbayes.cli import FAST_COMPILE_FLAGS

# XLA's own defaults (xla/debug_options_flags.cc: backend optimisation level 3; jaxlib 0.10 emits
# CPU fusions with the MLIR fusion emitters)
XLA_DEFAULTS = {"--xla_backend_optimization_level": "3", "--xla_cpu_use_fusion_emitters": "true"}
assert set(XLA_DEFAULTS) == set(FAST_COMPILE_FLAGS), "benchmark the flags the demo sets"


def run(flags: str, full: bool) -> tuple[float, dict[str, float]]:
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "genbayes.cli", "demo", "--out", out] + ([] if full else ["--quick"])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"demo failed with XLA_FLAGS={flags!r}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    sections = {m[1]: float(m[2]) for m in re.finditer(r"^## \[\d+/\d+\] (.+?)  \(([\d.]+) s, ok\)", proc.stdout, re.M)}
    return wall, sections


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the full demo (default: --quick)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    ours = os.environ.get("XLA_FLAGS", "") + " " + " ".join(f"{k}={v}" for k, v in FAST_COMPILE_FLAGS.items())
    base = os.environ.get("XLA_FLAGS", "") + " " + " ".join(f"{k}={v}" for k, v in XLA_DEFAULTS.items())
    times = {"XLA defaults": [], "fast compile": []}
    print(f"genbayes demo {'(full)' if args.full else '--quick'}, {os.cpu_count()} CPUs, {args.repeats} runs each")
    for r in range(args.repeats):
        for name, flags in (("XLA defaults", base), ("fast compile", ours)) if r % 2 == 0 else \
                (("fast compile", ours), ("XLA defaults", base)):
            wall, sections = run(flags.strip(), args.full)
            times[name].append(wall)
            print(f"{name:>13}: {wall:6.1f} s   " + ", ".join(f"{k.split(':')[0][:24]} {v:.1f}" for k, v in sections.items()),
                  flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nmedian wall: XLA defaults {med['XLA defaults']:.1f} s, fast compile {med['fast compile']:.1f} s; "
          f"ratio {med['XLA defaults'] / med['fast compile']:.2f}x")


if __name__ == "__main__":
    main()
