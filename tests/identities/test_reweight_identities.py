"""Property-based proofs of the weighted-likelihood core's identities (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpyro.infer.util import log_density

import genbayes as gb


def model(x, z):
    """Two observed sites in plates, two latents, a prior that is not N(0, 1)."""
    mu = numpyro.sample("mu", dist.Normal(0.5, 2.0))
    sigma = numpyro.sample("sigma", dist.LogNormal(0.0, 0.5))
    if x.shape[0]:  # NumPyro plates cannot be empty; repeating every point 0 times empties one
        with numpyro.plate("n", x.shape[0]):
            numpyro.sample("x", dist.Normal(mu, sigma), obs=x)
    if z.shape[0]:
        with numpyro.plate("m", z.shape[0]):
            numpyro.sample("z", dist.Poisson(jnp.exp(mu / 4)), obs=z)


def prior_only(x, z):
    numpyro.sample("mu", dist.Normal(0.5, 2.0))
    numpyro.sample("sigma", dist.LogNormal(0.0, 0.5))


@st.composite
def problems(draw):
    n = draw(st.integers(1, 8))
    m = draw(st.integers(1, 5))
    floats = st.floats(-5, 5, allow_nan=False, width=64)
    x = np.array(draw(st.lists(floats, min_size=n, max_size=n)))
    z = np.array(draw(st.lists(st.integers(0, 6), min_size=m, max_size=m)), dtype=float)
    params = {"mu": draw(st.floats(-3, 3)), "sigma": draw(st.floats(0.2, 3.0))}
    return x, z, params


def ld(fn, x, z, params):
    return float(log_density(fn, (jnp.asarray(x), jnp.asarray(z)), {}, params)[0])


weights_st = st.floats(0.0, 4.0, allow_nan=False, width=64)


@given(problems())
def test_all_ones_is_the_plain_model(x64, prob):
    x, z, params = prob
    w = {"x": np.ones_like(x), "z": np.ones_like(z)}
    assert ld(gb.reweight(model, weights=w), x, z, params) == ld(model, x, z, params)


@given(problems())
def test_all_zeros_is_the_prior(x64, prob):
    x, z, params = prob
    w = {"x": np.zeros_like(x), "z": np.zeros_like(z)}
    np.testing.assert_allclose(
        ld(gb.reweight(model, weights=w), x, z, params), ld(prior_only, x, z, params), rtol=1e-12, atol=1e-12
    )


@given(problems(), st.data())
def test_integer_weights_repeat_observations(x64, prob, data):
    x, z, params = prob
    kx = np.array(data.draw(st.lists(st.integers(0, 3), min_size=len(x), max_size=len(x))))
    kz = np.array(data.draw(st.lists(st.integers(0, 3), min_size=len(z), max_size=len(z))))
    weighted = ld(gb.reweight(model, weights={"x": kx.astype(float), "z": kz.astype(float)}), x, z, params)
    repeated = ld(model, np.repeat(x, kx), np.repeat(z, kz), params)
    np.testing.assert_allclose(weighted, repeated, rtol=1e-11, atol=1e-10)


@given(problems(), st.data())
def test_weights_are_additive(x64, prob, data):
    x, z, params = prob
    n = len(x)
    w1 = np.array(data.draw(st.lists(weights_st, min_size=n, max_size=n)))
    w2 = np.array(data.draw(st.lists(weights_st, min_size=n, max_size=n)))

    def f(w):
        return ld(gb.reweight(model, weights=w, sites="x"), x, z, params)

    lhs = f(w1 + w2) - f(w2)
    rhs = f(w1) - f(np.zeros(n))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-9, atol=1e-9)


@given(problems(), st.floats(0.01, 1.0))
def test_temperature_gradient_is_the_log_likelihood(x64, prob, beta):
    """d/dβ log[p(x|θ)^β π(θ)] = log p(x|θ): the thermodynamic-integration integrand."""
    x, z, params = prob
    args = (jnp.asarray(x), jnp.asarray(z))

    def lp(b):
        return log_density(gb.tempered(model, temperature=b), args, {}, params)[0]

    grad = jax.grad(lp)(jnp.asarray(beta))
    loglik = ld(model, x, z, params) - ld(prior_only, x, z, params)
    np.testing.assert_allclose(grad, loglik, rtol=1e-10, atol=1e-10)


@given(problems(), st.data())
def test_weight_gradient_is_per_observation_log_likelihood(x64, prob, data):
    x, z, params = prob
    n = len(x)
    w = np.array(data.draw(st.lists(st.floats(0.05, 3.0), min_size=n, max_size=n)))
    args = (jnp.asarray(x), jnp.asarray(z))
    grad = jax.grad(lambda w: log_density(gb.reweight(model, weights=w, sites="x"), args, {}, params)[0])(w)
    expected = dist.Normal(params["mu"], params["sigma"]).log_prob(jnp.asarray(x))
    np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("w", [0.0, 0.3])
def test_zero_weight_drops_out_of_support_observation(x64, w):
    """A dropped observation outside the support contributes 0, not NaN; a kept one gives -inf."""

    def m(x):
        p = numpyro.sample("p", dist.Beta(2.0, 2.0))
        with numpyro.plate("n", x.shape[0]):
            numpyro.sample("y", dist.Bernoulli(p), obs=x)

    x = jnp.array([1.0, 0.0, 2.0])  # 2 is outside the Bernoulli support
    weights = jnp.array([1.0, 1.0, w])
    lp = float(log_density(gb.reweight(m, weights=weights), (x,), {}, {"p": 0.3})[0])
    if w == 0.0:
        expected = float(dist.Beta(2.0, 2.0).log_prob(0.3) + jnp.log(0.3) + jnp.log(0.7))
        np.testing.assert_allclose(lp, expected, rtol=1e-12)
    else:
        assert not np.isfinite(lp) and not np.isnan(lp)
