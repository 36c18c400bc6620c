"""Benchmark: the PAC-Bayes ladder (32 learning rates) as one batched program against a loop of compiled NUTS runs.

``gb.bounds.pac_bayes`` draws the Gibbs posterior at w = 0 and at 32 rates, ``num_chains`` chains each,
as one batched program (gb.batched.run). By default (``kernel=None``) that is one ChEES-HMC posterior
per rate whose chains are the replicates, in chunks of 8 rates; a rate where ChEES fails (over 1%
divergent draws) is drawn again by NUTS, which the script reports. Also timed: ChEES at target
acceptance 0.9 and NUTS throughout (``kernel="nuts"``: a NUTS chain per rate and replicate, chunks of 8
rows). Then the KL, the empirical risk and the bound in one more compiled program. The baseline is
what a careful user would write: a Python loop over the same (rate, chain) pairs of one NUTS chain
compiled once with the rate as an argument (``_common.compiled_nuts_loop``), then the same
thermodynamic integral and kl bound in NumPy. Same model (a linear classifier with the sigmoid loss,
simulated data), warm-up and draws; cold and warm times, compile time and compilations of both, ratios
from alternating warm rounds (other side / the default, so > 1 means the default is faster).

With ``--devices k`` the process splits the CPU into k JAX devices before JAX starts (as the
``genbayes`` command does by default, ``gb.use_cpu_devices``): the ladder's rows are then split across
them, while the loop baseline runs one chain at a time on one device, as a plain loop does.

Measured (idle 2-core machine, ``--devices 2``, 2026-12-02, two runs; 500 + 1000 per chain): warm
2.35 / 2.52 s (default: ChEES, no rate redrawn), 3.51 / 2.92 s (ChEES at 0.9), 5.21 / 5.45 s (NUTS),
loop 9.47 / 9.24 s: loop / default 4.03x (3.47-4.57) and 3.67x (3.49-4.23), loop / NUTS 1.82x and
1.70x; cold 26.9 / 24.5 s (default) against 15.0 / 14.4 s for the loop. Per unit of precision: the
median bound SE over the rates was 0.0010 (default), 0.0008 (ChEES 0.9), 0.0009 (NUTS), so at equal
precision the default's gain over the loop is about 3.67 x (0.9 / 1.0)^2 = 3.0x, taking the loop's
SE as batched NUTS's (same sampler; the loop reports none), and ChEES at 0.9 is as efficient here
(time x SE^2 0.72x the default's). ``--quick`` (200 + 300): default 0.985 s, ChEES 0.9 1.79 s, NUTS
2.03 s, loop 3.49 s (3.54x). On the benchmark model the Gibbs posteriors above w ~ 20 have two modes
in the third coefficient (chains of every sampler disagree there; the between-chain spread enters the
standard errors); ChEES redraws nothing here, while in tests/test_bounds.py's steeper sigmoid-loss
classifier (n = 120, rates to 120) it fails at some rates >= 32.

Usage: python benchmarks/bench_bounds.py [--quick] [--devices k]
"""

from __future__ import annotations

import argparse
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from _common import compare, compiled_nuts_loop

import genbayes as gb
from genbayes._ladder import _ti_cumulative
from genbayes.bounds import pac_bayes_bound


def model(X, y):
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("n", X.shape[0]):
        numpyro.sample("y", gb.Loss(gb.losses.sigmoid(0.5), X @ beta), obs=y)


def scaled_model(w, X, y):
    # the Gibbs posterior at rate w: only the loss is scaled, never the prior (a scale around the whole
    # model would give pi^w exp(-w L)); w is traced (an argument), so 0 is allowed
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("n", X.shape[0]), numpyro.handlers.scale(scale=w):
        numpyro.sample("y", gb.Loss(gb.losses.sigmoid(0.5), X @ beta), obs=y)


