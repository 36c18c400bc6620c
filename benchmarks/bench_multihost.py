"""Exhaustive S_CV over a ``jax.distributed`` job on this machine, against one process on one device.

    python benchmarks/bench_multihost.py            # n = 24, p = 12: C(24, 12) = 2,704,156 held-out sets
    python benchmarks/bench_multihost.py --quick    # n = 20, p = 10: 184,756 held-out sets

Runs ``gb.cv.lpo(family, y, p=p, method="exact")`` (every held-out set of size p, exact conjugate
predictives, float64) in four layouts, one after another, each in fresh processes started on
loopback (``genbayes._multihost.launch_local``, gloo CPU collectives):

    1 process x 1 device   (the baseline)
    1 process x 2 devices  (single-process sharding, docs/scaling.md)
    2 processes x 1 device (the same 2 devices, split over two processes: the multi-process overhead)
    2 processes x 2 devices

Each process times the call twice: cold (tracing, compiling and running) and warm (the compiled
programs reused); a job's time is its slowest process's. Prints the times, the ratios against the
baseline, and checks that every layout gives the baseline's S_CV bit for bit (the values are exact
and independent: no cross-set sums on device).

On a machine with C cores, D devices in all can give at most min(D, C) times the baseline:
XLA runs one CPU device's share mostly on one core. On a 2-core machine, 4 devices (2 x 2) are
4 programs sharing 2 cores, so expect at most ~2x, less the per-batch gather and placement
costs and whatever else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

WORKER = r"""
import json, sys, time
from genbayes._multihost import initialize_from_env
pid, nproc = initialize_from_env()
import jax, numpy as np, numpyro
numpyro.enable_x64()
import genbayes as gb

n, p, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
fam = gb.conjugate.NormalKnownVariance(0.0, 4.0, 1.0)
y = np.random.default_rng(0).normal(1.0, 1.0, n)
times = []
for _ in range(2):
    t0 = time.perf_counter()
    r = gb.cv.lpo(fam, y, p=p, method="exact")
    times.append(time.perf_counter() - t0)
json.dump({"cold": times[0], "warm": times[1], "value": r.value, "num_subsets": r.num_subsets,
           "devices": len(jax.devices())}, open(f"{out}/result{pid}.json", "w"))
"""

LAYOUTS = ((1, 1), (1, 2), (2, 1), (2, 2))


def main(argv=None):
    from genbayes._multihost import launch_local

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 20, p = 10 instead of n = 24, p = 12")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--p", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=900, help="seconds allowed per layout (default 900)")
    args = ap.parse_args(argv)
    n = args.n or (20 if args.quick else 24)
    p = args.p or n // 2
    env = dict(os.environ)
    env.pop("JAX_ENABLE_X64", None)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                         env.get("PYTHONPATH", "")])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-multihost-") as tmp:
        worker = os.path.join(tmp, "worker.py")
        with open(worker, "w") as f:
            f.write(WORKER)
        for procs, devs in LAYOUTS:
            out = os.path.join(tmp, f"{procs}x{devs}")
            os.makedirs(out)
            launch_local([worker, str(n), str(p), out], procs, devs, timeout_s=args.timeout, env=env, log_dir=out)
            res = [json.load(open(os.path.join(out, f"result{i}.json"))) for i in range(procs)]
            rows.append({"layout": f"{procs} x {devs}", "cold": max(r["cold"] for r in res),
                         "warm": max(r["warm"] for r in res), "value": res[0]["value"],
                         "same_on_all": len({r["value"] for r in res}) == 1, "sets": res[0]["num_subsets"]})
            print(f"  {procs} process(es) x {devs} device(s): cold {rows[-1]['cold']:.2f} s, warm {rows[-1]['warm']:.2f} s",
                  flush=True)
    base = rows[0]
    print(f"\nexhaustive S_CV, n = {n}, p = {p}: {base['sets']:,} held-out sets, float64, "
          f"{os.cpu_count()} CPU cores")
    print(f"{'processes x devices':>20} {'cold s':>8} {'warm s':>8} {'speed-up warm':>14} {'speed-up cold':>14}  S_CV")
    for r in rows:
        print(f"{r['layout']:>20} {r['cold']:8.2f} {r['warm']:8.2f} {base['warm'] / r['warm']:13.2f}x "
              f"{base['cold'] / r['cold']:13.2f}x  {r['value']!r}")
    same = all(r["value"] == base["value"] and r["same_on_all"] for r in rows)
    print(f"ratio (1 x 1) / (2 x 2), warm: {base['warm'] / rows[-1]['warm']:.2f}; "
          f"S_CV bit for bit equal in every layout and process: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
