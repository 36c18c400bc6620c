"""Speed of genbayes.cv against plain baselines run in the same process; prints ratios.

    python benchmarks/bench_cv.py [--quick]

1. Exact enumeration of all 2^20 − 1 held-out sets of NormalKnownVariance (n = 20), compile
   included, against a plain Python loop over subsets (family.log_predictive per subset) on n = 10.
2. Hypergeometric counting: S_CV(p) for every p of Beta–Bernoulli with n = 10,000.
3. Refits of 32 folds through gb.batched (one program) against a loop over one NUTS chain compiled
   once (NumPyro's functional ``hmc(..., "NUTS")`` under ``lax.scan``, ``_common.compiled_nuts_loop``;
   not ``MCMC(progress_bar=False).run`` per fold, which NumPyro 0.22.0 recompiles on every call,
   pyro-ppl/numpyro#2171), and PSIS on the same 32 folds: cold and warm time, compile time and
   compilations of each, ratios from alternating warm rounds, and agreement.
4. PSIS-LOO on the same draws: genbayes.cv's PSIS step against ``arviz.loo`` (ratio and agreement).
"""

import argparse
import itertools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro

numpyro.enable_x64()

import genbayes as gb  # noqa: E402
from genbayes import cv  # noqa: E402
from genbayes.models import logistic_regression as lr  # noqa: E402
from _common import compare, compiled_nuts_loop  # noqa: E402


def timed(f):
    t = time.perf_counter()
    out = f()
    jax.block_until_ready(jax.tree_util.tree_leaves(out) if not isinstance(out, (cv.IdentityReport, cv.LPOResult)) else 0)
    return out, time.perf_counter() - t


def main(quick):
    print(f"devices: {jax.devices()}, x64: {jax.config.jax_enable_x64}")
    fam = gb.conjugate.NormalKnownVariance(0.0, 4.0, 1.0)
    x20 = np.random.default_rng(0).normal(1.0, 1.0, 20)
    rep, t_enum = timed(lambda: cv.identity(fam, x20))
    n_sub = 2**20 - 1
    print(f"[1] enumeration, n=20: all {n_sub} subsets, every p, in {t_enum:.2f} s (compile included); "
          f"gap {rep.gap:.2e}; target < 3 s: {'OK' if t_enum < 3 else 'MISSED'}")
    _, t_enum2 = timed(lambda: cv.identity(fam, x20))
    print(f"    second call (compiled): {t_enum2:.2f} s = {n_sub / t_enum2:.3g} subsets/s")
    # baseline: Python loop over every subset of a smaller n
    nb = 10
    xb = x20[:nb]
    t = time.perf_counter()
    sums = np.zeros(nb)
    for p in range(1, nb + 1):
        for S in itertools.combinations(range(nb), p):
            T = [i for i in range(nb) if i not in S]
            lp = fam.log_predictive(xb[list(S)], xb[T]) if T else fam.prior_log_predictive(xb[list(S)])
            sums[p - 1] += float(jnp.mean(lp))
    t_loop = time.perf_counter() - t
    per_loop = t_loop / (2**nb - 1)
    per_ours = t_enum2 / n_sub
    print(f"    baseline Python loop, n={nb}: {2**nb - 1} subsets in {t_loop:.2f} s = {1 / per_loop:.3g} subsets/s; "
          f"ratio per subset (loop / ours) = {per_loop / per_ours:.0f}x")
    ours10 = cv.identity(fam, xb).s_cv
    base10 = sums / np.array([math.comb(nb, p) for p in range(1, nb + 1)])
    print(f"    agreement on n={nb}: max |diff| = {np.max(np.abs(ours10 - base10)):.2e}")

    xb = (np.random.default_rng(1).uniform(size=10_000) < 0.3).astype(np.int32)
    bb = gb.conjugate.BetaBernoulli(1.0, 1.0)
    rep, t_count = timed(lambda: cv.identity(bb, xb))
    _, t_count2 = timed(lambda: cv.identity(bb, xb))
    print(f"[2] counting, Beta-Bernoulli n=10,000: every p in {t_count:.2f} s (compile included), "
          f"{t_count2:.2f} s compiled; gap {rep.gap:.2e}; target < 5 s: {'OK' if t_count < 5 else 'MISSED'}")

    n = 40
    X, y = lr.breast_cancer(num_features=2, n=n, seed=0)
    folds = [(i,) for i in range(32)]
    nw, ns = (150, 200) if quick else (300, 500)

    def refit():
        return cv.lpo(lr.model, X, y, p=1, method="refit", subsets=folds, num_warmup=nw, num_samples=ns,
                      rng_key=jax.random.PRNGKey(0))

    def psis():
        return cv.lpo(lr.model, X, y, p=1, method="psis", subsets=folds, num_warmup=nw, num_samples=ns, num_chains=4,
                      rng_key=jax.random.PRNGKey(1))

    # baseline: one NUTS chain compiled once (the fold's weights an argument), called per fold, and a
    # jitted held-out log predictive (not MCMC(progress_bar=False).run in a loop: NumPyro 0.22.0
    # recompiles that on every call, pyro-ppl/numpyro#2171)
    def weighted(w, X, y):
        with gb.reweight(weights=w):
            lr.model(X, y)

    chain = compiled_nuts_loop(weighted, nw, ns)
    X_, y_ = jnp.asarray(X), jnp.asarray(y)

    @jax.jit
    def held_out_lpd(s, i):
        ll = numpyro.infer.log_likelihood(lr.model, s, X_, y_)["y"][:, i]
        return jax.scipy.special.logsumexp(ll) - jnp.log(ll.shape[0])

    def loop():
        vals = []
        for k, (i,) in enumerate(folds):
            s, _ = chain(jax.random.PRNGKey(k), jnp.ones(n).at[i].set(0.0), X_, y_)
            vals.append(held_out_lpd(s, i))
        return jnp.stack(vals)

    res = compare({"refit (gb.batched)": refit, "loop of one compiled NUTS chain": loop, "psis": psis},
                  rounds=2 if quick else 3,
                  title=f"[3] 32 folds (p=1, logistic n={n}), {nw}+{ns} NUTS iterations per fit:")
    r_ref, base_vals, r_ps = (res[k]["out"] for k in res)
    diff = r_ps.value - r_ref.value
    print(f"    S_CV(1): refit {r_ref.value:.4f} ± {r_ref.se:.4f}, loop {float(jnp.mean(base_vals)):.4f}, psis "
          f"{r_ps.value:.4f} ± {r_ps.se:.4f}; psis − refit = {diff:.4f} = {diff / math.hypot(r_ps.se, r_ref.se):.2f} SE; "
          f"max k̂ {np.max(r_ps.diagnostics['khat']):.2f}")
    psis_vs_arviz(quick)


