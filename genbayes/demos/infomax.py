"""Demo section: a β-VAE rate–distortion sweep on the bundled 8×8 digits.

Six β-VAEs (β = 0.25 … 8) are trained as one vmapped, compiled SVI program; on held-out
digits we report the rate (E KL[q(z|x) ‖ p(z)]), the distortion (−E log p(x|z)) and the
mutual information I_q[X; Z] estimated exactly over the test set (which can never exceed
log N).

MIG on the synthetic factorial discs (``mig_comparison``, run in ``notebooks/infomax.py`` and
in the slow test; too slow for this section) — measured with 10 latents, hidden 128, Adam 1e-3,
batch 128, 3,000 steps, 12 paired seeds (``seed=1`` initialisations): β-TCVAE (β = 6, MSS)
MIG 0.154 ± 0.024 against the plain VAE's 0.059 ± 0.008 (encoder estimator of Chen et al.
2018; paired difference 0.095 ± 0.019), histogram estimator 0.134 ± 0.026 against 0.058 ± 0.008.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import Estimate, Section, image_path, save_figure

BETAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""The β values of the rate–distortion sweep."""
FACTORIAL_KW = {"image_size": 16, "num_positions": 12, "radii": (2.0, 3.0, 4.0)}  # N = 432 discs
"""The factorial disc images the β-VAEs are trained on (16×16, 12 × 12 positions × 3 radii: N = 432)."""


def monotone_within_error(values, ses, *, decreasing: bool, k: float = 2.0) -> bool:
    """True if consecutive values never move against the stated direction by more than k SE of the difference."""
    v, s = np.asarray(values, float), np.asarray(ses, float)
    d = np.diff(v) if decreasing else -np.diff(v)
    return bool(np.all(d <= k * np.sqrt(s[1:] ** 2 + s[:-1] ** 2)))


def sweep(betas=BETAS, *, num_steps: int, latent_dim: int = 8, hidden: int = 64, batch_size: int = 128, seed: int = 0):
    """Train one β-VAE per β (vmapped) on digits; return rows (β, rate, rate_se, distortion, distortion_se, MI, MI_se)."""
    from .. import infomax as im
    from ..models import vae as V

    data = V.load_digits(0.2, seed)
    net = V.VAE(latent_dim=latent_dim, hidden=(hidden,), rng_key=jax.random.key(seed))
    x, xt = jnp.asarray(data.x_train), jnp.asarray(data.x_test)

    def one(b, k):
        return im.train(net.model, net.guide, im.BetaELBO(b), x, num_steps=num_steps, rng_key=k,
                        learning_rate=3e-3, subsample_size=batch_size)[0]

    params = jax.jit(jax.vmap(one))(jnp.asarray(betas), jax.random.split(jax.random.key(seed + 1), len(betas)))
    rows = []
    for i, b in enumerate(betas):
        p = jax.tree.map(lambda a: a[i], params)
        rd = im.rate_distortion(net.model, net.guide, p, xt, rng_key=jax.random.key(seed + 2), num_particles=4)
        loc, scale = net.encode(p, xt)
        dec = im.decompose(loc, scale, rng_key=jax.random.key(seed + 3), num_samples=4)
        rows.append((float(b), rd.rate, rd.rate_se, rd.distortion, rd.distortion_se,
                     dec.mutual_info.value, dec.mutual_info.se))
    return rows, int(xt.shape[0]), (net, params)


def mig_comparison(
    *,
    num_seeds: int,
    num_steps: int,
    beta: float = 6.0,
    latent_dim: int = 10,
    hidden: int = 128,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    data_kw: dict | None = None,
    seed: int = 0,
    histogram: bool = True,
):
    """Plain VAE against β-TCVAE on the factorial discs at equal budget, paired over seeds.

    Both models share the network, the optimiser (Adam, ``learning_rate``), the steps, the batch
    size and, seed by seed, the initial weights and the SVI key; they differ only in the objective
    (β-TCVAE: ``BetaTCELBO(beta=beta)`` with MSS and the data set's size, i.e. β on the total
    correlation only). Seeds are trained as one vmapped program per model.

    Returns:
        dict model -> dict with per-seed arrays ``mig_encoder`` (Chen et al. 2018 estimator),
        ``mig_histogram`` (encoder means, 20 bins; only with ``histogram=True``) and
        ``total_correlation`` with its Monte Carlo standard error ``total_correlation_se``.
    """
    from .. import infomax as im
    from ..models import vae as V
    from ..models.factorial import load_factorial

    # larger discs than load_factorial's defaults: more pixels per factor step, sharper encodings
    f = load_factorial(**(FACTORIAL_KW if data_kw is None else data_kw))
    x = jnp.asarray(f.images)
    n = x.shape[0]
    nets = [
        V.VAE(latent_dim=latent_dim, hidden=(hidden,), data_dim=x.shape[1], rng_key=jax.random.key(1000 * seed + s))
        for s in range(num_seeds)
    ]
    net = nets[0]
    inits = jax.tree.map(lambda *a: jnp.stack(a), *[m.init_params() for m in nets])
    keys = jax.random.split(jax.random.key(seed + 77), num_seeds)
    out = {}
    for name, loss in (("VAE", im.BetaELBO(1.0)), (f"beta-TCVAE (beta={beta:g})", im.BetaTCELBO(beta=beta, dataset_size=n))):

        def one(p0, k, loss=loss):
            return im.train(net.model, net.guide, loss, x, num_steps=num_steps, rng_key=k, init_params=p0,
                            learning_rate=learning_rate, subsample_size=batch_size)[0]

        params = jax.jit(jax.vmap(one))(inits, keys)
        res = {"mig_encoder": [], "mig_histogram": [], "total_correlation": [], "total_correlation_se": []}
        for s in range(num_seeds):
            loc, scale = net.encode(jax.tree.map(lambda a: a[s], params), x)
            res["mig_encoder"].append(im.mig(loc, f.factors, scale=scale, rng_key=jax.random.key(seed + 3)).score)
            if histogram:
                res["mig_histogram"].append(im.mig(loc, f.factors).score)
            tc = im.decompose(loc, scale, rng_key=jax.random.key(seed + 5), num_samples=2).total_correlation
            res["total_correlation"].append(tc.value)
            res["total_correlation_se"].append(tc.se)
        out[name] = {k: np.array(v) for k, v in res.items() if v}
    return out


