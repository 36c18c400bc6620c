"""Bad input gets a clear error naming the argument, before any compilation (issue: nothing silent).

Each case used to give an unclear error from inside JAX/NumPyro, or a silently wrong answer.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import genbayes as gb

KEY = jax.random.PRNGKey(0)


def loss_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", gb.Loss(gb.losses.squared, mu), obs=y)


def margin_model(y):
    f = numpyro.sample("f", dist.Normal(0.0, 1.0))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", gb.Loss(gb.losses.logistic, f), obs=y)


def nan_loss_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", gb.Loss(lambda p, y: jnp.where(y > 5, jnp.nan, (y - p) ** 2), mu), obs=y)


def z_model(x):
    z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    numpyro.sample("x", dist.Normal(z, 1.0), obs=x)


def z_guide(x):
    numpyro.sample("z", dist.Normal(numpyro.param("m", 0.0), numpyro.param("s", 0.5, constraint=dist.constraints.positive)))


def _train(lr):
    return gb.infomax.train(z_model, z_guide, gb.infomax.BetaELBO(1.0), 2.0, num_steps=100, rng_key=KEY,
                            learning_rate=lr)


CASES = {
    "keyword data with NaN (calibrate)": (
        lambda: gb.calibrate(loss_model, y=jnp.array([1.0, jnp.nan, 2.0]), method="llb", rng_key=KEY),
        ValueError, r"model argument 'y'.* non-finite"),
    "empty data (calibrate)": (
        lambda: gb.calibrate(loss_model, jnp.zeros(0), method="llb", rng_key=KEY), ValueError, "plate of size 0"),
    "empty data (units.find)": (lambda: gb.units.find(loss_model, jnp.zeros(0)), ValueError, "data are empty"),
    "empty data (log_evidence)": (
        lambda: gb.evidence.log_evidence(loss_model, jnp.zeros(0), method="laplace", rng_key=KEY),
        ValueError, "data are empty"),
    "string huber delta": (lambda: gb.losses.huber(delta="a"), TypeError, "`delta` must be a real number"),
    "complex check tau": (lambda: gb.losses.check(tau=1j), TypeError, "`tau` must be a real number"),
    "duplicated order": (
        lambda: gb.conjugate.sequence_log_predictive(gb.conjugate.BetaBernoulli(1.0, 1.0), jnp.array([1, 0, 1]),
                                                     order=jnp.array([0, 0, 1])),
        ValueError, "`order` must be a permutation of 0..2"),
    "out-of-range order": (
        lambda: gb.conjugate.sequence_log_predictive(gb.conjugate.BetaBernoulli(1.0, 1.0), jnp.array([1, 0, 1]),
                                                     order=jnp.array([0, 1, 5])),
        ValueError, "`order` must be a permutation"),
    "complex data (units)": (lambda: gb.batched.run(loss_model, jnp.ones((2, 3)), jnp.ones(3) + 0j, rng_key=KEY),
                             TypeError, "is complex"),
    # these three used to fail inside JAX (an unclear PRNG or IndexError) or return a ladder of ones
    "integer rng_key (batched.run)": (lambda: gb.batched.run(loss_model, jnp.ones((2, 3)), jnp.ones(3), rng_key=42),
                                      TypeError, "`rng_key` must be a JAX PRNG key"),
    "max_tree_depth=0 (batched.run)": (
        lambda: gb.batched.run(loss_model, jnp.ones((2, 3)), jnp.ones(3), rng_key=KEY, max_tree_depth=0),
        ValueError, "`max_tree_depth` must be a positive integer"),
    "default_ladder(power=0)": (lambda: gb.evidence.default_ladder(8, power=0), ValueError, "`power` must be"),
    "laplace max_iter=0": (
        lambda: gb.evidence.log_evidence(loss_model, jnp.ones(3), method="laplace", rng_key=KEY,
                                         options={"max_iter": 0}), ValueError, "`max_iter` must be an integer >= 1"),
    # the NaN-loss unit used to enter the score covariance with score 0
    "sandwich with a NaN-loss unit": (
        lambda: gb.fisher.sandwich(nan_loss_model, {"mu": jnp.array(0.0)}, jnp.array([1.0, 2.0, 9.0, 3.0])),
        FloatingPointError, r"not finite for 1 of 4 observation units \(first: unit 2\)"),
    # 100 % NaN losses used to come back without a word
    "infomax.train learning_rate=nan": (lambda: _train(float("nan")), ValueError, "`learning_rate` must be a finite"),
    "infomax.train diverging": (lambda: _train(1e8), FloatingPointError, "loss became non-finite at step"),
    # labels 2 used to count silently as the positive class
    "hinge labels outside {0, 1}": (lambda: gb.losses.hinge(jnp.zeros(3), jnp.array([1, 2, 0])), ValueError,
                                    r"labels of a margin loss .*must be in \{0, 1\} or \{-1, 1\}.*\[2"),
    # in NumPyro's own MCMC (data passed as constants) the check runs while the model is traced
    "logistic labels in a model": (
        lambda: numpyro.infer.MCMC(numpyro.infer.NUTS(margin_model), num_warmup=5, num_samples=5,
                                   progress_bar=False).run(KEY, jnp.array([0.5, 1.0, 0.0])),
        ValueError, r"labels of a margin loss .*must be in .*\[0.5\]"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_clearly(case):
    fn, exc, match = CASES[case]
    with pytest.raises(exc, match=match):
        fn()


def test_a_valid_order_still_sums_to_the_evidence(x64):
    fam, x = gb.conjugate.BetaBernoulli(2.0, 3.0), jnp.array([1, 0, 1, 1, 0])
    terms = gb.conjugate.sequence_log_predictive(fam, x, order=np.array([4, 2, 0, 1, 3]))
    assert float(jnp.sum(terms)) == pytest.approx(float(fam.log_evidence(x)), rel=1e-12)