def main(quick):
    rng = np.random.default_rng(0)
    n, d, K, R = 200, 3, 32, 2
    X = rng.normal(size=(n, d))
    y = ((X @ np.array([1.0, -0.5, 0.25]) + 0.5 * rng.normal(size=n)) > 0).astype(np.int32)
    X, y = jnp.asarray(X), jnp.asarray(y)
    rates = np.geomspace(0.05, float(n), K)
    num_warmup, num_samples = (200, 300) if quick else (500, 1000)
    run = {"num_warmup": num_warmup, "num_samples": num_samples, "num_chains": R, "num_batches": 10,
           "num_low_rungs": 0}

    redrawn = {}  # side -> the rates its last run redrew with NUTS

    def ours(**kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = gb.bounds.pac_bayes(model, X, y, learning_rates=rates, rng_key=jax.random.PRNGKey(0), **{**run, **kw})
        redrawn[kw.get("kernel")] = r.diagnostics["kl_to_prior"].diagnostics["redrawn_with_nuts"]
        return jnp.asarray([r.bound, r.bound_se])

    chain = compiled_nuts_loop(scaled_model, num_warmup, num_samples, target_accept_prob=0.8)
    ladder = np.concatenate([[0.0], rates])

    @jax.jit
    def total_loss(beta):   # (S, d) -> (S,) the summed loss at each draw
        return jnp.sum(gb.losses.sigmoid(0.5)(beta @ X.T, y[None, :]), axis=1)

    def loop():
        ll = []
        for k, w in enumerate(ladder):
            for r in range(R):
                s, _ = chain(jax.random.PRNGKey(k * R + r), jnp.asarray(w), X, y)
                ll.append(-total_loss(s["beta"]))
        ll = jnp.stack(ll).reshape(K + 1, R * num_samples)
        logz = np.asarray(_ti_cumulative(jnp.asarray(ladder), ll)[0])
        e = np.asarray(jnp.mean(ll, axis=1))
        kl = ladder * e - logz
        return jnp.asarray(pac_bayes_bound(np.clip(-e[1:] / n, 0, 1), np.maximum(kl[1:], 0), n, num_rates=K))

    res = compare({"gb.bounds.pac_bayes default (ChEES, target 0.651, chunks of 8 rates; failed rates redrawn by NUTS)":
                   ours,
                   "ChEES, target 0.9": lambda: ours(kernel="chees", target_accept_prob=0.9),
                   "NUTS (target 0.8, chunks of 8 rows)": lambda: ours(kernel="nuts", target_accept_prob=0.8),
                   f"loop of {(K + 1) * R} compiled NUTS chains (target 0.8)": loop}, rounds=2 if quick else 3,
                  title=f"PAC-Bayes ladder: w = 0 and {K} rates x {R} chains x ({num_warmup} warm-up + {num_samples} "
                        f"draws), n = {n}, d = {d}, {jax.device_count()} device(s) [{jax.devices()[0].platform}]")
    a, ch9, nuts, b = (np.asarray(res[k]["out"]) for k in res)
    print("  bound at the minimising rate (Monte Carlo SE; equal SEs mean equal precision per draw): "
          + ", ".join(f"{name} {v[0].min():.4f} ({v[1][np.argmin(v[0])]:.4f})"
                      for name, v in (("default", a), ("ChEES 0.9", ch9), ("NUTS", nuts)))
          + f", loop {b.min():.4f}")
    print("  median bound SE over the rates: " + ", ".join(f"{name} {np.median(v[1]):.4f}" for name, v in
                                                            (("default", a), ("ChEES 0.9", ch9), ("NUTS", nuts))))
    print(f"  default: rates redrawn by NUTS: {redrawn[None]}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer draws and rounds")
    p.add_argument("--devices", type=int, default=1, help="CPU devices to split the host into (default 1)")
    a = p.parse_args()
    jax.config.update("jax_num_cpu_devices", a.devices)  # before JAX initialises its backend
    main(a.quick)
