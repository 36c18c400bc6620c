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

from genbayes.losses import Loss, check


def model(X, y, taus=(0.1, 0.5, 0.9), learning_rate=1.0, prior_scale: float = 10.0):
    r"""Quantile regression for the levels ``taus``: site ``"beta"`` of shape ``(d, K)``.

    Args:
        X: ``(n, d)`` design (include a column of ones for an intercept).
        y: ``(n,)`` responses (required: a loss has no generative model).
        taus: K quantile levels in (0, 1).
        learning_rate: scalar or ``(K,)`` rates (one per quantile).
        prior_scale: prior standard deviation of every coefficient.

    The Gibbs posterior :math:`\propto \exp(-\sum_k w_k \sum_i \rho_{\tau_k}(y_i - x_i^\top\beta_k))\,\pi(\beta)`
    with the check loss of Koenker & Bassett (1978).

    Example:
        >>> import jax.numpy as jnp
        >>> from numpyro import handlers
        >>> from genbayes.models import quantile_regression as qr
        >>> X, y = jnp.ones((4, 2)), jnp.arange(4.0)
        >>> tr = handlers.trace(handlers.seed(qr.model, 0)).get_trace(X, y, taus=(0.25, 0.75))
        >>> tr["beta"]["value"].shape, tr["y"]["fn"].batch_shape
        ((2, 2), (4, 2))
    """
    taus = jnp.atleast_1d(jnp.asarray(taus))
    d, K = jnp.shape(X)[1], taus.shape[0]
    beta = numpyro.sample("beta", dist.Normal(0.0, prior_scale).expand([d, K]).to_event(2))
    with numpyro.plate("quantile", K, dim=-1), numpyro.plate("data", jnp.shape(X)[0], dim=-2):
        with numpyro.handlers.scale(scale=jnp.broadcast_to(jnp.asarray(learning_rate), (K,))):
            numpyro.sample("y", Loss(check(taus), X @ beta), obs=y[:, None])


def single_model(X, y, tau: float = 0.5, prior_scale: float = 10.0):
    r"""One quantile level, at learning rate 1 (for ``gb.calibrate``): site ``"beta"`` of shape ``(d,)``.

    :math:`\pi(\beta \mid y) \propto \exp(-\sum_i \rho_\tau(y_i - x_i^\top\beta))\,\pi(\beta)`, the
    asymmetric-Laplace working likelihood of Yu & Moyeed (2001) up to a constant.

    Args:
        X: ``(n, d)`` design.
        y: ``(n,)`` responses.
        tau: the quantile level in (0, 1).
        prior_scale: prior standard deviation of every coefficient.

    Example:
        >>> import jax.numpy as jnp, numpyro.distributions as dist
        >>> from numpyro.infer.util import log_density
        >>> from genbayes.models import quantile_regression as qr
        >>> X, y = jnp.ones((2, 1)), jnp.array([1.0, -1.0])
        >>> lp, _ = log_density(qr.single_model, (X, y), {"tau": 0.9}, {"beta": jnp.zeros(1)})
        >>> round(float(lp - dist.Normal(0.0, 10.0).log_prob(0.0)), 6)   # -(0.9 + 0.1)
        -1.0
    """
    d = jnp.shape(X)[1]
    beta = numpyro.sample("beta", dist.Normal(0.0, prior_scale).expand([d]).to_event(1))
    with numpyro.plate("data", jnp.shape(X)[0]):
        numpyro.sample("y", Loss(check(tau), X @ beta), obs=y)


