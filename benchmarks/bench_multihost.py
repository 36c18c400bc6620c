"""Exhaustive S_CV over a ``jax.distributed`` job on this machine, against one process on one device.

    python benchmarks/bench_multihost.py            # n = 24: lpo p = 12 (2,704,156 sets), identity (16,777,215 sets)
    python benchmarks/bench_multihost.py --quick    # n = 20: lpo p = 10 (184,756 sets), identity (1,048,575 sets)

Two exhaustive, exact computations on a conjugate family (NormalKnownVariance, float64):
``gb.cv.lpo(family, y, p=n // 2, method="exact")`` (every held-out set of size p; ``chunk`` set so
that each device evaluates ``--chunk`` sets at a time in every layout, since lpo splits its chunk
between a process's devices and the chunk size alone changes the speed) and
``gb.cv.identity(family, y)`` (S_CV(p) for every p from all 2^n − 1 held-out sets), in four
layouts, one after another, each in fresh processes started on loopback
(``genbayes._multihost.launch_local``, gloo CPU collectives):

    1 process x 1 device   (the baseline)
    1 process x 2 devices  (single-process sharding, docs/scaling.md)
    2 processes x 1 device (the same 2 devices, split over two processes: the multi-process overhead)
    2 processes x 2 devices

Each process times each call cold (tracing, compiling and running), then ``--warm-calls`` times
(default 3) with the compiled programs reused, keeping the fastest warm call (the machine may be
shared); a job's time is its slowest process's. "warm CPU s" is the CPU time of that fastest warm
call summed over the job's processes: unlike wall time it hardly depends on other work on the
machine, and its ratio to the baseline is the extra work the layout costs (a perfect split keeps 1x). Prints the times and the speed-ups
against the baseline, and checks the results: S_CV(p) of lpo bit for bit in every layout (exact,
independent values per held-out set), identity's to 1e-12 relative (per-device partial sums).

On a machine with C cores, D devices in all can give at most min(D, C) times the baseline:
XLA runs one CPU device's share mostly on one core. On a 2-core machine, 4 devices (2 x 2) are
4 programs sharing 2 cores, so expect at most ~2x, less the fixed per-call costs (planning,
tracing, the final gather, host-side sums) and whatever else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

WORKER = r"""
import json, sys, time
from genbayes._multihost import initialize_from_env
pid, nproc = initialize_from_env()
import jax, numpy as np, numpyro
numpyro.enable_x64()
import genbayes as gb

n, p, out, warm_calls, chunk = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
chunk *= jax.local_device_count()  # lpo splits its chunk between the local devices: the same per device everywhere
fam = gb.conjugate.NormalKnownVariance(0.0, 4.0, 1.0)
y = np.random.default_rng(0).normal(1.0, 1.0, n)
res = {"devices": len(jax.devices())}
for name, call in (("lpo", lambda: gb.cv.lpo(fam, y, p=p, method="exact", chunk=chunk)), ("identity", lambda: gb.cv.identity(fam, y, max_subsets=2**n))):
    times, cpu = [], []
    for _ in range(1 + warm_calls):
        t0, c0 = time.perf_counter(), time.process_time()
        r = call()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    value = r.value if name == "lpo" else np.asarray(r.s_cv).tolist()
    res[name] = {"cold": times[0], "warm": min(times[1:]), "cpu": min(cpu[1:]), "value": value,
                 "sets": r.num_subsets if name == "lpo" else 2**n - 1}
json.dump(res, open(f"{out}/result{pid}.json", "w"))
"""

LAYOUTS = ((1, 1), (1, 2), (2, 1), (2, 2))


def main(argv=None):
    from genbayes._multihost import launch_local

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 20, p = 10 instead of n = 24, p = 12")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--p", type=int, default=None)
    ap.add_argument("--warm-calls", type=int, default=3, help="warm calls timed after the cold one; the fastest counts")
    ap.add_argument("--chunk", type=int, default=1 << 13,
                    help="held-out sets each device evaluates at once in lpo, the same in every layout (default 8192)")
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
            launch_local([worker, str(n), str(p), out, str(args.warm_calls), str(args.chunk)], procs, devs, timeout_s=args.timeout, env=env, log_dir=out)
            res = [json.load(open(os.path.join(out, f"result{i}.json"))) for i in range(procs)]
            row = {"layout": f"{procs} x {devs}"}
            for name in ("lpo", "identity"):
                row[name] = {"cold": max(r[name]["cold"] for r in res), "warm": max(r[name]["warm"] for r in res),
                             "cpu": sum(r[name]["cpu"] for r in res),
                             "value": res[0][name]["value"], "sets": res[0][name]["sets"],
                             "same_on_all": all(r[name]["value"] == res[0][name]["value"] for r in res)}
            rows.append(row)
            print(f"  {procs} process(es) x {devs} device(s): " + ", ".join(
                f"{k} cold {row[k]['cold']:.2f} s warm {row[k]['warm']:.2f} s" for k in ("lpo", "identity")), flush=True)
    base = rows[0]
    print(f"\n{os.cpu_count()} CPU cores (os.cpu_count()), float64; a job's time is its slowest process's")
    ok = True
    for name, what in (("lpo", f"gb.cv.lpo(p={p}, method='exact'): S_CV({p}) over all {base['lpo']['sets']:,} held-out sets"),
                       ("identity", f"gb.cv.identity: S_CV(p) for every p over all {base['identity']['sets']:,} held-out sets")):
        print(f"\n{what}, n = {n}")
        print(f"{'processes x devices':>20} {'cold s':>8} {'warm s':>8} {'speed-up warm':>14} {'speed-up cold':>14} "
              f"{'warm CPU s':>11} {'CPU / 1 x 1':>12}")
        for r in rows:
            print(f"{r['layout']:>20} {r[name]['cold']:8.2f} {r[name]['warm']:8.2f} "
                  f"{base[name]['warm'] / r[name]['warm']:13.2f}x {base[name]['cold'] / r[name]['cold']:13.2f}x "
                  f"{r[name]['cpu']:11.2f} {r[name]['cpu'] / base[name]['cpu']:11.2f}x")
        if name == "lpo":
            same = all(r[name]["value"] == base[name]["value"] and r[name]["same_on_all"] for r in rows)
            print(f"S_CV({p}) bit for bit equal in every layout and process: {same}")
        else:
            dev = max(float(np.max(np.abs(np.subtract(r[name]["value"], base[name]["value"])) /
                                np.abs(base[name]["value"]))) for r in rows)
            same = dev < 1e-12 and all(r[name]["same_on_all"] for r in rows)
            print(f"largest relative difference of S_CV(p) from 1 x 1: {dev:.1e} (sums reassociated across devices)")
        ok = ok and same
        print(f"ratio (1 x 1) / (2 x 2), warm: {base[name]['warm'] / rows[-1][name]['warm']:.2f}")
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
