"""Bridge sampling (genbayes.bridge) against exact evidence, its own reported error, and bad input."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpyro.infer import MCMC, NUTS, Predictive

import genbayes as gb
from genbayes._programs import count_compilations
from genbayes.bridge import _bridge_evidence, _check_draws, _latent_structure, bridge_sampling
from genbayes.evidence import _evidence_units
from tests.evidence_models import RATS_N, RATS_Y, binomial_hierarchical, two_sites
from tests.zoo.models import MIX_X, mixture_enumerated, mixture_twin


@partial(jax.jit, static_argnums=3)  # the family is a pytree argument: one program per family type
def _posterior_predictive(post, key, data, num):
    return Predictive(post.model, num_samples=num)(key, *data)


def exact_draws(fam, data, num, key):
    """Independent exact posterior draws of a conjugate family (its posterior is the same family)."""
    s = _posterior_predictive(fam.posterior(*data), key, tuple(jnp.asarray(d) for d in data), num)
    return {k: v for k, v in s.items() if k != fam.site}


# fixed data shapes per family: every hypothesis example reuses one compiled program
def _family(kind, seed, h1, h2):
    rng = np.random.default_rng(seed)
    if kind == "beta_bernoulli":
        fam = gb.conjugate.BetaBernoulli(h1, h2)
        return fam, (rng.integers(0, 2, 20),)
    if kind == "normal":
        fam = gb.conjugate.NormalKnownVariance(h1 - 2.0, h2, 0.5 + h1 / 2)
        return fam, (rng.normal(1.0, 1.5, 15),)
    if kind == "gamma_poisson":
        fam = gb.conjugate.GammaPoisson(h1, h2)
        return fam, (rng.poisson(rng.uniform(0.5, 6.0), 12),)
    if kind == "dirichlet":
        fam = gb.conjugate.DirichletCategorical(jnp.array([h1, h2, 1.0]))
        return fam, (rng.integers(0, 3, 25),)
    fam = gb.conjugate.NormalGammaRegression(jnp.array([0.0, h1 - 2.5]), jnp.array([1.0 / h2, 0.5]), h1, h2)
    X = rng.normal(size=(14, 2))
    return fam, (X, X @ rng.normal(size=2) + rng.normal(size=14))


@pytest.mark.parametrize("kind", ["beta_bernoulli", "normal", "gamma_poisson", "dirichlet", "regression"])
@given(seed=st.integers(0, 2**31 - 1), h1=st.floats(0.5, 5.0), h2=st.floats(0.5, 5.0),
       proposal=st.sampled_from(["normal", "warp3"]))
def test_conjugate_families_within_4_se_of_exact(x64, kind, seed, h1, h2, proposal):
    fam, data = _family(kind, seed, h1, h2)
    key = jax.random.PRNGKey(seed % 1000)
    draws = exact_draws(fam, data, 1000, key)
    ev = bridge_sampling(fam, *data, samples=draws, rng_key=jax.random.fold_in(key, 1), proposal=proposal)
    exact = float(fam.log_evidence(*data))
    assert ev.valid, ev.diagnostics["invalid"]
    assert ev.se > 0
    # no absolute floor: float64 round-off (~1e-12) is far below every reported SE (>= 1e-5)
    assert abs(ev.log_z - exact) < 4 * ev.se, (ev, exact)


def test_reported_se_matches_spread_over_20_independent_runs(x64):
    """20 runs, each with FRESH posterior draws (its own 2 NUTS chains) and fresh proposal draws."""
    X, y = gb.models.logistic_regression.breast_cancer(num_features=2, n=60, seed=3)
    model = gb.models.logistic_regression.model
    R, C = 20, 2
    units = _evidence_units(model, (X, y), {})
    res = gb.batched.run(model, jnp.ones((R * C, 1)), X, y, num_warmup=300, num_samples=400,
                         rng_key=jax.random.PRNGKey(5), units=units, progress=False)
    # warp3 too: its SE uses the same first-order formula on the warped densities (R's bridgesampling
    # reports none for warp3), so it needs the same check
    for proposal in ("normal", "warp3"):
        est, se = [], []
        for r in range(R):
            draws = {k: v[r * C:(r + 1) * C] for k, v in res.samples.items()}
            ev = bridge_sampling(model, X, y, samples=draws, rng_key=jax.random.PRNGKey(100 + r), proposal=proposal)
            assert ev.valid
            est.append(ev.log_z)
            se.append(ev.se)
        ratio = np.std(est, ddof=1) / np.mean(se)
        assert 0.5 < ratio < 2.0, (proposal, ratio, np.std(est, ddof=1), np.mean(se))


def _mcmc(model, *args, num_chains=2, num_samples=500, seed=0):
    mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=num_samples, num_chains=num_chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), *args)
    return mcmc


def test_mcmc_path_equals_samples_path_and_ignores_deterministic_sites(x64):
    # binomial_hierarchical records a deterministic site `logit_p`, which get_samples returns
    mcmc = _mcmc(binomial_hierarchical, RATS_N, RATS_Y)
    grouped = mcmc.get_samples(group_by_chain=True)
    assert "logit_p" in grouped
    key = jax.random.PRNGKey(3)
    a = bridge_sampling(binomial_hierarchical, RATS_N, RATS_Y, mcmc=mcmc, rng_key=key)
    b = bridge_sampling(binomial_hierarchical, RATS_N, RATS_Y, samples=grouped, rng_key=key)
    assert a.valid and b.valid
    assert a.log_z == b.log_z and a.se == b.se
    assert a.diagnostics["num_chains"] == 2
    # the same draws as one long chain: another split into fit/bridge halves, same answer within error
    flat = mcmc.get_samples()
    c = bridge_sampling(binomial_hierarchical, RATS_N, RATS_Y, samples=flat, rng_key=key)
    assert c.diagnostics["num_chains"] == 1
    assert abs(c.log_z - a.log_z) < 4 * np.hypot(a.se, c.se)
    # an MCMC of another model (sites mu, tau, eta, logit_p) is refused, naming the sites
    with pytest.raises(ValueError, match=r"\['eta', 'logit_p', 'tau'\] that are not latent sites"):
        bridge_sampling(_m, Y, mcmc=mcmc, rng_key=key)


def test_mcmc_path_against_exact_evidence(x64):
    fam = gb.conjugate.NormalGammaRegression(jnp.zeros(2), jnp.ones(2), 2.0, 1.0)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 2))
    y = X @ np.array([0.5, -1.0]) + 0.7 * rng.normal(size=20)
    mcmc = _mcmc(fam.model, X, y)
    ev = bridge_sampling(fam, X, y, mcmc=mcmc, rng_key=jax.random.PRNGKey(0))
    exact = float(fam.log_evidence(X, y))
    assert ev.valid
    assert abs(ev.log_z - exact) < 4 * ev.se, (ev, exact)
    # autocorrelated NUTS draws: the ESS that enters the SE is estimated, not the draw count
    assert 0 < ev.diagnostics["ess"] <= ev.diagnostics["num_draws"]["bridge"]


@pytest.mark.slow
def test_enumerated_mixture_equals_its_mixture_same_family_twin(x64):
    """z enumerated (summed out in the house log density) against the MixtureSameFamily twin."""
    twin_units = _evidence_units(mixture_twin, (MIX_X,), {})
    res = gb.batched.run(mixture_twin, jnp.ones((2, 1)), MIX_X, num_warmup=400, num_samples=800,
                         rng_key=jax.random.PRNGKey(3), units=twin_units, progress=False)
    key = jax.random.PRNGKey(7)
    twin = bridge_sampling(mixture_twin, MIX_X, samples=res.samples, rng_key=key)
    enum = bridge_sampling(mixture_enumerated, MIX_X, samples=res.samples, rng_key=key)
    assert twin.valid and enum.valid
    # same draws, same key: the two marginal densities must agree to round-off
    assert abs(enum.log_z - twin.log_z) < 1e-8
    assert abs(enum.se - twin.se) < 1e-6
    # log_evidence's path draws its own posterior of the enumerated model (NUTS through genbayes.batched)
    units = _evidence_units(mixture_enumerated, (MIX_X,), {})
    lz, se, diag = _bridge_evidence(mixture_enumerated, (MIX_X,), {}, jax.random.PRNGKey(11), units=units,
                                    num_warmup=400, num_samples=800, num_chains=2)
    assert not diag.get("invalid")
    assert diag["num_draws"]["bridge"] == 2 * 400
    assert abs(lz - twin.log_z) < 4 * np.hypot(se, twin.se), (lz, se, twin)


def test_second_call_with_new_data_of_same_shapes_compiles_nothing(x64):
    rng = np.random.default_rng(0)
    calls = []
    for i in range(2):
        fam = gb.conjugate.NormalGammaRegression(jnp.zeros(2), jnp.ones(2) * (1 + i), 2.0 + i, 1.0)
        X = rng.normal(size=(10, 2))
        y = rng.normal(size=10)
        draws = exact_draws(fam, (X, y), 200, jax.random.PRNGKey(i))
        with count_compilations() as c:
            ev = bridge_sampling(fam, X, y, samples=draws, rng_key=jax.random.PRNGKey(10 + i))
        calls.append((c.count, ev))
    assert calls[0][0] > 0
    assert calls[1][0] == 0
    assert calls[0][1].log_z != calls[1][1].log_z  # the data really were inputs


def test_non_convergence_and_draws_outside_support_are_invalid(x64):
    fam = gb.conjugate.BetaBernoulli(1.0, 1.0)
    x = np.array([1, 0, 1, 1, 0, 1])
    p = np.random.default_rng(0).beta(5.0, 3.0, size=400)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        ev = bridge_sampling(fam, x, samples={"p": p}, rng_key=jax.random.PRNGKey(0), maxiter=1)
    assert not ev.valid and ev.diagnostics["iterations"] == 1
    p[-1] = 1.0  # finite, but logit(1) = inf in the unconstrained space
    with pytest.warns(RuntimeWarning, match="INVALID"):
        ev = bridge_sampling(fam, x, samples={"p": p}, rng_key=jax.random.PRNGKey(0))
    assert not ev.valid
    assert any("non-finite unconstrained" in r for r in ev.diagnostics["invalid"])


def _m(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    s = numpyro.sample("s", dist.HalfNormal(1.0))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, s), obs=y)


Y = np.linspace(-1.0, 1.0, 8)
GOOD = {"mu": np.zeros(40), "s": np.ones(40)}


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(samples=None), TypeError, "exactly one of `samples`"),
    (dict(samples=GOOD, mcmc=object()), TypeError, "exactly one of `samples`"),
    (dict(samples={"mu": np.zeros(40), "s": np.ones(40), "sigma": np.ones(40)}), ValueError, r"\['sigma'\].*not latent"),
    (dict(samples={"mu": np.zeros(40), "s": np.ones(40), "y": np.ones(40)}), ValueError, r"\['y'\].*not latent"),
    (dict(samples={"mu": np.zeros(40)}), ValueError, r"lacks draws of the latent site\(s\) \['s'\]"),
    (dict(samples={"mu": np.zeros((40, 3, 2)), "s": np.ones(40)}), ValueError, r"samples\[.mu.\]` must have shape"),
    (dict(samples={"mu": np.zeros((2, 40)), "s": np.ones(40)}), ValueError, "disagree on the number of chains"),
    (dict(samples={"mu": np.r_[np.nan, np.zeros(39)], "s": np.ones(40)}), ValueError, "1 non-finite"),
    (dict(samples={"mu": np.zeros(6), "s": np.ones(6)}), ValueError, "at least 8"),
    (dict(samples=GOOD, proposal="student"), ValueError, "`proposal` must be one of"),
    (dict(samples=GOOD, tol=0.0), ValueError, "`tol` must be a positive"),
    (dict(samples=GOOD, maxiter=0), ValueError, "`maxiter` must be an integer >= 1"),
    (dict(samples=GOOD, rng_key=None), ValueError, "`rng_key` is required"),
    (dict(mcmc=GOOD), TypeError, "`mcmc` must be a numpyro.infer.MCMC"),
    (dict(mcmc=MCMC(NUTS(_m), num_warmup=1, num_samples=1)), ValueError, "call mcmc.run"),
])
def test_bad_input_is_refused_before_compiling(kwargs, exc, match):
    kwargs = {"rng_key": jax.random.PRNGKey(0), **kwargs}
    with count_compilations() as c, pytest.raises(exc, match=match):
        bridge_sampling(_m, Y, **kwargs)
    assert c.count == 0


def test_undeclared_discrete_latent_and_fixed_sites_are_refused():
    def discrete(y):
        k = numpyro.sample("k", dist.Bernoulli(0.5))
        with numpyro.plate("n", y.shape[0]):
            numpyro.sample("y", dist.Normal(k, 1.0), obs=y)

    with pytest.raises(ValueError, match="are discrete and not enumerated"):
        _latent_structure(discrete, (Y,), {})
    z, y = np.zeros(3), np.ones(4)
    units = _evidence_units(two_sites, (z, y), {}, sites="y")
    with pytest.raises(ValueError, match=r"\['z'\] would stay conditioned on"):
        _bridge_evidence(two_sites, (z, y), {}, jax.random.PRNGKey(0), units=units)


def test_one_chain_and_grouped_draws_are_told_apart_by_site_shape():
    shapes = {"beta": (3,), "tau": ()}
    one = _check_draws({"beta": np.ones((20, 3)), "tau": np.ones(20)}, shapes, set(), "samples")
    many = _check_draws({"beta": np.ones((2, 10, 3)), "tau": np.ones((2, 10))}, shapes, set(), "samples")
    assert one["beta"].shape == (1, 20, 3) and many["beta"].shape == (2, 10, 3)
    with pytest.raises(ValueError, match="cannot fit a proposal covariance in 5 dimensions"):
        _check_draws({"b": np.ones((1, 8, 5))}, {"b": (5,)}, set(), "samples")
