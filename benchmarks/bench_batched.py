"""gb.batched.posterior_samples for B weight vectors vs a loop over one NUTS chain compiled once.

Logistic regression, n = 200, d = 10, B Bayesian-bootstrap weight vectors. The baseline is what a
careful NumPyro user would write: one NUTS chain from NumPyro's functional API (``hmc(...,
"NUTS")`` under ``lax.scan``, jitted with the weights as an argument, so it compiles once), called
B times in a Python loop (``benchmarks/_common.compiled_nuts_loop``). Not ``MCMC(...,
progress_bar=False).run`` in a loop: NumPyro 0.22.0 recompiles that on every call
(pyro-ppl/numpyro#2171), which measures compilation instead of sampling. Both sides draw the same
number of NUTS iterations per weight vector. Cold time (compile included), XLA compile time,
compilations and warm time are printed for both, with ratios from alternating warm rounds.

    python benchmarks/bench_batched.py [--quick] [--B 32] [--warmup 300] [--samples 300] [--rounds 3]
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


def logistic(X, y):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("n", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def weighted_logistic(w, X, y):
    with gb.reweight(weights=w):
        logistic(X, y)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="B = 8, 200 + 200 iterations, 2 rounds")
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if a.quick:
        a.B, a.warmup, a.samples, a.rounds = 8, 200, 200, 2
    kx, ky, kw = jax.random.split(jax.random.PRNGKey(0), 3)
    X = jax.random.normal(kx, (a.n, a.d))
    y = jax.random.bernoulli(ky, jax.nn.sigmoid(X @ jnp.linspace(-1, 1, a.d))).astype(jnp.float32)
    W = a.n * jax.random.dirichlet(kw, jnp.ones(a.n), (a.B,))

    def ours():
        s = gb.batched.posterior_samples(logistic, W, X, y, num_warmup=a.warmup, num_samples=a.samples,
                                         rng_key=jax.random.PRNGKey(1), progress=False)
        return s["beta"]

    chain = compiled_nuts_loop(weighted_logistic, a.warmup, a.samples)

    def loop():
        return jnp.stack([chain(jax.random.PRNGKey(100 + b), W[b], X, y)[0]["beta"] for b in range(a.B)])

    res = compare({"gb.batched": ours, "loop of one compiled NUTS chain": loop}, rounds=a.rounds,
                  title=f"logistic regression n={a.n} d={a.d}, B={a.B} weight vectors, "
                        f"{a.warmup}+{a.samples} NUTS iterations each")
    means = [np.asarray(res[k]["out"]).mean(1) for k in res]
    print(f"  max |difference| of posterior means across B: {np.abs(means[0] - means[1]).max():.3f}")


if __name__ == "__main__":
    main()
