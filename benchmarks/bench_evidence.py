"""Benchmark: evidence estimators on radiata pine, and the batched ladder against a loop of MCMC runs.

1. Williams' radiata pine (both Friel & Wyse 2012 models): each method's log Z, absolute error against
   the closed form, SE and wall time, side by side in one run.
2. Power posteriors: the K + 1 temperatures drawn as one vmapped NUTS program (gb.batched.run) against
   the baseline a careful user would write, a Python loop over one NUTS chain compiled once with β as
   an argument (NumPyro's functional ``hmc(..., "NUTS")`` under ``lax.scan``, jitted:
   ``_common.compiled_nuts_loop``; not ``MCMC(progress_bar=False).run`` in a loop, which NumPyro 0.22.0
   recompiles on every call, pyro-ppl/numpyro#2171). Same warm-up, draws and NUTS settings; cold and
   warm time, compile time and compilations of both, with ratios from alternating warm rounds.
3. SMC against the baseline a user would hand-write: BlackJAX's adaptive tempered SMC on radiata pine
   (log prior and log likelihood written out with jax.scipy, HMC moves with the particles' covariance
   as mass, the whole run one jitted while loop vmapped over the same number of runs). Same particles,
   moves and leapfrog steps; cold (first call, compile included) and warm wall time, XLA compilations
   and the error against the closed form, with the ratios ours / baseline. Ours runs twice: with its
   default adaptive number of moves per step, and capped at the baseline's fixed number (equal work).

Usage: python benchmarks/bench_evidence.py [--quick] [--only smc table ladder]
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from _common import compare, compiled_nuts_loop

import genbayes as gb
from genbayes import evidence
from genbayes._programs import count_compilations
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

    weights = jnp.asarray(ladder)[:, None] * jnp.ones(y.shape[0])  # one weight per observation unit
    betas = jnp.asarray(ladder)

    def batched():
        return gb.batched.run(fam.model, weights, X, y, num_warmup=num_warmup, num_samples=num_samples,
                              rng_key=jax.random.PRNGKey(0), dense_mass=True, progress=False).samples["tau"]

    chain = compiled_nuts_loop(tempered_model, num_warmup, num_samples, dense_mass=True)

    def loop():
        return jnp.stack([chain(jax.random.PRNGKey(k), betas[k], X, y)[0]["tau"] for k in range(K + 1)])

    print()
    compare({"batched (one vmapped NUTS program)": batched, f"loop of {K + 1} compiled NUTS chains": loop},
            rounds=2 if quick else 3,
            title=f"power-posterior ladder, K + 1 = {K + 1} temperatures x ({num_warmup} warm-up + {num_samples} "
                  f"draws), dense mass, {jax.device_count()} device(s) [{jax.devices()[0].platform}]")


def _blackjax_smc(X, y, fam, num_particles, num_runs, num_mcmc_steps, num_leapfrog):
    """The hand-written baseline: one jitted function of the data and keys, vmapped over runs."""
    import blackjax
    from blackjax.smc import resampling
    from jax.scipy.stats import gamma, norm

    m, P, a, b = fam.mean, fam.precision, fam.shape, fam.rate

    def unpack(x):  # (alpha, beta, log tau)
        return x[:2], jnp.exp(x[2])

    # coef ~ N(m, (tau P)^-1) through the Cholesky factor of P^-1, computed once (as genbayes' model
    # does): per particle only the scalar tau enters, no matrix is factorised or inverted
    L0 = jnp.linalg.cholesky(jnp.linalg.inv(P))
    log_det_L0 = jnp.sum(jnp.log(jnp.diag(L0)))

    def log_prior(x):
        coef, tau = unpack(x)
        z = jax.scipy.linalg.solve_triangular(L0, coef - m, lower=True) * jnp.sqrt(tau)
        log_mvn = -0.5 * z @ z - log_det_L0 + 0.5 * coef.shape[0] * (jnp.log(tau) - jnp.log(2 * jnp.pi))
        return log_mvn + gamma.logpdf(tau, a, scale=1.0 / b) + x[2]  # log-Jacobian of tau = exp(x[2])

    def run(X, y, key):
        def log_lik(x):
            coef, tau = unpack(x)
            return jnp.sum(norm.logpdf(y, X @ coef, 1.0 / jnp.sqrt(tau)))

        k0, k1, k2 = jax.random.split(key, 3)
        tau0 = jax.random.gamma(k0, a, (num_particles,)) / b
        coef0 = m + jax.random.normal(k1, (num_particles, 2)) @ L0.T \
            / jnp.sqrt(tau0)[:, None]
        x0 = jnp.column_stack([coef0, jnp.log(tau0)])

        def cond(c):
            return c[0].tempering_param < 1.0

        def body(c):
            state, log_z, key, step = c
            key, k = jax.random.split(key)
            w = state.weights
            mean = w @ state.particles
            cov = ((state.particles - mean).T * w) @ (state.particles - mean) + 1e-9 * jnp.eye(3)
            params = {"step_size": jnp.array([step]), "inverse_mass_matrix": cov[None],
                      "num_integration_steps": jnp.array([num_leapfrog])}
            alg = blackjax.adaptive_tempered_smc(log_prior, log_lik, blackjax.hmc.build_kernel(), blackjax.hmc.init,
                                                 params, resampling.systematic, 0.5, num_mcmc_steps=num_mcmc_steps)
            state, info = alg.step(k, state)
            acc = jnp.mean(info.update_info.acceptance_rate)
            return state, log_z + info.log_likelihood_increment, key, jnp.clip(step * jnp.exp(acc - 0.65), 1e-4, 1.5)

        state0 = blackjax.adaptive_tempered_smc.init(x0)
        return jax.lax.while_loop(cond, body, (state0, 0.0, k2, 0.75))[1]

    return jax.jit(jax.vmap(run, in_axes=(None, None, 0)))


def smc_vs_blackjax(quick):
    X, y = radiata_pine.design("density")
    fam = radiata_pine.prior()
    exact = float(fam.log_evidence(X, y))
    N, R, M, L = (300, 4, 10, 5) if quick else (1000, 8, 10, 5)
    W = 3  # warm calls, each with new data of the same shape (y shifted); the median is reported
    opts = {"num_particles": N, "num_runs": R, "num_mcmc_steps": M, "num_leapfrog": L}
    # ours twice: with its default adaptive moves (blocks of M moves repeated, up to 4M, while the
    # particles have not moved enough), and capped at M moves per step: the baseline's work exactly
    variants = {"ours": opts, f"ours, {M} moves": {**opts, "max_mcmc_steps": M}, "blackjax": None}
    rows = {}
    for name, o in variants.items():
        times, counts, values, moves = [], [], [], []
        base = _blackjax_smc(jnp.asarray(X), jnp.asarray(y), fam, N, R, M, L) if o is None else None
        for call in range(1 + W):  # cold, then warm
            yy = jnp.asarray(y) + 1e-3 * call
            t0 = time.perf_counter()
            with count_compilations() as c, warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                if o is not None:
                    ev = evidence.log_evidence(fam, X, yy, method="smc", rng_key=jax.random.PRNGKey(call), options=o)
                    v, se = ev.log_z, ev.se
                    moves.append(float(np.nanmean(ev.diagnostics["num_moves"])))
                else:
                    lz = np.asarray(base(jnp.asarray(X), yy, jax.random.split(jax.random.PRNGKey(call), R)))
                    v = float(np.logaddexp.reduce(lz) - np.log(R))
                    se = float(np.std(lz, ddof=1) / np.sqrt(R))
                    moves.append(float(M))
            times.append(time.perf_counter() - t0)
            counts.append(c.count)
            values.append((v, se))
        rows[name] = (times, counts, values, moves)
    print(f"\nSMC on radiata pine (density): {R} runs x {N} particles, {M} HMC moves x {L} leapfrog; exact {exact:.4f}")
    print("(cold: the first call, compilation included; warm: median of {W} calls with new data of the same shape)"
          .format(W=W))
    print(f"{'':>16} {'cold s':>8} {'warm s':>8} {'compiles':>9} {'moves/step':>11} {'|error| (cold)':>15} {'SE':>8}")
    for name, (t, c, v, mv) in rows.items():
        print(f"{name:>16} {t[0]:8.2f} {np.median(t[1:]):8.2f} {c[0]:4d}/{max(c[1:]):<4d} {np.mean(mv):11.1f} "
              f"{abs(v[0][0] - exact):15.4f} {v[0][1]:8.4f}")
    tb = rows["blackjax"][0]
    for name in variants:
        if name != "blackjax":
            to = rows[name][0]
            print(f"  {name} / baseline: cold {to[0] / tb[0]:.2f}x (target 1.5), "
                  f"warm {np.median(to[1:]) / np.median(tb[1:]):.2f}x (target 1.2)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="+", choices=["smc", "table", "ladder"], help="run these parts only")
    a = ap.parse_args()
    numpyro.enable_x64()
    parts = {"smc": smc_vs_blackjax, "table": table, "ladder": ladder_vs_loop}
    for name in a.only or list(parts):
        parts[name](a.quick)
