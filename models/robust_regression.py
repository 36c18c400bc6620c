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

from genbayes.losses import Loss, huber


def model(X, y, delta: float = 1.345, learning_rate=1.0, prior_scale: float = 10.0, loss=None):
    r"""Huber-loss Gibbs posterior: sites ``"alpha"`` and ``"beta"`` (``(d,)``); ``loss`` overrides Huber.

    :math:`\pi_w(\alpha, \beta \mid y) \propto \exp(-w\sum_i \rho_\delta(y_i - \alpha - x_i^\top\beta))\,\pi(\alpha, \beta)`
    with the Huber (1964) loss.

    Args:
        X: ``(n, d)`` features.
        y: ``(n,)`` responses.
        delta: the Huber threshold.
        learning_rate: the learning rate w.
        prior_scale: prior standard deviation of α and of each β_j.
        loss: another loss to use instead of Huber's.

    Example:
        >>> import jax.numpy as jnp
        >>> from numpyro.infer.util import log_density
        >>> from genbayes.models import robust_regression as rr
        >>> X, y = jnp.zeros((2, 1)), jnp.array([0.5, 3.0])
        >>> p = {"alpha": 0.0, "beta": jnp.zeros(1)}
        >>> lp1, _ = log_density(rr.model, (X, y), {"delta": 1.0}, p)
        >>> lp2, _ = log_density(rr.model, (X, y), {"delta": 1.0, "learning_rate": 2.0}, p)
        >>> float(lp2 - lp1)                       # -(0.5^2/2 + (3 - 1/2)): one more loss
        -2.625
    """
    d = jnp.shape(X)[1]
    alpha = numpyro.sample("alpha", dist.Normal(0.0, prior_scale))
    beta = numpyro.sample("beta", dist.Normal(0.0, prior_scale).expand([d]).to_event(1))
    fn = huber(delta) if loss is None else loss
    with numpyro.plate("data", jnp.shape(X)[0]), numpyro.handlers.scale(scale=learning_rate):
        numpyro.sample("y", Loss(fn, alpha + X @ beta), obs=y)


def gaussian_model(X, y=None, prior_scale: float = 10.0):
    r"""Gaussian linear regression with unknown noise scale (site ``"sigma"``): the non-robust baseline.

    :math:`y_i \sim N(\alpha + x_i^\top\beta, \sigma^2)`, :math:`\sigma \sim \mathrm{HalfNormal}(2)`; a
    single gross outlier can move its posterior arbitrarily far (Huber 1964).

    Args:
        X: ``(n, d)`` features.
        y: ``(n,)`` responses (``None`` to simulate).
        prior_scale: prior standard deviation of α and of each β_j.

    Example:
        >>> import jax.numpy as jnp
        >>> from numpyro import handlers
        >>> from genbayes.models import robust_regression as rr
        >>> tr = handlers.trace(handlers.seed(rr.gaussian_model, 0)).get_trace(jnp.zeros((5, 2)))
        >>> [k for k, s in tr.items() if s["type"] == "sample"], tr["y"]["value"].shape
        (['alpha', 'beta', 'sigma', 'y'], (5,))
    """
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

    Reference: Efron, Hastie, Johnstone & Tibshirani (2004), "Least angle regression", the
    diabetes data as bundled with scikit-learn.

    Example:
        >>> from genbayes.models.robust_regression import diabetes
        >>> X, y, y_clean, out = diabetes(num_features=2, outlier_fraction=0.1)
        >>> import numpy as np
        >>> X.shape, int(out.sum()), bool(np.allclose((y - y_clean)[out], 6.0))
        ((442, 2), 44, True)
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
    r"""Ordinary least squares ``(alpha, beta)`` (the reference fit on clean data).

    :math:`\arg\min_{\alpha,\beta} \sum_i (y_i - \alpha - x_i^\top\beta)^2` (Legendre 1805), by
    ``numpy.linalg.lstsq``.

    Args:
        X: ``(n, d)`` features.
        y: ``(n,)`` responses.

    Returns:
        ``(alpha, beta)``: a float and a ``(d,)`` array.

    Example:
        >>> import numpy as np
        >>> from genbayes.models.robust_regression import least_squares
        >>> X = np.array([[0.0], [1.0], [2.0]])
        >>> a, b = least_squares(X, 1.0 + 2.0 * X[:, 0])
        >>> round(float(a), 6), np.round(b, 6).tolist()
        (1.0, [2.0])
    """
    A = np.column_stack([np.ones(X.shape[0]), X])
    coef = np.linalg.lstsq(A, y, rcond=None)[0]
    return coef[0], coef[1:]
