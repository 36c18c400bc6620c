"""Compilations of the first and second call of every public entry point (issue 21).

Each case of ``tests/compile_cases.py`` is called twice with inputs of the same shapes but other
values (data, hyperparameters, random key); the second call should compile nothing. Prints one
row per entry point: compilations and seconds of each call (the seconds include compiling).

    PYTHONPATH=. python benchmarks/compile_counts.py [--f32] [NAME ...]
"""

from __future__ import annotations

import sys
import time
import warnings


def main(argv):
    f32 = "--f32" in argv
    names = [a for a in argv if not a.startswith("--")]
    import numpyro

    if not f32:
        numpyro.enable_x64()
    from genbayes._programs import count_compilations
    from tests.compile_cases import CASES

    print(f"{'entry point':34s} {'1st: #comp':>10s} {'s':>6s}   {'2nd: #comp':>10s} {'s':>6s}")
    for name, case in CASES.items():
        if names and name not in names:
            continue
        row = []
        for i in range(2):
            t = time.perf_counter()
            with count_compilations() as c, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    case(i)
                except Exception as e:  # noqa: BLE001 - report and go on
                    print(f"{name}: {type(e).__name__}: {e}"[:300])
            row.append((c.count, time.perf_counter() - t))
        print(f"{name:34s} {row[0][0]:10d} {row[0][1]:6.2f}   {row[1][0]:10d} {row[1][1]:6.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
