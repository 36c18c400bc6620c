"""Exact conjugate families: chain rule, numerical integration, independent closed forms (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

import genbayes as gb
from genbayes.conjugate import sequence_log_predictive

pos = st.floats(0.2, 5.0)


@st.composite
def family_and_data(draw, kind):
    n = draw(st.integers(1, 10))
    if kind == "beta":
        fam = gb.conjugate.BetaBernoulli(draw(pos), draw(pos))
        data = (np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))),)
    elif kind == "normal":
        fam = gb.conjugate.NormalKnownVariance(draw(st.floats(-3, 3)), draw(pos), draw(pos))
        data = (np.array(draw(st.lists(st.floats(-10, 10), min_size=n, max_size=n))),)
    elif kind == "poisson":
        fam = gb.conjugate.GammaPoisson(draw(pos), draw(pos))
        data = (np.array(draw(st.lists(st.integers(0, 15), min_size=n, max_size=n)), dtype=float),)
    elif kind == "dirichlet":
        K = draw(st.integers(2, 4))
        fam = gb.conjugate.DirichletCategorical(np.array(draw(st.lists(pos, min_size=K, max_size=K))))
        data = (np.array(draw(st.lists(st.integers(0, K - 1), min_size=n, max_size=n))),)
    else:
        d = draw(st.integers(1, 3))
        X = np.array(draw(st.lists(st.lists(st.floats(-3, 3), min_size=d, max_size=d), min_size=n, max_size=n)))
        y = np.array(draw(st.lists(st.floats(-10, 10), min_size=n, max_size=n)))
        fam = gb.conjugate.NormalGammaRegression(
            np.array(draw(st.lists(st.floats(-2, 2), min_size=d, max_size=d))),
            np.array(draw(st.lists(pos, min_size=d, max_size=d))),
            draw(pos),
            draw(pos),
        )
        data = (X, y)
    perm = np.array(draw(st.permutations(range(n))))
    return fam, data, perm


KINDS = ["beta", "normal", "poisson", "dirichlet", "regression"]


@pytest.mark.parametrize("kind", KINDS)
def test_chain_rule_equals_log_evidence_for_any_ordering(x64, kind):
    @given(family_and_data(kind))
    def check(case):
        fam, data, perm = case
        terms = sequence_log_predictive(fam, *data, order=perm)
        np.testing.assert_allclose(float(jnp.sum(terms)), float(fam.log_evidence(*data)), rtol=1e-9, atol=1e-9)

    check()


@pytest.mark.parametrize("kind", KINDS)
def test_integer_weights_equal_repeated_data(x64, kind):
    @given(family_and_data(kind), st.data())
    def check(case, data_st):
        fam, data, _ = case
        n = data[-1].shape[0]
        k = np.array(data_st.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
        weighted = fam.posterior(*data, weights=k.astype(float))
        repeated = fam.posterior(*(np.repeat(d, k, axis=0) for d in data)) if k.sum() else fam
        for a, b in zip(jax.tree_util.tree_leaves(weighted), jax.tree_util.tree_leaves(repeated)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-9)

    check()


def _quad_log_evidence(loglik, prior_logpdf, lo, hi):
    """log ∫ p(x|θ) π(θ) dθ by adaptive quadrature (SciPy), scaled by the maximum to avoid underflow.

    ``loglik`` and ``prior_logpdf`` are plain NumPy functions of θ (vectorised over a grid to
    locate the mode, then called pointwise by QUADPACK).
    """
    grid = np.linspace(lo, hi, 2001)
    f = loglik(grid) + prior_logpdf(grid)
    c = np.max(f)
    val, _ = scipy.integrate.quad(
        lambda t: np.exp(loglik(t) + prior_logpdf(t) - c), lo, hi, points=[grid[np.argmax(f)]], limit=200, epsabs=0, epsrel=1e-10
    )
    return np.log(val) + c


@given(family_and_data("beta"))
def test_beta_bernoulli_evidence_by_quadrature(x64, case):
    fam, (x,), _ = case
    k, n, a, b = x.sum(), len(x), float(fam.a), float(fam.b)
    ll = lambda p: scipy.special.xlogy(k, p) + scipy.special.xlog1py(n - k, -p)  # noqa: E731
    prior = lambda p: (a - 1) * np.log(p) + (b - 1) * np.log1p(-p) - scipy.special.betaln(a, b)  # noqa: E731
    ref = _quad_log_evidence(ll, prior, 1e-13, 1 - 1e-13)
    np.testing.assert_allclose(float(fam.log_evidence(x)), ref, rtol=1e-7, atol=1e-7)


@given(family_and_data("normal"))
def test_normal_evidence_by_quadrature(x64, case):
    fam, (x,), _ = case
    s2, m0, v0 = float(fam.noise_var), float(fam.prior_mean), float(fam.prior_var)
    ll = lambda m: -0.5 * (np.subtract.outer(np.atleast_1d(m), x) ** 2).sum(-1) / s2 - 0.5 * len(x) * np.log(2 * np.pi * s2)  # noqa: E731
    prior = lambda m: -0.5 * (m - m0) ** 2 / v0 - 0.5 * np.log(2 * np.pi * v0)  # noqa: E731
    post = fam.posterior(x)
    c, sd = float(post.prior_mean), np.sqrt(float(post.prior_var))
    ref = _quad_log_evidence(lambda m: ll(m).reshape(np.shape(m)), prior, c - 12 * sd, c + 12 * sd)
    np.testing.assert_allclose(float(fam.log_evidence(x)), ref, rtol=1e-7, atol=1e-7)


@given(family_and_data("poisson"))
def test_gamma_poisson_evidence_by_quadrature(x64, case):
    fam, (x,), _ = case
    a, b, S, n = float(fam.shape), float(fam.rate), x.sum(), len(x)
    ll = lambda lam: scipy.special.xlogy(S, lam) - n * lam - scipy.special.gammaln(x + 1).sum()  # noqa: E731
    prior = lambda lam: a * np.log(b) + (a - 1) * np.log(lam) - b * lam - scipy.special.gammaln(a)  # noqa: E731
    post = fam.posterior(x)
    hi = float(scipy.stats.gamma(float(post.shape), scale=1 / float(post.rate)).ppf(1 - 1e-14))
    ref = _quad_log_evidence(ll, prior, 1e-300, hi)
    np.testing.assert_allclose(float(fam.log_evidence(x)), ref, rtol=1e-7, atol=1e-7)


@given(family_and_data("regression"))
def test_regression_evidence_is_multivariate_t(x64, case):
    """Independent closed form: y ~ MVT_{2a0}(Xμ0, (b0/a0)(I + X Λ0⁻¹ Xᵀ))."""
    fam, (X, y), _ = case
    a0, b0 = float(fam.shape), float(fam.rate)
    cov = (b0 / a0) * (np.eye(len(y)) + X @ np.linalg.inv(np.asarray(fam.precision)) @ X.T)
    ref = scipy.stats.multivariate_t(X @ np.asarray(fam.mean), cov, df=2 * a0).logpdf(y)
    np.testing.assert_allclose(float(fam.log_evidence(X, y)), ref, rtol=1e-8, atol=1e-8)


@given(family_and_data("normal"))
def test_normal_evidence_is_multivariate_normal(x64, case):
    fam, (x,), _ = case
    n = len(x)
    cov = float(fam.noise_var) * np.eye(n) + float(fam.prior_var) * np.ones((n, n))
    ref = scipy.stats.multivariate_normal(np.full(n, float(fam.prior_mean)), cov).logpdf(x)
    np.testing.assert_allclose(float(fam.log_evidence(x)), ref, rtol=1e-9, atol=1e-9)


@given(family_and_data("beta"))
def test_dirichlet_with_two_categories_is_beta_bernoulli(x64, case):
    fam, (x,), _ = case
    dc = gb.conjugate.DirichletCategorical(jnp.array([fam.b, fam.a]))  # category 1 <-> success
    np.testing.assert_allclose(float(dc.log_evidence(x)), float(fam.log_evidence(x)), rtol=1e-12)


@pytest.mark.parametrize("covariate, published", [("density", -310.1283), ("adjusted_density", -301.7046)])
def test_radiata_pine_matches_friel_wyse(x64, covariate, published):
    """Friel & Wyse (2012) report log evidences −310.1283 and −301.7046 for the two models."""
    X, y = gb.models.radiata_pine.design(covariate)
    assert X.shape == (42, 2)
    np.testing.assert_allclose(float(gb.models.radiata_pine.prior().log_evidence(X, y)), published, atol=5e-4)


def test_log_predictive_matches_posterior_predictive_by_hand(x64):
    fam = gb.conjugate.BetaBernoulli(2.0, 3.0)
    train = jnp.array([1, 1, 0, 1])
    lp = fam.log_predictive(jnp.array([1, 0]), train)
    np.testing.assert_allclose(np.exp(lp), [5 / 9, 4 / 9], rtol=1e-12)
