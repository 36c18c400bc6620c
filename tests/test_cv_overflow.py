"""genbayes.cv at large n: no overflow, no silent non-finite results, memory within a budget (issue 17, items 2-3)."""

import itertools
import math
import warnings

import jax
import numpy as np
import pytest
from scipy import stats
from scipy.special import betaln

import genbayes as gb
from genbayes import cv
from genbayes._programs import count_compilations


# ---------------------------------------------------------------- counting at n = 10^5


def _s_cv_beta_bernoulli_reference(x, a, b, p):
    """S_CV(p) for Beta-Bernoulli from SciPy's hypergeometric pmf (Boost) over its whole support, in float64.

    A held-out point of class k (count c_k) shares its held-out set with p − 1 of the other n − 1
    points; j of them of class k is Hypergeom(n − 1, c_k − 1, p − 1), and its predictive is
    (α_k + c_k − 1 − j) / (a + b + n − p). (SciPy's pmf is slow on wide supports: use p near 1 or n.)
    """
    n = len(x)
    c1 = int(np.sum(x))
    total = 0.0
    for ck, ak in ((n - c1, b), (c1, a)):
        if ck == 0:
            continue
        N, K, d = n - 1, ck - 1, p - 1
        j = np.arange(max(0, d - (N - K)), min(K, d) + 1)
        pmf = stats.hypergeom(N, K, d).pmf(j)
        assert abs(pmf.sum() - 1.0) < 1e-12
        total += ck / n * float(np.sum(pmf * np.log(ak + ck - 1 - j)))
    return total - math.log(a + b + n - p)


def test_counting_at_n_1e5_is_finite_float64_and_matches_scipy():
    # float32 mode (no x64 fixture): counting must still be float64 and not overflow (d·K > 2^31 here)
    rng = np.random.default_rng(1)
    n, a, b = 100_000, 1.5, 2.0
    x = rng.binomial(1, 0.3, n).astype(np.int32)
    fam = gb.conjugate.BetaBernoulli(a, b)
    for p in (1, 2, 137, n - 137, n - 1, n):
        r = cv.lpo(fam, x, p=p)
        ref = _s_cv_beta_bernoulli_reference(x, a, b, p)
        assert r.method == "counting" and r.valid
        assert abs(r.value - ref) <= 1e-9 * abs(ref), (p, r.value, ref)
    # p = 1 and p = n also in closed form without the hypergeometric sum
    c1 = int(x.sum())
    loo = (c1 * math.log(a + c1 - 1) + (n - c1) * math.log(b + n - c1 - 1)) / n - math.log(a + b + n - 1)
    assert abs(cv.lpo(fam, x, p=1).value - loo) <= 1e-9 * abs(loo)


