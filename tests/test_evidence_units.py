"""Evidence estimators and prequential SMC on observation units: several observed sites, groups,
masks, the data (time) order, and enumerated discrete latents.

Every reference is computed independently of genbayes: linear-Gaussian models (one scalar
parameter θ ~ N(m0, v0), entries x_j = a_j θ + e_j) have the multivariate normal marginal
N(a m0, diag(s) + v0 a aᵀ) for any subset of entries, so every one-step-ahead term of any ordering
of units is a difference of two scipy log densities; the two-component mixture's evidence and
one-step-ahead terms come from quadrature on a grid.
"""

import contextlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, norm

import genbayes as gb
from genbayes.evidence import log_evidence, prequential


def gauss_log_marginal(a, x, s, m0, v0, entries):
    """log N(x_S; a_S m0, diag(s_S) + v0 a_S a_S^T) for the entries S (empty: 0)."""
    S = np.asarray(entries, dtype=int)
    if S.size == 0:
        return 0.0
    cov = np.diag(s[S]) + v0 * np.outer(a[S], a[S])
    return float(multivariate_normal(mean=a[S] * m0, cov=cov).logpdf(x[S]))


def gauss_terms(a, x, s, m0, v0, unit_of_entry, order):
    """Exact log p(x_{order[k]} | x_{order[<k]}) for units given by ``unit_of_entry`` (-1: in no unit)."""
    out, seen = [], []
    prev = 0.0
    for u in order:
        seen = seen + list(np.flatnonzero(unit_of_entry == u))
        cur = gauss_log_marginal(a, x, s, m0, v0, seen)
        out.append(cur - prev)
        prev = cur
    return np.array(out)


