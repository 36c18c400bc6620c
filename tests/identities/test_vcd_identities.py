"""VCD identities with the exact Gaussian autoregressive kernel (float64).

For p = N(0, Σ) the kernel z' = a z + sqrt(1 − a²) L ε (L Lᵀ = Σ) leaves p invariant, and started at
q = N(m, S) it gives q^(t) = N(aᵗ m, a^{2t} S + (1 − a^{2t}) Σ). So L_VCD = E_{q^(t)}[f] − E_q[f] has a
closed form (Gaussian expectations of Gaussian log densities), which for m = 0 reduces to
(1 − a^{2t}) [KL(q‖p) + KL(p‖q)] (Ruiz & Titsias 2019; docs/formulas.md, section 5).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genbayes import vcd as V


def _e_log_normal(mu, C, nu, P):
    """E_{N(mu, C)}[log N(z; nu, P)]."""
    d = mu.shape[0]
    Pi = jnp.linalg.inv(P)
    r = mu - nu
    return -0.5 * (d * jnp.log(2 * jnp.pi) + jnp.linalg.slogdet(P)[1] + jnp.trace(Pi @ C) + r @ Pi @ r)


def closed_form(m, s, Sigma, a, t):
    S = jnp.diag(s**2)
    At = a ** (2 * t)
    mt, Ct = a**t * m, At * S + (1 - At) * Sigma
    zero = jnp.zeros_like(m)
    f = lambda mu, C: _e_log_normal(mu, C, zero, Sigma) - _e_log_normal(mu, C, m, S)  # noqa: E731
    return f(mt, Ct) - f(m, S)


def _kl(m0, S0, m1, S1):
    d = m0.shape[0]
    S1i = jnp.linalg.inv(S1)
    r = m1 - m0
    return 0.5 * (jnp.trace(S1i @ S0) + r @ S1i @ r - d + jnp.linalg.slogdet(S1)[1] - jnp.linalg.slogdet(S0)[1])


def _problem(Sigma, a):
    L = jnp.linalg.cholesky(Sigma)

    def model():
        numpyro.sample("z", dist.MultivariateNormal(jnp.zeros(Sigma.shape[0]), Sigma))

    def guide():
        loc = numpyro.param("loc", jnp.zeros(Sigma.shape[0]))
        scale = numpyro.param("scale", jnp.ones(Sigma.shape[0]), constraint=dist.constraints.positive)
        numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def kernel(key, z, potential_fn):
        return a * z + jnp.sqrt(1 - a**2) * L @ jax.random.normal(key, z.shape, z.dtype)

    return model, guide, kernel


def _sigma(rho, v1, v2):
    return jnp.array([[v1, rho * jnp.sqrt(v1 * v2)], [rho * jnp.sqrt(v1 * v2), v2]])


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # x64 is the same for every input
@given(
    rho=st.floats(-0.95, 0.95),
    v1=st.floats(0.3, 3.0),
    v2=st.floats(0.3, 3.0),
    s1=st.floats(0.2, 2.0),
    s2=st.floats(0.2, 2.0),
    a=st.floats(0.0, 0.95),
    t=st.integers(1, 6),
)
def test_closed_form_reduces_to_symmetrised_kl_at_zero_mean(x64, rho, v1, v2, s1, s2, a, t):
    Sigma = _sigma(rho, v1, v2)
    s = jnp.array([s1, s2])
    m = jnp.zeros(2)
    S = jnp.diag(s**2)
    sym = _kl(m, S, m, Sigma) + _kl(m, Sigma, m, S)
    np.testing.assert_allclose(float(closed_form(m, s, Sigma, a, t)), float((1 - a ** (2 * t)) * sym), rtol=1e-9, atol=1e-10)


@pytest.mark.filterwarnings("ignore:VCD. the guide carries no VCD state")
# Monte Carlo per example (a fresh trace each): 6 examples keep it near 20 s
@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rho=st.floats(-0.9, 0.9),
    s1=st.floats(0.3, 1.5),
    s2=st.floats(0.3, 1.5),
    a=st.floats(0.1, 0.9),
)
def test_estimator_mean_matches_closed_form(x64, rho, s1, s2, a):
    t = 2
    Sigma = _sigma(rho, 1.0, 1.0)
    model, guide, kernel = _problem(Sigma, a)
    loss = V.VCD(num_mcmc_steps=t, kernel=kernel)
    params = {"loc": jnp.zeros(2), "scale": jnp.array([s1, s2])}
    n = 4000
    vals = np.asarray(jax.vmap(lambda k: loss.loss(k, params, model, guide))(jax.random.split(jax.random.key(0), n)))
    exact = float(closed_form(params["loc"], params["scale"], Sigma, a, t))
    se = vals.std() / np.sqrt(n)
    assert abs(vals.mean() - exact) < 4 * se + 1e-9, (vals.mean(), exact, se)


def test_gradient_matches_finite_differences_of_closed_form(x64):
    """Mean estimated gradient (eq. 12, moving-average baseline set to a fixed b) against central
    differences of the closed form, at a non-zero mean, each coordinate within 4 standard errors."""
    Sigma = _sigma(0.8, 1.0, 2.0)
    a, t = 0.6, 3
    model, guide, kernel = _problem(Sigma, a)
    loss = V.VCD(num_mcmc_steps=t, kernel=kernel)
    wrapped = loss.wrap_guide(guide)
    state = loss._init_state(1)
    state = {**state, "baseline": jnp.array([-2.0]), "seen": jnp.array([True]), "count": jnp.array(5)}
    params = {"loc": jnp.array([0.4, -0.3]), "scale": jnp.array([0.6, 0.9])}

    def g(k):
        return jax.grad(lambda p: loss.loss_with_mutable_state(k, {**p, V.STATE_SITE: state}, model, wrapped)["loss"])(params)

    n = 20000
    grads = jax.jit(jax.vmap(g))(jax.random.split(jax.random.key(1), n))
    h = 1e-5
    for name in ("loc", "scale"):
        for i in range(2):
            e = jnp.zeros(2).at[i].set(h)
            p_up = {**params, name: params[name] + e}
            p_dn = {**params, name: params[name] - e}
            fd = (closed_form(p_up["loc"], p_up["scale"], Sigma, a, t) - closed_form(p_dn["loc"], p_dn["scale"], Sigma, a, t)) / (2 * h)
            est = np.asarray(grads[name][:, i])
            se = est.std() / np.sqrt(n)
            assert abs(est.mean() - float(fd)) < 4 * se, (name, i, est.mean(), float(fd), se)
