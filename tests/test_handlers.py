"""reweight / tempered: composition with NumPyro handlers and transforms, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer import Predictive
from numpyro.infer.util import log_density

import genbayes as gb

X = jnp.array([0.3, 1.2, -0.5, 2.0, 0.8])
W = jnp.array([1.0, 2.0, 0.0, 0.5, 3.0])


def model(x):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=x)


def manual(mu, x=X, w=W):
    return dist.Normal(0.0, 1.0).log_prob(mu) + jnp.sum(w * dist.Normal(mu, 1.0).log_prob(x))


def ld(fn, mu=0.4, x=X):
    return log_density(fn, (x,), {}, {"mu": mu})[0]


def test_wrapper_and_context_manager_agree_with_manual_sum():
    def inner(x):
        with gb.reweight(weights=W):
            model(x)

    np.testing.assert_allclose(ld(gb.reweight(model, weights=W)), manual(0.4), rtol=1e-6)
    np.testing.assert_allclose(ld(inner), manual(0.4), rtol=1e-6)


def test_latent_sites_are_untouched():
    tr = handlers.trace(handlers.seed(gb.reweight(model, weights=W), 0)).get_trace(X)
    assert tr["mu"]["scale"] is None
    np.testing.assert_allclose(tr["y"]["scale"], W)


def test_sites_selects_observed_sites():
    def two(x):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", x.shape[0]):
            numpyro.sample("a", dist.Normal(mu, 1.0), obs=x)
            numpyro.sample("b", dist.Normal(mu, 2.0), obs=x)

    tr = handlers.trace(handlers.seed(gb.reweight(two, weights=W, sites="a"), 0)).get_trace(X)
    assert tr["b"]["scale"] is None
    np.testing.assert_allclose(tr["a"]["scale"], W)


def test_composes_with_mask_scale_condition_substitute():
    mask = jnp.array([True, True, True, False, True])

    def masked(x):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", x.shape[0]), handlers.mask(mask=mask):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=x)

    m = handlers.scale(gb.reweight(masked, weights=W), scale=2.0)
    expected = 2.0 * (dist.Normal(0.0, 1.0).log_prob(0.4) + jnp.sum(jnp.where(mask, W, 0) * dist.Normal(0.4, 1.0).log_prob(X)))
    np.testing.assert_allclose(ld(m), expected, rtol=1e-6)
    # condition / substitute fix the latent; the weights still apply to the observations
    cond = handlers.condition(gb.reweight(model, weights=W), data={"mu": 0.4})
    np.testing.assert_allclose(log_density(cond, (X,), {}, {})[0], manual(0.4), rtol=1e-6)
    sub = handlers.substitute(gb.reweight(model, weights=W), data={"mu": 0.4})
    np.testing.assert_allclose(log_density(sub, (X,), {}, {})[0], manual(0.4), rtol=1e-6)


def test_subsampling_plate_indexes_full_size_weights():
    def sub_model(x):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", x.shape[0], subsample_size=2) as idx:
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=x[idx])

    lp, tr = log_density(gb.reweight(handlers.seed(sub_model, 3), weights=W), (X,), {}, {"mu": 0.4})
    idx = tr["n"]["value"]
    expected = dist.Normal(0.0, 1.0).log_prob(0.4) + 5 / 2 * jnp.sum(W[idx] * dist.Normal(0.4, 1.0).log_prob(X[idx]))
    np.testing.assert_allclose(lp, expected, rtol=1e-6)


def test_jit_vmap_grad():
    f = jax.jit(lambda w: log_density(gb.reweight(model, weights=w), (X,), {}, {"mu": 0.4})[0])
    np.testing.assert_allclose(f(W), manual(0.4), rtol=1e-6)
    Ws = jnp.stack([W, jnp.ones(5), jnp.zeros(5)])
    np.testing.assert_allclose(jax.vmap(f)(Ws), jax.vmap(lambda w: manual(0.4, w=w))(Ws), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(f)(W + 0.1), dist.Normal(0.4, 1.0).log_prob(X), rtol=1e-6)


def test_predictive_generative_path_untouched():
    """With obs=None the site is latent, so reweighting changes nothing in Predictive."""

    def gen(x=None, n=5):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", n):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=x)

    a = Predictive(gen, num_samples=7)(jax.random.PRNGKey(0))
    b = Predictive(gb.reweight(gen, weights=W), num_samples=7)(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(a["y"], b["y"])


def test_factor_sites_untouched_unless_named():
    def with_factor(x):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.factor("penalty", -(mu**2))
        with numpyro.plate("n", x.shape[0]):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=x)

    base = dist.Normal(0.0, 1.0).log_prob(0.4) - 0.16
    np.testing.assert_allclose(ld(gb.reweight(with_factor, weights=W)), base + jnp.sum(W * dist.Normal(0.4, 1.0).log_prob(X)), rtol=1e-6)
    np.testing.assert_allclose(
        ld(gb.reweight(with_factor, weights=0.5, sites="penalty")),
        dist.Normal(0.0, 1.0).log_prob(0.4) - 0.08 + jnp.sum(dist.Normal(0.4, 1.0).log_prob(X)),
        rtol=1e-6,
    )


def test_tempered_is_constant_weights():
    np.testing.assert_allclose(ld(gb.tempered(model, temperature=0.3)), ld(gb.reweight(model, weights=0.3 * jnp.ones(5))), rtol=1e-6)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "weights, match",
    [
        (jnp.array([1.0, -1.0, 1.0, 1.0, 1.0]), "negative"),
        (jnp.array([1.0, jnp.nan, 1.0, 1.0, 1.0]), "NaN or infinite"),
        (np.array([1.0, np.inf, 1.0, 1.0, 1.0]), "NaN or infinite"),
    ],
)
def test_bad_weight_values_raise_at_construction(weights, match):
    with pytest.raises(ValueError, match=match):
        gb.reweight(model, weights=weights)


def test_wrong_weight_shape_names_the_site():
    with pytest.raises(ValueError, match=r"`weights` of shape \(3,\).*site 'y'"):
        ld(gb.reweight(model, weights=jnp.ones(3)))


def test_unknown_site_is_reported():
    with pytest.raises(ValueError, match=r"`sites` names \['yy'\].*\['mu', 'y'\]"):
        ld(gb.reweight(model, weights=W, sites="yy"))


@pytest.mark.parametrize("t, match", [(-0.1, "negative"), (float("nan"), "NaN"), (jnp.ones(2), "scalar")])
def test_bad_temperature(t, match):
    with pytest.raises(ValueError, match=match):
        gb.tempered(model, temperature=t)


def test_weights_and_sites_conflict():
    with pytest.raises(ValueError, match="not both"):
        gb.reweight(model, weights={"y": W}, sites="y")


def test_gibbs_single_loss_leaves_factor_and_jacobian_sites_alone():
    """gb.gibbs(model, loss=<one callable>) on a model with a constrained latent and a numpyro.factor:
    the factor stays a prior term and NumPyro's Jacobian site (`_s_log_det`, a dist.Unit) is not
    mistaken for an observation (it used to fail under NUTS)."""
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.util import log_density

    def model(y):
        s = numpyro.sample("s", dist.HalfNormal(1.0))
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.factor("pen", -0.5 * mu**2)
        with numpyro.plate("n", y.shape[0]):
            numpyro.sample("y", dist.Normal(mu, s), obs=y)

    y = jnp.array([0.1, 0.5, -0.3, 1.2])
    g = gb.gibbs(model, loss=gb.losses.absolute, learning_rate=2.0)
    lp, _ = log_density(g, (y,), {}, {"s": 0.7, "mu": 0.2})
    expected = (dist.HalfNormal(1.0).log_prob(0.7) + dist.Normal(0.0, 1.0).log_prob(0.2) - 0.5 * 0.2**2
                - 2.0 * jnp.sum(jnp.abs(y - 0.2)))
    assert float(lp) == pytest.approx(float(expected), rel=1e-6)
    mcmc = MCMC(NUTS(g), num_warmup=50, num_samples=50, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), y)
    assert np.all(np.isfinite(mcmc.get_samples()["mu"]))


@pytest.mark.parametrize("make, name", [
    (lambda m: gb.reweight(m, weights=np.ones(3) + 0j), "weights"),
    (lambda m: gb.tempered(m, temperature=0.5 + 1j), "temperature"),
    (lambda m: gb.gibbs(m, loss=gb.losses.absolute, learning_rate=1j), "learning_rate"),
])
def test_complex_weights_temperatures_and_rates_are_refused(make, name):
    """They used to give complex log densities."""
    def m(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", 3):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    with pytest.raises(TypeError, match=f"`{name}` is complex"):
        make(m)
