"""Prequential (data-tempered) SMC against the exact one-step-ahead terms and S_CV(p)."""

import itertools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import genbayes as gb
from genbayes.evidence import prequential

N = 12


def exact_s_cv(fam, x):
    """S_CV(p) by enumerating every training set of size n - p (2^12 subsets in all)."""
    n = x.shape[0]
    out = np.zeros(n)
    for p in range(1, n + 1):
        masks = np.zeros((0, n))
        subsets = list(itertools.combinations(range(n), n - p))
        masks = np.zeros((len(subsets), n))
        for j, T in enumerate(subsets):
            masks[j, list(T)] = 1.0
        lp = jax.vmap(lambda w: fam.log_predictive_weighted((x,), (x,), w))(jnp.asarray(masks))  # (C, n)
        held = 1.0 - masks
        out[p - 1] = float(np.mean(np.sum(np.asarray(lp) * held, axis=1) / p))
    return out


@settings(max_examples=2)
@given(seed=st.integers(0, 10_000), v0=st.floats(0.5, 4.0))
def test_prequential_matches_exact_normal(x64, seed, v0):
    fam = gb.conjugate.NormalKnownVariance(0.0, v0, 1.0)
    x = jnp.asarray(np.random.default_rng(seed).normal(0.7, 1.0, N))
    R = 24
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pq = prequential(fam, x, num_permutations=R, num_particles=400, rng_key=jax.random.PRNGKey(seed))
    assert pq.terms.shape == (R, N) and pq.orders.shape == (R, N) and pq.log_z.shape == (R,)
    # 1) each ordering's terms sum to that ordering's log Z estimate (the carried running sum)
    np.testing.assert_allclose(pq.terms.sum(1), pq.log_z, rtol=0, atol=1e-8)
    # 2) paired with the exact terms of the same ordering: mean error at each position within 4 SE
    exact_terms = np.stack([np.asarray(gb.conjugate.sequence_log_predictive(fam, x, order=o)) for o in pq.orders])
    err = pq.terms - exact_terms
    se = err.std(0, ddof=1) / np.sqrt(R)
    assert np.all(np.abs(err.mean(0)) <= 4 * se + 1e-3), (err.mean(0), se)
    # 3) S_CV(p) for every p within 4 SE (orderings and SMC error together)
    s_exact = exact_s_cv(fam, x)
    assert np.all(np.abs(pq.s_cv - s_exact) <= 4 * pq.s_cv_se), (pq.s_cv - s_exact, pq.s_cv_se)
    # 4) every ordering estimates the same log evidence (chain rule)
    log_z = float(fam.log_evidence(x))
    assert abs(pq.log_z_mean - log_z) <= 4 * pq.log_z_se
    np.testing.assert_allclose(s_exact.sum(), log_z, atol=1e-8)


def test_prequential_diagnostics_and_bad_input(x64):
    fam = gb.conjugate.NormalKnownVariance(0.0, 25.0, 1.0)
    x = jnp.asarray(np.random.default_rng(0).normal(3.0, 1.0, 8))
    with pytest.warns(RuntimeWarning, match="effective sample size"):
        pq = prequential(fam, x, num_permutations=2, num_particles=10, rng_key=jax.random.PRNGKey(0))
    d = pq.diagnostics
    assert d["ess"].shape == (2, 8) and d["acceptance"].shape == (2, 8)
    assert np.all(d["num_resampling"] == 8) and np.min(d["ess"]) < 20
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="num_particles"):
        prequential(fam, x, num_permutations=2, num_particles=1, rng_key=key)
    with pytest.raises(ValueError, match="num_permutations"):
        prequential(fam, x, num_permutations=0, rng_key=key)
    with pytest.raises(ValueError, match="does not occur"):
        prequential(fam, x, num_permutations=2, rng_key=key, site="z")
    with pytest.raises(ValueError, match="is latent"):
        prequential(fam, x, num_permutations=2, rng_key=key, site="mu")
    with pytest.raises(ValueError, match="orders"):
        prequential(fam, x, num_permutations=2, rng_key=key, orders=np.zeros((2, 8), int))

    def no_obs():
        numpyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="no observed sample site"):
        prequential(no_obs, num_permutations=2, rng_key=key)
