"""Benchmarks for Gibbs posteriors (ratios printed: ours vs a baseline run beside it).

1. NUTS on a quantile regression (n = 1000, d = 5, check loss): ``gb.gibbs`` converting a Gaussian
   likelihood model, vs the same model hand-written with ``numpyro.factor``, each one NUTS chain
   compiled once (``_common.compiled_nuts_loop``). Target: time per leapfrog step <= 1.05.
2. One GPC calibration iteration with B bootstrap replicates (default 200) as one vmapped
   ``gb.batched`` program, vs a Python loop over one NUTS chain compiled once with the bootstrap
   weights as an argument (NumPyro's functional ``hmc(..., "NUTS")`` under ``lax.scan``). Not
   ``MCMC(progress_bar=False).run`` per replicate: NumPyro 0.22.0 recompiles that on every call
   (pyro-ppl/numpyro#2171).

   A third side runs the same iteration with ``kernel="chees", shared_warmup=num_warmup`` (one ChEES
   warm-up on the mean weights, then 25 step-size iterations per replicate, 4 chains); effective
   samples per second (median over replicates of the min ESS over coefficients) are printed for all.

Both print cold time (compile included), XLA compile time, compilations and warm time of each side,
with ratios from alternating warm rounds.

Measured (idle 2-core machine, one device, 2026-12-02, ``--only gpc``: n = 1000, d = 5, B = 200, 300 + 300):
warm 14.7 s (gb.batched NUTS), 44.7 s (loop), 2.5 s (ChEES shared); median min ESS 110, 115, 53 of 300;
ESS/s against the loop: NUTS 2.92x, ChEES shared 8.41x.

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
from genbayes.interop import _arviz
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

    # calibrate(method="gpc", kernel="chees", shared_warmup=...): one ChEES warm-up on the mean weights,
    # then every replicate adapts only its step size for 25 iterations (gb.batched.run's docstring)
    def chees():
        return gb.batched.run(model, w * counts, X, y, rng_key=jax.random.PRNGKey(0), num_warmup=25,
                              num_samples=num_samples - num_samples % 4, kernel="chees", shared_warmup=num_warmup,
                              progress=False).samples["beta"]

    res = compare({"gb.batched": ours, "loop of one compiled NUTS chain": loop, "gb.batched chees shared": chees},
                  rounds=rounds, title=f"[gpc] one calibration iteration, B={B} bootstrap replicates, n={n}, d={d}, "
                                       f"{num_warmup}+{num_samples} NUTS iterations each (ChEES: shared warm-up "
                                       f"{num_warmup}, then 25 + {num_samples} iterations of 4 chains):")
    # per effective sample: ESS of each replicate's draws (min over coefficients; ChEES's 4 chains pooled by ArviZ),
    # median over replicates, per warm second
    az = _arviz()
    rate = {}
    for name, chains in (("gb.batched", 1), ("loop of one compiled NUTS chain", 1), ("gb.batched chees shared", 4)):
        draws = np.asarray(res[name]["out"])  # (B, S, d)
        draws = draws.reshape((B, chains, draws.shape[1] // chains, d))
        ess = np.median([min(float(az.ess(draws[b, :, :, j])) for j in range(d)) for b in range(B)])
        rate[name] = ess / np.median(res[name]["warm"])
        print(f"  {name}: median over replicates of the min ESS {ess:.0f}, {rate[name]:.0f} ESS/s (warm)")
    for name in ("gb.batched", "gb.batched chees shared"):
        print(f"  ESS/s {name} / loop: {rate[name] / rate['loop of one compiled NUTS chain']:.2f}x")


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
