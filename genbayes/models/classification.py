r"""Classification as a Gibbs posterior: hinge (SVM) or logistic loss on the breast cancer data.

    α ~ Normal(0, prior_scale),  β ~ Normal(0, prior_scale I_d),
    π(α, β | y) ∝ exp(−w Σ_i ℓ(α + x_iᵀβ, y_i)) π(α, β),

with the hinge loss max(0, 1 − s f) (a Bayesian support vector machine, cf. Polson & Scott 2011)
or the logistic loss log(1 + e^{−s f}), labels y ∈ {0, 1} (s = 2y − 1). With the logistic loss
and w = 1 this is exactly Bayesian logistic regression. Data: ``genbayes.models.logistic_regression.breast_cancer``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from ..losses import Loss, hinge, logistic
from .logistic_regression import breast_cancer  # noqa: F401  (re-exported: the data loader)

LOSSES = {"hinge": hinge, "logistic": logistic}


def model(X, y, loss: str = "hinge", learning_rate=1.0, prior_scale: float = 1.0):
    """Gibbs classifier: sites ``"alpha"``, ``"beta"``; ``loss`` is ``"hinge"`` or ``"logistic"``."""
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {sorted(LOSSES)}, got {loss!r}.")
    d = jnp.shape(X)[1]
    alpha = numpyro.sample("alpha", dist.Normal(0.0, prior_scale))
    beta = numpyro.sample("beta", dist.Normal(0.0, prior_scale).expand([d]).to_event(1))
    with numpyro.plate("data", jnp.shape(X)[0]), numpyro.handlers.scale(scale=learning_rate):
        numpyro.sample("y", Loss(LOSSES[loss], alpha + X @ beta), obs=y)


def accuracy(X, y, alpha, beta):
    """Posterior-mean accuracy: mean over draws of the fraction with sign(α + xᵀβ) matching y ∈ {0, 1}."""
    f = jnp.asarray(alpha)[:, None] + jnp.asarray(beta) @ jnp.asarray(X).T
    return float(jnp.mean((f > 0) == (jnp.asarray(y)[None, :] > 0)))
