# %% [markdown]
# # Marginal likelihood estimators and prequential SMC
#
# `genbayes.evidence.log_evidence` estimates $\log p(x)$ by Laplace, thermodynamic integration,
# stepping stone (both from one batched NUTS program over a temperature ladder) and tempered SMC.
# We compare them with the closed form on Williams' radiata pine data (Friel & Wyse 2012), then use
# data-tempered SMC along random orderings to estimate every $S_{CV}(p)$ in one sweep.

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro

QUICK = os.environ.get("GENBAYES_NOTEBOOK_QUICK") == "1"
if QUICK:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

import genbayes as gb
from genbayes import evidence
from genbayes.models import logistic_regression, radiata_pine

numpyro.enable_x64()

# %% [markdown]
# ## Radiata pine: every estimator against the exact answer

# %%
X, y = radiata_pine.design("density")
fam = radiata_pine.prior()
exact = float(fam.log_evidence(X, y))
opts = {"smc": {"num_particles": 300 if QUICK else 1000, "num_runs": 4 if QUICK else 8}}
ladder = {"ladder": 16 if QUICK else 32, "num_samples": 400 if QUICK else 1000, "num_warmup": 300 if QUICK else 500}
opts["thermodynamic"] = opts["stepping_stone"] = ladder
res = evidence.compare(fam, X, y, methods=["exact", "laplace", "smc", "stepping_stone", "thermodynamic"],
                       rng_key=jax.random.PRNGKey(0), options=opts)
df = evidence.to_dataframe(res, exact=exact)
print(df.to_string(index=False))

# %%
names = [m for m in res if m != "exact"]
plt.errorbar([res[m].log_z - exact for m in names], range(len(names)), xerr=[2 * res[m].se for m in names], fmt="o")
plt.axvline(0, color="k")
plt.yticks(range(len(names)), names)
plt.xlabel("log Z - exact (nats), ± 2 SE")
plt.title("radiata pine (density)")
plt.show()

# %% [markdown]
# ## Logistic regression (breast cancer): no closed form, so the estimators check each other

# %%
Xb, yb = logistic_regression.breast_cancer(num_features=3 if QUICK else 5, n=100 if QUICK else 200, seed=0)
res_b = evidence.compare(logistic_regression.model, jnp.asarray(Xb), jnp.asarray(yb),
                         # (the quick run, executed by the test suite, skips the ladder's second compilation)
                         methods=["laplace", "smc"] if QUICK else ["laplace", "smc", "stepping_stone", "thermodynamic"],
                         rng_key=jax.random.PRNGKey(1), options=opts)
print(evidence.to_dataframe(res_b).to_string(index=False))

# %% [markdown]
# ## Prequential SMC: S_CV(p) for every p from one sweep
#
# Position k of a random ordering carries $S_{CV}(n-k+1)$; averaging each position over orderings gives all of
# them, and each ordering's terms add up to a log evidence estimate.

# %%
nk = gb.conjugate.NormalKnownVariance(0.0, 2.0, 1.0)
x = jnp.asarray(np.random.default_rng(0).normal(0.7, 1.0, 12))
pq = evidence.prequential(nk, x, num_permutations=8 if QUICK else 32, num_particles=300 if QUICK else 1000,
                          rng_key=jax.random.PRNGKey(2))
print(pq)
p = np.arange(1, 13)
plt.errorbar(p, pq.s_cv, yerr=2 * pq.s_cv_se, fmt="o", label="prequential SMC ± 2 SE")
exact_terms = np.mean([np.asarray(gb.conjugate.sequence_log_predictive(nk, x, order=o)) for o in pq.orders], 0)
plt.plot(p, exact_terms[::-1], "k.", label="exact terms, same orderings")
plt.xlabel("p (held-out points)")
plt.ylabel("S_CV(p)")
plt.legend()
plt.show()
print("sum of S_CV:", pq.s_cv.sum(), " exact log Z:", float(nk.log_evidence(x)))
