"""Demo section: a PAC-Bayes bound for a Gibbs classifier and the learning rate that minimises it (Catoni 2007)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import Estimate, Section, image_path, save_figure


def section(outdir: Path, *, quick: bool, seed: int) -> Section:
    """Run the generalization-bounds part of the tour: the kl bound (Seeger 2002; Maurer 2004) against the rate.

    Breast-cancer classification (scikit-learn's bundled data, half held out) with a linear Gibbs
    classifier under the bounded sigmoid loss; ``gb.bounds.pac_bayes`` on a fixed ladder of rates.

    Args:
        outdir: the report folder; the section's PNG files are written there.
        quick: smaller sizes (the ``genbayes demo --quick`` run).
        seed: random seed of the split and of every ``rng_key``.

    Returns:
        :class:`genbayes.demos.Section` with the table, the image path, a sentence on how to read
        them and ``ok`` (whether every check passed).
    """
    import warnings

    import jax
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import numpyro
    import numpyro.distributions as dist

    from .. import bounds, losses
    from ..losses import Loss
    from ..models.logistic_regression import breast_cancer

    loss = losses.sigmoid(0.5)

    def model(X, y):
        alpha = numpyro.sample("alpha", dist.Normal(0.0, 2.0))
        beta = numpyro.sample("beta", dist.Normal(0.0, 2.0).expand([X.shape[1]]).to_event(1))
        with numpyro.plate("n", X.shape[0]):
            numpyro.sample("y", Loss(loss, alpha + X @ beta), obs=y)

    Xtr, ytr, Xte, yte = (jnp.asarray(a) for a in breast_cancer(num_features=5, test_fraction=0.5, seed=seed))
    n = int(ytr.size)
    K = 8 if quick else 16
    run = ({"num_warmup": 150, "num_samples": 200, "num_chains": 2, "num_low_rungs": 6} if quick else
           {"num_warmup": 400, "num_samples": 600, "num_chains": 4, "num_low_rungs": 12})
    rates = bounds.default_rates(n, loss.loss_range, num=K)
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = bounds.pac_bayes(model, Xtr, ytr, learning_rates=rates, delta=0.05, bound="kl",
                               rng_key=jax.random.PRNGKey(seed), **run)
        s = res.diagnostics["samples"]
        f = jnp.asarray(s["alpha"])[..., None] + jnp.einsum("ksd,md->ksm", jnp.asarray(s["beta"]), Xte)
        test = np.asarray(jnp.mean(loss(f, yte), axis=(1, 2)))
        test01 = np.asarray(jnp.mean(losses.zero_one(f, yte), axis=(1, 2)))
    k = res.best_index
    ok = bool(res.valid and res.rate_valid[k] and test[k] <= res.bound[k])
    rows = {"learning rate w": [float(w) for w in rates], "empirical risk": [], "KL(ρ_w ‖ π)": [], "bound": [],
            "held-out risk": [float(v) for v in test], "held-out 0-1 risk": [float(v) for v in test01], "chosen": []}
    for i in range(K):
        rows["empirical risk"].append(Estimate(float(res.empirical_risk[i]), float(res.empirical_risk_se[i])))
        rows["KL(ρ_w ‖ π)"].append(Estimate(float(res.kl[i]), float(res.kl_se[i])))
        rows["bound"].append(Estimate(float(res.bound[i]), float(res.bound_se[i])))
        rows["chosen"].append("yes" if i == k else ("unusable" if not res.rate_valid[i] else "no"))
    ax = res.plot(test_risk=test)
    fig = ax.figure
    fig.tight_layout()
    path = save_figure(fig, image_path(outdir, "bounds_pac_bayes.png"), dpi=110)
    redrawn = np.asarray(res.diagnostics["redrawn_with_nuts"])
    redraw_note = (f" At ladder rate{'s' if redrawn.size > 1 else ''} {', '.join(f'{w:.3g}' for w in redrawn)} ChEES "
                   "failed (over 1% divergent draws) and NUTS drew the posterior again." if redrawn.size else "")
    return Section(
        title="Generalization bounds: PAC-Bayes and the learning rate",
        text=(f"A linear Gibbs classifier of the breast-cancer data (n = {n} training tumours, as many held out) "
              "under the sigmoid loss, a bounded surrogate of the 0-1 loss. For each learning rate w of a ladder fixed "
              "in advance, one batched ChEES-HMC program gives the empirical risk and KL(ρ_w ‖ π) (thermodynamic integration "
              "along w), hence the Seeger-Maurer kl bound on the expected risk, which holds with probability 0.95 at "
              "every rate at once (union bound), so also at the minimising rate ('chosen'). Check: the held-out risk "
              "at the chosen rate lies below its bound. Values are ± Monte Carlo SE." + redraw_note),
        table=rows,
        images=(path,),
        ok=ok,
    )
