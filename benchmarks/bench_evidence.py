"""Benchmark: evidence estimators on radiata pine, and the batched ladder against a loop of MCMC runs.

1. Williams' radiata pine (both Friel & Wyse 2012 models): each method's log Z, absolute error against
   the closed form, SE and wall time, side by side in one run.
2. Power posteriors: the K + 1 temperatures drawn as one vmapped NUTS program (gb.batched.run) against
   the baseline a user would write, a Python loop of K + 1 numpyro.infer.MCMC runs (one MCMC object
   re-run with β as a model argument, jit_model_args=True, so it compiles once). Same warm-up, draws and
   NUTS settings; the ratio (loop time / batched time) is printed.

Usage: python benchmarks/bench_evidence.py [--quick]
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.infer import MCMC, NUTS

import genbayes as gb
from genbayes import evidence
from genbayes.models import radiata_pine


def table(quick):
    opts = {}
    if quick:
        opts = {"smc": {"num_particles": 300, "num_runs": 4},
                "thermodynamic": {"num_samples": 500, "num_warmup": 300}}
        opts["stepping_stone"] = opts["thermodynamic"]
    for cov in ("density", "adjusted_density"):
        X, y = radiata_pine.design(cov)
        fam = radiata_pine.prior()
        exact = float(fam.log_evidence(X, y))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = evidence.compare(fam, X, y, methods=["exact", "laplace", "smc", "stepping_stone", "thermodynamic"],
                                   rng_key=jax.random.PRNGKey(0), options=opts)
        print(f"\nradiata pine, {cov}: exact log Z = {exact:.4f}")
        print(f"{'method':>16} {'log Z':>11} {'|error|':>9} {'SE':>8} {'|err|/SE':>9} {'time s':>8}")
        for m, ev in res.items():
            err = abs(ev.log_z - exact)
            z = err / ev.se if ev.se > 0 else float("nan")
            note = " (same run as stepping_stone)" if ev.diagnostics.get("shared_run_with") else ""
            print(f"{m:>16} {ev.log_z:11.4f} {err:9.4f} {ev.se:8.4f} {z:9.2f} {ev.diagnostics.get('time_s', 0):8.2f}{note}")


def ladder_vs_loop(quick):
    X, y = radiata_pine.design("density")
    fam = radiata_pine.prior()
    K = 32
    ladder = evidence.default_ladder(K)
    num_warmup, num_samples = (300, 500) if quick else (500, 1000)
    X, y = jnp.asarray(X), jnp.asarray(y)

    def tempered_model(beta, X, y):
        with gb.tempered(temperature=beta):
            fam.model(X, y)

    t0 = time.perf_counter()
    res = gb.batched.run(fam.model, jnp.asarray(ladder)[:, None], X, y, num_warmup=num_warmup, num_samples=num_samples,
                         rng_key=jax.random.PRNGKey(0), dense_mass=True, progress=False)
    jax.block_until_ready(res.samples)
    t_batched = time.perf_counter() - t0

    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(tempered_model, dense_mass=True), num_warmup=num_warmup, num_samples=num_samples,
                progress_bar=False, jit_model_args=True)
    draws = []
    for k, beta in enumerate(ladder):
        mcmc.run(jax.random.PRNGKey(k), jnp.asarray(beta), X, y)
        draws.append(mcmc.get_samples()["tau"])
    jax.block_until_ready(draws)
    t_loop = time.perf_counter() - t0
    print(f"\npower-posterior ladder, K + 1 = {K + 1} temperatures x ({num_warmup} warm-up + {num_samples} draws), "
          f"{jax.device_count()} device(s) [{jax.devices()[0].platform}]")
    print(f"  batched (one vmapped NUTS program): {t_batched:7.2f} s  (compile included)")
    print(f"  loop of {K + 1} numpyro MCMC runs:      {t_loop:7.2f} s  (compiled once, jit_model_args=True)")
    print(f"  ratio loop / batched: {t_loop / t_batched:.2f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    numpyro.enable_x64()
    table(a.quick)
    ladder_vs_loop(a.quick)
