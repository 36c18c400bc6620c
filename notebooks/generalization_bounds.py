# %% [markdown]
# # Generalization bounds for Gibbs posteriors, and the learning rate that minimises them
#
# The Gibbs posterior $\rho_w(\theta) \propto e^{-w \sum_i \ell(\theta, x_i)}\pi(\theta)$ minimises
# $w\,E_\rho[\sum_i \ell] + \mathrm{KL}(\rho\|\pi)$ (Catoni 2007), the objective of a PAC-Bayes bound.
# `gb.bounds` estimates its two ingredients for every rate of a ladder from one batched sampling program
# (ChEES-HMC, whose chains at each rate share one adapted step size and trajectory length; a rate where
# it fails is drawn again by NUTS):
# $\log Z(w) = -\int_0^w E_{\rho_t}[\sum\ell]\,dt$ by thermodynamic integration along the rate, and
# $\mathrm{KL}(\rho_w\|\pi) = -w E_{\rho_w}[\sum \ell] - \log Z(w)$. For a loss bounded in $[a, b]$ it
# turns them into a bound on the expected risk $E_{\rho_w} R$ that holds, with probability $1-\delta$,
# at every rate at once (union bound), so the rate that minimises it keeps the guarantee.
#
# Data: the Wisconsin breast-cancer data bundled with scikit-learn (569 tumours, malignant or benign;
# Wolberg, Street & Mangasarian 1995),
# a linear classifier with the sigmoid loss (a smooth, bounded surrogate of the 0–1 loss that
# gradient-based samplers can use). Set `GENBAYES_NOTEBOOK_QUICK=1` to run at reduced size.

# %%
import os
import warnings

import matplotlib

QUICK = os.environ.get("GENBAYES_NOTEBOOK_QUICK") == "1"
if QUICK:
    matplotlib.use("Agg")
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import numpyro
import numpyro.distributions as dist

import genbayes as gb
from genbayes.models.logistic_regression import breast_cancer

numpyro.enable_x64()
RUN = ({"num_warmup": 150, "num_samples": 200, "num_chains": 2, "num_low_rungs": 6} if QUICK else
       {"num_warmup": 400, "num_samples": 600, "num_chains": 4, "num_low_rungs": 12})
K = 10 if QUICK else 24

# %% [markdown]
# ## 1. Data and model
#
# The first five standardised features and an intercept, the sigmoid loss with scale 1/2; half the
# data are held out to measure the true risk.

# %%
Xtr, ytr, Xte, yte = (jnp.asarray(a) for a in breast_cancer(num_features=5, test_fraction=0.5, seed=0))
n = int(ytr.size)
loss = gb.losses.sigmoid(0.5)


def model(X, y):
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 2.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("n", X.shape[0]):
        numpyro.sample("y", gb.Loss(loss, alpha + X @ beta), obs=y)


def held_out_risks(samples, X, y):
    """E_rho of the held-out sigmoid and 0-1 risks at each rate, from the draws (K, S, ...)."""
    f = samples["alpha"][..., None] + np.einsum("ksd,md->ksm", samples["beta"], X)
    return (np.asarray(loss(jnp.asarray(f), y)).mean(axis=(1, 2)),
            np.asarray(gb.losses.zero_one(jnp.asarray(f), y)).mean(axis=(1, 2)))


print(f"{n} training and {yte.size} held-out tumours, {Xtr.shape[1] + 1} coefficients")

# %% [markdown]
# ## 2. The bound against the learning rate
#
# The ladder is fixed before looking at the data: $w(b - a)$ from 0.1 to $4\sqrt n$, geometric. Every rate is
# one posterior of a single batched program; the result holds the empirical risk, the KL, the
# Seeger–Maurer kl bound at $\delta = 0.05$ and its Monte Carlo standard error.

