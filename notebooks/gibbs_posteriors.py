# %% [markdown]
# # Gibbs (loss-based) posteriors with calibrated learning rates
#
# A Gibbs posterior replaces the likelihood by a loss (Bissiri, Holmes & Walker 2016):
# $\pi_w(\theta \mid x) \propto \exp(-w \sum_i \ell(\theta, x_i))\,\pi(\theta)$.
# In genbayes a loss is written in an ordinary NumPyro model with `gb.Loss`, or a likelihood
# model is converted with `gb.gibbs`; the learning rate $w$ is chosen with `gb.calibrate`.
#
# Set `GENBAYES_NOTEBOOK_QUICK=1` to run everything at reduced size.

# %%
import os

import matplotlib

QUICK = os.environ.get("GENBAYES_NOTEBOOK_QUICK") == "1"
if QUICK:
    matplotlib.use("Agg")
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import numpyro
from numpyro.infer import MCMC, NUTS
from scipy.stats import norm

from genbayes.calibration import calibrate
from genbayes.models import classification, median, quantile_regression, robust_regression

numpyro.enable_x64()
S = 300 if QUICK else 1500
W = 300 if QUICK else 800


def nuts(model, *args, seed=0, **kwargs):
    mcmc = MCMC(NUTS(model), num_warmup=W, num_samples=S, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), *args, **kwargs)
    return mcmc.get_samples()


# %% [markdown]
# ## 1. The median: absolute loss, and what the learning rate does to coverage
#
# Skewed data on a large scale (median 5). With $w = 1$ the posterior of the median is far too
# narrow; the information-matching rate (LLB) is $2 f(\mathrm{median}) \approx 0.16$ here.
# Because the model is one-dimensional, coverage of the true median over fresh data sets can be
# computed exactly on a grid for any $w$: that is the "coverage against $w$" curve.

# %%
n = 50
y = median.simulate(jax.random.PRNGKey(0), n)
llb = calibrate(median.model, y, method="llb", rng_key=jax.random.PRNGKey(1))
gpc = calibrate(median.model, y, method="gpc", rng_key=jax.random.PRNGKey(2), B=40 if QUICK else 200,
                num_warmup=150 if QUICK else 300, num_samples=150 if QUICK else 300, max_iter=6 if QUICK else 15,
                progress=not QUICK)
print(llb)
print(gpc)
print(gpc.to_dataframe())

# %%
R = 100 if QUICK else 400
reps = np.asarray(median.simulate(jax.random.PRNGKey(3), n * R)).reshape(R, n)
grid = np.linspace(-10, 40, 8001)


def coverage(w, alpha=0.1):
    hits = 0
    for yy in reps:
        lp = -w * np.abs(yy[:, None] - grid[None, :]).sum(0) + norm.logpdf(grid, 0, 100)
        c = np.cumsum(np.exp(lp - lp.max()))
        c /= c[-1]
        hits += grid[np.searchsorted(c, alpha / 2)] <= median.true_median() <= grid[np.searchsorted(c, 1 - alpha / 2)]
    return hits / R


ws = np.geomspace(0.02, 2.0, 8 if QUICK else 20)
cov = [coverage(w) for w in ws]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogx(ws, cov, "o-", label="coverage of 90% intervals")
ax.axhline(0.9, color="k", lw=0.8)
for cal, c in ((llb, "C1"), (gpc, "C2")):
    ax.axvline(cal.learning_rate, color=c, ls="--", label=f"{cal.method}: w={cal.learning_rate:.3f}")
ax.axvline(1.0, color="C3", ls=":", label="w = 1")
ax.set_xlabel("learning rate w")
ax.set_ylabel("coverage")
ax.legend(fontsize=8)
plt.show() if not QUICK else plt.close(fig)

# %% [markdown]
# ## 2. Quantile regression: several quantiles at once, one calibrated rate each

# %%
Xq, yq, b = quantile_regression.simulate(jax.random.PRNGKey(4), 200 if QUICK else 1000)
taus = (0.1, 0.5, 0.9)
rates = [calibrate(quantile_regression.single_model, Xq, yq, t, method="llb", rng_key=jax.random.PRNGKey(5)).learning_rate
         for t in taus]
print("LLB rates per quantile:", np.round(rates, 3))
beta = np.asarray(nuts(quantile_regression.model, Xq, yq, taus, jnp.asarray(rates))["beta"])
fig, ax = plt.subplots(figsize=(6, 4))
ax.scatter(np.asarray(Xq[:, 1]), np.asarray(yq), s=4, color="gray", alpha=0.4)
xs = np.linspace(0, 2, 50)
for k, t in enumerate(taus):
    lines = beta[:, 0, k][:, None] + beta[:, 1, k][:, None] * xs
    lo, hi = np.quantile(lines, [0.05, 0.95], axis=0)
    ax.fill_between(xs, lo, hi, alpha=0.4, label=f"tau={t}")
    tb = quantile_regression.true_beta(t, np.asarray(b))
    ax.plot(xs, tb[0] + tb[1] * xs, "k--", lw=1)
ax.legend()
plt.show() if not QUICK else plt.close(fig)

# %% [markdown]
# ## 3. Robust regression under outliers: Huber Gibbs posterior vs Gaussian likelihood
#
# The diabetes data (standardised) with 10% of the responses shifted by 6 standard deviations.

# %%
Xd, yd, yclean, out = robust_regression.diabetes(num_features=3)
a_ls, b_ls = robust_regression.least_squares(Xd, yclean)
w_h = calibrate(robust_regression.model, jnp.asarray(Xd), jnp.asarray(yd), method="llb", rng_key=jax.random.PRNGKey(6))
print(w_h)
s_h = nuts(robust_regression.model, jnp.asarray(Xd), jnp.asarray(yd), learning_rate=w_h.learning_rate)
s_g = nuts(robust_regression.gaussian_model, jnp.asarray(Xd), jnp.asarray(yd))
names = ["age", "sex", "bmi"]
fig, ax = plt.subplots(figsize=(6, 3.5))
for j, nm in enumerate(names):
    for off, s, c, lab in ((-0.15, s_g, "C3", "Gaussian"), (0.15, s_h, "C0", "Huber Gibbs")):
        lo, mid, hi = np.quantile(np.asarray(s["beta"][:, j]), [0.05, 0.5, 0.95])
        ax.errorbar(j + off, mid, yerr=[[mid - lo], [hi - mid]], fmt="o", color=c, label=lab if j == 0 else None)
    ax.plot([j - 0.3, j + 0.3], [b_ls[j]] * 2, "k-", lw=2, label="least squares, clean data" if j == 0 else None)
ax.set_xticks(range(3), names)
ax.set_ylabel("coefficient")
ax.legend(fontsize=8)
plt.show() if not QUICK else plt.close(fig)
print("intercept: Gaussian", float(s_g["alpha"].mean()), "Huber", float(s_h["alpha"].mean()), "clean LS", a_ls)

# %% [markdown]
# ## 4. Classification with the hinge loss (a Bayesian SVM)

# %%
Xc, yc, Xt, yt = classification.breast_cancer(num_features=5, test_fraction=0.3)
for loss in ("hinge", "logistic"):
    s = nuts(classification.model, jnp.asarray(Xc), jnp.asarray(yc), loss=loss)
    print(loss, "test accuracy:", round(classification.accuracy(Xt, yt, s["alpha"], s["beta"]), 3))
