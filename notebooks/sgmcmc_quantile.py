# %% [markdown]
# # Minibatch Gibbs posteriors: quantile regression on 10^5 points with SG-MCMC
#
# A Gibbs posterior over n = 10^5 observations,
# $\pi(\beta \mid y) \propto \exp(-\sum_{i=1}^n \rho_\tau(y_i - x_i^\top\beta))\,\pi(\beta)$
# (check loss, Koenker & Bassett 1978; learning rate 1), drawn with stochastic-gradient Langevin
# dynamics (Welling & Teh 2011; BlackJAX's `sgld`) from minibatches of m = 1000 points:
# `gb.sgmcmc.run`, 4 chains run as one vectorised program. A minibatch is a unit weight vector ($w_u = n/m$ on the drawn units) on the
# unchanged model; with `batch_args=(0, 1)` the drawn rows of `X` and `y` are gathered so that an
# iteration costs O(m), and `control_variates=True` (Baker et al. 2019) centres the gradient estimate
# at the burn-in mean, which removes most of its noise.
#
# Full-batch NUTS is the reference where it applies: on a 10^4-point subsample both samplers target
# the same posterior, and must agree up to Monte Carlo error and SGLD's step-size bias.
#
# Set `GENBAYES_NOTEBOOK_QUICK=1` to run everything at reduced size.

# %%
import os
import time

import matplotlib

QUICK = os.environ.get("GENBAYES_NOTEBOOK_QUICK") == "1"
if QUICK:
    matplotlib.use("Agg")
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from numpyro.infer import MCMC, NUTS

import genbayes as gb
from genbayes.models import quantile_regression as qr

N = 20_000 if QUICK else 100_000
N_SUB = 2_000 if QUICK else 10_000
TAU = 0.9
X, y, b = qr.simulate(jax.random.PRNGKey(0), N, d=2)
X = X.at[:, 1].add(-1.0)  # centre the covariate (uniform on [0, 2]): a better-conditioned posterior for both samplers
beta_true = qr.true_beta(TAU, b)
beta_true = np.array([beta_true[0] + beta_true[1], beta_true[1]])  # the same line in the centred covariate
Xs, ys = X[:N_SUB], y[:N_SUB]
print(f"n = {N}, subsample {N_SUB}, tau = {TAU}, true quantile coefficients (centred) {np.round(beta_true, 3)}")


# %% [markdown]
# ## SG-MCMC settings
#
# SGLD's step is on the scale of the posterior variance: stable below $2/\lambda_{max}$, λ the
# largest posterior precision. For the check loss the curvature is $n f_\tau\,E[x x^\top]$ with
# $f_\tau$ the error density at the τ-quantile (≤ φ(1.28) ≈ 0.18 here), so $\varepsilon = 0.1 / (0.2 n)$ keeps
# $\varepsilon\lambda \le 0.1$: a discretisation bias of at most ~2.5 % in the variance (Teh, Thiery &
# Vollmer 2016), plus what is left of the gradient noise after the control variates.

# %%
def sgld(X, y, seed, iters=4_000 if QUICK else 20_000, burn=1_000 if QUICK else 2_000, rate=1.0):
    n = X.shape[0]  # the curvature scales with the learning rate, so the step scales with 1 / rate
    return gb.sgmcmc.run(qr.single_model, X, y, tau=TAU, batch_size=1000, step_size=0.1 / (0.2 * n * rate),
                         learning_rate=rate,
                         num_samples=1000, thinning=iters // 1000, num_warmup=burn, batch_args=(0, 1),
                         control_variates=True, num_chains=4, rng_key=jax.random.PRNGKey(seed), progress=False)


def nuts(X, y, seed):
    mcmc = MCMC(NUTS(qr.single_model), num_warmup=300 if QUICK else 500, num_samples=1000 if QUICK else 2000,
                progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), X, y, tau=TAU)
    return mcmc.get_samples()["beta"]


def timed(f, *a):
    f(*a)  # compile
    t0 = time.perf_counter()
    out = jax.block_until_ready(f(*a))
    return out, time.perf_counter() - t0


# NumPyro's MCMC recompiles on every run (numpyro 0.22), so NUTS's time below includes compilation;
# gb.sgmcmc's second call reuses its compiled program.
t0 = time.perf_counter()
ref_sub = nuts(Xs, ys, 1)
t_nuts_sub = time.perf_counter() - t0
sg_sub, t_sg_sub = timed(lambda: sgld(Xs, ys, 2))
sg_all, t_sg_all = timed(lambda: sgld(X, y, 3))
print(f"NUTS, {N_SUB} points (compile included): {t_nuts_sub:.1f} s")
print(f"SGLD, {N_SUB} points: {t_sg_sub:.1f} s   {sg_sub}")
print(f"SGLD, {N} points: {t_sg_all:.1f} s   {sg_all}")

# %% [markdown]
# ## The same posterior where both apply
#
# On the subsample: the difference of the posterior means in NUTS posterior sds (z) and the ratio of
# the sds, per coefficient; and the kernel Stein discrepancy (Gorham & Mackey 2017) of 100 draws of
# each sampler against the full-data posterior of the subsample, at the same kernel scale (smaller
# is closer; its scale depends on the problem, so compare it between samplers). At 100
# autocorrelated draws it is noisy: it separates gross errors (draws twice as wide) from both
# samplers, not the two samplers from each other.

