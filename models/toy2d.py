"""The 2-D targets of Ruiz & Titsias (2019, Fig. 1), as NumPyro models with one latent site ``"z"``.

- ``gaussian``: N(0, Σ), Σ = [[1, .95], [.95, 1]];
- ``banana``: log p(z) = log N(g(z); 0, Σ), Σ = [[1, .9], [.9, 1]], g(z) = (z1/a, a z2 + a b (z1² + a²)),
  a = b = 1 (the Haario et al. 1999 twist; unit Jacobian, so the density is normalised);
- ``mixture``: 0.3 N((.8, .8), [[1, .8], [.8, 1]]) + 0.7 N((−2, −2), [[1, −.6], [−.6, 1]]).

Parameters are those of the authors' ``demo_toy_fig1_gaussian.m`` (``franrruiz/vcd_divergence``).

Example:
    >>> from genbayes.models import toy2d
    >>> t = toy2d.get("banana")
    >>> float(t.log_density(jnp.zeros(2))) < 0
    True
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

__all__ = ["Target2D", "get", "NAMES", "GAUSSIAN_COV"]

GAUSSIAN_COV = jnp.array([[1.0, 0.95], [0.95, 1.0]])
"""Covariance Σ of the ``"gaussian"`` target N(0, Σ) (Ruiz & Titsias 2019, Fig. 1)."""
_BANANA_COV = jnp.array([[1.0, 0.9], [0.9, 1.0]])


def _gaussian(z):
    return dist.MultivariateNormal(jnp.zeros(2), GAUSSIAN_COV).log_prob(z)


def _banana(z, a=1.0, b=1.0):
    y = jnp.stack([z[..., 0] / a, a * z[..., 1] + a * b * (z[..., 0] ** 2 + a**2)], axis=-1)
    return dist.MultivariateNormal(jnp.zeros(2), _BANANA_COV).log_prob(y)


def _mixture(z):
    c1 = dist.MultivariateNormal(jnp.array([0.8, 0.8]), jnp.array([[1.0, 0.8], [0.8, 1.0]])).log_prob(z)
    c2 = dist.MultivariateNormal(jnp.array([-2.0, -2.0]), jnp.array([[1.0, -0.6], [-0.6, 1.0]])).log_prob(z)
    return jnp.logaddexp(jnp.log(0.3) + c1, jnp.log(0.7) + c2)


class Target2D(NamedTuple):
    r"""A normalised 2-D density with a NumPyro model (site ``"z"``) and plotting limits.

    One of the 2-D targets of Ruiz & Titsias (2019, Fig. 1): ``log_density(z)`` is
    :math:`\log p(z)` for ``z`` of shape ``(..., 2)``, and ``model()`` a NumPyro model whose
    joint density in ``"z"`` is p.

    Attributes:
        name: ``"gaussian"``, ``"banana"`` or ``"mixture"``.
        log_density: ``z -> log p(z)``.
        xlim: plotting limits of z1.
        ylim: plotting limits of z2.

    Example:
        >>> import jax.numpy as jnp
        >>> from numpyro.infer.util import log_density
        >>> from genbayes.models import toy2d
        >>> t = toy2d.get("gaussian")
        >>> lp, _ = log_density(t.model, (), {}, {"z": jnp.zeros(2)})
        >>> bool(jnp.isclose(lp, t.log_density(jnp.zeros(2))))
        True
    """

    name: str
    log_density: Callable
    xlim: tuple
    ylim: tuple

    def model(self):
        """NumPyro model: z ~ p (an improper flat site plus a factor holding log p(z))."""
        z = numpyro.sample("z", dist.ImproperUniform(constraints.real_vector, (), (2,)))
        numpyro.factor("log_p", self.log_density(z))

    def __repr__(self) -> str:
        return f"Target2D({self.name!r})"


_TARGETS = {
    "gaussian": Target2D("gaussian", _gaussian, (-2.5, 2.5), (-2.5, 2.5)),
    "banana": Target2D("banana", _banana, (-2.5, 2.5), (-6.5, 1.0)),
    "mixture": Target2D("mixture", _mixture, (-4.2, 3.2), (-4.2, 3.2)),
}
NAMES = tuple(_TARGETS)
"""The target names accepted by :func:`get`."""


def get(name: str) -> Target2D:
    """The target called ``name`` (one of ``NAMES``): the targets of Ruiz & Titsias (2019, Fig. 1).

    Args:
        name: ``"gaussian"``, ``"banana"`` or ``"mixture"``.

    Returns:
        :class:`Target2D`.

    Raises:
        ValueError: for an unknown name.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from genbayes.models import toy2d
        >>> g = jnp.linspace(-8.0, 8.0, 321)
        >>> z = jnp.stack(jnp.meshgrid(g, g), -1)                  # grid integral of p: ~1
        >>> p = jnp.exp(toy2d.get("mixture").log_density(z))
        >>> round(float(p.sum() * (g[1] - g[0]) ** 2), 3)
        1.0
    """
    if name not in _TARGETS:
        raise ValueError(f"Unknown 2-D target {name!r}; choose one of {NAMES}.")
    return _TARGETS[name]
