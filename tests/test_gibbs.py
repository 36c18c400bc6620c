"""The gibbs handler: conversion of a likelihood model, learning rates, masks, Predictive, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import log_density

import genbayes as gb
from genbayes import losses as L
from genbayes.handlers import gibbs


def lik(x, mask=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
    s = numpyro.sample("s", dist.HalfNormal(2.0))
    with numpyro.plate("n", x.shape[0]), numpyro.handlers.mask(mask=True if mask is None else mask):
        numpyro.sample("x", dist.Normal(mu, s), obs=x)


X = jnp.array([0.3, -1.2, 2.5, 0.9])
P = {"mu": jnp.array(0.4), "s": jnp.array(1.3)}
PRIOR = float(dist.Normal(0.0, 3.0).log_prob(0.4) + dist.HalfNormal(2.0).log_prob(1.3))


def test_gibbs_replaces_the_likelihood_by_minus_w_loss():
    for w in (0.25, 1.0, 3.0):
        lp, _ = log_density(gibbs(lik, loss={"x": L.absolute}, learning_rate=w), (X,), {}, P)
        np.testing.assert_allclose(lp, PRIOR - w * np.abs(np.asarray(X) - 0.4).sum(), rtol=1e-6)


def test_predict_override_and_per_site_dict_rate():
    m = gibbs(lik, loss={"x": L.check(0.9)}, learning_rate={"x": 2.0}, predict={"x": lambda d: d.icdf(0.9)})
    lp, _ = log_density(m, (X,), {}, P)
    q = float(dist.Normal(0.4, 1.3).icdf(0.9))
    np.testing.assert_allclose(lp, PRIOR - 2.0 * np.asarray(L.check(0.9)(q, X)).sum(), rtol=1e-5)


def test_mask_is_kept_and_reweight_composes():
    mask = jnp.array([True, False, True, True])
    lp, _ = log_density(gibbs(lik, loss={"x": L.squared}, learning_rate=2.0), (X,), {"mask": mask}, P)
    np.testing.assert_allclose(lp, PRIOR - 2.0 * 0.5 * ((np.asarray(X) - 0.4) ** 2)[np.asarray(mask)].sum(), rtol=1e-6)
    w = jnp.array([1.0, 0.5, 0.0, 2.0])
    m = gb.reweight(gibbs(lik, loss={"x": L.squared}, learning_rate=2.0), weights=w)
    lp, _ = log_density(m, (X,), {}, P)
    np.testing.assert_allclose(lp, PRIOR - 2.0 * (np.asarray(w) * 0.5 * (np.asarray(X) - 0.4) ** 2).sum(), rtol=1e-6)


def test_traced_learning_rate_vmaps():
    f = jax.vmap(lambda w: log_density(gibbs(lik, loss={"x": L.squared}, learning_rate=w), (X,), {}, P)[0])
    ws = jnp.array([0.1, 1.0, 4.0])
    expected = PRIOR - np.asarray(ws) * 0.5 * ((np.asarray(X) - 0.4) ** 2).sum()
    np.testing.assert_allclose(f(ws), expected, rtol=1e-5)


def test_predictive_keeps_the_generative_path():
    def lik_none(n, x=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
        with numpyro.plate("n", n):
            numpyro.sample("x", dist.Normal(mu, 0.5), obs=x)

    out = numpyro.infer.Predictive(gibbs(lik_none, loss={"x": L.absolute}), {"mu": jnp.full(4000, 5.0)})(
        jax.random.PRNGKey(1), 3
    )["x"]
    assert out.shape == (4000, 3)
    assert abs(float(out.mean()) - 5.0) < 4 * 0.5 / np.sqrt(12000)  # 4 standard errors
    assert abs(float(out.std()) - 0.5) < 4 * 0.5 / np.sqrt(2 * 12000)


@pytest.mark.parametrize("w", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_learning_rate(w):
    with pytest.raises(ValueError, match="learning_rate"):
        gibbs(lik, loss={"x": L.squared}, learning_rate=w)
    with pytest.raises(ValueError, match="learning_rate"):
        gibbs(lik, loss={"x": L.squared}, learning_rate={"x": w})


def test_bad_site_names_and_losses():
    with pytest.raises(ValueError, match="does not sample"):
        log_density(gibbs(lik, loss={"y": L.squared}), (X,), {}, P)
    with pytest.raises(ValueError, match="latent"):
        log_density(gibbs(lik, loss={"mu": L.squared, "x": L.squared}), (X,), {}, P)
    with pytest.raises(TypeError, match="callable"):
        gibbs(lik, loss={"x": "squared"})
    with pytest.raises(ValueError, match="one value per observation"):
        log_density(gibbs(lik, loss={"x": lambda p, y: jnp.sum(y - p)}), (X,), {}, P)


def test_wrong_shape_loss_fails_before_nuts_compiles():
    mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(gibbs(lik, loss={"x": lambda p, y: jnp.sum(y - p)})),
                              num_warmup=5, num_samples=5, progress_bar=False)
    with pytest.raises(ValueError, match="one value per observation"):
        mcmc.run(jax.random.PRNGKey(0), X)


@pytest.mark.parametrize("seed", [0, 1])
def test_nuts_gibbs_posterior_matches_closed_form_over_rates(seed, x64):
    # squared loss 1/2 (x - theta)^2, prior N(mu0, tau0^2), rate w: N(m, v), 1/v = w n + 1/tau0^2, m = v (w sum x + mu0/tau0^2)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 30))
    x = rng.normal(rng.uniform(-3, 3), rng.uniform(0.5, 3), size=n)
    mu0, tau0 = rng.uniform(-2, 2), rng.uniform(0.5, 4)
    rates = np.exp(rng.uniform(np.log(0.05), np.log(5), size=4))

    def model(x):
        theta = numpyro.sample("theta", dist.Normal(mu0, tau0))
        with numpyro.plate("n", x.shape[0]):
            numpyro.sample("x", dist.Normal(theta, 1.0), obs=x)

    m = gibbs(model, loss={"x": L.squared})
    res = gb.batched.run(m, np.repeat(rates[:, None], n, 1), jnp.asarray(x), num_warmup=300, num_samples=1500,
                         rng_key=jax.random.PRNGKey(seed), progress=False)
    for b, w in enumerate(rates):
        v = 1 / (w * n + 1 / tau0**2)
        mean = v * (w * x.sum() + mu0 / tau0**2)
        s = np.asarray(res.samples["theta"][b])
        ess = float(numpyro.diagnostics.effective_sample_size(s[None]))
        # 4 Monte Carlo standard errors for the mean; for the variance, sd(s^2) ~ v sqrt(2 / ess)
        assert abs(s.mean() - mean) < 4 * np.sqrt(v / ess)
        assert abs(s.var() - v) < 4 * v * np.sqrt(2 / ess)


def test_inference_data_log_likelihood_is_minus_w_loss_and_loo_runs():
    import arviz as az

    from genbayes.interop import gibbs_to_inference_data

    x = jnp.asarray(np.random.default_rng(0).normal(size=15))

    def model(x):
        mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
        with numpyro.plate("n", x.shape[0]):
            numpyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(gibbs(model, loss={"x": L.absolute}, learning_rate=0.5)),
                              num_warmup=100, num_samples=200, num_chains=2, chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), x)
    idata = gibbs_to_inference_data(mcmc)
    ll = np.asarray(idata.log_likelihood["x"])
    mu = np.asarray(mcmc.get_samples(group_by_chain=True)["mu"])
    assert ll.shape == (2, 200, 15)
    np.testing.assert_allclose(ll, -0.5 * np.abs(np.asarray(x)[None, None, :] - mu[..., None]), rtol=1e-5, atol=1e-6)
    assert idata.log_likelihood.attrs["loss_x"] == "absolute" and idata.log_likelihood.attrs["learning_rate_x"] == 0.5
    loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo) and loo.elpd_loo < 0
    with pytest.raises(ValueError, match="not observed"):
        gibbs_to_inference_data(mcmc, sites="mu")


def test_mask_inside_plate_with_scalar_mask_is_kept():
    def model(x, keep):
        mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
        with numpyro.handlers.mask(mask=keep), numpyro.plate("n", x.shape[0]):
            numpyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    prior = float(dist.Normal(0.0, 3.0).log_prob(0.4))
    m = gibbs(model, loss={"x": L.absolute})
    lp_keep, _ = log_density(m, (X, jnp.array(True)), {}, {"mu": 0.4})
    lp_drop, _ = log_density(m, (X, jnp.array(False)), {}, {"mu": 0.4})
    np.testing.assert_allclose(lp_keep, prior - np.abs(np.asarray(X) - 0.4).sum(), rtol=1e-6)
    np.testing.assert_allclose(lp_drop, prior, rtol=1e-6)
