"""gb.batched (each kernel) against a compiled-once NUTS loop, in effective samples per second.

Logistic regression (d = 5), B Bayesian-bootstrap weight vectors (n · Dirichlet(1, ..., 1)), for
each n and B asked for. Three kinds of run, timed warm (each compiled once before timing), in
alternating rounds so that load from other processes on the machine falls on all of them alike:

- ``loop``: the baseline a careful NumPyro user writes: NumPyro's functional NUTS
  (``numpyro.infer.hmc.hmc(potential_fn, algo="NUTS")``, windowed adaptation) for one weight
  vector, warm-up and draws under ``lax.scan``, jitted once with the weights as an argument, and
  called once per posterior in a Python loop. Its cost per posterior does not depend on B, so it
  runs on the first ``min(B, --loop-max)`` weight vectors; ESS per second is a rate, so the subset
  estimates it without bias.
- ``gb-<kernel>-1dev``: ``gb.batched.run(..., kernel=<kernel>, shard=False)`` on one device.
- ``gb-<kernel>-<k>dev``: the same with ``shard=True``, the B axis split across k CPU devices
  (``--devices k``; the process splits the CPU with ``jax.config.update("jax_num_cpu_devices", k)``
  before JAX starts, so one process compares 1 device against k).

The measure is ArviZ's rank-normalised bulk ESS (``az.ess``, Vehtari et al. 2021): per posterior,
the minimum over the d coefficients (over all chains of that posterior for ``chees``), summed
over the posteriors run, divided by the warm wall time (warm-up included). Printed per (n, B):
ESS/s of each run, its ratio to the loop, and CPU seconds (``resource.getrusage``) beside wall
seconds, each the median over rounds; ratios are medians of per-round ratios.

    PYTHONPATH=. python benchmarks/bench_batched_ess.py --n 100 1000 10000 --B 8 32 128 --devices 2 --rounds 2

Measured on the idle 2-core machine (ESS/s as a multiple of the loop's, median of 2 alternating
rounds, 2 CPU devices, 4 ChEES chains per posterior; ``--warmup 200 --samples 400 --chees-warmup 100
--loop-max 8 --no-one-device`` for n = 100 and 1000, ``--warmup 100 --samples 200`` for n = 10^4;
"shared" is ``--kernels chees-shared --shared-warmup 150 --shared-post-warmup 25``, run separately
for n <= 1000, so its loop differs; "-": not measured on the idle machine):

    n      B    gb NUTS   gb ChEES   gb ChEES shared
    100   32     3.00      4.65        5.08
    100  128     2.55      4.40        5.77
    1000  32     2.25      2.11        6.43
    1000 128     2.54      1.99        6.07
    10^4  32     2.15      0.80        3.74
    10^4 128     1.18       -          3.16

An earlier run with other jobs on the machine (load 5-8) gave at B = 8: NUTS 1.23 / 1.86 / 1.25 and
ChEES 3.05 / 3.29 / 1.10 for n = 100 / 1000 / 10^4.

One device against two (n = 1000, B = 32, ``--rounds 2 --warmup 200 --samples 400
--chees-warmup 100``): NUTS 1.59 against 1.87, ChEES 1.26 against 1.81. ``--chunk 16`` at
n = 1000, B = 128: NUTS 1.61 -> 1.87, ChEES 0.98 -> 1.62; ``--chunk 8`` at n = 10^4, B = 32:
NUTS 1.31 -> 1.34, ChEES 0.56 -> 0.71 (separate runs, so the unchunked numbers differ from the table).
"""

from __future__ import annotations

import argparse
import resource
import time


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--B", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--d", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=200, help="NUTS warm-up iterations (loop and gb nuts)")
    ap.add_argument("--samples", type=int, default=400, help="draws per posterior (every run)")
    ap.add_argument("--chees-warmup", type=int, default=200, help="ChEES warm-up iterations per chain")
    ap.add_argument("--chains", type=int, default=4, help="ChEES chains per posterior")
    ap.add_argument("--kernels", nargs="+", default=["nuts", "chees", "chees-shared"],
                    help="chees-shared: kernel='chees' with shared_warmup=--shared-warmup and "
                         "num_warmup=--shared-post-warmup")
    ap.add_argument("--shared-warmup", type=int, default=200,
                    help="chees-shared: iterations of the one warm-up on the mean weights")
    ap.add_argument("--shared-post-warmup", type=int, default=25,
                    help="chees-shared: each posterior's own warm-up iterations (step size only)")
    ap.add_argument("--devices", type=int, default=2, help="CPU devices for the sharded runs (1: no sharded runs)")
    ap.add_argument("--no-one-device", action="store_true",
                    help="with --devices > 1, time only the sharded gb runs (not the one-device ones)")
    ap.add_argument("--chunk", type=int, nargs="+", default=[0],
                    help="gb.batched.run(chunk_size=...) values to time (0: None, one vmap over all B)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--loop-max", type=int, default=16, help="posteriors the loop runs per round")
    return ap.parse_args()


a = parse()

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", a.devices)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import compiled_nuts_loop  # noqa: E402
from bench_batched import logistic, weighted_logistic  # noqa: E402

import genbayes as gb  # noqa: E402
from genbayes.interop import _arviz  # noqa: E402

az = _arviz()


