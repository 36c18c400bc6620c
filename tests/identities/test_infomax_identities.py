"""Property tests of the information identities behind β-VAE / InfoMax / β-TCVAE.

Monte Carlo tolerances are 4 standard errors of the quantity compared (stated per test); the
exact pieces (analytic expected KL, exact aggregate density) are checked to float64 precision.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpyro import distributions as dist
from numpyro.distributions.kl import kl_divergence
from scipy.special import logsumexp as sp_logsumexp
from scipy.stats import norm

from genbayes.infomax import aggregate_log_density, decompose, mss_log_weights

# the x64 fixture only switches float64 on for the whole test: sharing it across examples is intended
x64_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def encoders(draw):
    """A random data set of N diagonal-Gaussian encodings (loc, scale) of dimension D.

    N and D come from small sets so that compiled programs are reused across examples (each new
    shape costs an XLA compilation); the values are free.
    """
    n = draw(st.sampled_from([2, 9, 24]))
    d = draw(st.sampled_from([1, 3]))
    seed = draw(st.integers(0, 2**31 - 1))
    spread = draw(st.floats(0.1, 3.0))
    rng = np.random.default_rng(seed)
    loc = spread * rng.normal(size=(n, d))
    scale = np.exp(rng.uniform(-1.5, 0.5, size=(n, d)))
    return loc, scale, seed


def brute_force_log_q(z, loc, scale, marginals=False):
    """log q(z) by SciPy, independent of our chunked JAX code."""
    lp = norm.logpdf(z[:, None, :], loc[None], scale[None])  # (M, N, D)
    if not marginals:
        lp = lp.sum(-1)
    return sp_logsumexp(lp, axis=1) - np.log(loc.shape[0])


@x64_ok
@given(encoders(), st.integers(1, 7), st.booleans())
def test_exact_aggregate_density_matches_scipy_any_chunk(x64, enc, chunk, marginals):
    loc, scale, seed = enc
    z = np.random.default_rng(seed + 1).normal(size=(11, loc.shape[1])) * 2
    ours = aggregate_log_density(z, loc, scale, chunk_size=chunk, marginals=marginals)
    np.testing.assert_allclose(ours, brute_force_log_q(z, loc, scale, marginals), rtol=1e-10, atol=1e-10)


@x64_ok
@given(encoders())
def test_kl_identity_and_mutual_information_bounds(x64, enc):
    """KL[q(z)‖p] = E KL[q(z|x)‖p] − I[X;Z], three independent estimates; 0 ≤ I ≤ log N."""
    loc, scale, seed = enc
    d = decompose(loc, scale, rng_key=jax.random.PRNGKey(seed), num_samples=32)
    # the analytic expected KL against numpyro's registered Normal KL (independent code)
    ekl_ref = float(jnp.mean(kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0)).sum(-1)))
    assert d.expected_kl.value == pytest.approx(ekl_ref, rel=1e-10, abs=1e-12)
    # MI and aggregate KL come from independent draws: tolerance 4 SE of their sum
    gap = d.identity_gap()
    assert abs(gap.value) <= 4 * gap.se, d
    log_n = np.log(loc.shape[0])
    assert d.mutual_info.value <= log_n + 1e-12  # deterministic: every draw's term is <= log N
    assert d.mutual_info.value >= -4 * d.mutual_info.se  # I >= 0, up to 4 SE
    assert d.aggregate_kl.value >= -4 * d.aggregate_kl.se  # a KL


@x64_ok
@given(encoders())
def test_beta_tc_terms_sum_to_expected_kl(x64, enc):
    """E KL = I + TC + Σ_j KL[q(z_j)‖p(z_j)] (Chen et al. 2018 eq. 2), within 4 SE."""
    loc, scale, seed = enc
    d = decompose(loc, scale, rng_key=jax.random.PRNGKey(seed + 7), num_samples=32)
    # TC and DWKL share draws with the aggregate KL: their sum equals it draw by draw
    assert d.total_correlation.value + d.dimensionwise_kl.value == pytest.approx(d.aggregate_kl.value, abs=1e-9)
    total = d.mutual_info.value + d.total_correlation.value + d.dimensionwise_kl.value
    se = np.hypot(d.mutual_info.se, d.aggregate_kl.se)  # independent draws for MI and (TC + DWKL)
    assert abs(total - d.expected_kl.value) <= 4 * se, d
    if loc.shape[1] == 1:  # one dimension: no total correlation at all
        assert d.total_correlation.value == pytest.approx(0.0, abs=1e-9)


def test_mutual_information_extremes(x64):
    """Well-separated sharp encodings carry log N nats; identical encodings carry none."""
    n = 16
    loc = 50.0 * np.arange(n)[:, None] * np.ones((1, 2))
    sharp = decompose(loc, 0.1 * np.ones((n, 2)), rng_key=jax.random.PRNGKey(0), num_samples=8)
    assert sharp.mutual_info.value == pytest.approx(np.log(n), abs=1e-8)
    same = decompose(np.zeros((n, 2)), np.ones((n, 2)), rng_key=jax.random.PRNGKey(1), num_samples=8)
    assert same.mutual_info.value == pytest.approx(0.0, abs=1e-10)
    assert same.expected_kl.value == pytest.approx(0.0, abs=1e-12)  # q(z|x) = p(z)


@x64_ok
@given(st.integers(2, 40), st.integers(0, 200), st.sampled_from(["stratified", "paper"]))
def test_mss_weight_rows_sum_to_one_with_1_over_n_on_the_diagonal(x64, b, extra, form):
    n = b + extra
    W = np.exp(np.asarray(mss_log_weights(b, n, form)))
    np.testing.assert_allclose(W.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.diag(W), 1.0 / n, rtol=1e-12)
    assert np.all(W > 0)


def test_reference_stride_would_miss_the_diagonal():
    """The stride of the widely copied β-TCVAE code (M + 1 on a B×B matrix) hits column 0, not the diagonal."""
    b, n = 5, 20
    M = b - 1
    W_ref = np.full((b, b), 1.0 / M)
    W_ref.reshape(-1)[:: M + 1] = 1.0 / n
    assert not np.allclose(np.diag(W_ref), 1.0 / n)  # the reference layout ...
    W = np.exp(np.asarray(mss_log_weights(b, n, "paper")))
    assert np.allclose(np.diag(W), 1.0 / n) and not np.allclose(W, W_ref)  # ... is not ours


@x64_ok
@given(encoders())
def test_mss_and_mws_with_the_whole_data_set_equal_exact(x64, enc):
    loc, scale, seed = enc
    n = loc.shape[0]
    z = loc + scale * np.random.default_rng(seed).normal(size=loc.shape)  # z[i] ~ q(z|x_i)
    exact = aggregate_log_density(z, loc, scale, "exact")
    for method in ("mss", "mws"):
        est = aggregate_log_density(z, loc, scale, method, dataset_size=n)
        np.testing.assert_allclose(est, exact, rtol=1e-10, atol=1e-10)
        est_m = aggregate_log_density(z, loc, scale, method, dataset_size=n, marginals=True)
        np.testing.assert_allclose(est_m, aggregate_log_density(z, loc, scale, marginals=True), atol=1e-10)


def _random_batches(key, i, n, b, reps):
    """reps batches of size b holding point i first and b − 1 others drawn without replacement."""
    others = jnp.array([j for j in range(n) if j != i])

    def one(k):
        return jnp.concatenate([jnp.array([i]), jax.random.permutation(k, others)[: b - 1]])

    return jax.vmap(one)(jax.random.split(key, reps))


def _batch_estimates(z_all, loc, scale, idx, method, n, form="stratified"):
    def one(ix):
        return aggregate_log_density(z_all[ix], loc[ix], scale[ix], method, dataset_size=n, mss_form=form)[0]

    return jax.vmap(one)(idx)


@pytest.mark.parametrize("form", ["stratified", "paper"])
def test_mss_is_unbiased_for_q_and_mws_has_its_stated_bias(x64, form):
    """E_batch[exp MSS] = q(z_i) (both weightings); E_batch[exp MWS] = q_i/B + (B−1)/B·q̄_others. 4 SE."""
    n, b, reps = 40, 6, 4000
    rng = np.random.default_rng(3)
    loc, scale = rng.normal(size=(n, 2)), np.exp(rng.uniform(-1, 0, size=(n, 2)))
    z_all = loc + scale * rng.normal(size=(n, 2))
    loc, scale, z_all = jnp.asarray(loc), jnp.asarray(scale), jnp.asarray(z_all)
    i = 0
    idx = _random_batches(jax.random.PRNGKey(0), i, n, b, reps)
    q_exact = float(np.exp(aggregate_log_density(z_all[i : i + 1], loc, scale)[0]))
    mss = np.exp(np.asarray(_batch_estimates(z_all, loc, scale, idx, "mss", n, form)))
    assert abs(mss.mean() - q_exact) <= 4 * mss.std(ddof=1) / np.sqrt(reps)
    lq_each = norm.logpdf(np.asarray(z_all[i])[None], np.asarray(loc), np.asarray(scale)).sum(-1)  # log q(z_i | x_j), every j
    q_own, q_others = np.exp(lq_each[i]), np.exp(np.delete(lq_each, i)).mean()
    mws = np.exp(np.asarray(_batch_estimates(z_all, loc, scale, idx, "mws", n)))
    expect = q_own / b + (b - 1) / b * q_others
    assert abs(mws.mean() - expect) <= 4 * mws.std(ddof=1) / np.sqrt(reps)


def test_mss_and_mws_converge_to_exact_as_the_batch_grows(x64):
    n, reps = 64, 300
    rng = np.random.default_rng(5)
    loc, scale = 1.5 * rng.normal(size=(n, 3)), np.exp(rng.uniform(-1, 0, size=(n, 3)))
    z_all = loc + scale * rng.normal(size=(n, 3))
    loc, scale, z_all = jnp.asarray(loc), jnp.asarray(scale), jnp.asarray(z_all)
    exact = float(aggregate_log_density(z_all[:1], loc, scale)[0])
    for method in ("mss", "mws"):
        rmse = []
        for b in (4, 16, 48, n):
            idx = _random_batches(jax.random.PRNGKey(b), 0, n, b, reps)
            est = np.asarray(_batch_estimates(z_all, loc, scale, idx, method, n))
            rmse.append(float(np.sqrt(np.mean((est - exact) ** 2))))
        assert rmse[0] > rmse[1] > rmse[2] > rmse[3], (method, rmse)
        assert rmse[3] < 1e-10, (method, rmse)
