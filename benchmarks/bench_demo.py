"""Benchmark: ``genbayes demo`` — its XLA flags (fast compile, XLA defaults, its own per-section choice) and its compilation cache.

The demo (like the test suite) is mostly XLA compiling small programs. Three flag settings: the
fast-compile flags forced on every section (``genbayes.cli.FAST_COMPILE_FLAGS``: LLVM at -O0 and
XLA's legacy CPU emitters), XLA's defaults forced on every section (spelled out in ``XLA_FLAGS``;
the demo never overrides a flag already there), and the demo's own choice (nothing forced: fast
compile except the run-bound sections, ``genbayes.cli._RUN_BOUND_SECTIONS``). Each run is a fresh
process and must pass its own checks; wall and CPU time are printed.

* **flags** (default): the three alternate, ``--repeats`` times each, with the compilation cache
  off; ratios of the medians against the demo's choice.
* **cache** (``--cache``): for each setting, a first run with an empty cache folder and a second
  run with the same folder (what a user sees running the demo twice); the ratio first / second,
  and each setting against the demo's choice on first and on second runs.

Usage: python benchmarks/bench_demo.py [--full] [--repeats N] [--cache]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
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


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(flags: str, full: bool, cache: str = "off") -> tuple[float, float, dict[str, float]]:
    """One demo in a fresh process: wall seconds, CPU seconds of it and its workers, per-section seconds.

    The CPU time is the steadier measure on a loaded machine (other jobs stretch the wall time).
    """
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu", GENBAYES_COMPILATION_CACHE=cache)
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "genbayes.cli", "demo", "--out", out] + ([] if full else ["--quick"])
        t0, c0 = time.perf_counter(), _children_cpu()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"demo failed with XLA_FLAGS={flags!r}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    sections = {m[1]: float(m[2]) for m in re.finditer(r"^## \[\d+/\d+\] (.+?)  \(([\d.]+) s, ok\)", proc.stdout, re.M)}
    return wall, cpu, sections


def _show(name: str, wall: float, cpu: float, sections: dict[str, float]) -> None:
    print(f"{name:>24}: {wall:6.1f} s wall, {cpu:6.1f} s CPU   " + ", ".join(f"{k.split(':')[0][:24]} {v:.1f}" for k, v in sections.items()),
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the full demo (default: --quick)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cache", action="store_true", help="measure the compilation cache (first run against second)")
    args = ap.parse_args()
    ours = os.environ.get("XLA_FLAGS", "") + " " + " ".join(f"{k}={v}" for k, v in FAST_COMPILE_FLAGS.items())
    base = os.environ.get("XLA_FLAGS", "") + " " + " ".join(f"{k}={v}" for k, v in XLA_DEFAULTS.items())
    # the demo's own choice: no flag forced, so each section gets the flags genbayes.cli picks for it
    # (fast compile, except the run-bound sections of genbayes.cli._RUN_BOUND_SECTIONS)
    choice = "demo's choice"
    arms = (("XLA defaults", base.strip()), ("fast compile", ours.strip()), (choice, os.environ.get("XLA_FLAGS", "").strip()))
    print(f"genbayes demo {'(full)' if args.full else '--quick'}, {os.cpu_count()} CPUs, {args.repeats} runs each"
          + (", compilation cache: first run (empty folder) then second" if args.cache else ", no compilation cache"))
    times: dict[str, dict[str, list[float]]] = {"wall": {}, "CPU": {}}

    def record(name, flags, cache="off"):
        wall, cpu, sections = run(flags, args.full, cache=cache)
        times["wall"].setdefault(name, []).append(wall)
        times["CPU"].setdefault(name, []).append(cpu)
        _show(name, wall, cpu, sections)

    for r in range(args.repeats):
        for name, flags in arms if r % 2 == 0 else arms[::-1]:
            if not args.cache:
                record(name, flags)
                continue
            with tempfile.TemporaryDirectory() as folder:
                for run_name in ("first", "second"):
                    record(f"{name}, {run_name}", flags, cache=folder)
    for measure, by_name in times.items():
        med = {k: statistics.median(v) for k, v in by_name.items()}
        print(f"\nmedian {measure}: " + ", ".join(f"{k} {v:.1f} s" for k, v in med.items()))
        if not args.cache:
            for name, _ in arms[:2]:
                print(f"  ratio {name} / {choice}: {med[name] / med[choice]:.2f}x")
            continue
        for name, _ in arms:
            print(f"  {name}: first / second run {med[f'{name}, first'] / med[f'{name}, second']:.2f}x")
        for run_name in ("first", "second"):
            for name, _ in arms[:2]:
                mine = med[f"{choice}, {run_name}"]
                print(f"  {run_name} run: {name} / {choice} {med[f'{name}, {run_name}'] / mine:.2f}x")


if __name__ == "__main__":
    main()
