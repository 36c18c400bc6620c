"""Hard models for the evidence estimators, written the way users write them.

- :func:`factor_model`: a Bayesian factor model (Lopes & West 2004): y_i ~ MVN(0, ΛΛᵀ + Σ) with Λ (p × k)
  lower triangular with positive diagonal, Σ diagonal with Gamma precisions; 6 observed dimensions,
  1–3 factors, a few hundred observations (simulated here; the issue's exchange-rate data are not bundled).
  ``precision_prior=(1e-4, 1e-4)`` is the vague prior whose prior draws underflow to 0.
- :func:`two_sites` / :func:`two_sites_log_z`: two observed sites sharing a mean whose evidence is
  exactly Gaussian (the zoo's ``two_sites`` model, prior sd 1 on μ).
- the centred eight schools and the binomial hierarchical model come from ``tests/zoo/models.py``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from scipy.stats import multivariate_normal

from tests.zoo.models import (RATS_N, RATS_Y, SCHOOLS_SIGMA, SCHOOLS_Y, TWO_Y, TWO_Z,  # noqa: F401 (re-exported)
                        binomial_hierarchical, eight_schools_centered, two_sites)

# ------------------------------------------------------------------------------------------------
# factor model
# ------------------------------------------------------------------------------------------------


def factor_data(n=300, p=6, k=2, seed=0):
    """Simulated (n, p) data from a k-factor model with unit-scale loadings, standardised columns."""
    rng = np.random.default_rng(seed)
    L = np.tril(rng.normal(size=(p, k)))
    L[np.arange(k), np.arange(k)] = np.abs(L[np.arange(k), np.arange(k)]) + 0.5
    sd = rng.uniform(0.3, 0.8, size=p)
    Y = rng.normal(size=(n, k)) @ L.T + sd * rng.normal(size=(n, p))
    return (Y - Y.mean(0)) / Y.std(0)


def factor_model(Y, num_factors=1, precision_prior=(1.1, 0.11)):
    """y_i ~ MVN(0, ΛΛᵀ + diag(1/ψ)); λ_ij ~ N(0, 1) below the diagonal, λ_jj ~ N⁺(0, 1), ψ_j ~ Gamma(a, b)."""
    n, p = Y.shape
    k = num_factors
    rows, cols = np.tril_indices(p, -1, k)  # strictly below the diagonal, first k columns
    lower = numpyro.sample("lower", dist.Normal(0.0, 1.0).expand([rows.size]).to_event(1))
    diag = numpyro.sample("diag", dist.HalfNormal(1.0).expand([k]).to_event(1))
    psi = numpyro.sample("psi", dist.Gamma(precision_prior[0], precision_prior[1]).expand([p]).to_event(1))
    L = jnp.zeros((p, k)).at[rows, cols].set(lower).at[np.arange(k), np.arange(k)].set(diag)
    cov = L @ L.T + jnp.diag(1.0 / psi)
    with numpyro.plate("n", n):
        numpyro.sample("y", dist.MultivariateNormal(jnp.zeros(p), covariance_matrix=cov), obs=Y)


# ------------------------------------------------------------------------------------------------
# two observed sites, exactly Gaussian evidence
# ------------------------------------------------------------------------------------------------


def two_sites_log_z(z=TWO_Z, y=TWO_Y):
    """Exact log evidence of ``two_sites``: (z, y) ~ MVN(0, diag(1, .., 4, ..) + 1 1ᵀ) (μ ~ N(0, 1))."""
    x = np.concatenate([z, y])
    cov = np.diag(np.concatenate([np.full(z.size, 1.0), np.full(y.size, 4.0)])) + 1.0
    return float(multivariate_normal(np.zeros(x.size), cov).logpdf(x))
