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

from ..losses import Loss, absolute


def model(y, learning_rate=1.0, prior_loc: float = 0.0, prior_scale: float = 100.0):
    """Gibbs posterior of the median θ (site ``"theta"``) at learning rate ``learning_rate``."""
    theta = numpyro.sample("theta", dist.Normal(prior_loc, prior_scale))
    with numpyro.plate("data", jnp.shape(y)[0]), numpyro.handlers.scale(scale=learning_rate):
        numpyro.sample("y", Loss(absolute, theta), obs=y)


def simulate(rng_key, n: int, scale: float = 5.0, sigma: float = 1.0):
    """``n`` draws of ``scale · LogNormal(0, sigma)``: median ``scale``, skewed to the right."""
    return scale * jnp.exp(sigma * jax.random.normal(rng_key, (n,)))


def true_median(scale: float = 5.0, sigma: float = 1.0) -> float:
    """The median of the simulated distribution (``scale``)."""
    return float(scale)


def llb_rate(scale: float = 5.0, sigma: float = 1.0) -> float:
    r"""The population information-matching rate :math:`2 f(\mathrm{median}) = 2 \varphi(0) / (\sigma \cdot \mathrm{scale})`."""
    return float(2.0 / (np.sqrt(2 * np.pi) * sigma * scale))
