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

from genbayes.losses import Loss, hinge, logistic
from .logistic_regression import breast_cancer  # noqa: F401  (re-exported: the data loader)

LOSSES = {"hinge": hinge, "logistic": logistic}
"""The classification losses :func:`model` accepts, by name."""


def model(X, y, loss: str = "hinge", learning_rate=1.0, prior_scale: float = 1.0):
    r"""Gibbs classifier :math:`\pi(\alpha, \beta \mid y) \propto e^{-w \sum_i \ell(\alpha + x_i^\top\beta,\, y_i)}\,\pi(\alpha, \beta)`.

    The hinge loss gives a Bayesian support vector machine (Polson & Scott 2011); the logistic
    loss at w = 1 is Bayesian logistic regression (Bissiri, Holmes & Walker 2016).

    Args:
        X: ``(n, d)`` standardised features.
        y: ``(n,)`` labels in {0, 1} (required: a loss has no generative model).
        loss: ``"hinge"`` or ``"logistic"``.
        learning_rate: the learning rate w.
        prior_scale: prior standard deviation of α and of each β_j.

    Example:
        >>> import jax.numpy as jnp
        >>> from numpyro.infer.util import log_density
        >>> from genbayes.models import classification
        >>> X, y = jnp.array([[1.0], [-1.0]]), jnp.array([1, 0])
        >>> params = {"alpha": 0.0, "beta": jnp.array([2.0])}      # margins 2: hinge loss 0
        >>> lp1, _ = log_density(classification.model, (X, y), {}, params)
        >>> lp2, _ = log_density(classification.model, (X, y), {"learning_rate": 2.0}, params)
        >>> float(lp2 - lp1)                     # the loss term vanishes at any rate
        0.0
        >>> lp3, _ = log_density(classification.model, (X, y), {"loss": "logistic"}, params)
        >>> round(float(lp1 - lp3), 4)           # 2 log(1 + e^-2)
        0.2539
    """
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {sorted(LOSSES)}, got {loss!r}.")
    d = jnp.shape(X)[1]
    alpha = numpyro.sample("alpha", dist.Normal(0.0, prior_scale))
    beta = numpyro.sample("beta", dist.Normal(0.0, prior_scale).expand([d]).to_event(1))
    with numpyro.plate("data", jnp.shape(X)[0]), numpyro.handlers.scale(scale=learning_rate):
        numpyro.sample("y", Loss(LOSSES[loss], alpha + X @ beta), obs=y)


def accuracy(X, y, alpha, beta):
    r"""Posterior-mean accuracy: mean over draws of the fraction with sign(α + xᵀβ) matching y ∈ {0, 1}.

    :math:`\frac1{S n}\sum_s \sum_i 1\{(\alpha_s + x_i^\top\beta_s > 0) = (y_i = 1)\}`, the
    posterior expected 0–1 accuracy of the linear classifier (Polson & Scott 2011).

    Args:
        X: ``(n, d)`` features.
        y: ``(n,)`` labels in {0, 1}.
        alpha: ``(S,)`` intercept draws.
        beta: ``(S, d)`` slope draws.

    Returns:
        float in [0, 1].

    Example:
        >>> import jax.numpy as jnp
        >>> from genbayes.models.classification import accuracy
        >>> X, y = jnp.array([[1.0], [-1.0], [2.0]]), jnp.array([1, 0, 0])
        >>> accuracy(X, y, alpha=jnp.zeros(2), beta=jnp.array([[1.0], [-1.0]]))   # 2/3 and 1/3
        0.5
    """
    f = jnp.asarray(alpha)[:, None] + jnp.asarray(beta) @ jnp.asarray(X).T
    return float(jnp.mean((f > 0) == (jnp.asarray(y)[None, :] > 0)))
