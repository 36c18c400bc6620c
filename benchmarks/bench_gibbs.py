"""Benchmarks for Gibbs posteriors (ratios printed: ours vs a baseline run beside it).

1. NUTS on a quantile regression (n = 1000, d = 5, check loss): ``gb.gibbs`` converting a Gaussian
   likelihood model, vs the same model hand-written with ``numpyro.factor``, each one NUTS chain
   compiled once (``_common.compiled_nuts_loop``). Target: time per leapfrog step <= 1.05.
2. One GPC calibration iteration with B bootstrap replicates (default 200) as one vmapped
   ``gb.batched`` program, vs a Python loop over one NUTS chain compiled once with the bootstrap
   weights as an argument (NumPyro's functional ``hmc(..., "NUTS")`` under ``lax.scan``). Not
   ``MCMC(progress_bar=False).run`` per replicate: NumPyro 0.22.0 recompiles that on every call
   (pyro-ppl/numpyro#2171).

Both print cold time (compile included), XLA compile time, compilations and warm time of each side,
with ratios from alternating warm rounds.

Run: ``python benchmarks/bench_gibbs.py [--quick]``.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from _common import compare, compiled_nuts_loop

import genbayes as gb
from genbayes import losses as L
from genbayes.handlers import gibbs
from genbayes.models import quantile_regression as qr


def factor_model(X, y, tau=0.9, w=1.0):
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([X.shape[1]]).to_event(1))
    u = y - X @ beta
    numpyro.factor("check", -w * jnp.sum(jnp.maximum(tau * u, (tau - 1.0) * u)))


def bench_nuts(n, d, num_warmup, num_samples, rounds=3):
    X, y, _ = qr.simulate(jax.random.PRNGKey(0), n, d=d)
    ours = compiled_nuts_loop(gibbs(qr.likelihood_model, loss={"y": L.check(0.9)}), num_warmup, num_samples)
    base = compiled_nuts_loop(factor_model, num_warmup, num_samples)
    key = jax.random.PRNGKey(1)  # the same key for both sides
    res = compare({"gb.gibbs": lambda: ours(key, X, y), "numpyro.factor": lambda: base(key, X, y)}, rounds=rounds,
                  title=f"[nuts] quantile regression n={n} d={d}, one chain of {num_warmup}+{num_samples} NUTS iterations "
                        "(compiled once per side):")
    (s_o, e_o), (s_b, e_b) = res["gb.gibbs"]["out"], res["numpyro.factor"]["out"]
    steps_o, steps_b = float(np.mean(e_o["num_steps"])), float(np.mean(e_b["num_steps"]))
    per_step = (np.median(res["gb.gibbs"]["warm"]) / steps_o) / (np.median(res["numpyro.factor"]["warm"]) / steps_b)
    print(f"  leapfrog steps per draw: gb.gibbs {steps_o:.1f}, numpyro.factor {steps_b:.1f}; warm time per leapfrog "
          f"step ours/baseline = {per_step:.3f} (target <= 1.05); max |posterior mean difference| = "
          f"{float(jnp.max(jnp.abs(s_o['beta'].mean(0) - s_b['beta'].mean(0)))):.3g}", flush=True)


def bench_gpc(n, d, B, num_warmup, num_samples, rounds=2):
    X, y, _ = qr.simulate(jax.random.PRNGKey(1), n, d=d)
    idx = jax.random.randint(jax.random.PRNGKey(2), (B, n), 0, n)
    counts = jax.vmap(lambda i: jnp.bincount(i, length=n))(idx).astype(jnp.result_type(float))
    w = 0.5

    def model(X, y):
        qr.single_model(X, y, 0.9)

    # one calibration iteration exactly as calibrate(method="gpc") runs it
    def ours():
        return gb.batched.run(model, w * counts, X, y, rng_key=jax.random.PRNGKey(0), num_warmup=num_warmup,
                              num_samples=num_samples, progress=False).samples["beta"]

    def weighted(X, y, wt):
        with gb.reweight(weights=wt):
            model(X, y)

    # the loop baseline: one NUTS chain compiled once, the bootstrap weights an argument (not
    # MCMC(progress_bar=False).run per replicate: NumPyro 0.22.0 recompiles that on every call,
    # pyro-ppl/numpyro#2171)
    chain = compiled_nuts_loop(weighted, num_warmup, num_samples)

    def loop():
        return jnp.stack([chain(jax.random.PRNGKey(b), X, y, w * counts[b])[0]["beta"] for b in range(B)])

    compare({"gb.batched": ours, "loop of one compiled NUTS chain": loop}, rounds=rounds,
            title=f"[gpc] one calibration iteration, B={B} bootstrap replicates, n={n}, d={d}, "
                  f"{num_warmup}+{num_samples} NUTS iterations each:")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=["nuts", "gpc"])
    a = p.parse_args()
    print("devices:", jax.devices(), flush=True)
    if a.quick:
        if a.only != "gpc":
            bench_nuts(1000, 5, 300, 500, rounds=7)
        if a.only != "nuts":
            bench_gpc(200, 3, 40, 150, 150, rounds=2)
    else:
        if a.only != "gpc":
            bench_nuts(1000, 5, 500, 1000, rounds=9)
        if a.only != "nuts":
            bench_gpc(1000, 5, 200, 300, 300, rounds=3)
