"""Bayesian logistic regression and scikit-learn's bundled breast cancer data.

    β_j ~ Normal(0, prior_scale),  α ~ Normal(0, prior_scale),
    y_i ~ Bernoulli(logit⁻¹(α + x_iᵀβ)),  observed site ``"y"`` in a plate over n.

The data come from ``sklearn.datasets.load_breast_cancer`` (Wolberg et al. 1995; 569
tumours, 30 features, bundled with scikit-learn, no network), standardised with the
training-set mean and standard deviation.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist


def model(X, y=None, prior_scale: float = 1.0):
    r"""Logistic regression with independent Normal(0, prior_scale) priors on intercept and slopes.

    :math:`y_i \sim \mathrm{Bernoulli}(\mathrm{logit}^{-1}(\alpha + x_i^\top\beta))` (Cox 1958), sites
    ``"alpha"``, ``"beta"`` (``(d,)``) and the observed ``"y"``.

    Args:
        X: ``(n, d)`` features.
        y: ``(n,)`` labels in {0, 1} (``None`` to simulate).
        prior_scale: prior standard deviation of α and of each β_j.

    Example:
        >>> import jax.numpy as jnp
        >>> from numpyro.infer.util import log_density
        >>> from genbayes.models import logistic_regression
        >>> X, y = jnp.zeros((3, 2)), jnp.array([1, 0, 1])
        >>> lp, _ = log_density(logistic_regression.model, (X, y), {}, {"alpha": 0.0, "beta": jnp.zeros(2)})
        >>> round(float(lp), 4)                 # 3 log(1/2) + 3 log N(0 | 0, 1)
        -4.8363
    """
    d = jnp.shape(X)[1]
    alpha = numpyro.sample("alpha", dist.Normal(0.0, prior_scale))
    beta = numpyro.sample("beta", dist.Normal(0.0, prior_scale).expand([d]).to_event(1))
    with numpyro.plate("data", jnp.shape(X)[0]):
        numpyro.sample("y", dist.Bernoulli(logits=alpha + X @ beta), obs=y)


def breast_cancer(num_features: int | None = 5, n: int | None = None, test_fraction: float = 0.0, seed: int = 0):
    """Standardised breast cancer data: ``(X, y)``, or ``(X_train, y_train, X_test, y_test)``.

    Args:
        num_features: keep the first ``num_features`` columns (``None``: all 30).
        n: keep a random subset of ``n`` rows (``None``: all 569), drawn with ``seed``.
        test_fraction: if > 0, hold out this fraction (random, ``seed``) and return four arrays.
        seed: NumPy seed for the subset and the split.

    Returns:
        ``(X, y)`` (float features standardised with the training mean and standard deviation,
        int32 labels), or ``(X_train, y_train, X_test, y_test)`` when ``test_fraction > 0``.

    Reference: Wolberg, Street & Mangasarian (1995), the Wisconsin diagnostic breast cancer data,
    as bundled with scikit-learn.

    Example:
        >>> from genbayes.models.logistic_regression import breast_cancer
        >>> X, y, X_te, y_te = breast_cancer(num_features=3, n=100, test_fraction=0.2)
        >>> X.shape, X_te.shape, sorted(set(y.tolist()))
        ((80, 3), (20, 3), [0, 1])
    """
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError as e:  # pragma: no cover - scikit-learn is in the test extra
        raise ImportError("The breast cancer data come from scikit-learn: pip install scikit-learn") from e
    data = load_breast_cancer()
    X, y = data.data.astype(float), data.target.astype(np.int32)
    if num_features is not None:
        X = X[:, :num_features]
    rng = np.random.default_rng(seed)
    idx = rng.permutation(X.shape[0])
    if n is not None:
        idx = idx[:n]
    X, y = X[idx], y[idx]
    n_test = int(round(test_fraction * X.shape[0]))
    X_tr, y_tr, X_te, y_te = X[n_test:], y[n_test:], X[:n_test], y[:n_test]
    mu, sd = X_tr.mean(0), X_tr.std(0)
    X_tr, X_te = (X_tr - mu) / sd, (X_te - mu) / sd
    if test_fraction > 0:
        return X_tr, y_tr, X_te, y_te
    return X_tr, y_tr