def section(outdir: Path, *, quick: bool, seed: int) -> Section:
    """Run the β-VAE part of the tour: a rate–distortion sweep over β on the 8×8 digits.

    Args:
        outdir: the report folder; the section's PNG files are written there.
        quick: smaller sizes (the ``genbayes demo --quick`` run).
        seed: random seed of the data and of every ``rng_key``.

    Returns:
        :class:`genbayes.demos.Section` with the table, the image paths, a sentence on how to
        read them and ``ok`` (whether every check passed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, n_test, _ = sweep(num_steps=300 if quick else 1500, hidden=32 if quick else 64, seed=seed)
    b, r, rse, d, dse, mi, mise = map(np.asarray, zip(*rows))
    log_n = math.log(n_test)
    ok_rate = monotone_within_error(r, rse, decreasing=True)
    ok_dist = monotone_within_error(d, dse, decreasing=False)
    ok_mi = bool(np.all(mi <= log_n + 1e-9))

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.9))
    ax[0].errorbar(d, r, xerr=2 * dse, yerr=2 * rse, marker="o", label="test-set estimate ± 2 SE")
    for i, (bi, di, ri) in enumerate(zip(b, d, r)):
        # alternate above / below: the large-β points sit almost on top of each other
        ax[0].annotate(f"β={bi:g}", (di, ri), textcoords="offset points", xytext=(4, 5) if i % 2 == 0 else (4, -12),
                       fontsize=8)
    ax[0].set_xlabel("distortion −E log p(x|z) (nats per image)")
    ax[0].set_ylabel("rate E KL[q(z|x)‖p(z)] (nats per image)")
    ax[0].legend(fontsize=8)
    ax[0].set_title("β-VAE rate–distortion (test digits)", fontsize=10)
    ax[1].errorbar(b, r, yerr=2 * rse, fmt="o-", label="rate ± 2 SE")
    ax[1].errorbar(b, mi, yerr=2 * mise, fmt="s--", label="I[X;Z] ± 2 SE (exact over the test set)")
    ax[1].set_xscale("log", base=2)
    ax[1].set_xticks(b, [f"{v:g}" for v in b])
    ax[1].minorticks_off()
    ax[1].axhline(log_n, color="grey", lw=0.8, label=f"log N = {log_n:.2f} (N = {n_test} test images)")
    ax[1].set_xlabel("β (log scale)")
    ax[1].set_ylabel("nats per image")
    ax[1].legend(fontsize=8)
    ax[1].set_title("rate and mutual information against β", fontsize=10)
    fig.tight_layout()
    path = save_figure(fig, image_path(outdir, "infomax_rate_distortion.png"), dpi=110)

    table = {
        "β": [float(v) for v in b],
        "rate (nats)": [Estimate(v, e) for v, e in zip(r, rse)],
        "distortion (nats)": [Estimate(v, e) for v, e in zip(d, dse)],
        "I[X;Z] (nats)": [Estimate(v, e) for v, e in zip(mi, mise)],
        "log N": [log_n] * len(b),
        "I ≤ log N": ["ok" if v <= log_n + 1e-9 else "FAIL" for v in mi],
    }
    checks = {"rate falls with β": ok_rate, "distortion rises with β": ok_dist}
    text = (
        f"β-VAEs on binarised 8×8 digits, evaluated on {n_test} held-out images. Read down the table: as β grows "
        "the rate (nats of KL per image) should fall and the distortion rise (checked within 2 SE of each "
        "difference), and the mutual information, estimated exactly over the test set, is at most log N; "
        "it saturates near log N at small β, which is a property of a finite data set, not of the encoder. "
        "Disentanglement (not run here, see notebooks/infomax.py): on the synthetic factorial discs at equal "
        "budget β-TCVAE (β=6) scored MIG 0.154 ± 0.024 against the plain VAE's 0.059 ± 0.008 (12 paired seeds). "
        "Checks: " + "; ".join(f"{k}: {'ok' if v else 'FAIL'}" for k, v in checks.items()) + "."
    )
    return Section("β-VAE rate–distortion (infomax)", text, table, (path,), ok_rate and ok_dist and ok_mi)
