# %% [markdown]
# # β-VAE, InfoMax and β-TCVAE with honest information estimates
#
# With data distribution $p_D(x)$, encoder $q(z|x)$, aggregate posterior $q(z)=E_{p_D}q(z|x)$
# and prior $p(z)$:
#
# $$KL[q(z)\|p(z)] = E_{p_D} KL[q(z|x)\|p(z)] - I_q[X;Z].$$
#
# InfoMax $KL[q(z)\|p] - \lambda I$ becomes, with $H[X|Z] \le -E\log p_\theta(x|z)$, the β-VAE
# loss with $\beta = 1/(1+\lambda)$; β-TCVAE splits the expected KL into index-code MI, total
# correlation and dimension-wise KL. This notebook trains the objectives of
# `genbayes.infomax` and measures the terms on finite data sets, where $0 \le I \le \log N$.
#
# Run top to bottom with `python notebooks/infomax.py` (set `GENBAYES_NOTEBOOK_QUICK=1` for a
# reduced run).

# %%
import math
import os

import matplotlib

QUICK = os.environ.get("GENBAYES_NOTEBOOK_QUICK") == "1"
if QUICK:
    matplotlib.use("Agg")
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from genbayes import infomax as im
from genbayes.demos.infomax import monotone_within_error, sweep
from genbayes.models import vae as V
from genbayes.models.factorial import load_factorial

STEPS = 400 if QUICK else 2000
BETAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

# %% [markdown]
# ## 1. Rate–distortion over β on the digits
# Six β-VAEs are trained as one vmapped program (`infomax.train` inside `jax.vmap`).
# Rate and distortion are per image on held-out digits; the mutual information is the
# exact-mixture estimate over the test set.

# %%
rows, n_test, (net, params) = sweep(BETAS, num_steps=STEPS, hidden=32 if QUICK else 64)
rd = pd.DataFrame(rows, columns=["beta", "rate", "rate_se", "distortion", "distortion_se", "MI", "MI_se"])
rd["log_N"] = math.log(n_test)
print(rd.to_string(index=False))
print("rate falls within error:", monotone_within_error(rd.rate, rd.rate_se, decreasing=True))
print("distortion rises within error:", monotone_within_error(rd.distortion, rd.distortion_se, decreasing=False))
print("MI <= log N everywhere:", bool((rd.MI <= rd.log_N).all()))

fig, ax = plt.subplots(figsize=(5, 4))
ax.errorbar(rd.distortion, rd.rate, xerr=2 * rd.distortion_se, yerr=2 * rd.rate_se, marker="o")
for _, r in rd.iterrows():
    ax.annotate(f"β={r.beta:g}", (r.distortion, r.rate), textcoords="offset points", xytext=(4, 4))
ax.set_xlabel("distortion (nats)")
ax.set_ylabel("rate (nats)")
plt.show()

# %% [markdown]
# ## 2. The decomposition table at β = 1
# Expected KL (the rate) = I[X;Z] + KL[q(z)‖p]; KL[q(z)‖p] = total correlation + dimension-wise KL.
# Everything is exact over the data set up to Monte Carlo over z (errors shown).

# %%
i1 = BETAS.index(1.0)
p1 = jax.tree.map(lambda a: a[i1], params)
data = V.load_digits(0.2, 0)
loc, scale = net.encode(p1, jnp.asarray(data.x_test))
dec = im.decompose(loc, scale, rng_key=jax.random.key(0), num_samples=8)
print(dec)
print(dec.to_dataframe().to_string(index=False))
print("identity gap E KL − I − KL[q(z)‖p]:", dec.identity_gap())
print("active units (E KL per dim > 0.01):", int((dec.kl_per_dim > 0.01).sum()), "of", loc.shape[1])

# %% [markdown]
# ## 3. Latent traversals
# Decode z = 0 with one coordinate moved from −2.5 to 2.5, for the two most active dimensions.

