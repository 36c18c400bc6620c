# %% [markdown]
# # Cross-validation and the marginal likelihood
#
# Fong & Holmes (2020) show that the log marginal likelihood is the sum of all leave-p-out
# cross-validation scores, $\log p(x_{1:n}) = \sum_{p=1}^n S_{CV}(p)$, with
# $S_{CV}(p) = \binom{n}{p}^{-1}\sum_{|S|=p} \frac1p \sum_{i\in S} \log p(x_i \mid x_{-S})$.
# The evidence therefore also scores the model by how well it predicts from *tiny* training
# sets (large p), which is where the prior matters. This notebook checks the identity exactly
# on a conjugate model and estimates it on a logistic regression.

# %%
import os

QUICK = os.environ.get("GENBAYES_NOTEBOOK_QUICK") == "1"
import matplotlib

if QUICK:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import jax
import numpy as np
import numpyro

numpyro.enable_x64()  # the identity is checked to rounding error: float64

import genbayes as gb
from genbayes import cv
from genbayes.models import logistic_regression as lr

# %% [markdown]
# ## Exact: Normal mean with known variance, two priors
# All $2^n - 1$ held-out sets are enumerated in one vmapped program.

# %%
rng = np.random.default_rng(0)
n = 12 if QUICK else 18
x = rng.normal(1.0, 1.0, n)
reports = {}
for name, v0 in [("vague prior (v0 = 100)", 100.0), ("sensible prior (v0 = 4)", 4.0)]:
    fam = gb.conjugate.NormalKnownVariance(0.0, v0, 1.0)
    reports[name] = cv.identity(fam, x)
    print(name, reports[name])

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for name, rep in reports.items():
    ax.plot(np.arange(1, n + 1), rep.s_cv, "o-", ms=3, label=f"{name}: log p(x) = {rep.log_evidence:.2f}")
ax.set_xlabel("p (held-out points)")
ax.set_ylabel("S_CV(p)")
ax.legend()
ax.set_title("Small p barely depends on the prior; large p (tiny training sets) does")
plt.show()
reports["vague prior (v0 = 100)"].to_dataframe().round(4)

# %% [markdown]
# ## Beta–Bernoulli at scale: hypergeometric counting
# The predictive depends on counts only, so every $S_{CV}(p)$ is exact for any n.

# %%
xb = rng.binomial(1, 0.3, 2000 if QUICK else 10000)
rep = cv.identity(gb.conjugate.BetaBernoulli(2.0, 2.0), xb)
print(rep)
rep.plot()
plt.show()

# %% [markdown]
# ## Logistic regression on the breast cancer data
# No closed form: random orderings with refits every few steps (one batched NUTS program) and
# importance weights in between. Each ordering's terms telescope to an estimate of log p(x).
# PSIS leave-one-out agrees with refits where k̂ is small.

# %%
n_lr = 30 if QUICK else 60
X, y = lr.breast_cancer(num_features=2, n=n_lr, seed=0)
kw = dict(num_warmup=150 if QUICK else 400, num_samples=200 if QUICK else 800)
rep_lr = cv.identity(lr.model, X, y, rng_key=jax.random.PRNGKey(0), num_permutations=3 if QUICK else 8,
                     stride=max(1, n_lr // 6), **kw)
print(rep_lr)
rep_lr.plot()
plt.show()

# %%
loo_psis = cv.lpo(lr.model, X, y, p=1, method="auto", rng_key=jax.random.PRNGKey(1), num_chains=2, **kw)
print(loo_psis)
print("S_CV(1) from the orderings:", rep_lr.s_cv[0], "±", rep_lr.s_cv_se[0])
loo_psis.to_dataframe().head()
