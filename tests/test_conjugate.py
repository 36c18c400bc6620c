"""Exact families against NUTS on the reweighted model, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genbayes as gb
from genbayes.demos.conjugate import first_marginal
from genbayes.interop import effective_sample_size

KEY = jax.random.PRNGKey(0)


def _cases():
    k = jax.random.split(KEY, 4)
    n = 15
    X, y = gb.models.radiata_pine.design("adjusted_density")
    return [
        (gb.conjugate.BetaBernoulli(2.0, 3.0), (np.asarray(jax.random.bernoulli(k[0], 0.4, (n,))).astype(int),), "p"),
        (gb.conjugate.NormalKnownVariance(0.5, 2.0, 1.5), (np.asarray(jax.random.normal(k[1], (n,))) + 1.0,), "mu"),
        (gb.conjugate.GammaPoisson(3.0, 2.0), (np.asarray(jax.random.poisson(k[2], 2.0, (n,))).astype(float),), "rate"),
        (gb.conjugate.DirichletCategorical(jnp.array([1.0, 2.0, 1.5])), (np.asarray(jax.random.categorical(k[3], jnp.zeros(3), shape=(n,))),), "probs"),
        (gb.models.radiata_pine.prior(), (X, y), "beta"),
    ]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: type(c[0]).__name__ if isinstance(c, tuple) else "")
def test_weighted_posterior_matches_nuts_on_reweighted_model(case):
    """Three random weight vectors (Bayesian bootstrap, integer counts, a 0/1 fold) at once.

    For each, the NUTS mean of the first coordinate lies within 4.5 Monte Carlo standard errors
    (sd / sqrt(ESS), ESS from ArviZ) of the exact weighted-posterior mean, and the NUTS standard
    deviation within 15% of the exact one (with ESS >= 300 the sd's relative MC error is < 5%).
    """
    fam, data, site = case
    n = data[-1].shape[0]
    kw = jax.random.split(jax.random.PRNGKey(1), 3)
    W = jnp.stack([
        n * jax.random.dirichlet(kw[0], jnp.ones(n)),
        jax.random.poisson(kw[1], 1.0, (n,)).astype(jnp.float32),
        (jax.random.uniform(kw[2], (n,)) > 0.3).astype(jnp.float32),
    ])
    res = gb.batched.run(fam.model, W, *data, num_warmup=400, num_samples=2000, rng_key=KEY, progress=False)
    for b in range(W.shape[0]):
        marg = first_marginal(fam.posterior(*data, weights=np.asarray(W[b], dtype=float)), site)
        draws = np.asarray(res.samples[site][b]).reshape(2000, -1)[:, 0]
        ess = effective_sample_size(draws)
        assert ess >= 300, f"replicate {b}: ESS {ess:.0f} too low for the check"
        mean, sd = float(marg.mean), float(jnp.sqrt(marg.variance))
        assert abs(draws.mean() - mean) < 4.5 * sd / np.sqrt(ess), (b, draws.mean(), mean)
        assert abs(draws.std() / sd - 1) < 0.15, (b, draws.std(), sd)


def test_posterior_is_the_same_family_and_vmaps():
    fam = gb.conjugate.GammaPoisson(2.0, 1.0)
    x = jnp.array([1.0, 4.0, 2.0])
    W = jnp.array([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    post = jax.vmap(lambda w: fam.posterior(x, weights=w))(W)
    assert isinstance(post, gb.conjugate.GammaPoisson)
    np.testing.assert_allclose(post.shape, [9.0, 6.0])
    np.testing.assert_allclose(post.rate, [4.0, 2.0])
    assert "GammaPoisson(shape=2" in repr(fam)


@pytest.mark.parametrize(
    "make, data, match",
    [
        (lambda: gb.conjugate.BetaBernoulli(1, 1), (np.array([0, 1, 2]),), "only 0 and 1"),
        (lambda: gb.conjugate.NormalKnownVariance(0, 1, 1), (np.array([0.0, np.nan]),), "non-finite"),
        (lambda: gb.conjugate.GammaPoisson(1, 1), (np.array([1.0, -2.0]),), "non-negative integer"),
        (lambda: gb.conjugate.GammaPoisson(1, 1), (np.array([1.5]),), "non-negative integer"),
        (lambda: gb.conjugate.DirichletCategorical(np.ones(3)), (np.array([0, 3]),), r"0\.\.2"),
        (lambda: gb.conjugate.NormalKnownVariance(0, 1, 1), (np.ones((2, 2)),), "1-D"),
        (lambda: gb.models.radiata_pine.prior(), (np.ones((3, 3)), np.ones(3)), r"shape \(n, 2\)"),
        (lambda: gb.models.radiata_pine.prior(), (np.ones((3, 2)), np.array([1.0, np.inf, 0.0])), "non-finite"),
    ],
)
def test_bad_data_is_rejected_before_computing(make, data, match):
    fam = make()
    for call in (fam.log_evidence, fam.posterior):
        with pytest.raises(ValueError, match=match):
            call(*data)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: gb.conjugate.BetaBernoulli(0.0, 1.0), "`a` must be finite and > 0"),
        (lambda: gb.conjugate.GammaPoisson(1.0, -1.0), "`rate` must be finite and > 0"),
        (lambda: gb.conjugate.NormalKnownVariance(0.0, 1.0, np.nan), "`noise_var`"),
        (lambda: gb.conjugate.DirichletCategorical(np.ones(1)), "K >= 2"),
        (lambda: gb.conjugate.NormalGammaRegression(np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]])), "positive-definite"),
    ],
)
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_weights_for_posterior():
    fam = gb.conjugate.BetaBernoulli(1, 1)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        fam.posterior(np.array([0, 1, 1]), weights=np.ones(2))
    with pytest.raises(ValueError, match=">= 0"):
        fam.posterior(np.array([0, 1, 1]), weights=np.array([1.0, -1.0, 1.0]))


def test_log_predictive_argument_count():
    with pytest.raises(TypeError, match="1 test and 1 training"):
        gb.conjugate.BetaBernoulli(1, 1).log_predictive(np.array([1]))


def _held_out_sums(offset, use_x64):
    from genbayes.conjugate import ConjugateFamily

    with jax.enable_x64(use_x64):
        rng = np.random.default_rng(3)
        fam = gb.conjugate.NormalKnownVariance(offset + 0.3, 2.0, 0.7)
        x = jnp.asarray(offset + rng.normal(0.0, 1.0, 12))
        masks = np.vstack([(rng.uniform(size=(20, 12)) < 0.4), rng.uniform(size=(5, 12))]).astype(float)
        masks[0] = 0.0  # nothing held out: 0
        masks[1] = 1.0  # everything held out: the prior predictive
        masks = jnp.asarray(masks)
        ours = jax.vmap(lambda m: fam.held_out_log_predictive((x,), m))(masks)
        generic = jax.vmap(lambda m: ConjugateFamily.held_out_log_predictive(fam, (x,), m))(masks)
        prior = jnp.sum(fam.prior_log_predictive(x))
        return np.asarray(ours, np.float64), np.asarray(generic, np.float64), float(prior)


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_normal_held_out_sum_matches_pointwise_predictives(offset):
    """NormalKnownVariance's sufficient-statistics held-out sum against the base class's n predictives (0/1 and fractional masks)."""
    ours, generic, prior = _held_out_sums(offset, True)
    np.testing.assert_allclose(ours, generic, rtol=0, atol=1e-12 * np.max(np.abs(generic)))
    assert ours[0] == 0.0
    np.testing.assert_allclose(ours[1], prior, rtol=1e-12)
    # float32, data far from 0: centring keeps it at least as accurate as the pointwise predictives
    # (measured at offset 1e3: 1.9e-4 against 1.0e-3, both against float64)
    ours32, generic32, _ = _held_out_sums(offset, False)
    eps32 = float(np.finfo(np.float32).eps) * np.max(np.abs(ours))
    assert np.max(np.abs(ours32 - ours)) <= max(np.max(np.abs(generic32 - ours)), 4 * eps32)


def test_normal_gamma_regression_model_density_matches_scipy():
    """The model's joint log density (its prior written with a Cholesky factor) against SciPy's
    Gamma, multivariate normal with covariance (τΛ0)⁻¹ and normal densities, for a full (non-diagonal)
    Λ0 and several τ; and as a batch of draws (vmapped, as SMC evaluates its particles)."""
    from numpyro.infer.util import log_density
    from scipy.stats import gamma, multivariate_normal, norm

    with jax.enable_x64(True):
        P = np.array([[2.0, 0.6, 0.1], [0.6, 1.5, -0.4], [0.1, -0.4, 0.8]])
        m0, a0, b0 = np.array([0.5, -1.0, 0.2]), 2.5, 1.5
        fam = gb.conjugate.NormalGammaRegression(m0, P, a0, b0)
        rng = np.random.default_rng(0)
        X, y = rng.normal(size=(7, 3)), rng.normal(size=7)
        taus, betas = np.array([0.05, 0.7, 3.0, 40.0]), rng.normal(size=(4, 3))

        def ours(t, b):
            return log_density(fam.model, (X, y), {}, {"tau": t, "beta": b})[0]

        ref = [gamma.logpdf(t, a0, scale=1.0 / b0) + multivariate_normal.logpdf(b, m0, np.linalg.inv(t * P))
               + norm.logpdf(y, X @ b, 1.0 / np.sqrt(t)).sum() for t, b in zip(taus, betas)]
        np.testing.assert_allclose([float(ours(t, b)) for t, b in zip(taus, betas)], ref, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(jax.vmap(ours)(jnp.asarray(taus), jnp.asarray(betas))), ref, rtol=1e-12)
