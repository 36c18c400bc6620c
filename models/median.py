r"""The median as a Gibbs posterior: absolute loss, no likelihood.

    θ ~ Normal(prior_loc, prior_scale),
    π_w(θ | y) ∝ exp(−w Σ_i |y_i − θ|) π(θ),   observed site ``"y"`` in a plate over n.

The loss minimiser is the sample median; by Lyddon, Holmes & Walker (2019) the
information-matching rate is w = 2 f(median) for data density f, so data on a large scale need a
small w, and w = 1 gives credible intervals that are far too narrow or too wide. ``simulate``
draws skewed (log-normal) data with a known median and a known w.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from genbayes.losses import Loss, absolute


def model(y, learning_rate=1.0, prior_loc: float = 0.0, prior_scale: float = 100.0):
    r"""Gibbs posterior of the median θ (site ``"theta"``): :math:`\pi_w(\theta \mid y) \propto e^{-w\sum_i |y_i - \theta|}\,\pi(\theta)`.

    Bissiri, Holmes & Walker (2016, §3) use this as their first example of a Gibbs posterior.

    Args:
        y: ``(n,)`` observations.
        learning_rate: the learning rate w.
        prior_loc: prior mean of θ.
        prior_scale: prior standard deviation of θ.

    Example:
        >>> import jax.numpy as jnp, numpyro.distributions as dist
        >>> from numpyro.infer.util import log_density
        >>> from genbayes.models import median
        >>> y = jnp.array([1.0, 2.0, 6.0])
        >>> lp, _ = log_density(median.model, (y,), {"learning_rate": 0.5}, {"theta": 2.0})
        >>> round(float(lp - dist.Normal(0.0, 100.0).log_prob(2.0)), 4)   # -0.5 (1 + 0 + 4)
        -2.5
    """
    theta = numpyro.sample("theta", dist.Normal(prior_loc, prior_scale))
    with numpyro.plate("data", jnp.shape(y)[0]), numpyro.handlers.scale(scale=learning_rate):
        numpyro.sample("y", Loss(absolute, theta), obs=y)


def simulate(rng_key, n: int, scale: float = 5.0, sigma: float = 1.0):
    r"""``n`` draws of ``scale · LogNormal(0, sigma)``: median ``scale``, skewed to the right.

    :math:`y = \text{scale}\cdot e^{\sigma z}`, :math:`z \sim N(0, 1)`; the setting of the
    median example in Lyddon, Holmes & Walker (2019).

    Args:
        rng_key: JAX PRNG key.
        n: number of draws.
        scale: the median.
        sigma: log-scale standard deviation.

    Returns:
        ``(n,)`` array.

    Example:
        >>> import jax
        >>> from genbayes.models import median
        >>> y = median.simulate(jax.random.PRNGKey(0), 2001)
        >>> bool(abs(float(jax.numpy.median(y)) - median.true_median()) < 0.5)
        True
    """
    return scale * jnp.exp(sigma * jax.random.normal(rng_key, (n,)))


def true_median(scale: float = 5.0, sigma: float = 1.0) -> float:
    """The median of the simulated distribution: ``scale`` (the log-normal median is :math:`e^0` times it).

    Reference: Johnson, Kotz & Balakrishnan (1994), *Continuous Univariate Distributions*, ch. 14.

    Args:
        scale: the ``scale`` given to :func:`simulate`.
        sigma: the ``sigma`` given to :func:`simulate` (the median does not depend on it).

    Example:
        >>> from genbayes.models import median
        >>> median.true_median(scale=3.0)
        3.0
    """
    return float(scale)


def llb_rate(scale: float = 5.0, sigma: float = 1.0) -> float:
    r"""The population information-matching rate :math:`2 f(\mathrm{median}) = 2 \varphi(0) / (\sigma \cdot \mathrm{scale})`.

    For the absolute loss :math:`J = 2 f(m)` and :math:`I = 1`, so the rate
    :math:`\mathrm{tr}(J I^{-1} J)/\mathrm{tr}(J)` of Lyddon, Holmes & Walker (2019, §3) is
    :math:`2 f(m)`; the log-normal density at its median is :math:`\varphi(0)/(\sigma\,\text{scale})`.

    Args:
        scale: the ``scale`` given to :func:`simulate`.
        sigma: the ``sigma`` given to :func:`simulate`.

    Example:
        >>> from genbayes.models import median
        >>> round(median.llb_rate(scale=5.0, sigma=1.0), 4)
        0.1596
    """
    return float(2.0 / (np.sqrt(2 * np.pi) * sigma * scale))
