"""Speed of genbayes.cv against plain baselines run in the same process; prints ratios.

    python benchmarks/bench_cv.py [--quick]

1. Exact enumeration of all 2^n − 1 held-out sets of NormalKnownVariance (n = 20, compile
   included; then n = 20 and 24 compiled) against a chunked, vectorised closed form of the same
   S_CV(p) (sufficient statistics of each held-out set, jitted), in alternating rounds.
2. Hypergeometric counting: S_CV(p) for every p of Beta–Bernoulli with n = 10,000.
3. Refits of 32 folds through gb.batched (one program) against a loop over one NUTS chain compiled
   once (NumPyro's functional ``hmc(..., "NUTS")`` under ``lax.scan``, ``_common.compiled_nuts_loop``;
   not ``MCMC(progress_bar=False).run`` per fold, which NumPyro 0.22.0 recompiles on every call,
   pyro-ppl/numpyro#2171), PSIS on the same 32 folds, and the refits with ``refit_kwargs={"kernel":
   "chees", "shared_warmup": ...}``: cold and warm time, compile time and compilations of each, ratios
   from alternating warm rounds, agreement, and warm time × SE² of the two refit samplers. Measured
   (idle 2-core machine, one device, 2026-12-02, full mode: 300 + 500 per fit): warm 0.657 s NUTS refits,
   1.656 s loop, 0.175 s PSIS, 0.090 s ChEES refits (shared warm-up 300, then 25 + 125 × 4 chains);
   S_CV(1) −0.2100 ± 0.0013 (NUTS) and −0.2105 ± 0.0015 (ChEES); time × SE², NUTS / ChEES = 5.24×
   (quick mode: 4.71×).
4. PSIS-LOO on the same draws: genbayes.cv's PSIS step against ``arviz.loo`` (ratio and agreement).
"""

import argparse
import math
import time
from functools import partial

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


@partial(jax.jit, static_argnames="chunk")
def closed_form_s_cv(m0, v0, s2, x, chunk=1 << 14):
    """S_CV(p) of NormalKnownVariance for every p over all 2^n − 1 held-out sets: the baseline.

    Written independently of genbayes: per held-out set S (bits of its rank r) the predictive is
    N(μ_T, v_T + σ²) with v_T = (1/v0 + |T|/σ²)^-1, μ_T = v_T (m0/v0 + Σ_T x/σ²), so
    Σ_{i∈S} log p(x_i | x_T) needs only |S|, Σ_S x and Σ_S x² (one (chunk, n) @ (n, 3) product);
    chunks of ``chunk`` ranks in a ``fori_loop``, summed by |S|.
    """
    n = x.shape[0]
    total = 2**n - 1
    bits = jnp.arange(n, dtype=jnp.int32)
    X = jnp.stack([jnp.ones(n), x, x * x], axis=1)

    def body(c, acc):
        r = 1 + c * chunk + jnp.arange(chunk, dtype=jnp.int32)
        M = ((r[:, None] >> bits) & 1).astype(x.dtype)
        k, sx, sxx = (M @ X).T
        prec = 1.0 / v0 + (n - k) / s2
        mean = (m0 / v0 + (jnp.sum(x) - sx) / s2) / prec
        pv = 1.0 / prec + s2
        lp = -0.5 * k * jnp.log(2 * jnp.pi * pv) - (sxx - 2 * mean * sx + k * mean**2) / (2 * pv)
        val = jnp.where(r <= total, lp / jnp.maximum(k, 1.0), 0.0)
        return acc + jax.ops.segment_sum(val, k.astype(jnp.int32), num_segments=n + 1)

    sums = jax.lax.fori_loop(0, -(-total // chunk), body, jnp.zeros(n + 1, x.dtype))[1:]
    return sums / jnp.asarray([math.comb(n, p) for p in range(1, n + 1)], x.dtype)


def main(quick):
    print(f"devices: {jax.devices()}, x64: {jax.config.jax_enable_x64}")
    fam = gb.conjugate.NormalKnownVariance(0.0, 4.0, 1.0)
    x20 = np.random.default_rng(0).normal(1.0, 1.0, 20)
    rep, t_enum = timed(lambda: cv.identity(fam, x20))
    n_sub = 2**20 - 1
    print(f"[1] enumeration, n=20: all {n_sub} subsets, every p, in {t_enum:.2f} s (compile included); "
          f"gap {rep.gap:.2e}; target < 3 s: {'OK' if t_enum < 3 else 'MISSED'}")
    # baseline: the chunked, vectorised closed form of NormalKnownVariance (jitted; compiled before timing)
    for n in (20,) if quick else (20, 24):
        x = jnp.asarray(np.random.default_rng(n).normal(1.0, 1.0, n))
        args = (fam.prior_mean, fam.prior_var, fam.noise_var, x)
        ours = lambda: cv.identity(fam, x, max_subsets=2**n).s_cv  # noqa: E731
        base = lambda: closed_form_s_cv(*args)  # noqa: E731
        diff = float(np.max(np.abs(np.asarray(ours()) - np.asarray(base()))))
        t_ours, t_base = [], []
        for _ in range(3 if quick else 7):  # alternating rounds: load on the machine hits both alike
            t_ours.append(timed(ours)[1])
            t_base.append(timed(base)[1])
        ratio = np.median(np.asarray(t_ours) / np.asarray(t_base))
        print(f"    n={n}: gb.cv.identity {np.median(t_ours):.3f} s vs chunked closed form {np.median(t_base):.3f} s "
              f"(medians of {len(t_ours)} alternating rounds, compiled); ratio (ours / closed form) = {ratio:.2f}x "
              f"(target <= 1.5x: {'OK' if ratio <= 1.5 else 'MISSED'}); max |diff| = {diff:.1e}")

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

    def refit_chees():  # one ChEES warm-up on the mean training weights, then 25 step-size iterations per fold
        return cv.lpo(lr.model, X, y, p=1, method="refit", subsets=folds, num_warmup=25, num_samples=ns,
                      refit_kwargs={"kernel": "chees", "shared_warmup": nw}, rng_key=jax.random.PRNGKey(0))

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

    res = compare({"refit (gb.batched)": refit, "loop of one compiled NUTS chain": loop, "psis": psis,
                   "refit, ChEES shared warm-up": refit_chees},
                  rounds=2 if quick else 3,
                  title=f"[3] 32 folds (p=1, logistic n={n}), {nw}+{ns} NUTS iterations per fit (ChEES: shared "
                        f"warm-up {nw}, then 25+{ns // 4} iterations of 4 chains per fit):")
    r_ref, base_vals, r_ps, r_ch = (res[k]["out"] for k in res)
    # per unit of Monte Carlo precision: warm time x SE^2 (the same folds, so the SEs are comparable)
    eff = (np.median(res["refit (gb.batched)"]["warm"]) * r_ref.se**2) / (
        np.median(res["refit, ChEES shared warm-up"]["warm"]) * r_ch.se**2)
    print(f"    refit with ChEES shared warm-up: S_CV(1) {r_ch.value:.4f} ± {r_ch.se:.4f} (NUTS refit {r_ref.value:.4f} ± "
          f"{r_ref.se:.4f}); time x SE^2, NUTS refit / ChEES refit = {eff:.2f}x")
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
