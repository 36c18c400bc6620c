"""Minibatch Gibbs posteriors (gb.sgmcmc): exact Gaussian answers, agreement with NUTS, errors, one compilation.

The conjugate check derives SGLD's stationary law in closed form. For the Gibbs posterior of
``mu ~ N(m0, s0^2)`` with squared loss 0.5 (y - mu)^2 at learning rate w, the target is Gaussian with
precision lam = 1/s0^2 + w n and mean (m0/s0^2 + w sum y)/lam. SGLD with minibatches of m units drawn
with replacement uses the gradient -lam mu + b_t, where b_t = m0/s0^2 + w (n/m) sum_j y_{u_j} has mean
lam * mean and variance V = w^2 n^2 var(y) / m (var: the population variance of the data). BlackJAX's
update mu' = mu + eps grad + sqrt(2 eps) xi is then the AR(1) recursion mu' = (1 - eps lam) mu + eps b_t
+ sqrt(2 eps) xi, whose stationary law has the exact mean and the variance

    (2 eps + eps^2 V) / (eps lam (2 - eps lam)) = (1 + eps V / 2) / (lam (1 - eps lam / 2)),

i.e. an sd larger than the exact one by the factor sqrt((1 + eps V/2) / (1 - eps lam/2)): the step-size
bias (discretisation: eps lam / 4; gradient noise: eps V / 4, to first order). Its autocorrelation is
rho = 1 - eps lam, so N iterations give ESS = N (1 - rho) / (1 + rho) for the mean.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import genbayes as gb
from genbayes._programs import count_compilations
from genbayes.losses import Loss, squared
from genbayes.models import quantile_regression as qr


def gauss_model(y):
    mu = numpyro.sample("mu", dist.Normal(1.0, 2.0))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", Loss(squared, mu), obs=y)


def test_conjugate_gaussian_recovers_exact_gibbs_posterior(x64):
    n, m, w, eps = 1000, 100, 0.5, 1.6e-5
    y = np.random.default_rng(0).normal(3.0, 1.0, n)
    lam = 1 / 4 + w * n  # exact Gibbs posterior, computed here, not by the code under test
    mean, sd = (1.0 / 4 + w * y.sum()) / lam, lam ** -0.5
    V = w ** 2 * n ** 2 * y.var() / m
    sd_chain = np.sqrt((1 + eps * V / 2) / (lam * (1 - eps * lam / 2)))  # SGLD's stationary sd
    bias = sd_chain / sd - 1  # the step-size bias: 1.2 % here (eps V/4 = 1.0 %, eps lam/4 = 0.2 %)
    assert bias < 0.015
    iters = 100_000
    ess = iters * (eps * lam) / (2 - eps * lam)  # ~400
    r = gb.sgmcmc.run(gauss_model, y, batch_size=m, step_size=eps, learning_rate=w, num_samples=iters // 10,
                      thinning=10, num_warmup=2000, batch_args=0, rng_key=jax.random.PRNGKey(0), progress=False)
    x = r["mu"]
    assert r.valid and r.diagnostics["num_nonfinite"] == 0
    # mean: unbiased; 4 Monte Carlo standard errors
    assert abs(x.mean() - mean) < 4 * sd / np.sqrt(ess)
    # sd: the chain's stationary sd within 4 MC errors (relative error of an sd ~ 1/sqrt(2 ESS)) ...
    mc = 4 / np.sqrt(2 * ess)
    assert abs(x.std() / sd_chain - 1) < mc
    # ... hence the exact Gibbs posterior's sd within the stated bias plus that MC error
    assert abs(x.std() / sd - 1) < bias + mc
    # the diagnostics see a real chain: ArviZ's ESS near the AR(1) value
    assert 0.5 * ess < float(r.diagnostics["ess"]["mu"]) < 2 * ess

    # control variates (Baker et al. 2019) centred anywhere make this linear gradient exact (V = 0): only the
    # discretisation bias is left, so a 25x larger step gives an sd 1/sqrt(1 - eps lam / 2) = 1.054 x the exact one
    eps = 4e-4
    iters = 20_000
    ess = iters * (eps * lam) / (2 - eps * lam)  # ~2200
    sd_chain = 1 / np.sqrt(lam * (1 - eps * lam / 2))
    r = gb.sgmcmc.run(gauss_model, y, batch_size=m, step_size=eps, learning_rate=w, num_samples=iters // 5,
                      thinning=5, num_warmup=1000, batch_args=0, control_variates=True,
                      rng_key=jax.random.PRNGKey(1), progress=False)
    x = r["mu"]
    assert abs(x.mean() - mean) < 4 * sd / np.sqrt(ess)
    assert abs(x.std() / sd_chain - 1) < 4 / np.sqrt(2 * ess)
    assert abs(x.std() / sd - 1) < (sd_chain / sd - 1) + 4 / np.sqrt(2 * ess)


def test_weights_and_gathered_rows_give_the_same_chain():
    """Unit weights n/m on the drawn units (any units, O(n) per step) and gathered rows (O(m)) are one estimator."""
    y = jnp.asarray(np.random.default_rng(1).normal(0.0, 1.0, 200))
    kw = dict(batch_size=20, step_size=1e-3, num_samples=50, num_warmup=20, rng_key=jax.random.PRNGKey(3),
              progress=False, ksd_draws=0)
    a = gb.sgmcmc.run(gauss_model, y, **kw)
    b = gb.sgmcmc.run(gauss_model, y, batch_args=0, **kw)
    assert not a.diagnostics["gather"] and b.diagnostics["gather"]
    np.testing.assert_allclose(a["mu"], b["mu"], rtol=1e-4, atol=1e-5)


def test_several_chains_are_independent_and_pooled():
    y = jnp.asarray(np.random.default_rng(4).normal(0.0, 1.0, 500))
    lam = 1 / 4 + 500
    mean = (1.0 / 4 + float(y.sum())) / lam
    r = gb.sgmcmc.run(gauss_model, y, batch_size=50, step_size=2e-4, num_samples=500, num_warmup=200, num_chains=3,
                      batch_args=0, control_variates=True, rng_key=jax.random.PRNGKey(0), progress=False)
    ch = r.chains("mu")
    assert ch.shape == (3, 500) and r.num_samples == 1500 and r.diagnostics["num_chains"] == 3
    assert not np.allclose(ch[0], ch[1])  # own minibatches and noise per chain
    assert np.all(np.abs(ch.mean(1) - mean) < 5 * lam ** -0.5 / np.sqrt(30))  # each chain near the exact mean
    ess = float(r.diagnostics["ess"]["mu"])
    assert 45 < ess < 250  # ArviZ's multi-chain ESS pools the chains: 500 eps lam / (2 - eps lam) = 26 each
    assert dict(r.to_inference_data().posterior.sizes) == {"chain": 3, "draw": 500}


def test_sghmc_on_the_conjugate_gaussian():
    n, m = 1000, 100
    y = np.random.default_rng(2).normal(-1.0, 1.0, n).astype(np.float32)
    lam = 1 / 4 + n
    mean, sd = (1.0 / 4 + y.sum()) / lam, lam ** -0.5
    r = gb.sgmcmc.run(gauss_model, y, batch_size=m, step_size=2e-3, kernel="sghmc", num_integration_steps=5,
                      friction=5.0, num_samples=8000, num_warmup=500, batch_args=0, rng_key=jax.random.PRNGKey(1),
                      progress=False)
    x = r["mu"]
    ess = float(r.diagnostics["ess"]["mu"])
    assert r.valid and ess > 150
    assert abs(x.mean() - mean) < 4 * sd / np.sqrt(ess)
    # gradient noise inflates SGHMC's sd (measured 1.08 here; 1.6 at eps = 5e-3): a bias that grows with the step
    assert 0.9 < x.std() / sd < 1.25


def test_quantile_regression_agrees_with_nuts(x64):
    X, y, _ = qr.simulate(jax.random.PRNGKey(0), 2000)
    X = X.at[:, 1].add(-1.0)  # centred covariate: a better-conditioned posterior for both samplers
    tau = 0.7
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(qr.single_model), num_warmup=500, num_samples=2000, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), X, y, tau=tau)
    ref = mcmc.get_samples()["beta"]
    r = gb.sgmcmc.run(qr.single_model, X, y, tau=tau, batch_size=200, step_size=5e-5, num_samples=5000, thinning=20,
                      num_warmup=5000, batch_args=(0, 1),
                      rng_key=jax.random.PRNGKey(2), progress=False)
    assert r.valid
    cmp = r.compare({"beta": ref})["beta"]
    assert np.all(np.abs(cmp["z"]) < 2), cmp  # within 2 posterior sd of NUTS, per coefficient
    assert np.all((cmp["sd_ratio"] > 0.7) & (cmp["sd_ratio"] < 1.4)), cmp
    # the KSD diagnostic is computed (its noise at 100 draws hides differences this small; see the KSD test)
    assert np.isfinite(r.diagnostics["ksd"]) and r.diagnostics["ksd_c"] > 0


def test_second_call_compiles_nothing():
    kw = dict(batch_size=10, step_size=1e-3, num_samples=30, num_warmup=10, progress=False, batch_args=0)
    y0 = jnp.asarray(np.random.default_rng(0).normal(size=100))
    y1 = jnp.asarray(np.random.default_rng(1).normal(size=100))
    a = gb.sgmcmc.run(gauss_model, y0, rng_key=jax.random.PRNGKey(0), **kw)
    with count_compilations() as c:
        b = gb.sgmcmc.run(gauss_model, y1, rng_key=jax.random.PRNGKey(1), step_size=2e-3, learning_rate=0.5,
                          **{k: v for k, v in kw.items() if k != "step_size"})
    assert c.count == 0
    assert b.diagnostics["compiled"] is False and not np.allclose(a["mu"], b["mu"])


def test_divergent_chain_is_marked_invalid():
    y = jnp.asarray(np.random.default_rng(0).normal(size=100))
    with pytest.warns(RuntimeWarning, match="invalid.*step size is too large"):
        r = gb.sgmcmc.run(gauss_model, y, batch_size=10, step_size=1.0, num_samples=20, num_warmup=200,
                          rng_key=jax.random.PRNGKey(0), progress=False, ksd_draws=0)
    assert not r.valid and "not finite" in r.reason and "INVALID" in repr(r)
    assert np.all(np.isfinite(r["mu"]))  # non-finite proposals are rejected, never stored


def test_batch_args_that_miss_a_per_unit_argument_are_caught():
    X, y, _ = qr.simulate(jax.random.PRNGKey(0), 300)
    # y gathered, X not: the model fails on the gathered rows (found before compiling)
    with pytest.raises(ValueError, match="do not index the units"):
        gb.sgmcmc.run(qr.single_model, X, y, batch_size=30, step_size=1e-4, num_samples=10, num_warmup=0,
                      batch_args=1, rng_key=jax.random.PRNGKey(0), progress=False, ksd_draws=0)

    # a per-unit argument the model broadcasts (one row of X per unit, read as X[:1] when gathered):
    # shapes agree, the values do not; the permutation check after the run finds it
    def model(X, y):
        beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", Loss(squared, X[:1] @ beta if X.shape[0] != y.shape[0] else X @ beta), obs=y)

    Xf = X.at[:, 1].set(jnp.arange(300.0))
    with pytest.raises(RuntimeError, match="do not index the units"):
        gb.sgmcmc.run(model, Xf, y, batch_size=30, step_size=1e-6, num_samples=10, num_warmup=0,
                      batch_args=1, rng_key=jax.random.PRNGKey(0), progress=False, ksd_draws=0)


def test_gibbs_handler_and_groups_run_by_weights():
    """gb.gibbs-converted likelihoods and grouped units go through unit weights (no gathering)."""
    def lik(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("n", y.shape[0]):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = jnp.asarray(np.random.default_rng(0).normal(2.0, 1.0, 400))
    model = gb.gibbs(lik, loss={"y": gb.losses.absolute})
    groups = jnp.repeat(jnp.arange(100), 4)  # 100 units of 4 observations
    r = gb.sgmcmc.run(model, y, units=groups, batch_size=10, step_size=2e-4, num_samples=1000, num_warmup=300,
                      rng_key=jax.random.PRNGKey(0), progress=False, ksd_draws=0)
    assert r.diagnostics["n"] == 100 and r.valid
    assert abs(r["mu"].mean() - np.median(np.asarray(y))) < 0.2
    with pytest.raises(ValueError, match="batch_args.*grouped"):
        gb.sgmcmc.run(model, y, units=groups, batch_size=10, step_size=1e-3, batch_args=0, rng_key=jax.random.PRNGKey(0))


@pytest.mark.parametrize("kw, exc, match", [
    ({"batch_size": 0}, ValueError, r"`batch_size` must lie in 1\.\.n = 50"),
    ({"batch_size": 51}, ValueError, r"`batch_size` must lie in 1\.\.n = 50"),
    ({"batch_size": 2.5}, ValueError, "`batch_size` must be an integer"),
    ({"step_size": 0.0}, ValueError, "`step_size` must be a finite number > 0"),
    ({"step_size": -1e-3}, ValueError, "`step_size` must be a finite number > 0"),
    ({"step_size": float("nan")}, ValueError, "`step_size`"),
    ({"rng_key": 0}, TypeError, "`rng_key` must be a JAX PRNG key"),
    ({"rng_key": None}, ValueError, "`rng_key` is required"),
    ({"kernel": "nuts"}, ValueError, "`kernel` must be one of"),
    ({"num_samples": 0}, ValueError, "`num_samples` must be an integer >= 1"),
    ({"thinning": 0}, ValueError, "`thinning`"),
    ({"num_chains": 0}, ValueError, "`num_chains` must be an integer >= 1"),
    ({"learning_rate": -1.0}, ValueError, "`learning_rate`"),
    ({"decay": -0.5}, ValueError, "`decay`"),
    ({"batch_args": 3}, ValueError, "position 3 is out of range"),
    ({"batch_args": "x"}, ValueError, "not a keyword argument"),
    ({"init_params": {"nu": 0.0}}, ValueError, "missing \\['mu'\\]"),
    ({"ksd_draws": 1}, ValueError, "`ksd_draws` must be 0"),
])
def test_bad_input_is_rejected_before_compiling(kw, exc, match):
    args = dict(batch_size=5, step_size=1e-3, rng_key=jax.random.PRNGKey(0), progress=False)
    args.update(kw)
    with count_compilations() as c, pytest.raises(exc, match=match):
        gb.sgmcmc.run(gauss_model, np.zeros(50), **args)
    assert c.count == 0


def test_nonfinite_data_is_rejected():
    y = np.zeros(10)
    y[3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        gb.sgmcmc.run(gauss_model, y, batch_size=2, step_size=1e-3, rng_key=jax.random.PRNGKey(0))


def test_ksd_ranks_good_draws_above_shifted_ones():
    y = jnp.zeros(3)  # posterior of mu under N(0,1) prior, N(mu, 1) likelihood: N(0, 1/4)

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", y.shape[0]):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    good = {"mu": 0.5 * jax.random.normal(jax.random.PRNGKey(0), (400,))}
    k = [gb.sgmcmc.kernel_stein_discrepancy(model, {"mu": good["mu"] * s + d}, y, c=0.5) for s, d in
         [(1.0, 0.0), (1.0, 0.3), (2.0, 0.0), (0.3, 0.0)]]
    assert k[0] < 0.5 * min(k[1:])  # exact draws: ~0; shifted by 0.6 sd, twice or 0.3 times as wide: clearly not


def test_conjugate_family_model_with_gathered_rows():
    """A gb.conjugate family as the model (it travels as an argument in front of the data): batch_args still
    counts the data's positions, and the draws match the closed-form posterior."""
    fam = gb.conjugate.NormalKnownVariance(0.0, 10.0, 1.0)
    y = jnp.asarray(np.random.default_rng(0).normal(2.0, 1.0, 500))
    post = fam.posterior(y)
    r = gb.sgmcmc.run(fam.model, y, batch_size=50, step_size=2e-4, num_samples=1000, num_warmup=300, batch_args=0,
                      control_variates=True, num_chains=2, rng_key=jax.random.PRNGKey(0), progress=False, ksd_draws=0)
    x, sd = r["mu"], float(np.sqrt(post.prior_var))
    assert abs(x.mean() - float(post.prior_mean)) < 4 * sd / np.sqrt(float(r.diagnostics["ess"]["mu"]))
    assert 0.85 < x.std() / sd < 1.15  # eps lam = 0.1: the chain's sd is 1.026 x the exact one