def min_bulk_ess(draws):
    """draws: (chains, S, d) -> the smallest bulk ESS over the d coefficients."""
    draws = np.asarray(draws)
    return float(min(az.ess(draws[..., j], method="bulk") for j in range(draws.shape[-1])))


def clock():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime + r.ru_stime


def timed(fn):
    (w0, c0) = clock()
    ess = fn()
    (w1, c1) = clock()
    return ess, w1 - w0, c1 - c0


def main():
    print(f"JAX devices: {len(jax.devices())} ({jax.devices()[0].platform}); logistic regression d={a.d}; "
          f"NUTS {a.warmup}+{a.samples}; ChEES {a.chains} chains x ({a.chees_warmup} warm-up + "
          f"{a.samples // a.chains} draws); ChEES shared: {a.shared_warmup} shared + {a.shared_post_warmup} own warm-up; "
          f"{a.rounds} alternating rounds; ESS = min over coefficients of az.ess bulk")
    # one NUTS chain for one weight vector, jitted once (weights, key and data are arguments)
    chain = compiled_nuts_loop(weighted_logistic, a.warmup, a.samples)

    def loop_chain(w, key, X, y):
        return chain(key, w, X, y)[0]["beta"]

    rows = []
    for n in a.n:
        kx, ky, kw = jax.random.split(jax.random.PRNGKey(n), 3)
        X = jax.random.normal(kx, (n, a.d))
        y = jax.random.bernoulli(ky, jax.nn.sigmoid(X @ jnp.linspace(-1, 1, a.d))).astype(jnp.float32)
        for B in a.B:
            W = n * jax.random.dirichlet(kw, jnp.ones(n), (B,))
            runs = {}

            def loop(W=W, X=X, y=y):
                m = min(B, a.loop_max)
                out = [loop_chain(W[b], jax.random.PRNGKey(100 + b), X, y) for b in range(m)]
                draws = jax.block_until_ready(out)
                return sum(min_bulk_ess(d[None]) for d in draws), m

            runs["loop"] = loop
            for kernel in a.kernels:
                shards = [True] if len(jax.devices()) > 1 else [False]
                if len(jax.devices()) > 1 and not a.no_one_device:
                    shards = [False, True]
                for shard, chunk in [(sh, c) for sh in shards for c in a.chunk]:
                    warmup = {"nuts": a.warmup, "chees": a.chees_warmup, "chees-shared": a.shared_post_warmup}[kernel]
                    kw_ = dict(kernel=kernel.split("-")[0], num_warmup=warmup,
                               num_samples=a.samples, shard=shard, progress=False, chunk_size=chunk or None)
                    if kernel != "nuts":
                        kw_["num_chains"] = a.chains
                    if kernel == "chees-shared":
                        kw_["shared_warmup"] = a.shared_warmup

                    def ours(W=W, X=X, y=y, kw_=kw_):
                        res = gb.batched.run(logistic, W, X, y, rng_key=jax.random.PRNGKey(1), **kw_)
                        beta = jax.block_until_ready(res.samples["beta"])
                        ch = res.chains("beta")
                        return sum(min_bulk_ess(ch[b]) for b in range(beta.shape[0])), beta.shape[0]

                    runs[f"gb-{kernel}-{len(jax.devices()) if shard else 1}dev" + (f"-c{chunk}" if chunk else "")] = ours
            compile_s = {}
            for name, fn in runs.items():  # compile (and check) each once
                t0 = time.perf_counter()
                fn()
                compile_s[name] = time.perf_counter() - t0
            per = {name: [] for name in runs}
            for r in range(a.rounds):
                order = list(runs) if r % 2 == 0 else list(runs)[::-1]
                for name in order:
                    (ess, m), wall, cpu = timed(runs[name])
                    per[name].append((ess / wall, ess / m, wall / m, cpu / m))
            loop_rate = [p[0] for p in per["loop"]]
            for name in runs:
                rate = np.median([p[0] for p in per[name]])
                ratio = np.median([p[0] / lr for p, lr in zip(per[name], loop_rate)])
                ess_per = np.median([p[1] for p in per[name]])
                wall_ms = 1e3 * np.median([p[2] for p in per[name]])
                cpu_ms = 1e3 * np.median([p[3] for p in per[name]])
                rows.append((n, B, name, rate, ratio, ess_per, wall_ms, cpu_ms, compile_s[name]))
                print(f"n={n:6d} B={B:4d} {name:16s} ESS/s {rate:9.1f}  x loop {ratio:5.2f}  ESS/posterior "
                      f"{ess_per:6.1f}  wall {wall_ms:7.1f} ms/posterior  CPU {cpu_ms:7.1f} ms/posterior  "
                      f"(first call {compile_s[name]:.1f} s)", flush=True)
    print("\nESS/s ratio to the compiled loop (median over rounds):")
    names = [nm for nm in dict.fromkeys(r[2] for r in rows) if nm != "loop"]
    print("   n      B  " + "  ".join(f"{nm:>14s}" for nm in names))
    for n in a.n:
        for B in a.B:
            vals = {r[2]: r[4] for r in rows if r[0] == n and r[1] == B}
            print(f"{n:6d} {B:4d}  " + "  ".join(f"{vals[nm]:14.2f}" for nm in names))


if __name__ == "__main__":
    main()
