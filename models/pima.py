"""The Pima Indians diabetes data and the logistic regressions of Friel & Wyse (2012).

n = 532 women (MASS ``Pima.tr`` + ``Pima.te``), ``type`` = 1 for diabetes, covariates standardised.
Friel & Wyse (2012, "Estimating the evidence – a review", Statistica Neerlandica 66(3), §5.2) compare
evidence estimators on two logistic regressions with an intercept,

    y_i ~ Bernoulli(logit⁻¹(α + x_iᵀ β)),  α, β_j ~ N(0, 100),

model 1 on ``npreg, glu, bmi, ped`` and model 2 adding ``age``. Their published log evidences
(:data:`PUBLISHED`: mean and sd over 10 runs of the authors' code) are the reference values used by
the tests and benchmarks. Their Laplace values stop short of the mode; the converged Laplace values
are −257.2516 (model 1) and −259.8858 (model 2).
"""

from __future__ import annotations

import csv
from importlib import resources

import numpy as np

from . import logistic_regression

COVARIATES = {1: ("npreg", "glu", "bmi", "ped"), 2: ("npreg", "glu", "bmi", "ped", "age")}
"""The covariates of Friel & Wyse's (2012) models 1 and 2 (an intercept is added)."""

PUBLISHED = {
    1: {"chib_jeliazkov": (-257.222, 0.023), "power_posteriors": (-257.265, 0.075)},
    2: {"chib_jeliazkov": (-259.870, 0.028), "power_posteriors": (-259.908, 0.052)},
}
"""Friel & Wyse (2012), Table 3: log evidence, mean and sd over 10 runs, per model and method."""

PRIOR_SCALE = 10.0
"""The prior sd of every coefficient (variance 100)."""


def load() -> dict[str, np.ndarray]:
    """The bundled data as a dict of float arrays: ``type`` (0/1) and the seven standardised covariates.

    Smith et al. (1988) via MASS (Venables & Ripley 2002), ``Pima.tr`` + ``Pima.te``, as used by
    Friel & Wyse (2012).

    Example:
        >>> from genbayes.models import pima
        >>> d = pima.load()
        >>> d["type"].shape, int(d["type"].sum())
        ((532,), 177)
    """
    with resources.files(__package__).joinpath("data/pima_friel_wyse.csv").open() as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def design(model: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``X, y`` of Friel & Wyse's (2012) model 1 (4 covariates) or 2 (5 covariates); the intercept is in the model.

    Example:
        >>> from genbayes.models import pima
        >>> X, y = pima.design(2)
        >>> X.shape, y.dtype.kind
        ((532, 5), 'i')
    """
    if model not in COVARIATES:
        raise ValueError(f"`model` must be 1 or 2 (Friel & Wyse 2012's two Pima regressions), got {model!r}.")
    d = load()
    return np.column_stack([d[c] for c in COVARIATES[model]]), d["type"].astype(np.int32)


def model(X, y=None):
    r"""Friel & Wyse's (2012, §5.2) logistic regression: intercept and coefficients i.i.d. N(0, 100).

    :math:`y_i \sim \mathrm{Bernoulli}(\mathrm{logit}^{-1}(\alpha + x_i^\top\beta))`; the latent sites
    are ``alpha`` and ``beta`` (:func:`genbayes.models.logistic_regression.model` with prior sd 10).

    Example:
        >>> import jax, numpyro
        >>> from genbayes.models import pima
        >>> X, y = pima.design(1)
        >>> tr = numpyro.handlers.trace(numpyro.handlers.seed(pima.model, 0)).get_trace(X, y)
        >>> tr["beta"]["value"].shape, tr["y"]["value"].shape
        ((4,), (532,))
    """
    return logistic_regression.model(X, y, prior_scale=PRIOR_SCALE)