@pytest.mark.slow
@pytest.mark.run_bound  # n = 10^5 terms: 59 -> 22 s CPU at XLA's default flags (conftest.py)
def test_identity_at_n_1e5_is_finite_and_matches_closed_form_evidence():
    # the case (n = 70,000 gave total = nan, gap = nan with no warning), at n = 10^5 and in
    # float32 mode: every S_CV(p), p = 1..n, in float64, and Σ_p S_CV(p) = log B(a + c1, b + n − c1) − log B(a, b)
    rng = np.random.default_rng(1)
    n, a, b = 100_000, 1.5, 2.0
    x = rng.binomial(1, 0.3, n).astype(np.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = cv.identity(gb.conjugate.BetaBernoulli(a, b), x)
    c1 = int(x.sum())
    log_z = betaln(a + c1, b + n - c1) - betaln(a, b)
    assert rep.valid and rep.method == "counting" and np.all(np.isfinite(rep.s_cv))
    assert abs(rep.total - log_z) <= 1e-9 * abs(log_z)
    assert abs(rep.log_evidence - log_z) <= 1e-9 * abs(log_z)
    for p in (3, n - 3):
        ref = _s_cv_beta_bernoulli_reference(x, a, b, p)
        assert abs(rep.s_cv[p - 1] - ref) <= 1e-9 * abs(ref)


# ---------------------------------------------------------------- non-finite results are marked invalid


def test_nonfinite_enumeration_result_is_invalid_with_reason():
    # x² overflows float32 at 1e30: the held-out densities are not finite
    fam = gb.conjugate.NormalKnownVariance(0.0, 1.0, 1.0)
    x = np.array([1e30, 0.0, 1.0, -0.5])
    with pytest.warns(RuntimeWarning, match="invalid"):
        r = cv.lpo(fam, x, p=1)
    assert not np.isfinite(r.value)
    assert r.valid is False and "not finite" in " ".join(r.problems) or "nan" in " ".join(r.problems).lower()
    assert "INVALID" in repr(r)


def test_nonfinite_identity_is_invalid_with_reason():
    fam = gb.conjugate.NormalKnownVariance(0.0, 1.0, 1.0)
    with pytest.warns(RuntimeWarning, match="invalid"):
        rep = cv.identity(fam, np.array([1e30, 0.0, 1.0]))
    assert rep.valid is False and rep.problems


def test_counting_path_checks_its_result(monkeypatch):
    # the counting path used to skip the result check: a NaN from the core must come back invalid
    monkeypatch.setattr(cv, "_counting_core", lambda counts, alpha, ps, n, chunk: np.full(len(ps), np.nan))
    fam = gb.conjugate.BetaBernoulli(1.0, 1.0)
    with pytest.warns(RuntimeWarning, match="invalid"):
        r = cv.lpo(fam, np.array([0, 1, 1, 0]), p=2)
    assert r.valid is False and r.method == "counting"
    with pytest.warns(RuntimeWarning, match="invalid"):
        rep = cv.identity(fam, np.array([0, 1, 1, 0]))
    assert rep.valid is False and "S_CV(p) are not finite" in rep.problems[0]


# ---------------------------------------------------------------- memory budget


def _no_programs(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a CV program was built or run")

    for name in ("_unrank_batch", "_exact_values", "_random_masks", "_exact_subset_value", "_enumerate_sums"):
        monkeypatch.setattr(cv, name, refuse)


def test_n2000_p2_stops_before_allocating_when_over_budget(monkeypatch):
    fam = gb.conjugate.NormalKnownVariance(0.0, 4.0, 1.0)
    x = np.random.default_rng(0).normal(size=2000)
    cv._resolve(fam, (x,), {})  # the data checks' own eager operations, and the default key, compiled once
    jax.random.PRNGKey(0)
    _no_programs(monkeypatch)
    with count_compilations() as c:
        with pytest.raises(ValueError, match=r"needs at least .* above memory_budget"):
            cv.lpo(fam, x, p=2, memory_budget=50_000)
        with pytest.raises(ValueError, match=r"batch_size = 1999000 .* need about .* GiB"):
            cv.lpo(fam, x, p=2, batch_size=1_999_000, memory_budget=2**30)
    assert c.count == 0  # refused before any program was built, compiled or given memory


def test_n2000_p2_default_plan_fits_the_default_budget():
    # the case (~36 GB in one program, killed by the kernel): now in batches within the budget
    fam = gb.conjugate.NormalKnownVariance(0.0, 4.0, 1.0)
    x = np.random.default_rng(0).normal(size=2000)
    target = cv._resolve(fam, (x,), {})
    budget = cv.default_memory_budget()
    r = cv._Runner(target, 2, "exact", False, None, jax.random.PRNGKey(0), cv.DEFAULT_MAX_SUBSETS, None,
                   1, 1, 1, 1 << 14)
    assert r.exhaustive and r.total == math.comb(2000, 2)
    assert r.memory_needed <= budget
    masks_one_program = r.total * 2000 * 4  # what the old single batch held in masks alone
    assert r.plan.batch_size * 2000 * 4 <= budget < 2.2 * masks_one_program or r.plan.batch_size == r.total


def _s_cv_normal_reference(x, prior_mean, prior_var, noise_var, p):
    """S_CV(p) by enumerating all subsets in NumPy, with the Normal-Normal closed-form predictive (float64)."""
    n = len(x)
    tot = 0.0
    for S in itertools.combinations(range(n), p):
        train = np.delete(x, S)
        post_var = 1.0 / (1.0 / prior_var + len(train) / noise_var)
        post_mean = post_var * (prior_mean / prior_var + train.sum() / noise_var)
        tot += np.mean(stats.norm(post_mean, math.sqrt(post_var + noise_var)).logpdf(x[list(S)]))
    return tot / math.comb(n, p)


def test_batched_by_budget_equals_one_batch_and_numpy(x64):
    fam = gb.conjugate.NormalKnownVariance(0.5, 4.0, 1.0)
    x = np.random.default_rng(3).normal(1.0, 1.0, 24)
    one = cv.lpo(fam, x, p=3)
    # a budget that forces several batches (and a small lax.map chunk)
    small = cv.lpo(fam, x, p=3, memory_budget=200_000)
    target = cv._resolve(fam, (x,), {})
    r = cv._Runner(target, 3, "exact", False, None, jax.random.PRNGKey(0), cv.DEFAULT_MAX_SUBSETS, None,
                   1, 1, 1, 1 << 14, memory_budget=200_000)
    assert r.plan.num_batches > 1 and r.memory_needed <= 200_000
    ref = _s_cv_normal_reference(x, 0.5, 4.0, 1.0, 3)
    assert abs(one.value - ref) <= 1e-9 * abs(ref)
    assert abs(small.value - ref) <= 1e-9 * abs(ref)


def test_random_subsets_do_not_depend_on_batching(x64):
    fam = gb.conjugate.NormalKnownVariance(0.0, 4.0, 1.0)
    x = np.random.default_rng(0).normal(size=30)
    k = jax.random.PRNGKey(2)
    a = cv.lpo(fam, x, p=5, num_subsets=300, rng_key=k)
    b = cv.lpo(fam, x, p=5, num_subsets=300, rng_key=k, batch_size=64)
    assert np.array_equal(a.diagnostics["subsets"], b.diagnostics["subsets"])  # the same held-out sets
    assert abs(a.value - b.value) <= 1e-12 * abs(a.value)  # summed in another order


def test_max_subsets_above_2_31_is_meaningful():
    fam = gb.conjugate.NormalKnownVariance(0.0, 4.0, 1.0)
    x = np.random.default_rng(0).normal(size=2000)
    # C(2000, 4) ≈ 6.6e11 > 2^31: enumeration is refused clearly (not an OverflowError from JAX)
    with pytest.raises(ValueError, match=r"2\^31"):
        cv.lpo(fam, x, p=4, method="enumerate", max_subsets=2**40, rng_key=jax.random.PRNGKey(0))
    # and "exact" falls back to random subsets, which need a key (not a silent default)
    with pytest.raises(ValueError, match="rng_key"):
        cv.lpo(fam, x, p=4, max_subsets=2**40)
    with pytest.raises(ValueError, match="num_subsets"):
        cv.lpo(fam, x, p=4, num_subsets=2**31, rng_key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="memory_budget"):
        cv.lpo(fam, x, p=1, memory_budget=-1)


def test_identity_enumeration_stops_before_allocating_when_over_budget(monkeypatch):
    fam = gb.conjugate.GammaPoisson(2.0, 1.0)
    x = np.arange(20) % 4
    _no_programs(monkeypatch)
    # enumeration holds one chunk of subsets at a time (not 2^n values), so it is refused only when
    # even one held-out set's predictives (6 n values) exceed the budget
    with pytest.raises(ValueError, match=r"2\^20 − 1 held-out sets needs about"):
        cv.identity(fam, x, memory_budget=100)


def test_psis_and_refit_stop_before_sampling_when_over_budget(monkeypatch):
    fam = gb.conjugate.NormalKnownVariance(0.0, 4.0, 1.0)
    plain = lambda x: fam.model(x)  # noqa: E731 - a plain NumPyro model: PSIS / refits
    x = np.random.default_rng(0).normal(size=500)

    def no_nuts(*a, **k):
        raise AssertionError("NUTS was started")

    monkeypatch.setattr(cv, "_FullPosterior", no_nuts)
    monkeypatch.setattr(cv, "_refit_batch", no_nuts)
    # PSIS: 4 chains × 1000 draws × 500 points of log-likelihoods alone are 16 MB
    with pytest.raises(ValueError, match=r"needs at least .*MiB.* above memory_budget = 9.5 MiB"):
        cv.lpo(plain, x, p=1, method="psis", rng_key=jax.random.PRNGKey(0), memory_budget=10_000_000)
    with pytest.raises(ValueError, match=r"batch_size = 32 .* need about"):
        cv.lpo(plain, x, p=2, method="refit", num_subsets=32, batch_size=32, rng_key=jax.random.PRNGKey(0),
               memory_budget=50_000_000)
