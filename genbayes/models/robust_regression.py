r"""Robust regression as a Gibbs posterior (Huber loss) on scikit-learn's diabetes data with outliers.

    β ~ Normal(0, prior_scale I_d),  α ~ Normal(0, prior_scale),
    π(α, β | y) ∝ exp(−w Σ_i ρ_δ(y_i − α − x_iᵀβ)) π(α, β),

with the Huber loss ρ_δ (quadratic for residuals below δ, linear beyond). The diabetes data
(Efron et al. 2004; 442 patients, 10 baseline variables, bundled with scikit-learn, no
network) are standardised (X and y) and a fraction of the responses is shifted by a large
amount (``outlier_shift`` standard deviations): the Gaussian posterior is dragged, the Huber
Gibbs posterior is not. ``gaussian_model`` is the Normal-likelihood comparison.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from ..losses import Loss, huber


def model(X, y, delta: float = 1.345, learning_rate=1.0, prior_scale: float = 10.0, loss=None):
    """Huber-loss Gibbs posterior: sites ``"alpha"`` and ``"beta"`` (``(d,)``); ``loss`` overrides Huber."""
    d = jnp.shape(X)[1]
    alpha = numpyro.sample("alpha", dist.Normal(0.0, prior_scale))
    beta = numpyro.sample("beta", dist.Normal(0.0, prior_scale).expand([d]).to_event(1))
    fn = huber(delta) if loss is None else loss
    with numpyro.plate("data", jnp.shape(X)[0]), numpyro.handlers.scale(scale=learning_rate):
        numpyro.sample("y", Loss(fn, alpha + X @ beta), obs=y)


def gaussian_model(X, y=None, prior_scale: float = 10.0):
    """Gaussian linear regression with unknown noise scale (site ``"sigma"``): the non-robust baseline."""
    d = jnp.shape(X)[1]
    alpha = numpyro.sample("alpha", dist.Normal(0.0, prior_scale))
    beta = numpyro.sample("beta", dist.Normal(0.0, prior_scale).expand([d]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("data", jnp.shape(X)[0]):
        numpyro.sample("y", dist.Normal(alpha + X @ beta, sigma), obs=y)


def diabetes(num_features: int | None = 3, outlier_fraction: float = 0.1, outlier_shift: float = 6.0, seed: int = 0):
    """Standardised diabetes data with injected outliers.

    Args:
        num_features: keep the first columns (age, sex, bmi, ...); ``None``: all 10.
        outlier_fraction: fraction of responses shifted (chosen at random with ``seed``).
        outlier_shift: shift in standard deviations of y (added).
        seed: NumPy seed.

    Returns:
        ``(X, y, y_clean, is_outlier)``.
    """
    if not 0 <= outlier_fraction < 1:
        raise ValueError(f"`outlier_fraction` must lie in [0, 1), got {outlier_fraction!r}.")
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    X, y = data.data.astype(float), data.target.astype(float)
    if num_features is not None:
        X = X[:, :num_features]
    X = (X - X.mean(0)) / X.std(0)
    y = (y - y.mean()) / y.std()
    rng = np.random.default_rng(seed)
    out = np.zeros(y.shape[0], dtype=bool)
    out[rng.choice(y.shape[0], int(round(outlier_fraction * y.shape[0])), replace=False)] = True
    y_out = y + outlier_shift * out
    return X, y_out, y, out


def least_squares(X, y):
    """Ordinary least squares ``(alpha, beta)`` (the reference fit on clean data)."""
    A = np.column_stack([np.ones(X.shape[0]), X])
    coef = np.linalg.lstsq(A, y, rcond=None)[0]
    return coef[0], coef[1:]
