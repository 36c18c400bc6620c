"""Williams' (1959) radiata pine data and the Normal–Gamma regressions of Friel & Wyse (2012).

Maximum compression strength parallel to the grain (y) of n = 42 specimens, regressed on
density (x, model 1) or resin-adjusted density (z, model 2), covariate centred:

    y_i = α + β (x_i − x̄) + ε_i,  ε_i ~ N(0, τ⁻¹),
    (α, β) | τ ~ N((3000, 185), (τ diag(0.06, 6))⁻¹),  τ ~ Gamma(3, rate 2·300²).

The exact log evidences are −310.128 (density) and −301.705 (adjusted density), the reference
values used by Friel & Wyse (2012, "Estimating the evidence – a review", Statistica Neerlandica
66(3)), which makes this the standard benchmark for marginal-likelihood estimators.
"""

from __future__ import annotations

import csv
from importlib import resources

import numpy as np

from genbayes.conjugate import NormalGammaRegression

COVARIATES = {"density": "density", "adjusted_density": "adjusted_density", "x": "density", "z": "adjusted_density"}
"""The covariate names :func:`design` accepts (x and z are Friel & Wyse's names) and the column each reads."""


def load() -> dict[str, np.ndarray]:
    """The bundled data as a dict of float arrays: ``strength``, ``density``, ``adjusted_density``.

    Williams (1959), *Regression Analysis*, table of n = 42 radiata pine specimens, as used by
    Friel & Wyse (2012).

    Example:
        >>> from genbayes.models import radiata_pine
        >>> d = radiata_pine.load()
        >>> sorted(d), d["strength"].shape
        (['adjusted_density', 'density', 'strength'], (42,))
    """
    with resources.files(__package__).joinpath("data/radiata_pine.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) for r in rows]) for k in ("strength", "density", "adjusted_density")}


def design(covariate: str = "density") -> tuple[np.ndarray, np.ndarray]:
    r"""``X, y``: intercept and centred covariate (``"density"`` or ``"adjusted_density"``), strength.

    The design of :math:`y_i = \alpha + \beta (x_i - \bar x) + \varepsilon_i` (Friel & Wyse 2012,
    §5, models 1 and 2).

    Args:
        covariate: ``"density"`` (x, model 1) or ``"adjusted_density"`` (z, model 2).

    Returns:
        ``(X, y)``: ``(42, 2)`` design and ``(42,)`` strengths.

    Example:
        >>> from genbayes.models import radiata_pine
        >>> X, y = radiata_pine.design("adjusted_density")
        >>> X.shape, bool(abs(X[:, 1].mean()) < 1e-9)
        ((42, 2), True)
    """
    if covariate not in COVARIATES:
        raise ValueError(f"`covariate` must be one of {sorted(set(COVARIATES.values()))}, got {covariate!r}.")
    d = load()
    x = d[COVARIATES[covariate]]
    X = np.column_stack([np.ones_like(x), x - x.mean()])
    return X, d["strength"]


def prior() -> NormalGammaRegression:
    r"""The Normal–Gamma prior of Friel & Wyse (2012) for either model.

    :math:`(\alpha, \beta) \mid \tau \sim N((3000, 185), (\tau\,\mathrm{diag}(0.06, 6))^{-1})`,
    :math:`\tau \sim \mathrm{Gamma}(3, \text{rate } 2\cdot 300^2)`; its exact log evidences are
    −310.128 (density) and −301.705 (adjusted density).

    Returns:
        :class:`genbayes.conjugate.NormalGammaRegression`.

    Example:
        >>> from genbayes.models import radiata_pine
        >>> fam = radiata_pine.prior()
        >>> round(float(fam.log_evidence(*radiata_pine.design("adjusted_density"))), 1)  # -301.705 in float64
        -301.7
    """
    return NormalGammaRegression(
        mean=np.array([3000.0, 185.0]), precision=np.array([0.06, 6.0]), shape=3.0, rate=2.0 * 300.0**2
    )