# %%
cmp = sg_sub.compare({"beta": ref_sub})["beta"]
print("z (SGLD - NUTS) / sd_NUTS:", np.round(cmp["z"], 2), "   sd ratio SGLD / NUTS:", np.round(cmp["sd_ratio"], 3))
assert np.all(np.abs(cmp["z"]) < 2), cmp
c = sg_sub.diagnostics["ksd_c"]  # compare at the same kernel scale
ksd_nuts = gb.sgmcmc.kernel_stein_discrepancy(qr.single_model, {"beta": ref_sub[:: len(ref_sub) // 100]}, Xs, ys,
                                              tau=TAU, c=c)
ksd_wide = gb.sgmcmc.kernel_stein_discrepancy(  # a reference point: SGLD's draws spread twice as wide about their mean
    qr.single_model, {"beta": 2 * sg_sub["beta"][::20] - sg_sub["beta"].mean(0)}, Xs, ys, tau=TAU, c=c)
print(f"KSD (100 draws, c = {c:.3g}): SGLD {sg_sub.diagnostics['ksd']:.3g}, NUTS {ksd_nuts:.3g}, "
      f"SGLD's draws twice as wide {ksd_wide:.3g}")
print(f"ESS (min over coefficients): SGLD {min(sg_sub.diagnostics['ess']['beta']):.0f} on {N_SUB}, "
      f"{min(sg_all.diagnostics['ess']['beta']):.0f} on {N}")

# %% [markdown]
# ## The learning rate at large n
#
# Learning rate 1 is arbitrary for the check loss, which has no natural scale. The loss-likelihood
# bootstrap rate (Lyddon, Holmes & Walker 2019), $w = \mathrm{tr}(J I^{-1} J^\top) / \mathrm{tr}(J)$ with
# $I$ the covariance of the per-unit score and $J$ the (kernel-smoothed) Hessian of the loss at its
# minimiser, makes the Gibbs posterior's spread match the sampling spread of that minimiser
# asymptotically. It needs one loss minimisation and one pass over the units, no posterior draws,
# so `gb.calibrate(..., method="llb")` runs on all n points (O(n)). It estimates a population
# quantity, which this simulation knows: $J = E[f(q_\tau \mid x)\, x x^\top]$ with the Normal
# error density at the τ-quantile $\varphi(z_\tau) / (1 + x_1/2)$, and $I = \tau(1-\tau) E[x x^\top]$,
# computed by quadrature over the covariate. The posterior at the calibrated rate is then drawn by SGLD
# (learning rate w: sds scale as $1/\sqrt{w}$).

# %%
t0 = time.perf_counter()
cal = gb.calibrate(qr.single_model, X, y, TAU, method="llb", rng_key=jax.random.PRNGKey(4), progress=False)
t_cal = time.perf_counter() - t0
cal_sub = gb.calibrate(qr.single_model, Xs, ys, TAU, method="llb", rng_key=jax.random.PRNGKey(5), progress=False)


w_pop = qr.population_llb_rate(TAU, centre=1.0)  # the centred design above
print(f"LLB learning rate on {N} points: {cal.learning_rate:.4f} ({t_cal:.1f} s with compilation); "
      f"on the {N_SUB}-point subsample: {cal_sub.learning_rate:.4f}; population value (quadrature): {w_pop:.4f}")
assert abs(cal.learning_rate - w_pop) < 0.1 * w_pop
sg_cal = sgld(X, y, 6, rate=cal.learning_rate)
print(f"SGLD at w = {cal.learning_rate:.3f}: sds {np.round(sg_cal['beta'].std(0), 5)}, at w = 1: "
      f"{np.round(sg_all['beta'].std(0), 5)} (ratio {np.round(sg_cal['beta'].std(0) / sg_all['beta'].std(0), 3)}, "
      f"1/sqrt(w) = {1 / np.sqrt(cal.learning_rate):.3f})")

# %% [markdown]
# ## The figure
#
# Marginal posteriors of the two coefficients: NUTS and SGLD on the subsample overlap; SGLD on all
# n points is narrower by about $\sqrt{n / n_{sub}}$. (Full run, 2-core shared machine: NUTS on 10^4
# points 20.1 s with compilation; SGLD, 4 chains of 20,000 iterations, 5.9 s on 10^4 and 10.6 s on
# 10^5 points, compiled; z = 0.02, -0.02 and sd ratios 1.02, 1.05 against NUTS on the subsample.)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for j, ax in enumerate(axes):
    for draws, label, color in [(ref_sub[:, j], f"NUTS, n = {N_SUB} ({t_nuts_sub:.1f} s with compilation)", "C0"),
                                (sg_sub["beta"][:, j], f"SGLD, n = {N_SUB} ({t_sg_sub:.1f} s, compiled)", "C1"),
                                (sg_all["beta"][:, j], f"SGLD, n = {N} ({t_sg_all:.1f} s, compiled)", "C2")]:
        ax.hist(np.asarray(draws), bins=50, density=True, histtype="step", lw=1.5, label=label, color=color)
    ax.axvline(beta_true[j], color="k", ls="--", lw=1, label="true quantile coefficient")
    ax.set_xlabel(["intercept (at the centre of x)", "slope"][j])
    ax.set_ylabel("posterior density")
axes[0].legend(fontsize=7)
fig.suptitle(f"Quantile regression, tau = {TAU}: Gibbs posterior by SGLD (minibatches of 1000) and NUTS")
fig.tight_layout()
plt.show() if not QUICK else plt.close(fig)
