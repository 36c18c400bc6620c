"""Demo section: the exact conjugate families against the chain rule and against NUTS.

For each family: simulated data (the regression uses Williams' radiata pine data, bundled),
the exact log evidence beside the chain-rule sum of one-step-ahead log predictive densities,
and the exact weighted posterior beside a NUTS fit of ``gb.reweight(model, weights=w)`` with
random (Bayesian-bootstrap) weights w, all NUTS fits drawn by ``gb.batched``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from .. import batched, conjugate
from .._config import x64
from ..models import radiata_pine
from . import Estimate, Section, coverage, image_path, mc_summary, save_figure, z_score


def _cases(rng, n):
    # data from NumPy: each jax.random sampler (Poisson, categorical) is one more compilation
    X, y = radiata_pine.design("density")
    f = jnp.result_type(float)
    return [
        ("BetaBernoulli(2, 3)", conjugate.BetaBernoulli(2.0, 3.0), (jnp.asarray(rng.binomial(1, 0.3, n), jnp.int32),), "p"),
        ("NormalKnownVariance(0, 4, 1)", conjugate.NormalKnownVariance(0.0, 4.0, 1.0), (jnp.asarray(1.0 + rng.normal(size=n), f),), "mu"),
        ("GammaPoisson(2, 1)", conjugate.GammaPoisson(2.0, 1.0), (jnp.asarray(rng.poisson(3.0, n), f),), "rate"),
        ("DirichletCategorical(1, 1, 1)", conjugate.DirichletCategorical(jnp.ones(3)), (jnp.asarray(rng.choice(3, n, p=[0.2, 0.5, 0.3]), jnp.int32),), "probs"),
        ("NormalGammaRegression (radiata pine)", radiata_pine.prior(), (jnp.asarray(X, f), jnp.asarray(y, f)), "beta"),
    ]


# families whose NUTS check also runs in --quick (the cheapest to compile); the full run checks all five
_QUICK_NUTS = (1,)


def first_marginal(family, site):
    """The exact 1-D marginal of the first coordinate of ``site`` (for the plot and the table)."""
    d = family.marginals()[site]
    if isinstance(d, dist.Dirichlet):
        a = d.concentration
        return dist.Beta(a[0], a.sum() - a[0])
    if isinstance(d, dist.MultivariateStudentT):
        return dist.StudentT(d.df, d.loc[0], jnp.sqrt(d.covariance_matrix[0, 0]))
    return d


def _first(draws):
    draws = np.asarray(draws)
    return draws.reshape(draws.shape[0], -1)[:, 0]


def section(outdir: Path, *, quick: bool = True, seed: int = 0) -> Section:
    """Run the conjugate-families part of the tour: exact posteriors against the chain rule and NUTS.

    Args:
        outdir: the report folder; the section's PNG files are written there.
        quick: smaller sizes (the ``genbayes demo --quick`` run).
        seed: random seed of the data and of every ``rng_key``.

    Returns:
        :class:`genbayes.demos.Section` with the table, the image paths, a sentence on how to
        read them and ``ok`` (whether every check passed).
    """
    with x64():  # the evidence/chain-rule comparison is an identity: check it in float64
        return _section(outdir, quick=quick, seed=seed)


# |z| above this fails a check: z is an error in its own Monte Carlo standard errors (for the NUTS mean,
# sd and interval coverage), so a correct sampler fails one of the 3 x 5 checks with probability ~ 0.1 %
_Z_MAX = 4.0


def _section(outdir: Path, *, quick: bool, seed: int) -> Section:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 30 if quick else 100
    # enough draws that an sd 10 % off is > 4 Monte Carlo SEs (SE(sd)/sd ~ 1/sqrt(2 ESS), ESS ~ draws here)
    num_warmup, num_samples = (300, 2000) if quick else (1000, 4000)
    rng = np.random.default_rng(seed)
    key_mcmc = jax.random.PRNGKey(seed)
    rows = {k: [] for k in ["family", "n", "log Z (exact)", "chain-rule sum", "|difference|", "parameter",
                            "mean (exact)", "mean (NUTS)", "sd (exact)", "sd (NUTS)", "in exact 90% CI (NUTS)",
                            "max |z|", "checks"]}
    ok = True
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.6))
    for i, ((name, fam, data, site), ax) in enumerate(zip(_cases(rng, n), axes)):
        m = jnp.shape(data[-1])[0]
        exact = float(fam.log_evidence(*data))
        order = jnp.asarray(rng.permutation(m))
        chain = float(jnp.sum(conjugate.sequence_log_predictive(fam, *data, order=order)))
        w = jnp.asarray(m * rng.dirichlet(np.ones(m)), jnp.result_type(float))
        post = fam.posterior(*data, weights=w)
        marg = first_marginal(post, site)
        mean_exact, sd_exact = float(marg.mean), float(jnp.sqrt(marg.variance))
        label = site if site in ("p", "mu", "rate", "tau") else f"{site}[0]"
        identity_ok = abs(exact - chain) < 1e-9 * max(1.0, abs(exact))
        grid = np.linspace(mean_exact - 4.5 * sd_exact, mean_exact + 4.5 * sd_exact, 300)
        grid = grid[np.asarray(marg.support(grid))]
        dens = np.exp(np.asarray(marg.log_prob(grid)))
        if quick and i not in _QUICK_NUTS:  # each family is its own NUTS compilation (~5-10 s each)
            cells = [name, m, Estimate(exact), Estimate(chain), abs(exact - chain), label, Estimate(mean_exact),
                     None, Estimate(sd_exact), None, None, None, "ok" if identity_ok else "FAIL"]
            ok &= identity_ok
            ax.plot(grid, dens, "k-", label="exact posterior")
            ax.set_title(name + "\n(NUTS in the full run)", fontsize=9)
        else:
            res = batched.run(fam.model, w[None], *data, num_warmup=num_warmup, num_samples=num_samples,
                              rng_key=jax.random.fold_in(key_mcmc, i), progress=False)
            draws = _first(res.samples[site][0])
            mean_nuts, sd_nuts = mc_summary(draws)
            lo, hi = _central_interval(marg, 0.9)
            cov = coverage(draws, lo, hi, 0.9)
            zs = [z_score(mean_nuts, mean_exact), z_score(sd_nuts, sd_exact), z_score(cov, 0.9)]
            zmax = round(float(np.max(np.abs(zs))), 1)
            good = identity_ok and zmax <= _Z_MAX
            ok &= good
            cells = [name, m, Estimate(exact), Estimate(chain), abs(exact - chain), label, Estimate(mean_exact),
                     mean_nuts, Estimate(sd_exact), sd_nuts, cov, zmax, "ok" if good else "FAIL"]
            ax.hist(draws, bins=50, density=True, alpha=0.5, color="tab:blue",
                    label=f"NUTS, reweighted ({draws.size} draws)")
            ax.plot(grid, dens, "k-", label="exact posterior")
            ax.vlines([lo, hi], 0, 1, transform=ax.get_xaxis_transform(), colors="k", linestyles=":", lw=1,
                      label="exact central 90% interval")
            ax.set_title(name, fontsize=9)
        for k, v in zip(rows, cells):
            rows[k].append(v)
        ax.set_xlabel(label)
        ax.set_ylabel("posterior density")
        ax.set_ylim(0, 1.45 * ax.get_ylim()[1])  # headroom: the legend sits above the curve, not on it
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    fig.tight_layout()
    path = save_figure(fig, image_path(outdir, "conjugate_posteriors.png"), dpi=110)
    text = (
        "Each exact family's log evidence equals the chain-rule sum of its one-step-ahead predictive "
        "log densities (any ordering; the difference should be at rounding level), and the exact weighted "
        "posterior agrees with NUTS on gb.reweight(model) with random Bayesian-bootstrap weights. NUTS values "
        "are shown ± their Monte Carlo SE (from the effective sample size; for the sd, that of the squared "
        "deviations); the checks are that the NUTS mean, the NUTS sd and the NUTS mass inside the exact central "
        f"90% interval are each within {_Z_MAX:g} Monte Carlo SEs of the exact value (max |z| is the largest of "
        f"the three), at {num_samples} draws after {num_warmup} warm-up steps."
    )
    if quick:
        text += " The quick run checks NUTS on one family ('-' elsewhere); the full run on all five."
    return Section("Exact conjugate families", text, rows, (path,), bool(ok))


def _central_interval(marg, level):
    """The exact central ``level`` interval of ``marg``, from its CDF tabulated on a fine grid.

    (NumPyro's ``icdf`` of the Beta and Student-t needs TensorFlow Probability, so it is not used.)

    Example:
        >>> import numpyro.distributions as dist
        >>> from genbayes.demos.conjugate import _central_interval
        >>> [round(v, 3) for v in _central_interval(dist.Normal(0.0, 1.0), 0.9)]
        [-1.645, 1.645]
    """
    mean, sd = float(marg.mean), float(jnp.sqrt(marg.variance))
    grid = np.linspace(mean - 8 * sd, mean + 8 * sd, 20001)
    grid = grid[np.asarray(marg.support(jnp.asarray(grid)))]
    dens = np.exp(np.asarray(marg.log_prob(jnp.asarray(grid))))
    cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(grid))])
    cdf /= cdf[-1]
    return tuple(float(np.interp(v, cdf, grid)) for v in ((1 - level) / 2, (1 + level) / 2))
