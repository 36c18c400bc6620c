"""Benchmarks for Gibbs posteriors (ratios printed: ours vs a baseline run beside it).

1. NUTS on a quantile regression (n = 1000, d = 5, check loss): ``gb.gibbs`` converting a Gaussian
   likelihood model, vs the same model hand-written with ``numpyro.factor``. Target ratio <= 1.05.
2. One GPC calibration iteration with B bootstrap replicates (default 200) as one vmapped
   ``gb.batched`` program, vs a Python loop over replicates reusing one compiled MCMC
   (``numpyro.infer.MCMC`` with the bootstrap weights as a dynamic argument, jit_model_args=True).

Run: ``python benchmarks/bench_gibbs.py [--quick]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

import genbayes as gb
from genbayes import losses as L
from genbayes.handlers import gibbs
from genbayes.models import quantile_regression as qr


def factor_model(X, y, tau=0.9, w=1.0):
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([X.shape[1]]).to_event(1))
    u = y - X @ beta
    numpyro.factor("check", -w * jnp.sum(jnp.maximum(tau * u, (tau - 1.0) * u)))


def time_nuts(model, args, num_warmup, num_samples, repeats=3):
    mcmc = MCMC(NUTS(model), num_warmup=num_warmup, num_samples=num_samples, progress_bar=False, jit_model_args=True)
    mcmc.run(jax.random.PRNGKey(0), *args, extra_fields=("num_steps",))  # compile
    jax.block_until_ready(mcmc.get_samples())
    best, steps = np.inf, None
    for r in range(repeats):
        t = time.perf_counter()
        mcmc.run(jax.random.PRNGKey(r + 1), *args, extra_fields=("num_steps",))
        jax.block_until_ready(mcmc.get_samples())
        dt = time.perf_counter() - t
        if dt < best:
            best, steps = dt, float(np.mean(mcmc.get_extra_fields()["num_steps"]))
    return best, steps, mcmc.get_samples()["beta"].mean(0)


def bench_nuts(n, d, num_warmup, num_samples):
    X, y, _ = qr.simulate(jax.random.PRNGKey(0), n, d=d)
    ours = gibbs(qr.likelihood_model, loss={"y": L.check(0.9)})
    t_ours, s_ours, m_ours = time_nuts(ours, (X, y), num_warmup, num_samples)
    t_base, s_base, m_base = time_nuts(factor_model, (X, y), num_warmup, num_samples)
    print(f"[nuts] quantile regression n={n} d={d}: gb.gibbs {t_ours:.2f}s ({s_ours:.1f} leapfrog/iter), "
          f"numpyro.factor {t_base:.2f}s ({s_base:.1f} leapfrog/iter); ratio ours/baseline = {t_ours / t_base:.3f}; "
          f"per leapfrog step {(t_ours / s_ours) / (t_base / s_base):.3f}; "
          f"max |posterior mean difference| = {float(jnp.max(jnp.abs(m_ours - m_base))):.3g}", flush=True)


def bench_gpc(n, d, B, num_warmup, num_samples, loop_reps):
    X, y, _ = qr.simulate(jax.random.PRNGKey(1), n, d=d)
    idx = jax.random.randint(jax.random.PRNGKey(2), (B, n), 0, n)
    counts = jax.vmap(lambda i: jnp.bincount(i, length=n))(idx).astype(jnp.result_type(float))
    w = 0.5

    def model(X, y):
        qr.single_model(X, y, 0.9)

    kw = dict(num_warmup=num_warmup, num_samples=num_samples, progress=False)
    # one calibration iteration exactly as calibrate(method="gpc") runs it: batched.run compiles per call
    t = time.perf_counter()
    res = gb.batched.run(model, w * counts, X, y, rng_key=jax.random.PRNGKey(0), **kw)
    t_ours = time.perf_counter() - t

    def weighted(X, y, wt):
        with gb.reweight(weights=wt):
            model(X, y)

    mcmc = MCMC(NUTS(weighted), num_warmup=num_warmup, num_samples=num_samples, progress_bar=False, jit_model_args=True)
    mcmc.run(jax.random.PRNGKey(0), X, y, w * counts[0])  # compile once (not counted)
    t = time.perf_counter()
    for b in range(loop_reps):
        mcmc.run(jax.random.PRNGKey(b), X, y, w * counts[b])
        jax.block_until_ready(mcmc.get_samples())
    t_loop = (time.perf_counter() - t) / loop_reps * B
    print(f"[gpc] one iteration, B={B}, n={n}, d={d}, {num_warmup}+{num_samples} NUTS steps: gb.batched "
          f"{t_ours:.1f}s per iteration (compile included); Python loop over replicates with one compiled MCMC "
          f"{t_loop:.1f}s (extrapolated from {loop_reps} replicates, compile excluded); speed-up loop/ours = "
          f"{t_loop / t_ours:.2f}x. divergent={int(np.sum(res.diagnostics['num_divergent']))}", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=["nuts", "gpc"])
    a = p.parse_args()
    print("devices:", jax.devices(), flush=True)
    if a.quick:
        if a.only != "gpc":
            bench_nuts(1000, 5, 300, 500)
        if a.only != "nuts":
            bench_gpc(200, 3, 40, 150, 150, loop_reps=8)
    else:
        if a.only != "gpc":
            bench_nuts(1000, 5, 500, 1000)
        if a.only != "nuts":
            bench_gpc(1000, 5, 200, 300, 300, loop_reps=10)
