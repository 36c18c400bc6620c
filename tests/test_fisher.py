"""Scores, Hessians, Fisher, empirical Fisher and the sandwich against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy.stats import norm

from genbayes import fisher
from genbayes import losses as L
from genbayes.handlers import gibbs
from genbayes.losses import Loss


def logreg(X, y):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("n", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def _logreg_data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = (rng.uniform(size=n) < 0.5).astype(np.int32)
    return jnp.asarray(X), jnp.asarray(y)


def test_scores_and_hessians_of_logistic_regression(x64):
    X, y = _logreg_data()
    beta = jnp.array([0.5, -1.0])
    p = jax.nn.sigmoid(X @ beta)
    g = fisher.scores(logreg, {"beta": beta}, X, y)
    np.testing.assert_allclose(g, (np.asarray(y) - p)[:, None] * np.asarray(X), rtol=1e-10)
    H = fisher.hessians(logreg, {"beta": beta}, X, y)
    np.testing.assert_allclose(H, -(p * (1 - p))[:, None, None] * np.einsum("ni,nj->nij", X, X), rtol=1e-10)
    F = fisher.empirical_fisher(logreg, {"beta": beta}, X, y)
    np.testing.assert_allclose(F, np.asarray(g).T @ np.asarray(g) / 40, rtol=1e-10)


def test_fisher_by_simulation_matches_the_expected_information(x64):
    X, y = _logreg_data()
    beta = jnp.array([0.5, -1.0])
    p = np.asarray(jax.nn.sigmoid(X @ beta))
    exact = np.einsum("n,ni,nj->ij", p * (1 - p), X, X) / 40
    M = 400
    F = fisher.fisher(logreg, {"beta": beta}, X, y, rng_key=jax.random.PRNGKey(0), num_samples=M)
    # each simulated data set gives mean_n (y_n - p_n)^2 x x^T; its sd over data sets is
    # sqrt(sum_n var((y-p)^2) (x x^T)^2) / n with var((y-p)^2) = p(1-p)(1-2p)^2 ... bounded by p(1-p)/4
    sd = np.sqrt(np.einsum("n,ni,nj->ij", p * (1 - p) / 4, X**2, X**2)) / 40
    assert np.all(np.abs(np.asarray(F) - exact) < 4 * sd / np.sqrt(M))


def test_params_must_cover_the_latent_sites():
    X, y = _logreg_data()
    with pytest.raises(ValueError, match="lacks values"):
        fisher.scores(logreg, {}, X, y)
    with pytest.raises(ValueError, match="not latent"):
        fisher.scores(logreg, {"beta": jnp.zeros(2), "gamma": 1.0}, X, y)
    with pytest.raises(ValueError, match="not a sample site"):
        fisher.scores(logreg, {"beta": jnp.zeros(2)}, X, y, sites="z")


def _loc_model(x):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("x", dist.Normal(mu, 1.0), obs=x)


@pytest.mark.parametrize("tau", [0.5, 0.9])
def test_sandwich_smooths_check_loss_curvature(tau, x64):
    # J = f(q_tau) and I = tau (1 - tau) at the tau-quantile of N(0, 1) data
    n = 20000
    x = jnp.asarray(np.random.default_rng(3).normal(size=n))
    m = gibbs(_loc_model, loss={"x": L.check(tau)})
    q = float(jnp.quantile(x, tau))
    s = fisher.sandwich(m, {"mu": q}, x)
    h = s.bandwidths["x"]
    f = norm.pdf(norm.ppf(tau))
    # uniform-kernel density at q: sd sqrt(f / (2 n h)); bias ~ |f''| h^2 / 6 with |f''| <= 0.4 near q
    tol = 4 * np.sqrt(f / (2 * n * h)) + 0.4 * h**2 / 6
    assert abs(float(s.J[0, 0]) - f) < tol
    np.testing.assert_allclose(float(s.I[0, 0]), tau * (1 - tau), rtol=0.05)  # binomial: sd ~ 1/sqrt(n) relative
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        s0 = fisher.sandwich(m, {"mu": q}, x, bandwidth=None)
    assert float(s0.J[0, 0]) == 0.0  # the autodiff Hessian of a piecewise-linear loss


def test_sandwich_of_squared_loss_is_exact(x64):
    x = jnp.asarray(np.random.default_rng(4).normal(2.0, 3.0, size=50))
    s = fisher.sandwich(gibbs(_loc_model, loss={"x": L.squared}), {"mu": float(x.mean())}, x)
    assert s.bandwidths == {}
    np.testing.assert_allclose(s.J, [[1.0]], rtol=1e-12)
    np.testing.assert_allclose(s.I, [[float(np.var(np.asarray(x), ddof=1))]], rtol=1e-10)
    np.testing.assert_allclose(s.covariance, [[float(np.var(np.asarray(x), ddof=1)) / 50]], rtol=1e-10)


def test_smoothed_hinge_has_curvature(x64):
    def svm(X, y):
        b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        with numpyro.plate("n", X.shape[0]):
            numpyro.sample("y", Loss(L.hinge, X @ b), obs=y)

    X, y = _logreg_data(400)
    s = fisher.sandwich(svm, {"b": jnp.array([0.3, 0.2])}, X, y)
    assert np.all(np.linalg.eigvalsh(np.asarray(s.J)) > 0)
