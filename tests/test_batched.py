"""gb.batched: B weighted posteriors as one program, against separate runs; bad input.

Sharding across devices is tested in tests/test_sharding.py."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, NUTS

import genbayes as gb
from genbayes.interop import effective_sample_size


def logistic(X, y):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("n", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def _data(n=30, d=2, seed=0):
    kx, ky = jax.random.split(jax.random.PRNGKey(seed))
    X = jax.random.normal(kx, (n, d))
    y = jax.random.bernoulli(ky, jax.nn.sigmoid(X @ jnp.array([1.0, -0.5]))).astype(jnp.float32)
    return X, y


def test_batched_matches_separate_mcmc_runs_in_distribution():
    """Each replicate's posterior mean of every coefficient agrees with a separate NumPyro MCMC run
    on gb.reweight(model, weights=w) within 4.5 combined Monte Carlo standard errors, and the
    posterior sds agree within 15%."""
    X, y = _data()
    W = jnp.stack([jnp.ones(30), (jnp.arange(30) % 3 != 0).astype(jnp.float32), 2.0 * jnp.ones(30)])
    res = gb.batched.run(logistic, W, X, y, num_warmup=400, num_samples=1000, rng_key=jax.random.PRNGKey(1), progress=False)
    assert res.samples["beta"].shape == (3, 1000, 2)
    for b in range(3):
        mcmc = MCMC(NUTS(gb.reweight(logistic, weights=W[b])), num_warmup=400, num_samples=1000, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(10 + b), X, y)
        ref = np.asarray(mcmc.get_samples()["beta"])
        ours = np.asarray(res.samples["beta"][b])
        for j in range(2):
            se = np.hypot(ours[:, j].std() / np.sqrt(effective_sample_size(ours[:, j])), ref[:, j].std() / np.sqrt(effective_sample_size(ref[:, j])))
            assert abs(ours[:, j].mean() - ref[:, j].mean()) < 4.5 * se
            assert abs(ours[:, j].std() / ref[:, j].std() - 1) < 0.15
    # more weight on the same data -> a narrower posterior (weights really act)
    assert res.samples["beta"][2].std(0).max() < res.samples["beta"][0].std(0).min()
    assert np.all(np.asarray(res.diagnostics["num_divergent"]) == 0)


def test_same_key_same_draws_and_inference_data():
    X, y = _data(n=10)
    W = jnp.ones((2, 10))
    kw = dict(num_warmup=50, num_samples=40, rng_key=jax.random.PRNGKey(3), progress=False)
    a = gb.batched.run(logistic, W, X, y, **kw)
    b = gb.batched.run(logistic, W, X, y, **kw)
    np.testing.assert_array_equal(a.samples["beta"], b.samples["beta"])
    idata = a.to_inference_data()
    assert dict(idata.posterior.sizes)["chain"] == 2 and dict(idata.posterior.sizes)["draw"] == 40
    assert "B=2" in repr(a)


def test_divergences_are_counted_and_warned():
    def funnel():
        v = numpyro.sample("v", dist.Normal(0.0, 3.0))
        numpyro.sample("x", dist.Normal(0.0, jnp.exp(v / 2)).expand([10]).to_event(1))
        with numpyro.plate("n", 1):
            numpyro.sample("obs", dist.Normal(v, 3.0), obs=jnp.zeros(1))

    with pytest.warns(RuntimeWarning, match="divergent"):
        res = gb.batched.run(funnel, jnp.ones((2, 1)), num_warmup=100, num_samples=300, target_accept_prob=0.6,
                             rng_key=jax.random.PRNGKey(0), progress=False)
    assert int(np.sum(res.diagnostics["num_divergent"])) > 0


# ---------------------------------------------------------------- bad input


def test_bad_input_is_rejected_before_compiling():
    X, y = _data(n=5)
    key = jax.random.PRNGKey(0)
    kw = dict(num_warmup=5, num_samples=5, rng_key=key, progress=False)
    with pytest.raises(ValueError, match=r"shape \(B, n\)"):
        gb.batched.run(logistic, jnp.ones(5), X, y, **kw)
    with pytest.raises(ValueError, match="negative"):
        gb.batched.run(logistic, -jnp.ones((2, 5)), X, y, **kw)
    with pytest.raises(ValueError, match="NaN or infinite"):
        gb.batched.run(logistic, jnp.full((2, 5), jnp.nan), X, y, **kw)
    with pytest.raises(ValueError, match="model argument #0.*non-finite"):
        gb.batched.run(logistic, jnp.ones((2, 5)), X.at[1, 1].set(jnp.inf), y, **kw)
    with pytest.raises(ValueError, match="num_samples"):
        gb.batched.run(logistic, jnp.ones((2, 5)), X, y, num_warmup=5, num_samples=0, rng_key=key)
    with pytest.raises(ValueError, match="rng_key"):
        gb.batched.run(logistic, jnp.ones((2, 5)), X, y, num_warmup=5, num_samples=5, rng_key=None)
    with pytest.raises(ValueError, match=r"shape \(B, 5\): one weight per observation unit"):
        gb.batched.run(logistic, jnp.ones((2, 4)), X, y, **kw)
    with pytest.raises(ValueError, match="`sites` names"):
        gb.batched.run(logistic, jnp.ones((2, 5)), X, y, sites="nope", **kw)


def test_no_valid_initial_point_is_an_error():
    # initialisation runs inside the compiled program: its failure must still surface, not NaN draws
    def model(x):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", x.shape[0]):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=x)
        numpyro.factor("impossible", -jnp.inf)

    with pytest.raises(RuntimeError, match="Cannot find valid initial parameters.*init_strategy"):
        gb.batched.run(model, jnp.ones((2, 3)), jnp.zeros(3), num_warmup=5, num_samples=5,
                       rng_key=jax.random.PRNGKey(0), progress=False)


# ---------------------------------------------------------------- kernel="chees"


def _assert_exact_weighted_posteriors(fam, x, W, res):
    """Each posterior's chains: the closed form's mean within 4.5 Monte Carlo standard errors (ArviZ
    mean ESS over its chains), sd within 12%, R-hat below 1.05."""
    az = gb.interop._arviz()
    for b in range(len(W)):
        exact = fam.posterior(x, weights=W[b])
        mean, sd = float(exact.prior_mean), float(np.sqrt(exact.prior_var))
        draws = res.chains("mu")[b]
        se = sd / np.sqrt(float(az.ess(draws, method="mean")))
        assert abs(draws.mean() - mean) < 4.5 * se, (b, draws.mean(), mean, se)
        assert abs(draws.std() / sd - 1) < 0.12, (b, draws.std(), sd)
        assert float(az.rhat(draws)) < 1.05


def test_chees_matches_the_exact_weighted_posterior():
    """ChEES-HMC (BlackJAX), 4 chains per posterior: each posterior's draws have the closed-form
    weighted posterior's mean within 4.5 Monte Carlo standard errors (ArviZ bulk ESS over its
    chains) and its sd within 12%, for zero, Bayesian-bootstrap and doubled weights."""
    fam = gb.conjugate.NormalKnownVariance(0.5, 2.0, 1.5)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (40,))) + 1.0
    W = np.stack([np.zeros(40), 40 * np.asarray(jax.random.dirichlet(jax.random.PRNGKey(1), jnp.ones(40))),
                  2.0 * np.ones(40)])
    res = gb.batched.run(fam, W, x, num_warmup=150, num_samples=1200, kernel="chees", num_chains=4,
                         rng_key=jax.random.PRNGKey(2), progress=False)
    assert res.samples["mu"].shape == (3, 1200) and res.num_chains == 4 and res.chains("mu").shape == (3, 4, 300)
    _assert_exact_weighted_posteriors(fam, x, W, res)
    assert np.all(np.asarray(res.diagnostics["num_divergent"]) == 0)
    # the same key gives the same draws
    again = gb.batched.run(fam, W, x, num_warmup=150, num_samples=1200, kernel="chees", num_chains=4,
                           rng_key=jax.random.PRNGKey(2), progress=False)
    np.testing.assert_array_equal(res.samples["mu"], again.samples["mu"])


@pytest.mark.parametrize("rows", ["similar", "different"])
def test_chees_shared_warmup_matches_the_exact_weighted_posterior(rows):
    """shared_warmup: one ChEES warm-up on the mean weights, then each posterior adapts only its
    step size. The draws target each weighted posterior exactly whatever the shared settings: the
    closed form's mean within 4.5 Monte Carlo standard errors, sd within 12%, for Bayesian-bootstrap
    rows (similar posteriors, the intended use) and for rows of very different scale (zero weights:
    the prior, 8x wider; tripled weights), where only mixing suffers."""
    fam = gb.conjugate.NormalKnownVariance(0.5, 2.0, 1.5)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (40,))) + 1.0
    boot = 40 * np.asarray(jax.random.dirichlet(jax.random.PRNGKey(1), jnp.ones(40), (3,)))
    W = boot if rows == "similar" else np.stack([np.zeros(40), boot[0], 3.0 * np.ones(40)])
    res = gb.batched.run(fam, W, x, num_warmup=25, num_samples=1200, kernel="chees", num_chains=4,
                         shared_warmup=150, rng_key=jax.random.PRNGKey(2), progress=False)
    assert res.samples["mu"].shape == (3, 1200) and res.chains("mu").shape == (3, 4, 300)
    _assert_exact_weighted_posteriors(fam, x, W, res)
    assert np.all(np.asarray(res.diagnostics["num_divergent"]) == 0)
    if rows == "similar":  # the same leapfrog steps per iteration in every posterior: no lock-step waste
        steps = np.asarray(res.diagnostics["mean_num_steps"])
        assert steps.max() / steps.min() < 1.3, steps


def test_chees_failures_are_detected_and_redrawn_by_nuts(monkeypatch):
    """nuts_fallback: a ChEES posterior with over 1% divergent draws or a non-finite draw is drawn again by
    num_chains NUTS chains, in ChEES's layout, and then matches the closed form; the others keep their draws.
    Which posteriors fail is forced (a natural failure: tests/test_bounds.py's steep sigmoid-loss ladder)."""
    from genbayes.batched import _chees_failed

    S = 400
    diag = {"num_divergent": np.array([0, 4, 5, 0])}
    draws = {"mu": np.zeros((4, S)), "tau": np.ones((4, S, 2))}
    draws["tau"][3, 7, 1] = np.inf
    assert _chees_failed(draws, diag, S).tolist() == [False, False, True, True]   # 4 of 400 is 1%: kept

    fam = gb.conjugate.NormalKnownVariance(0.5, 2.0, 1.5)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (40,))) + 1.0
    W = np.stack([np.zeros(40), np.ones(40), 2.0 * np.ones(40)])
    kw = dict(num_warmup=150, num_samples=1200, kernel="chees", num_chains=4, rng_key=jax.random.PRNGKey(2),
              progress=False)
    kept = gb.batched.run(fam, W, x, **kw)
    assert kept.diagnostics["redrawn"].tolist() == [False] * 3
    forced = np.array([True, False, True])
    monkeypatch.setattr(gb.batched, "_chees_failed", lambda samples, diag, S: forced.copy())
    with pytest.warns(RuntimeWarning, match="ChEES failed on 2 of 3 .* drawn again by NUTS"):
        res = gb.batched.run(fam, W, x, **kw)
    assert res.diagnostics["redrawn"].tolist() == forced.tolist() and res.chains("mu").shape == (3, 4, 300)
    assert [np.array_equal(a, b) for a, b in zip(res.samples["mu"], kept.samples["mu"])] == [False, True, False]
    _assert_exact_weighted_posteriors(fam, x, W, res)
    steps = np.asarray(res.diagnostics["mean_num_steps"])
    assert steps[0] != np.asarray(kept.diagnostics["mean_num_steps"])[0]   # NUTS's diagnostics for redrawn rows
    off = gb.batched.run(fam, W, x, nuts_fallback=False, **kw)
    assert off.diagnostics["redrawn"].tolist() == forced.tolist()
    np.testing.assert_array_equal(off.samples["mu"], kept.samples["mu"])
    with pytest.raises(ValueError, match="`nuts_fallback` must be True or False"):
        gb.batched.run(fam, W, x, nuts_fallback="yes", **kw)


