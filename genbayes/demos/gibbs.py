"""Demo section: a calibrated Gibbs posterior for quantile regression (check loss, LLB learning rates)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import Section, image_path, mc_summary, save_figure


# coverage: the truth inside the central 99% credible interval
_Z_COVER = 2.576
# calibration: |posterior sd − sandwich sd| at most this fraction of the sandwich sd (plus 4 Monte Carlo SEs).
# One scalar w per quantile matches the sandwich covariance only on average over the d coefficients.
_SD_RTOL = 0.15


def sandwich_sd(X, tau, noise: float = 1.0, hetero: float = 0.5):
    r"""Large-sample sd of the τ-quantile regression estimator on data from ``quantile_regression.simulate``.

    :math:`\tau(1-\tau) D_1^{-1} D_0 D_1^{-1}` with :math:`D_0 = \sum_i x_i x_i^\top` and
    :math:`D_1 = \sum_i f_i x_i x_i^\top`, :math:`f_i = \varphi(\Phi^{-1}(\tau)) / (\text{noise}\,(1 + \text{hetero}\,x_{i1}))`
    the true conditional density at the true quantile (Koenker 2005, §3.2).

    Example:
        >>> import numpy as np
        >>> from genbayes.demos.gibbs import sandwich_sd
        >>> X = np.column_stack([np.ones(400), np.linspace(0, 2, 400)])
        >>> ols = np.sqrt(np.diag(np.linalg.inv(X.T @ X)))  # homoscedastic median: sqrt(pi/2) x the OLS factor
        >>> np.allclose(sandwich_sd(X, 0.5, hetero=0.0), np.sqrt(np.pi / 2) * ols)
        True
    """
    from scipy.stats import norm

    X = np.asarray(X, float)
    f = norm.pdf(norm.ppf(tau)) / (noise * (1.0 + hetero * X[:, 1]))
    d0 = X.T @ X
    d1_inv = np.linalg.inv((X * f[:, None]).T @ X)
    return np.sqrt(np.diag(tau * (1 - tau) * d1_inv @ d0 @ d1_inv))


def section(outdir: Path, *, quick: bool, seed: int) -> Section:
    """Run the Gibbs-posterior part of the tour: quantile regression with LLB-calibrated learning rates.

    Args:
        outdir: the report folder; the section's PNG files are written there.
        quick: smaller sizes (the ``genbayes demo --quick`` run).
        seed: random seed of the data and of every ``rng_key``.

    Returns:
        :class:`genbayes.demos.Section` with the table, the image paths, a sentence on how to
        read them and ``ok`` (whether every check passed).
    """
    import jax
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpyro
    from numpyro.infer import MCMC, NUTS

    from ..calibration import calibrate
    from ..models import quantile_regression as qr

    n = 200 if quick else 1000
    taus = (0.1, 0.5, 0.9)
    key = jax.random.PRNGKey(seed)
    X, y, b = qr.simulate(key, n, d=2)
    # one learning rate per quantile, by information matching at each loss minimiser
    rates = [
        calibrate(qr.single_model, X, y, tau, method="llb", rng_key=jax.random.fold_in(key, i), progress=False).learning_rate
        for i, tau in enumerate(taus)
    ]
    mcmc = MCMC(NUTS(qr.model), num_warmup=300 if quick else 800, num_samples=1000 if quick else 2000, progress_bar=False)
    mcmc.run(jax.random.fold_in(key, 99), X, y, taus, jnp.asarray(rates))
    beta = np.asarray(mcmc.get_samples()["beta"])  # (S, d, K)
    Xn = np.asarray(X)
    rows = {"τ": [], "learning rate w": [], "slope (true)": [], "slope (posterior mean)": [],
            "90% interval": [], "(mean − true)/sd": [], "sd (posterior)": [], "sd (sandwich)": [],
            "sd ratio": [], "checks": []}
    ok = bool(np.all(np.isfinite(rates)) and np.all(np.asarray(rates) > 0))
    for k, tau in enumerate(taus):
        truth = qr.true_beta(tau, np.asarray(b))
        s = beta[:, 1, k]
        lo, hi = np.quantile(s, [0.05, 0.95])
        mean, sd = mc_summary(s)
        ref = sandwich_sd(Xn, tau)[1]
        z = (mean.value - truth[1]) / sd.value
        # calibration: the posterior sd matches the estimator's sampling sd within _SD_RTOL plus 4 Monte Carlo SEs;
        # coverage: the truth lies inside the central 99% credible interval (|z| < 2.576)
        sd_ok = abs(sd.value - ref) <= _SD_RTOL * ref + 4 * sd.se
        cover_ok = abs(z) < _Z_COVER
        ok &= bool(sd_ok and cover_ok)
        rows["τ"].append(float(tau))
        rows["learning rate w"].append(float(rates[k]))
        rows["slope (true)"].append(float(truth[1]))
        rows["slope (posterior mean)"].append(mean)
        rows["90% interval"].append(f"[{lo:.2f}, {hi:.2f}]")
        rows["(mean − true)/sd"].append(round(float(z), 1))
        rows["sd (posterior)"].append(sd)
        rows["sd (sandwich)"].append(float(ref))
        rows["sd ratio"].append(round(float(sd.value / ref), 2))
        rows["checks"].append("ok" if sd_ok and cover_ok else
                              ("FAIL: sd" if not sd_ok else "") + (" FAIL: coverage" if not cover_ok else ""))

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.scatter(Xn[:, 1], np.asarray(y), s=4, alpha=0.4, color="gray", label=f"data (n={n})")
    xs = np.linspace(0, 2, 50)
    for k, tau in enumerate(taus):
        lines = beta[:, 0, k][:, None] + beta[:, 1, k][:, None] * xs[None, :]
        lo, hi = np.quantile(lines, [0.05, 0.95], axis=0)
        ax.fill_between(xs, lo, hi, alpha=0.35, label=f"τ = {tau}: 90% band (w = {rates[k]:.2f})")
        truth = qr.true_beta(tau, np.asarray(b))
        ax.plot(xs, truth[0] + truth[1] * xs, "k--", lw=1, label="true quantile lines")
    ax.set_xlabel("covariate x")
    ax.set_ylabel("response y")
    entries = dict(zip(*ax.get_legend_handles_labels()[::-1]))  # the three dashed lines: one entry
    ax.legend(entries.values(), entries.keys(), fontsize=7, loc="lower left")
    ax.set_title("Gibbs quantile regression, LLB-calibrated rates")
    fig.tight_layout()
    path = save_figure(fig, image_path(outdir, "gibbs_quantile_bands.png"), dpi=110)
    del numpyro
    return Section(
        title="Gibbs posteriors: calibrated quantile regression",
        text=(
            f"Check-loss Gibbs posteriors for three quantiles of heteroscedastic data (n={n}); each learning rate "
            "is chosen by information matching (LLB, w = J/I with J from a smoothed check loss). The bands are 90% "
            "credible bands of the quantile lines, the dashed lines the true quantiles. Checks per quantile: "
            "coverage (the true slope inside the central 99% credible interval, |mean − true|/sd < 2.576) and "
            "calibration (the posterior sd of the slope against its sandwich sd, the large-sample sampling sd "
            "of the quantile-regression estimator computed with the true error densities, within "
            f"{_SD_RTOL:.0%} plus 4 Monte Carlo SEs; a scalar learning rate matches the sandwich only on "
            "average over the coefficients). Posterior values are ± Monte Carlo SE."
        ),
        table=rows,
        images=(path,),
        ok=ok,
    )