# %%
rates = gb.bounds.default_rates(n, loss.loss_range, num=K)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    res = gb.bounds.pac_bayes(model, Xtr, ytr, learning_rates=rates, delta=0.05,
                              bound="kl", rng_key=jax.random.PRNGKey(0), **RUN)
print(res)
for w in res.diagnostics["warnings"]:
    print("  caution:", w)
print(res.to_dataframe().round(4).to_string())

# %% [markdown]
# The held-out risk $E_{\rho_w}[\hat R_{test}]$ from the draws at each rate (the sigmoid loss the
# bound is about, and the 0–1 loss, the misclassification rate of a randomized classifier).

# %%
test_sigmoid, test_01 = held_out_risks(res.diagnostics["samples"], np.asarray(Xte), yte)
ax = res.plot(test_risk=test_sigmoid)
ax.plot(rates, test_01, marker="^", ms=3, label="held-out 0-1 risk")
ax.legend()
plt.show()

# %% [markdown]
# ## 3. The rate chosen by the bound, beside the others
#
# `gb.calibrate(method="pac-bayes")` returns the minimising rate; the guarantee holds there because
# of the union bound. The held-out risk at that rate must lie below the bound (with probability
# at least 0.95 over the training data).

# %%
k = res.best_index
print(f"chosen rate w = {res.best_rate:.3g}: bound {res.best_bound:.4f} (MC SE {res.bound_se[k]:.4f}), "
      f"empirical risk {res.empirical_risk[k]:.4f}, held-out sigmoid risk {test_sigmoid[k]:.4f}, "
      f"held-out 0-1 risk {test_01[k]:.4f} (at most 2 x the sigmoid risk)")
ok = res.rate_valid  # rates whose estimates are usable (see the cautions, if any)
for b in ("catoni", "mcallester"):
    # the same empirical risks and KLs (a loss in [0, 1] needs no normalising) under the other bounds
    other = gb.bounds.pac_bayes_bound(res.empirical_risk[ok], np.maximum(res.kl[ok], 0.0), n, delta=0.05, bound=b,
                                      num_rates=K, c=rates[ok] if b == "catoni" else None)
    print(f"  {b:>10}: smallest bound {other.min():.4f} at w = {rates[ok][np.argmin(other)]:.3g}")

# %% [markdown]
# ## 4. The information-theoretic view: Xu and Raginsky (2017)
#
# The expected generalization gap of the randomized learner is at most $\sqrt{2\sigma^2 I(W;S)/n}$
# with $\sigma = 1/2$ for a loss in [0, 1], and $I(W;S) \le E_S\,\mathrm{KL}(\rho_S\|\pi)$, estimated
# here over bootstrap data sets (one batched program). Beside it, the observed gap of this one split:
# held-out risk minus empirical risk. Where a caution says the ladder is too coarse (the trapezoid's
# curvature correction is large, typically at the top rates of the quick run), the KL there carries
# a discretisation error of that size: read the bound there as unreliable, or use more rates.

# %%
mi_rates = rates  # the thermodynamic integral needs the dense ladder; every rate is reported
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    mi = gb.bounds.mutual_information_bound(model, Xtr, ytr, learning_rates=mi_rates,
                                            num_datasets=4 if QUICK else 12, rng_key=jax.random.PRNGKey(1), **RUN)
print(mi)
for w in mi.diagnostics["warnings"]:
    print("  caution:", w)
gap = test_sigmoid - res.empirical_risk
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(mi_rates, mi.bound, marker="o", label="Xu-Raginsky bound on E[gap]")
ax.plot(mi_rates, gap, marker="s", label="observed gap (held-out - empirical)")
ax.set_xscale("log")
ax.set_xlabel("learning rate w")
ax.set_ylabel("generalization gap (sigmoid loss)")
ax.set_title("Information-theoretic bound against the observed gap")
ax.legend()
plt.show()
for w, bnd, g in zip(mi_rates, mi.bound, gap):
    print(f"w = {w:8.3g}: bound {bnd:.4f}, observed gap {g:+.4f}")