def likelihood_model(X, y=None, sigma: float = 1.0, prior_scale: float = 10.0):
    r"""A Gaussian linear regression, to be turned into quantile regression with ``gb.gibbs``.

    :math:`y_i \sim N(x_i^\top\beta, \sigma^2)`; ``gb.gibbs(likelihood_model, loss={"y": check(tau)})``
    replaces its likelihood by the check loss (Bissiri, Holmes & Walker 2016).

    Args:
        X: ``(n, d)`` design.
        y: ``(n,)`` responses (``None`` to simulate).
        sigma: noise standard deviation.
        prior_scale: prior standard deviation of every coefficient.

    Example:
        >>> import jax.numpy as jnp, numpyro.distributions as dist
        >>> from numpyro.infer.util import log_density
        >>> import genbayes as gb
        >>> from genbayes.models import quantile_regression as qr
        >>> X, y = jnp.ones((2, 1)), jnp.array([1.0, -1.0])
        >>> m = gb.gibbs(qr.likelihood_model, loss={"y": gb.losses.check(0.9)})
        >>> lp, _ = log_density(m, (X, y), {}, {"beta": jnp.zeros(1)})
        >>> round(float(lp - dist.Normal(0.0, 10.0).log_prob(0.0)), 6)
        -1.0
    """
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

    Reference: the heteroscedastic location–scale design of Koenker (2005), *Quantile
    Regression*, §2.

    Example:
        >>> import jax
        >>> from genbayes.models import quantile_regression as qr
        >>> X, y, b = qr.simulate(jax.random.PRNGKey(0), 50, d=3)
        >>> X.shape, y.shape, b.tolist()
        ((50, 3), (50,), [1.0, 0.0, -1.0])
    """
    k1, k2 = jax.random.split(rng_key)
    Z = jax.random.uniform(k1, (n, d - 1), minval=0.0, maxval=2.0)
    X = jnp.column_stack([jnp.ones(n), Z])
    b = jnp.linspace(1.0, -1.0, d)
    y = X @ b + noise * (1.0 + hetero * X[:, 1]) * jax.random.normal(k2, (n,))
    return X, y, b


def true_beta(tau, b, d: int | None = None, noise: float = 1.0, hetero: float = 0.5):
    r"""Coefficients of the true τ-quantile line for data from :func:`simulate` with coefficients ``b``.

    :math:`\beta(\tau) = b + \text{noise}\,\Phi^{-1}(\tau)\,(1, \text{hetero}, 0, \dots)` (Koenker 2005, §2).

    Args:
        tau: the quantile level.
        b: the coefficients returned by :func:`simulate`.
        d: unused (the length of ``b``).
        noise: as given to :func:`simulate`.
        hetero: as given to :func:`simulate`.

    Returns:
        ``(d,)`` NumPy array.

    Example:
        >>> from genbayes.models import quantile_regression as qr
        >>> qr.true_beta(0.5, [1.0, -1.0]).tolist()          # the median line is b itself
        [1.0, -1.0]
    """
    z = noise * norm.ppf(tau)
    out = np.array(b, dtype=float).copy()
    out[0] += z
    out[1] += hetero * z
    return out


def population_llb_rate(tau, noise: float = 1.0, hetero: float = 0.5, centre: float = 0.0) -> float:
    r"""The loss-likelihood bootstrap learning rate of the check loss for data from :func:`simulate` (d = 2), in the population.

    :math:`w = \mathrm{tr}(J I^{-1} J^\top) / \mathrm{tr}(J)` (Lyddon, Holmes & Walker 2019) with, for the
    design :math:`x = (1, u - \text{centre})`, :math:`u \sim U(0, 2)` and errors
    :math:`\text{noise}\,(1 + \text{hetero}\,u)\,e`, :math:`e \sim N(0, 1)`:
    :math:`J = E[f(q_\tau \mid x)\, x x^\top]`, :math:`f(q_\tau \mid x) = \varphi(\Phi^{-1}(\tau)) /
    (\text{noise}\,(1 + \text{hetero}\,u))`, and :math:`I = \tau(1-\tau) E[x x^\top]` (Koenker 2005, §4.2),
    by quadrature over u: no data, so an independent reference for :func:`genbayes.calibrate`'s ``"llb"``.

    Example:
        >>> from scipy.stats import norm
        >>> from genbayes.models import quantile_regression as qr
        >>> w = qr.population_llb_rate(0.5, hetero=0.0)   # homoscedastic: J = f I / (tau (1 - tau))
        >>> bool(abs(w - norm.pdf(0.0) / 0.25) < 1e-10)
        True
    """
    from scipy.integrate import quad

    phi = norm.pdf(norm.ppf(tau))

    def E(g):  # expectation over u ~ U(0, 2)
        return quad(lambda u: g(u) / 2.0, 0.0, 2.0)[0]

    def xx(u, i, j):
        x = (1.0, u - centre)
        return x[i] * x[j]

    J = np.array([[E(lambda u: phi / (noise * (1 + hetero * u)) * xx(u, i, j)) for j in range(2)] for i in range(2)])
    I = tau * (1 - tau) * np.array([[E(lambda u: xx(u, i, j)) for j in range(2)] for i in range(2)])
    return float(np.trace(J @ np.linalg.solve(I, J.T)) / np.trace(J))
