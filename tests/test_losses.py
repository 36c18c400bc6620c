"""Losses and the Loss pseudo-distribution: formulas, label conventions, shapes, handlers."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpyro.infer.util import log_density

import genbayes as gb
from genbayes import losses as L
from genbayes.losses import Loss


floats = st.floats(-50, 50, allow_nan=False, width=64)
vec = arrays(np.float64, 8, elements=floats)  # one shape: no recompilation per example


def _ref(name, p, y, a=None):
    u = y - p
    if name == "squared":
        return 0.5 * u**2
    if name == "absolute":
        return np.abs(u)
    if name == "check":
        return np.where(u >= 0, a * u, (a - 1) * u)
    if name == "huber":
        return np.where(np.abs(u) <= a, 0.5 * u**2, a * np.abs(u) - 0.5 * a**2)
    if name == "pseudo_huber":
        return a**2 * (np.sqrt(1 + (u / a) ** 2) - 1)
    if name == "tukey":
        return np.where(np.abs(u) <= a, a**2 / 6 * (1 - (1 - (u / a) ** 2) ** 3), a**2 / 6)
    raise AssertionError(name)


@given(vec, st.floats(-50, 50), st.floats(0.01, 0.99), st.floats(0.1, 10))
def test_regression_losses_match_their_formulas(y, p, tau, delta):
    with jax.enable_x64(True):
        cases = [("squared", L.squared, None), ("absolute", L.absolute, None), ("check", L.check(tau), tau),
                 ("huber", L.huber(delta), delta), ("pseudo_huber", L.pseudo_huber(delta), delta),
                 ("tukey", L.tukey_biweight(delta), delta)]
        for name, fn, a in cases:
            got = np.asarray(fn(jnp.asarray(p), jnp.asarray(y)))
            np.testing.assert_allclose(got, _ref(name, p, y, a), rtol=1e-10, atol=1e-10, err_msg=name)
            assert got.shape == y.shape


@given(vec, st.lists(st.booleans(), min_size=8, max_size=8))
def test_classification_labels_zero_one_and_pm_one_agree(f, labels):
    with jax.enable_x64(True):
        y01 = np.array(labels[: f.size], dtype=np.int32)
        ypm = 2 * y01 - 1
        for fn in (L.hinge, L.logistic):
            np.testing.assert_allclose(fn(f, y01), fn(f, ypm), rtol=0, atol=0)
        s = 2.0 * y01 - 1
        np.testing.assert_allclose(L.hinge(f, y01), np.maximum(0, 1 - s * f), rtol=1e-12)
        # logistic loss with 0/1 labels is exactly the Bernoulli(logits) negative log likelihood
        np.testing.assert_allclose(L.logistic(f, y01), -dist.Bernoulli(logits=f).log_prob(y01), rtol=1e-10, atol=1e-12)


def test_negative_log_likelihood_is_minus_log_prob():
    nll = L.negative_log_likelihood(lambda f: dist.StudentT(3.0, f, 2.0))
    p, y = jnp.array([0.0, 1.0, -2.0]), jnp.array([0.5, 4.0, -2.0])
    np.testing.assert_allclose(nll(p, y), -dist.StudentT(3.0, p, 2.0).log_prob(y), rtol=1e-6)


def test_check_loss_minimiser_is_the_quantile():
    y = np.random.default_rng(0).normal(size=201)
    grid = np.linspace(-3, 3, 6001)
    for tau in (0.1, 0.5, 0.9):
        risk = np.asarray(L.check(tau)(jnp.asarray(grid)[:, None], jnp.asarray(y)[None, :]).sum(1))
        q = np.quantile(y, tau, method="inverted_cdf")
        assert abs(grid[np.argmin(risk)] - q) <= 1e-3 + 1e-9  # grid spacing 1e-3


def test_subgradient_at_kink_is_valid():
    g = jax.grad(lambda p: L.check(0.9)(p, 0.0))(0.0)
    assert -0.9 <= float(g) <= 0.1  # d/df of rho(y - f) lies in [-tau, 1 - tau]
    assert -1.0 <= float(jax.grad(lambda p: L.absolute(p, 0.0))(0.0)) <= 1.0


@pytest.mark.parametrize("bad", [lambda: L.check(0.0), lambda: L.check(1.2), lambda: L.huber(-1.0),
                                 lambda: L.pseudo_huber(0.0), lambda: L.tukey_biweight(float("nan"))])
def test_bad_loss_parameters(bad):
    with pytest.raises(ValueError, match="tau|delta|`c`"):
        bad()


def test_loss_name_and_flags():
    assert L.check(0.9).name == "check(tau=0.9)" and L.check(0.9).smooth is False
    assert L.squared.smooth and not L.absolute.smooth and L.hinge.margin and not L.squared.margin


# ----------------------------------------------------------------------------- Loss distribution


def _model(X, y, mask=None, subsample=None, loss=L.check(0.9)):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("n", X.shape[0], subsample_size=subsample) as idx:
        pred = X[idx] @ beta
        with numpyro.handlers.mask(mask=True if mask is None else mask[idx]):
            numpyro.sample("y", Loss(loss, pred), obs=y[idx])


def _data():
    rng = np.random.default_rng(1)
    return jnp.asarray(rng.normal(size=(6, 2))), jnp.asarray(rng.normal(size=6))


def test_loss_log_prob_in_plate_mask_and_reweight():
    X, y = _data()
    beta = jnp.array([0.3, -0.7])
    prior = dist.Normal(0.0, 1.0).log_prob(beta).sum()
    per = L.check(0.9)(X @ beta, y)
    lp, _ = log_density(_model, (X, y), {}, {"beta": beta})
    np.testing.assert_allclose(lp, prior - per.sum(), rtol=1e-6)
    mask = jnp.array([True, False, True, True, False, True])
    lp, _ = log_density(_model, (X, y), {"mask": mask}, {"beta": beta})
    np.testing.assert_allclose(lp, prior - per[mask].sum(), rtol=1e-6)
    w = jnp.array([0.5, 2.0, 0.0, 1.0, 3.0, 1.5])
    lp, _ = log_density(gb.reweight(_model, weights=w), (X, y), {}, {"beta": beta})
    np.testing.assert_allclose(lp, prior - (w * per).sum(), rtol=1e-6)


def test_loss_under_subsampling_is_rescaled():
    X, y = _data()
    beta = jnp.array([0.3, -0.7])
    per = L.check(0.9)(X @ beta, y)
    m = numpyro.handlers.seed(_model, 3)
    tr = numpyro.handlers.trace(numpyro.handlers.substitute(m, {"beta": beta})).get_trace(X, y, subsample=3)
    idx = tr["n"]["value"]
    site = tr["y"]
    np.testing.assert_allclose(site["scale"] * site["fn"].log_prob(site["value"]).sum(), -per[idx].sum() * 6 / 3, rtol=1e-6)


def test_loss_cannot_be_sampled_and_wrong_shape_is_reported():
    X, y = _data()
    with pytest.raises(ValueError, match="cannot be sampled"):
        Loss(L.squared, jnp.zeros(3)).sample(jax.random.PRNGKey(0))

    def no_obs():
        numpyro.sample("y", Loss(L.squared, 0.0))

    with pytest.raises(ValueError, match="cannot be sampled"):
        numpyro.handlers.seed(no_obs, 0)()
    summed = lambda p, y: jnp.sum((y - p) ** 2)  # noqa: E731  -- sums over observations: wrong
    with pytest.raises(ValueError, match="one value per observation"):
        log_density(_model, (X, y), {"loss": summed}, {"beta": jnp.zeros(2)})
    with pytest.raises(TypeError, match="callable"):
        Loss("squared", jnp.zeros(3))


def test_loss_with_nuts_and_svi_target_the_gibbs_posterior(x64):
    # squared loss at rate 1 with a N(0, 10^2) prior: posterior N(m, v), 1/v = n + 1/100, m = v sum(x)
    x = jnp.asarray(np.random.default_rng(2).normal(1.0, 1.0, size=20))

    def model(x):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("n", x.shape[0]):
            numpyro.sample("x", Loss(L.squared, mu), obs=x)

    v = 1 / (20 + 1 / 100)
    m = v * float(x.sum())
    mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(model), num_warmup=300, num_samples=1000, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), x)
    s = mcmc.get_samples()["mu"]
    ess = float(numpyro.diagnostics.effective_sample_size(s[None]))
    assert abs(float(s.mean()) - m) < 4 * np.sqrt(v / ess)  # 4 Monte Carlo standard errors
    guide = numpyro.infer.autoguide.AutoNormal(model)
    # decaying step (0.05 -> 0.0025) so the last iterate's jitter (about the step size) is small
    optim = numpyro.optim.optax_to_numpyro(optax.adam(optax.exponential_decay(0.05, 1500, 0.05)))
    svi = numpyro.infer.SVI(model, guide, optim, numpyro.infer.Trace_ELBO())
    res = svi.run(jax.random.PRNGKey(1), 1500, x, progress_bar=False)
    loc = float(res.params["mu_auto_loc"])
    assert abs(loc - m) < 0.05  # the Gaussian family holds the exact posterior; 0.05 = 0.2 posterior sd