def test_chees_bad_input_is_rejected_before_compiling():
    X, y = _data(n=5)
    kw = dict(num_warmup=5, num_samples=8, rng_key=jax.random.PRNGKey(0), progress=False)
    W = jnp.ones((2, 5))
    with pytest.raises(ValueError, match="`kernel` must be one of"):
        gb.batched.run(logistic, W, X, y, kernel="hmc", **kw)
    with pytest.raises(ValueError, match="`num_chains` must be an integer >= 2"):
        gb.batched.run(logistic, W, X, y, kernel="chees", num_chains=1, **kw)
    with pytest.raises(ValueError, match="`num_chains` applies to kernel='chees'"):
        gb.batched.run(logistic, W, X, y, num_chains=4, **kw)
    with pytest.raises(ValueError, match="multiple of `num_chains`"):
        gb.batched.run(logistic, W, X, y, kernel="chees", num_chains=3, **kw)
    with pytest.raises(ValueError, match="at least 1 for kernel='chees'"):
        gb.batched.run(logistic, W, X, y, kernel="chees", num_warmup=0, num_samples=8, rng_key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="dense_mass"):
        gb.batched.run(logistic, W, X, y, kernel="chees", dense_mass=True, **kw)
    with pytest.raises(ValueError, match="`shared_warmup` .* applies to kernel='chees'"):
        gb.batched.run(logistic, W, X, y, shared_warmup=50, **kw)
    with pytest.raises(ValueError, match="`shared_warmup` must be a non-negative integer"):
        gb.batched.run(logistic, W, X, y, kernel="chees", shared_warmup=-1, **kw)


@pytest.mark.parametrize("kernel", ["nuts", "chees"])
def test_chunked_batch_gives_the_same_draws(kernel, x64):
    """chunk_size=2 over B=5 (two chunks and a remainder) runs each posterior with the same key and
    settings as one vmap over all five: the same draws up to rounding, which the adaptive chain
    amplifies (in float32, 3e-4 after 70 iterations was seen), so compared in float64."""
    fam = gb.conjugate.NormalKnownVariance(0.5, 2.0, 1.5)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (12,)))
    W = 12 * np.asarray(jax.random.dirichlet(jax.random.PRNGKey(1), jnp.ones(12), (5,)))
    kw = dict(num_warmup=30, num_samples=40, kernel=kernel, rng_key=jax.random.PRNGKey(2), progress=False)
    whole = gb.batched.run(fam, W, x, **kw)
    chunked = gb.batched.run(fam, W, x, chunk_size=2, **kw)
    assert whole.samples["mu"].dtype == jnp.float64
    np.testing.assert_allclose(chunked.samples["mu"], whole.samples["mu"], rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="`chunk_size` must be a positive integer"):
        gb.batched.run(fam, W, x, chunk_size=0, **kw)