# %%
order = np.argsort(-dec.kl_per_dim)[:2]
grid = jnp.linspace(-2.5, 2.5, 7)
fig, axes = plt.subplots(2, 7, figsize=(8, 2.6))
for r, dim in enumerate(order):
    z = jnp.zeros((7, loc.shape[1])).at[:, dim].set(grid)
    imgs = jax.nn.sigmoid(net.decode_logits(p1, z)).reshape(7, 8, 8)
    for c in range(7):
        axes[r, c].imshow(np.asarray(imgs[c]), cmap="gray_r")
        axes[r, c].axis("off")
plt.show()

# %% [markdown]
# ## 4. MIG on the synthetic factorial discs: plain VAE against β-TCVAE
# Discs generated from three known factors (x, y, radius), every combination once. Both models
# have the same network (10 latents, as Chen et al. 2018 on dSprites), optimiser, steps, batch
# size, and, seed by seed, the same initial weights and SVI key; β-TCVAE differs only in β = 6 on
# the total-correlation term (MSS estimator with the data set's size). MIG is reported with two
# estimators: the one of Chen et al. (2018), which uses the stochastic encoder q(z|x) and exact
# mixtures over the data set, and the histogram of encoder means of Locatello et al. (2019),
# whose plug-in bias (≈ (bins − 1)(values − 1)/(2N) nats) gives inactive latents spurious
# information on small data sets.

# Measured at full size (this cell with `QUICK` off uses 8 seeds; these numbers are 12 other
# paired seeds, 3,000 steps, hidden 128, batch 128): MIG (Chen estimator) **β-TCVAE 0.154 ± 0.024,
# VAE 0.059 ± 0.008**, paired difference 0.095 ± 0.019; histogram estimator 0.134 ± 0.026 against
# 0.058 ± 0.008; total correlation 0.50 ± 0.02 against 4.83 ± 0.06 nats. Reading the mutual
# information matrices of the seeds we inspected: β-TCVAE keeps 3–5 active latents and gives
# some factors a latent of their own (the radius in one run, x and y in another), while others
# stay split over two or three latents; the plain VAE spreads every factor over 6–9 active
# latents. Which factors a β-TCVAE run isolates changes from seed to seed, hence the wide spread
# (as Locatello et al. 2019 found at scale): compare the paired difference with its SE.

# %%
from genbayes.demos.infomax import mig_comparison  # noqa: E402

res = mig_comparison(num_seeds=2 if QUICK else 8, num_steps=300 if QUICK else 3000,
                     hidden=32 if QUICK else 128)
mig_rows = []
for name, r in res.items():
    for est in ("mig_encoder", "mig_histogram", "total_correlation"):
        v = r[est]
        mig_rows.append((name, est, v.mean(), v.std(ddof=1) / np.sqrt(len(v)), np.round(v, 3).tolist()))
mig_df = pd.DataFrame(mig_rows, columns=["model", "quantity", "mean", "se", "per seed"])
print(mig_df.to_string(index=False))
names = list(res)
for est in ("mig_encoder", "mig_histogram"):
    d = res[names[1]][est] - res[names[0]][est]  # paired by seed
    print(f"paired difference β-TCVAE − VAE, {est}: {d.mean():.3f} ± {d.std(ddof=1) / np.sqrt(len(d)):.3f}")
# Read honestly: β-TCVAE lowers the total correlation of q(z) by an order of magnitude, but
# MIG varies a lot between training seeds; compare the paired difference with its standard
# error before calling a winner (see the measured numbers in the markdown below).
plt.figure(figsize=(5, 3))
for i, name in enumerate(names):
    v = res[name]["mig_encoder"]
    plt.plot(np.full(len(v), i) + np.linspace(-0.1, 0.1, len(v)), v, "o", alpha=0.6)
    plt.errorbar(i + 0.25, v.mean(), yerr=2 * v.std(ddof=1) / np.sqrt(len(v)), fmt="ks")
plt.xticks(range(len(names)), names)
plt.ylabel("MIG (encoder estimator)")
plt.show()
