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
from . import Section, image_path


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


def _section(outdir: Path, *, quick: bool, seed: int) -> Section:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 30 if quick else 100
    num = 300 if quick else 2000
    rng = np.random.default_rng(seed)
    key_mcmc = jax.random.PRNGKey(seed)
    rows = {k: [] for k in ["family", "n", "log evidence (exact)", "chain rule sum", "|difference|",
                            "parameter", "exact mean", "NUTS mean", "exact sd", "NUTS sd", "z"]}
    ok = True
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.2))
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
        if quick and i not in _QUICK_NUTS:  # each family is its own NUTS compilation (~5-10 s each)
            for k, v in zip(rows, [name, m, exact, chain, abs(exact - chain), label, mean_exact,
                                    "-", sd_exact, "-", "-"]):
                rows[k].append(v)
            ok &= abs(exact - chain) < 1e-9 * max(1.0, abs(exact))
            grid = np.linspace(mean_exact - 4 * sd_exact, mean_exact + 4 * sd_exact, 200)
            grid = grid[np.asarray(marg.support(grid))]
            ax.plot(grid, np.exp(np.asarray(marg.log_prob(grid))), "k-", label="exact")
            ax.set_title(name + "\n(NUTS in the full run)", fontsize=9)
            ax.set_xlabel(label)
            continue
        res = batched.run(fam.model, w[None], *data, num_warmup=num, num_samples=num,
                          rng_key=jax.random.fold_in(key_mcmc, i), progress=False)
        draws = _first(res.samples[site][0])
        ess = _ess(draws)
        z = (draws.mean() - mean_exact) / (sd_exact / np.sqrt(ess))
        for k, v in zip(rows, [name, m, exact, chain, abs(exact - chain), label, mean_exact,
                                float(draws.mean()), sd_exact, float(draws.std()), float(z)]):
            rows[k].append(v)
        ok &= abs(exact - chain) < 1e-9 * max(1.0, abs(exact)) and abs(z) < 5
        grid = np.linspace(np.quantile(draws, 0.001), np.quantile(draws, 0.999), 200)
        ax.hist(draws, bins=40, density=True, alpha=0.5, label="NUTS, reweighted")
        ax.plot(grid, np.exp(np.asarray(marg.log_prob(grid))), "k-", label="exact")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(label)
    axes[_QUICK_NUTS[0]].legend(fontsize=8)
    fig.tight_layout()
    path = image_path(outdir, "conjugate_posteriors.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    text = (
        "Each exact family's log evidence equals the chain-rule sum of its one-step-ahead predictive "
        "log densities (any ordering), and the exact weighted posterior agrees with NUTS on "
        "gb.reweight(model) with random Bayesian-bootstrap weights: z is the NUTS mean's error in "
        "Monte Carlo standard errors (|z| < 5 expected)."
    )
    if quick:
        text += " The quick run checks NUTS on one family ('-' elsewhere); the full run on all five."
    return Section("Exact conjugate families", text, rows, (path,), bool(ok))


def _ess(draws):
    from ..interop import effective_sample_size

    return effective_sample_size(draws)
