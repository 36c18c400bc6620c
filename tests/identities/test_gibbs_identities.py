"""Identities of Gibbs posteriors, checked in float64 on the models' own log densities (hypothesis)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpyro.infer.util import log_density

from genbayes import fisher
from genbayes import losses as L
from genbayes.handlers import gibbs
from genbayes.losses import Loss

N = 6  # one data shape: no recompilation per example
data = arrays(np.float64, N, elements=st.floats(-5, 5, allow_nan=False))
rate = st.floats(0.05, 5.0)
loc = st.floats(-3, 3)
scale = st.floats(0.3, 5.0)
thetas = np.linspace(-4, 4, 7)


def sq_model(x, mu0, tau0, w):
    theta = numpyro.sample("theta", dist.Normal(mu0, tau0))
    with numpyro.plate("n", x.shape[0]), numpyro.handlers.scale(scale=w):
        numpyro.sample("x", Loss(L.squared, theta), obs=x)


def closed_form(x, mu0, tau0, w):
    v = 1.0 / (w * len(x) + 1.0 / tau0**2)
    return v * (w * np.sum(x) + mu0 / tau0**2), v


def lp_at(model, args, theta):
    return np.array([float(log_density(model, args, {}, {"theta": t})[0]) for t in theta])


def is_constant(diff, atol=1e-9):
    return np.ptp(diff) <= atol * max(1.0, np.max(np.abs(diff)))


@given(data, loc, scale, rate)
def test_squared_loss_posterior_is_the_closed_form_normal(x, mu0, tau0, w):
    with jax.enable_x64(True):
        m, v = closed_form(x, mu0, tau0, w)
        diff = lp_at(sq_model, (jnp.asarray(x), mu0, tau0, w), thetas) - np.asarray(dist.Normal(m, np.sqrt(v)).log_prob(thetas))
        assert is_constant(diff)


@given(data, data, loc, scale, rate)
def test_coherence_sequential_update_equals_joint_update(x1, x2, mu0, tau0, w):
    # Bissiri et al. (2016) eq. 3: updating on x1, then on x2 with that posterior as prior = updating on both
    with jax.enable_x64(True):
        m1, v1 = closed_form(x1, mu0, tau0, w)
        joint = lp_at(sq_model, (jnp.asarray(np.concatenate([x1, x2])), mu0, tau0, w), thetas)
        seq = lp_at(sq_model, (jnp.asarray(x2), m1, np.sqrt(v1), w), thetas)
        assert is_constant(joint - seq)


def lik(x, s):
    theta = numpyro.sample("theta", dist.Normal(0.0, 2.0))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("x", dist.Normal(theta, s), obs=x)


@given(data, scale)
def test_nll_loss_at_rate_one_is_the_model_and_rate_to_zero_is_the_prior(x, s):
    with jax.enable_x64(True):
        xs = jnp.asarray(x)
        nll = L.negative_log_likelihood(lambda f: dist.Normal(f, s))
        g1 = gibbs(lik, loss={"x": nll}, learning_rate=1.0)
        np.testing.assert_allclose(lp_at(g1, (xs, s), thetas), lp_at(lik, (xs, s), thetas), rtol=1e-13, atol=1e-12)
        prior = np.asarray(dist.Normal(0.0, 2.0).log_prob(thetas))
        gaps = [np.max(np.abs(lp_at(gibbs(lik, loss={"x": nll}, learning_rate=w), (xs, s), thetas) - prior)) for w in (1e-3, 1e-6, 1e-9)]
        # the gap is w * sum(loss): it shrinks linearly to 0
        np.testing.assert_allclose(gaps[1] / gaps[0], 1e-3, rtol=1e-6)
        assert gaps[2] < 1e-6 * gaps[0] * 1.0001


@given(data, st.floats(0.05, 0.95), rate)
def test_check_loss_is_asymmetric_laplace_up_to_a_constant(x, tau, w):
    with jax.enable_x64(True):
        xs = jnp.asarray(x)

        def ald(x):
            theta = numpyro.sample("theta", dist.Normal(0.0, 2.0))
            with numpyro.plate("n", x.shape[0]):
                numpyro.sample("x", dist.AsymmetricLaplaceQuantile(theta, 1.0 / w, tau), obs=x)

        g = gibbs(ald, loss={"x": L.check(tau)}, learning_rate=w, predict={"x": lambda d: d.loc})
        diff = lp_at(ald, (xs,), thetas) - lp_at(g, (xs,), thetas)
        assert is_constant(diff)
        np.testing.assert_allclose(diff[0], N * np.log(tau * (1 - tau) * w), rtol=1e-10)


GH_X, GH_W = np.polynomial.hermite_e.hermegauss(20)  # exact for polynomial integrands of degree < 40


def free_energy(x, mu0, tau0, w, a, s):
    """E_nu[w sum l] + KL(nu || prior) for nu = N(a, s^2) = E_nu[-log joint] - H(nu), from the model's log density."""
    th = a + s * GH_X
    lp = lp_at(sq_model, (jnp.asarray(x), mu0, tau0, w), th)
    entropy = 0.5 * np.log(2 * np.pi * np.e * s**2)
    return -np.sum(GH_W * lp) / np.sqrt(2 * np.pi) - entropy


@given(data, loc, scale, rate, st.floats(-1, 1).filter(lambda d: abs(d) > 1e-3), st.floats(-1, 1))
def test_gibbs_posterior_minimises_the_variational_objective(x, mu0, tau0, w, da, dlogs):
    with jax.enable_x64(True):
        m, v = closed_form(x, mu0, tau0, w)
        s = np.sqrt(v)
        best = free_energy(x, mu0, tau0, w, m, s)
        assert best < free_energy(x, mu0, tau0, w, m + da * s, s * np.exp(dlogs))
        assert best <= free_energy(x, mu0, tau0, w, m, s * np.exp(dlogs)) + 1e-10


@given(arrays(np.float64, (8, 3), elements=st.floats(-10, 10, allow_nan=False)))
def test_empirical_fisher_trace_identity(G):
    # mean_n g_n^T F^-1 g_n = tr(F^-1 F) = D for F = mean_n g_n g_n^T of full rank
    with jax.enable_x64(True):
        from hypothesis import assume

        assume(np.linalg.matrix_rank(G, tol=1e-6 * max(1.0, np.abs(G).max())) == 3)
        assume(np.linalg.cond(G) < 1e6)
        Gj = jnp.asarray(G)

        def model(G):
            theta = numpyro.sample("theta", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
            with numpyro.plate("n", G.shape[0]):
                # log p_n(theta) = theta . g_n, so the score of observation n is g_n
                numpyro.sample("y", Loss(lambda p, y: -p, G @ theta), obs=jnp.zeros(G.shape[0]))

        g = fisher.scores(model, {"theta": jnp.zeros(3)}, Gj)
        np.testing.assert_allclose(g, G, rtol=1e-12, atol=1e-12)
        F = fisher.empirical_fisher(model, {"theta": jnp.zeros(3)}, Gj)
        val = np.mean(np.einsum("nd,de,ne->n", G, np.linalg.inv(np.asarray(F)), G))
        np.testing.assert_allclose(val, 3.0, rtol=1e-6)
