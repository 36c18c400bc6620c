"""gb.batched.posterior_samples for B weight vectors vs a loop reusing one compiled MCMC.

Logistic regression, n = 200, d = 10, B = 32 Bayesian-bootstrap weight vectors. The baseline is
what a careful NumPyro user would write: one `MCMC(NUTS(model))` whose model takes the weights as
an argument (so it compiles once, `jit_model_args=True`), run 32 times in a Python loop. Both
sides draw the same number of NUTS iterations per weight vector. Times include compilation
(each side compiles once); a second, warm timing of each is printed too.

    python benchmarks/bench_batched.py [--B 32] [--warmup 300] [--samples 300]
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


def logistic(X, y):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("n", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def weighted_logistic(w, X, y):
    with gb.reweight(weights=w):
        logistic(X, y)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--samples", type=int, default=300)
    a = ap.parse_args()
    kx, ky, kw = jax.random.split(jax.random.PRNGKey(0), 3)
    X = jax.random.normal(kx, (a.n, a.d))
    y = jax.random.bernoulli(ky, jax.nn.sigmoid(X @ jnp.linspace(-1, 1, a.d))).astype(jnp.float32)
    W = a.n * jax.random.dirichlet(kw, jnp.ones(a.n), (a.B,))

    def ours():
        s = gb.batched.posterior_samples(logistic, W, X, y, num_warmup=a.warmup, num_samples=a.samples,
                                         rng_key=jax.random.PRNGKey(1), progress=False)
        return jax.block_until_ready(s["beta"])

    mcmc = MCMC(NUTS(weighted_logistic), num_warmup=a.warmup, num_samples=a.samples, progress_bar=False,
                jit_model_args=True)

    def loop():
        out = []
        for b in range(a.B):
            mcmc.run(jax.random.PRNGKey(100 + b), W[b], X, y)
            out.append(mcmc.get_samples()["beta"])
        return jax.block_until_ready(jnp.stack(out))

    times = {}
    for name, fn in (("batched", ours), ("loop", loop)):
        t0 = time.perf_counter()
        res = fn()
        times[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        fn()
        times[name + "_warm"] = time.perf_counter() - t0
        times[name + "_mean"] = np.asarray(res).mean((0, 1))
    print(f"logistic regression n={a.n} d={a.d}, B={a.B} weight vectors, {a.warmup}+{a.samples} NUTS iterations each")
    print(f"  gb.batched.posterior_samples : {times['batched']:7.2f} s (first call)  {times['batched_warm']:7.2f} s (warm)")
    print(f"  loop over one compiled MCMC  : {times['loop']:7.2f} s (first call)  {times['loop_warm']:7.2f} s (warm)")
    print(f"  speed-up (loop / batched)    : {times['loop'] / times['batched']:.2f}x first call, "
          f"{times['loop_warm'] / times['batched_warm']:.2f}x warm")
    print(f"  max |difference| of posterior means across B: {np.abs(times['batched_mean'] - times['loop_mean']).max():.3f}")


if __name__ == "__main__":
    main()
