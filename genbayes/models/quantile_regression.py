r"""Bayesian quantile regression as a Gibbs posterior: check loss, several quantiles at once.

    β_k ~ Normal(0, prior_scale I_d)  for each quantile level τ_k,
    π(β | y) ∝ exp(−Σ_k w_k Σ_i ρ_{τ_k}(y_i − x_iᵀβ_k)) π(β),

with the check loss ρ_τ(u) = u(τ − 1{u < 0}) (Koenker & Bassett 1978). At w = 1 this is the
asymmetric-Laplace working likelihood of Yu & Moyeed (2001); its credible intervals are not
calibrated, which is why w should be chosen (e.g. per quantile with ``gb.calibrate``).
``simulate`` draws heteroscedastic data whose true conditional quantiles are linear in x.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from scipy.stats import norm

from ..losses import Loss, check


def model(X, y, taus=(0.1, 0.5, 0.9), learning_rate=1.0, prior_scale: float = 10.0):
    """Quantile regression for the levels ``taus``: site ``"beta"`` of shape ``(d, K)``.

    Args:
        X: ``(n, d)`` design (include a column of ones for an intercept).
        y: ``(n,)`` responses (required: a loss has no generative model).
        taus: K quantile levels in (0, 1).
        learning_rate: scalar or ``(K,)`` rates (one per quantile).
        prior_scale: prior standard deviation of every coefficient.
    """
    taus = jnp.atleast_1d(jnp.asarray(taus))
    d, K = jnp.shape(X)[1], taus.shape[0]
    beta = numpyro.sample("beta", dist.Normal(0.0, prior_scale).expand([d, K]).to_event(2))
    with numpyro.plate("quantile", K, dim=-1), numpyro.plate("data", jnp.shape(X)[0], dim=-2):
        with numpyro.handlers.scale(scale=jnp.broadcast_to(jnp.asarray(learning_rate), (K,))):
            numpyro.sample("y", Loss(check(taus), X @ beta), obs=y[:, None])


def single_model(X, y, tau: float = 0.5, prior_scale: float = 10.0):
    """One quantile level, at learning rate 1 (for ``gb.calibrate``): site ``"beta"`` of shape ``(d,)``."""
    d = jnp.shape(X)[1]
    beta = numpyro.sample("beta", dist.Normal(0.0, prior_scale).expand([d]).to_event(1))
    with numpyro.plate("data", jnp.shape(X)[0]):
        numpyro.sample("y", Loss(check(tau), X @ beta), obs=y)


def likelihood_model(X, y=None, sigma: float = 1.0, prior_scale: float = 10.0):
    """A Gaussian linear regression, to be turned into quantile regression with ``gb.gibbs``."""
    d = jnp.shape(X)[1]
    beta = numpyro.sample("beta", dist.Normal(0.0, prior_scale).expand([d]).to_event(1))
    with numpyro.plate("data", jnp.shape(X)[0]):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def simulate(rng_key, n: int, d: int = 2, noise: float = 1.0, hetero: float = 0.5):
    r"""Heteroscedastic data: ``y = x^T b + noise (1 + hetero x_1) e``, ``e ~ N(0, 1)``.

    ``X`` has an intercept column and d − 1 covariates uniform on [0, 2] (so ``1 + hetero·x_1 > 0``).
    The τ-quantile of y given x is :math:`x^\top b + \text{noise}\,(1 + \text{hetero}\,x_1)\,\Phi^{-1}(\tau)`,
    linear in x; ``true_beta(tau, b)`` gives its coefficients.

    Returns:
        ``(X, y, b)``.
    """
    k1, k2 = jax.random.split(rng_key)
    Z = jax.random.uniform(k1, (n, d - 1), minval=0.0, maxval=2.0)
    X = jnp.column_stack([jnp.ones(n), Z])
    b = jnp.linspace(1.0, -1.0, d)
    y = X @ b + noise * (1.0 + hetero * X[:, 1]) * jax.random.normal(k2, (n,))
    return X, y, b


def true_beta(tau, b, d: int | None = None, noise: float = 1.0, hetero: float = 0.5):
    """Coefficients of the true τ-quantile line for data from :func:`simulate` with coefficients ``b``."""
    z = noise * norm.ppf(tau)
    out = np.array(b, dtype=float).copy()
    out[0] += z
    out[1] += hetero * z
    return out