@contextlib.contextmanager
def quiet():
    """Small runs: ESS/acceptance warnings are expected; the assertions judge the estimates."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# ----------------------------------------------------------------------------- several observed sites


def two_plates(y, z):
    """Two Normal sites of different sizes in different plates, sharing one mean."""
    mu = numpyro.sample("mu", dist.Normal(0.5, 1.5))
    with numpyro.plate("a", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    with numpyro.plate("b", z.shape[0]):
        numpyro.sample("z", dist.Normal(mu, 0.5), obs=z)


def _two_plates_data():
    rng = np.random.default_rng(3)
    y, z = rng.normal(1.0, 1.0, 8), rng.normal(1.0, 0.5, 5)
    x = np.concatenate([y, z])
    s = np.concatenate([np.full(8, 1.0), np.full(5, 0.25)])
    return y, z, x, s


def test_evidence_covers_every_observed_site(x64):
    """laplace (exact here), smc and stepping stone estimate log p(y, z), not log p(y) alone."""
    y, z, x, s = _two_plates_data()
    a = np.ones_like(x)
    exact = gauss_log_marginal(a, x, s, 0.5, 1.5**2, np.arange(13))
    only_y = gauss_log_marginal(a, x, s, 0.5, 1.5**2, np.arange(8))
    assert abs(exact - only_y) > 3.0  # the two answers are far apart: the test can tell them apart
    key = jax.random.PRNGKey(0)
    la = log_evidence(two_plates, jnp.asarray(y), jnp.asarray(z), method="laplace", rng_key=key)
    assert abs(la.log_z - exact) < 1e-6, (la, exact)  # Gaussian posterior: Laplace is exact
    with quiet():
        smc = log_evidence(two_plates, jnp.asarray(y), jnp.asarray(z), method="smc", rng_key=key,
                           options={"num_particles": 300, "num_runs": 4})
        ss = log_evidence(two_plates, jnp.asarray(y), jnp.asarray(z), method="stepping_stone", rng_key=key,
                          options={"ladder": 10, "num_warmup": 200, "num_samples": 400, "sites": ["y"]})
    assert abs(smc.log_z - exact) <= 4 * smc.se, (smc, exact)
    # sites=["y"]: the ladder tempers y only, starting from the posterior given z: log p(y | z)
    cond = exact - gauss_log_marginal(a, x, s, 0.5, 1.5**2, np.arange(8, 13))
    assert abs(ss.log_z - cond) <= 4 * ss.se, (ss, cond)
    ti, ti_se = ss.diagnostics["thermodynamic"], ss.diagnostics["thermodynamic_se"]  # the same ladder draws
    assert abs(ti - cond) <= 4 * ti_se, (ti, ti_se, cond)


def test_sites_subset_refused_where_it_would_be_wrong():
    y, z, _, _ = _two_plates_data()
    key = jax.random.PRNGKey(0)
    for method in ("smc", "laplace"):
        with pytest.raises(ValueError, match=r"\['z'\] would stay conditioned on.*stepping_stone"):
            log_evidence(two_plates, jnp.asarray(y), jnp.asarray(z), method=method, rng_key=key,
                         options={"sites": "y"})
    with pytest.raises(ValueError, match=r"`sites` names 'mu' \(latent\)"):
        log_evidence(two_plates, jnp.asarray(y), jnp.asarray(z), method="smc", rng_key=key, options={"sites": "mu"})


# ----------------------------------------------------------------------------- prequential on units


def shared_plate(y, z, y_mask):
    """Two sites sharing a plate (a unit is (y_i, z_i)), some y missing (obs_mask)."""
    mu = numpyro.sample("mu", dist.Normal(0.5, 1.5))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y, obs_mask=y_mask)
        numpyro.sample("z", dist.Normal(mu, 0.5), obs=z)


def test_prequential_multisite_grouped_masked_units(x64):
    """Groups of (y, z) pairs with missing y, in the data order and a random order: exact terms."""
    rng = np.random.default_rng(5)
    n = 10
    y, z = rng.normal(1.0, 1.0, n), rng.normal(1.0, 0.5, n)
    y_mask = np.arange(n) % 4 != 1  # y[1], y[5], y[9] are missing
    y_filled = np.where(y_mask, y, 0.0)
    groups = np.arange(n) // 2  # 5 groups of two pairs
    args = (jnp.asarray(y_filled), jnp.asarray(z), jnp.asarray(y_mask))
    R = 6
    with quiet():
        pq = prequential(shared_plate, *args, units=jnp.asarray(groups), order="data", num_permutations=R,
                         num_particles=300, rng_key=jax.random.PRNGKey(1))
    U = pq.diagnostics["units"]
    assert U.num_units == 5 and set(U.sites) == {"y_observed", "z"} and pq.terms.shape == (R, 5)
    assert pq.diagnostics["order"] == "data" and np.all(pq.orders == np.arange(5))
    # reference: entries (y_0..y_9, z_0..z_9); a missing y is in no unit
    x = np.concatenate([y, z])
    s = np.concatenate([np.full(n, 1.0), np.full(n, 0.25)])
    unit = np.concatenate([np.where(y_mask, groups, -1), groups])
    a = np.ones(2 * n)
    exact = gauss_terms(a, x, s, 0.5, 1.5**2, unit, np.arange(5))
    np.testing.assert_allclose(exact.sum(), gauss_log_marginal(a, x, s, 0.5, 2.25, np.flatnonzero(unit >= 0)),
                               atol=1e-10)
    np.testing.assert_allclose(pq.terms.sum(1), pq.log_z, rtol=0, atol=1e-8)
    err = pq.terms - exact
    se = err.std(0, ddof=1) / np.sqrt(R)
    assert np.all(np.abs(err.mean(0)) <= 4 * se + 1e-3), (err.mean(0), se)
    # a random order over the same units: each ordering's exact terms (same compiled program)
    with quiet():
        pr = prequential(shared_plate, *args, units=jnp.asarray(groups), num_permutations=R, num_particles=300,
                         rng_key=jax.random.PRNGKey(2))
    assert pr.diagnostics["order"] == "random" and not np.all(pr.orders == np.arange(5))
    exact_r = np.stack([gauss_terms(a, x, s, 0.5, 2.25, unit, o) for o in pr.orders])
    err = pr.terms - exact_r
    se = err.std(0, ddof=1) / np.sqrt(R)
    assert np.all(np.abs(err.mean(0)) <= 4 * se + 1e-3), (err.mean(0), se)


def test_prequential_data_order_conjugate(x64):
    """order='data' on a conjugate family: the exact one-step-ahead terms of the identity order."""
    fam = gb.conjugate.NormalKnownVariance(0.0, 2.0, 1.0)
    x = jnp.asarray(np.random.default_rng(7).normal(0.8, 1.0, 12))
    R = 6
    with quiet():
        pq = prequential(fam, x, num_permutations=R, num_particles=300, order="data",
                         rng_key=jax.random.PRNGKey(3))
        pt = prequential(fam, x, num_permutations=R, num_particles=300, order="time",
                         rng_key=jax.random.PRNGKey(3))
    np.testing.assert_array_equal(pq.terms, pt.terms)  # 'time' is an alias of 'data'
    exact = np.asarray(gb.conjugate.sequence_log_predictive(fam, x, order=jnp.arange(12)))
    err = pq.terms - exact
    se = err.std(0, ddof=1) / np.sqrt(R)
    assert np.all(np.abs(err.mean(0)) <= 4 * se + 1e-3), (err.mean(0), se)
    assert abs(pq.log_z_mean - float(fam.log_evidence(x))) <= 4 * pq.log_z_se + 1e-3


def ar1(y):
    """AR(1) with known noise, y_0 = 0: the units (time steps) are not exchangeable."""
    rho = numpyro.sample("rho", dist.Normal(0.0, 0.6))
    prev = jnp.concatenate([jnp.zeros(1), y[:-1]])
    with numpyro.plate("t", y.shape[0]):
        numpyro.sample("y", dist.Normal(rho * prev, 1.0), obs=y)


def test_prequential_time_series_one_step_ahead(x64):
    """AR(1) in the data order: log p(y_t | y_<t) and log p(y) exact (a regression on the lags)."""
    rng = np.random.default_rng(11)
    n = 15
    y = np.zeros(n)
    for t in range(n):
        y[t] = 0.7 * (y[t - 1] if t else 0.0) + rng.normal()
    prev = np.concatenate([[0.0], y[:-1]])
    exact = gauss_terms(prev, y, np.ones(n), 0.0, 0.36, np.arange(n), np.arange(n))
    # p(y_t | y_<t) = N(m_t prev_t, 1 + prev_t^2 / P_t) from the posterior of rho given y_<t
    P = 1 / 0.36 + np.concatenate([[0.0], np.cumsum(prev**2)[:-1]])
    m = np.concatenate([[0.0], np.cumsum(prev * y)[:-1]]) / P
    np.testing.assert_allclose(exact, norm.logpdf(y, m * prev, np.sqrt(1 + prev**2 / P)), atol=1e-10)
    R = 6
    with quiet():
        pq = prequential(ar1, jnp.asarray(y), num_permutations=R, num_particles=300, order="time",
                         rng_key=jax.random.PRNGKey(4))
    err = pq.terms - exact
    se = err.std(0, ddof=1) / np.sqrt(R)
    assert np.all(np.abs(err.mean(0)) <= 4 * se + 1e-3), (err.mean(0), se)
    assert abs(pq.log_z_mean - exact.sum()) <= 4 * pq.log_z_se + 1e-3


def test_prequential_bad_input():
    y, z, _, _ = _two_plates_data()
    key = jax.random.PRNGKey(0)
    x = jnp.zeros(4)
    fam = gb.conjugate.NormalKnownVariance(0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="`order` must be None"):
        prequential(fam, x, num_permutations=2, rng_key=key, order="future")
    with pytest.raises(ValueError, match="`order` as an array"):
        prequential(fam, x, num_permutations=2, rng_key=key, order=[0, 1, 1, 2])
    with pytest.raises(ValueError, match="not both"):
        prequential(fam, x, num_permutations=2, rng_key=key, order="data", orders=np.zeros((2, 4), int))
    with pytest.raises(ValueError, match="not both"):
        prequential(fam, x, num_permutations=2, rng_key=key, site="y", units="data")
    with pytest.raises(ValueError, match="Cannot tell the observation units"):  # different plates
        prequential(two_plates, jnp.asarray(y), jnp.asarray(z), num_permutations=2, rng_key=key)
    with pytest.raises(ValueError, match="use `units=`"):
        prequential(two_plates, jnp.asarray(y), jnp.asarray(z), num_permutations=2, rng_key=key, site="y")
    with pytest.raises(ValueError, match=r"\['z'\] would stay conditioned on"):
        prequential(two_plates, jnp.asarray(y), jnp.asarray(z), num_permutations=2, rng_key=key,
                    units={"y": np.arange(8), "z": None})


# ----------------------------------------------------------------------------- enumerated discrete latents

LOC0, S0, P = np.array([-2.0, 2.0]), 0.7, np.array([0.4, 0.6])


def mixture_enum(x):
    mu = numpyro.sample("mu", dist.Normal(jnp.asarray(LOC0), S0).to_event(1))
    with numpyro.plate("n", x.shape[0]):
        zi = numpyro.sample("zi", dist.Categorical(jnp.asarray(P)), infer={"enumerate": "parallel"})
        numpyro.sample("x", dist.Normal(mu[zi], 1.0), obs=x)


def mixture_twin(x):
    mu = numpyro.sample("mu", dist.Normal(jnp.asarray(LOC0), S0).to_event(1))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("x", dist.MixtureSameFamily(dist.Categorical(jnp.asarray(P)), dist.Normal(mu, 1.0)), obs=x)


def _mixture_data(n=20):
    rng = np.random.default_rng(0)
    zi = rng.choice(2, n, p=P)
    return rng.normal(LOC0[zi] * 1.1, 1.0)


def mixture_grid_log_z(x):
    """log p(x_{1:k}) for k = 0..n by quadrature on a grid over the two (well separated) means."""
    g = np.linspace(-6, 6, 601)
    h = g[1] - g[0]
    m1, m2 = np.meshgrid(g, g, indexing="ij")
    lp = norm.logpdf(m1, LOC0[0], S0) + norm.logpdf(m2, LOC0[1], S0)
    out = [logsumexp(lp) + 2 * np.log(h)]
    for xi in x:
        lp = lp + np.logaddexp(np.log(P[0]) + norm.logpdf(xi, m1, 1.0), np.log(P[1]) + norm.logpdf(xi, m2, 1.0))
        out.append(logsumexp(lp) + 2 * np.log(h))
    return np.array(out)


@pytest.mark.slow
def test_enumerated_mixture_evidence(x64):
    """Enumerated z: smc, stepping stone and prequential agree with quadrature and with the twin."""
    x = _mixture_data()
    cum = mixture_grid_log_z(x)
    assert abs(cum[0]) < 1e-6  # the grid holds the prior's mass
    exact = cum[-1]
    xj = jnp.asarray(x)
    key = jax.random.PRNGKey(1)
    ladder = {"ladder": 12, "num_warmup": 200, "num_samples": 400}
    with quiet():
        smc = log_evidence(mixture_enum, xj, method="smc", rng_key=key, options={"num_particles": 300, "num_runs": 4})
        ss = log_evidence(mixture_enum, xj, method="stepping_stone", rng_key=key, options=ladder)
        ss_twin = log_evidence(mixture_twin, xj, method="stepping_stone", rng_key=jax.random.PRNGKey(2),
                               options=ladder)
    for ev in (smc, ss, ss_twin):
        assert abs(ev.log_z - exact) <= 4 * ev.se, (ev, exact)
    assert abs(ss.log_z - ss_twin.log_z) <= 4 * np.hypot(ss.se, ss_twin.se), (ss, ss_twin)
    # one-step-ahead terms in the data order: the unit's marginal likelihood enters, not the joint
    R = 4
    with quiet():
        pq = prequential(mixture_enum, xj, num_permutations=R, num_particles=300, order="data",
                         rng_key=jax.random.PRNGKey(3))
    err = pq.terms - np.diff(cum)
    se = err.std(0, ddof=1) / np.sqrt(R)
    assert np.all(np.abs(err.mean(0)) <= 4 * se + 2e-3), (err.mean(0), se)


def test_enumerated_laplace_equals_twin(x64):
    """Laplace is deterministic: the enumerated model and its MixtureSameFamily twin give one value."""
    xj = jnp.asarray(_mixture_data(10))
    key = jax.random.PRNGKey(0)
    a = log_evidence(mixture_enum, xj, method="laplace", rng_key=key)
    b = log_evidence(mixture_twin, xj, method="laplace", rng_key=key)
    assert np.isfinite(a.log_z) and abs(a.log_z - b.log_z) < 1e-6, (a, b)


def test_enumerated_site_outside_the_units_is_named():
    """A discrete latent shared by all units: a clear error naming it (not numpyro's AssertionError)."""

    def shared_switch(x):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        k = numpyro.sample("k", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
        with numpyro.plate("n", x.shape[0]):
            numpyro.sample("x", dist.Normal(mu + k, 1.0), obs=x)

    with pytest.raises(NotImplementedError, match="Enumerated site 'k' is not inside plate 'n'"):
        log_evidence(shared_switch, jnp.zeros(5), method="smc", rng_key=jax.random.PRNGKey(0),
                     options={"num_runs": 2, "num_particles": 20})