def psis_vs_arviz(quick):
    """PSIS-LOO on the same draws: genbayes.cv's PSIS step (ArviZ psislw inside) against arviz.loo."""
    from genbayes.interop import _arviz, loo

    _arviz()  # import ArviZ before timing (genbayes imports it on first use)

    n, S = (300, 2000) if quick else (1000, 4000)
    fam = gb.conjugate.NormalKnownVariance(0.0, 4.0, 1.0)
    x = np.random.default_rng(2).normal(1.0, 1.0, n)
    target = cv._resolve(fam.model, (x,), {}, None, None)
    runner = cv._Runner(target, 1, "psis", False, None, jax.random.PRNGKey(0), cv.DEFAULT_MAX_SUBSETS, None,
                        200, S // 4, 4, 1 << 14)  # draws the full posterior once
    ll = runner.post.loglik.reshape(4, S // 4, n)

    def ours():
        return runner.combine([runner.batch(b) for b in range(runner.plan.num_batches)])

    def reference():
        return loo(ll, reff=runner.post.r_eff)

    res = compare({"genbayes PSIS (cv, p=1)": ours, "arviz.loo": reference}, rounds=3 if quick else 5,
                  title=f"[4] PSIS-LOO on the same {S} draws, NormalKnownVariance n={n} (posterior drawn beforehand):")
    a, b = res["genbayes PSIS (cv, p=1)"]["out"], res["arviz.loo"]["out"]
    print(f"    elpd_loo: genbayes {a.value * n:.10f}, arviz {float(b.elpd_loo):.10f}, "
          f"|diff| {abs(a.value * n - float(b.elpd_loo)):.1e}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    main(ap.parse_args().quick)
