"""Property tests: Σ_p S_CV(p) = log p(x) (Fong & Holmes 2020, Prop. 1) for the five conjugate families."""

import jax
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import genbayes as gb
from genbayes import cv

pos = st.floats(0.2, 5.0)


@st.composite
def family_and_data(draw):
    kind = draw(st.sampled_from(["bb", "nkv", "gp", "dc", "ngr"]))
    n = draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if kind == "bb":
        a, b = draw(pos), draw(pos)
        return (lambda: gb.conjugate.BetaBernoulli(a, b)), (rng.integers(0, 2, n),)
    if kind == "nkv":
        m0, v0, s2 = draw(st.floats(-3, 3)), draw(pos), draw(pos)
        return (lambda: gb.conjugate.NormalKnownVariance(m0, v0, s2)), (rng.normal(m0, 2.0, n),)
    if kind == "gp":
        a, b = draw(pos), draw(pos)
        return (lambda: gb.conjugate.GammaPoisson(a, b)), (rng.poisson(rng.uniform(0.5, 6), n),)
    if kind == "dc":
        K = draw(st.integers(2, 4))
        alpha = [draw(pos) for _ in range(K)]
        return (lambda: gb.conjugate.DirichletCategorical(np.array(alpha))), (rng.integers(0, K, n),)
    d = draw(st.integers(1, 2))
    X = np.column_stack([np.ones(n), rng.normal(size=(n, d - 1))]) if d > 1 else np.ones((n, 1))
    y = X @ rng.normal(size=d) + rng.normal(size=n)
    a0, b0, lam = draw(pos), draw(pos), draw(pos)
    return (lambda: gb.conjugate.NormalGammaRegression(np.zeros(d), lam * np.ones(d), a0, b0)), (X, y)


@given(family_and_data())
def test_sum_of_scv_is_log_evidence(case):
    make, data = case
    with jax.enable_x64(True):  # float64 inside the test (hypothesis cannot reset function fixtures)
        fam = make()
        rep = cv.identity(fam, *data)
        log_z = float(fam.log_evidence(*data))
        prior_pred = float(np.mean(fam.prior_log_predictive(*data)))
    n = len(data[-1])
    assert rep.s_cv.shape == (n,) and rep.log_evidence_source == "exact"
    assert rep.method in ("counting", "enumerate")
    assert abs(rep.total - log_z) < 1e-9
    assert abs(rep.gap) < 1e-9
    # S_CV(n) is the mean log prior predictive (no training data)
    assert abs(rep.s_cv[-1] - prior_pred) < 1e-9


@given(st.integers(2, 9), st.integers(0, 2**31 - 1), pos, pos)
def test_enumeration_and_counting_agree_for_every_p(n, seed, a, b):
    x = np.random.default_rng(seed).integers(0, 2, n)
    with jax.enable_x64(True):
        fam = gb.conjugate.BetaBernoulli(a, b)
        counted = np.asarray(cv._counting_all_p(fam, x))
        enumerated = np.asarray(cv._enumerate_all_p(fam, (np.asarray(x),)))
    np.testing.assert_allclose(counted, enumerated, rtol=0, atol=1e-12)


def test_random_orderings_give_exact_terms_and_se(x64):
    # n = 24 > 22: orderings with exact terms; every ordering telescopes to log p(x) exactly
    x = np.random.default_rng(0).poisson(3.0, 24)
    fam = gb.conjugate.GammaPoisson(2.0, 1.0)
    rep = cv.identity(fam, x, rng_key=jax.random.PRNGKey(0), num_permutations=300)
    assert rep.method.startswith("permutation")
    assert np.allclose(rep.diagnostics["log_z_per_ordering"], float(fam.log_evidence(x)), atol=1e-9)
    assert abs(rep.gap) < 1e-9
    # each S_CV(p) estimate is within 4 SE of the exact value for p where exact enumeration is cheap
    for p in (1, 2, 23, 24):
        exact = cv.lpo(fam, x, p=p).value
        assert abs(rep.s_cv[p - 1] - exact) <= 4 * rep.s_cv_se[p - 1] + 1e-12
