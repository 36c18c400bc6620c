"""Ordinary NumPyro models, written the way a user would, each with an independent reference.

Every ``make_<name>()`` returns a :class:`Zoo` record: the model and its arguments, the expected
default observation units, and where one exists an independent reference (``twin``: the same
probability model written differently, e.g. the ``MixtureSameFamily`` form of an enumerated
mixture or a conjugate family's own model; ``exact``: closed-form posterior quantities).

Data are numpy float64/int arrays generated with fixed seeds, so that they take the dtype of the
JAX setting in force (float32 by default, float64 inside ``jax.enable_x64(True)``). n <= 30.
``ALL`` maps every name to its maker.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist


@dataclasses.dataclass
class Zoo:
    """One zoo model.

    Attributes:
        name: short name.
        model: the NumPyro model (called as ``model(*args, **kwargs)``).
        args, kwargs: its arguments.
        num_units: U under the default units (``None`` when the default is ambiguous).
        units: a units spec that works (``None`` = the default works).
        plate: the plate whose elements are the default units (``None`` if ambiguous).
        observed: the observed sites (names in the trace).
        twin: an independent reference model with the same density over the shared latent sites
            (or ``None``); called with ``twin_args`` / ``twin_kwargs``.
        exact: closed-form reference quantities (dict), e.g. exact posterior means.
        latent: the continuous latent sites to compare between samplers.
        notes: free text.
    """

    name: str
    model: Callable
    args: tuple
    kwargs: dict = dataclasses.field(default_factory=dict)
    num_units: int | None = None
    units: Any = None
    plate: str | None = None
    observed: tuple = ()
    twin: Callable | None = None
    twin_args: tuple | None = None
    twin_kwargs: dict | None = None
    exact: dict = dataclasses.field(default_factory=dict)
    latent: tuple = ()
    notes: str = ""


# --------------------------------------------------------------------------------------------
# eight schools (Rubin 1981; NumPyro's examples), centred and non-centred
# --------------------------------------------------------------------------------------------

SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools_centered(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", len(sigma)):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def eight_schools_noncentered(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", len(sigma)):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * eta)
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def make_eight_schools_centered() -> Zoo:
    return Zoo("eight_schools_centered", eight_schools_centered, (SCHOOLS_SIGMA, SCHOOLS_Y), num_units=8,
               plate="J", observed=("obs",), latent=("mu", "tau"),
               twin=eight_schools_noncentered, twin_args=(SCHOOLS_SIGMA, SCHOOLS_Y),
               notes="twin: the non-centred parameterisation (same posterior of mu, tau and theta)")


def make_eight_schools_noncentered() -> Zoo:
    return Zoo("eight_schools_noncentered", eight_schools_noncentered, (SCHOOLS_SIGMA, SCHOOLS_Y), num_units=8,
               plate="J", observed=("obs",), latent=("mu", "tau", "eta"),
               twin=eight_schools_centered, twin_args=(SCHOOLS_SIGMA, SCHOOLS_Y),
               notes="twin: the centred parameterisation")


# --------------------------------------------------------------------------------------------
# binomial: hierarchical (rats-like) and separate (no pooling, exact posterior and LOO)
# --------------------------------------------------------------------------------------------

RATS_N = np.array([20, 20, 19, 18, 25, 24, 17, 20, 23, 20])
RATS_Y = np.array([0, 1, 2, 1, 4, 3, 2, 5, 4, 6])


def binomial_hierarchical(n_trials, y=None):
    mu = numpyro.sample("mu", dist.Normal(-1.5, 1.5))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0))
    with numpyro.plate("groups", n_trials.shape[0]):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))   # non-centred: the centred form diverges
        logit_p = numpyro.deterministic("logit_p", mu + tau * eta)
        numpyro.sample("y", dist.Binomial(n_trials, logits=logit_p), obs=y)


def make_binomial_hierarchical() -> Zoo:
    return Zoo("binomial_hierarchical", binomial_hierarchical, (RATS_N, RATS_Y), num_units=10, plate="groups",
               observed=("y",), latent=("mu", "tau", "eta"))


SEP_N = np.array([10, 12, 8, 15, 10, 9])
SEP_Y = np.array([2, 7, 0, 9, 5, 8])


def separate_binomial(n_trials, y=None):
    with numpyro.plate("i", n_trials.shape[0]):
        p = numpyro.sample("p", dist.Beta(1.0, 1.0))
        numpyro.sample("y", dist.Binomial(n_trials, probs=p), obs=y)


def make_separate_binomial() -> Zoo:
    a, b = 1.0 + SEP_Y, 1.0 + SEP_N - SEP_Y
    return Zoo("separate_binomial", separate_binomial, (SEP_N, SEP_Y), num_units=6, plate="i", observed=("y",),
               latent=("p",),
               exact={"posterior_mean": {"p": a / (a + b)},
                      "posterior_sd": {"p": np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))},
                      # p_i has only its prior once y_i is held out: p(y_i | y_-i) = BetaBinomial(1, 1) = 1/(n_i+1)
                      "loo_i": -np.log(SEP_N + 1.0)},
               notes="p_i ~ Beta(1, 1) independently: posterior Beta(1 + y_i, 1 + n_i - y_i)")


# --------------------------------------------------------------------------------------------
# linear regression with deterministic sites (Normal-Gamma prior: conjugate)
# --------------------------------------------------------------------------------------------

_rng = np.random.default_rng(3)
REG_X = np.column_stack([np.ones(20), np.linspace(-1.0, 1.0, 20)])
REG_Y = REG_X @ np.array([0.5, -1.0]) + 0.4 * _rng.normal(size=20)
REG_PRIOR = dict(mean=np.zeros(2), precision=np.array([1.0, 1.0]), shape=2.0, rate=1.0)


def linear_regression(X, y=None):
    tau = numpyro.sample("tau", dist.Gamma(REG_PRIOR["shape"], REG_PRIOR["rate"]))
    prior_sd = 1.0 / jnp.sqrt(tau * jnp.asarray(REG_PRIOR["precision"]))
    beta = numpyro.sample("beta", dist.Normal(jnp.asarray(REG_PRIOR["mean"]), prior_sd).to_event(1))
    sigma = numpyro.deterministic("sigma", 1.0 / jnp.sqrt(tau))
    mu = numpyro.deterministic("mu", jnp.asarray(X) @ beta)
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def make_linear_regression() -> Zoo:
    from genbayes.conjugate import NormalGammaRegression

    fam = NormalGammaRegression(**REG_PRIOR)
    return Zoo("linear_regression", linear_regression, (REG_X, REG_Y), num_units=20, plate="data", observed=("y",),
               latent=("tau", "beta"), twin=fam.model, twin_args=(REG_X, REG_Y),
               exact={"family": fam},
               notes="beta | tau ~ N(0, (tau I)^-1) written as independent Normals with deterministic mu, sigma; "
                     "twin: genbayes.conjugate.NormalGammaRegression (exact posterior, evidence and LOO)")


# --------------------------------------------------------------------------------------------
# two observed sites of different sizes sharing a parameter (conjugate in mu)
# --------------------------------------------------------------------------------------------

_rng = np.random.default_rng(5)
TWO_Z = 0.7 + _rng.normal(size=8)
TWO_Y = 0.7 + 2.0 * _rng.normal(size=20)


def two_sites(z, y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("a", z.shape[0]):
        numpyro.sample("z", dist.Normal(mu, 1.0), obs=z)
    with numpyro.plate("b", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 2.0), obs=y)


def make_two_sites() -> Zoo:
    prec = 1.0 + TWO_Z.size / 1.0 + TWO_Y.size / 4.0
    mean = (TWO_Z.sum() / 1.0 + TWO_Y.sum() / 4.0) / prec
    # 4 groups across both sites: z in pairs, y in fives
    groups = {"z": np.repeat(np.arange(4), 2), "y": np.repeat(np.arange(4), 5)}
    return Zoo("two_sites", two_sites, (TWO_Z, TWO_Y), num_units=None, units=groups, plate=None,
               observed=("z", "y"), latent=("mu",),
               exact={"posterior_mean": {"mu": mean}, "posterior_sd": {"mu": 1.0 / np.sqrt(prec)}},
               notes="default units ambiguous (plates 'a' and 'b'); `units` declares 4 groups across both sites")


# --------------------------------------------------------------------------------------------
# Gaussian mixture: discrete assignment enumerated, and its MixtureSameFamily twin
# --------------------------------------------------------------------------------------------

_rng = np.random.default_rng(7)
MIX_X = np.concatenate([-2.0 + 0.8 * _rng.normal(size=10), 2.0 + 0.8 * _rng.normal(size=14)])
MIX_LOC_PRIOR = (np.array([-2.0, 2.0]), 0.7)  # well separated component priors: no label switching


def mixture_enumerated(x):
    w = numpyro.sample("w", dist.Dirichlet(jnp.ones(2)))
    loc = numpyro.sample("loc", dist.Normal(jnp.asarray(MIX_LOC_PRIOR[0]), MIX_LOC_PRIOR[1]).to_event(1))
    scale = numpyro.sample("scale", dist.HalfNormal(1.5))
    with numpyro.plate("n", x.shape[0]):
        z = numpyro.sample("z", dist.Categorical(w), infer={"enumerate": "parallel"})
        numpyro.sample("x", dist.Normal(loc[z], scale), obs=x)


def mixture_twin(x):
    w = numpyro.sample("w", dist.Dirichlet(jnp.ones(2)))
    loc = numpyro.sample("loc", dist.Normal(jnp.asarray(MIX_LOC_PRIOR[0]), MIX_LOC_PRIOR[1]).to_event(1))
    scale = numpyro.sample("scale", dist.HalfNormal(1.5))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("x", dist.MixtureSameFamily(dist.Categorical(w), dist.Normal(loc, scale)), obs=x)


def make_mixture() -> Zoo:
    return Zoo("mixture", mixture_enumerated, (MIX_X,), num_units=24, plate="n", observed=("x",),
               latent=("w", "loc", "scale"), twin=mixture_twin, twin_args=(MIX_X,),
               notes="z enumerated (infer={'enumerate': 'parallel'}); twin: MixtureSameFamily (z summed out)")


# --------------------------------------------------------------------------------------------
# missing responses with obs_mask
# --------------------------------------------------------------------------------------------

_rng = np.random.default_rng(11)
MASK_X = np.linspace(-1.0, 1.0, 20)
MASK_Y = 1.0 + 0.8 * MASK_X + 0.5 * _rng.normal(size=20)
MASK_OBS = np.ones(20, bool)
MASK_OBS[[2, 7, 11, 15, 18]] = False
MASK_Y_FILLED = np.where(MASK_OBS, MASK_Y, 0.0)  # the missing entries hold a placeholder


def masked_regression(x, y, obs_mask):
    a = numpyro.sample("a", dist.Normal(0.0, 2.0))
    b = numpyro.sample("b", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("y", dist.Normal(a + b * x, sigma), obs=y, obs_mask=obs_mask)


def complete_case_regression(x, y):
    a = numpyro.sample("a", dist.Normal(0.0, 2.0))
    b = numpyro.sample("b", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("y", dist.Normal(a + b * x, sigma), obs=y)


def make_masked() -> Zoo:
    return Zoo("masked", masked_regression, (MASK_X, MASK_Y_FILLED, MASK_OBS), num_units=15, plate="n",
               observed=("y_observed",), latent=("a", "b", "sigma"),
               twin=complete_case_regression, twin_args=(MASK_X[MASK_OBS], MASK_Y[MASK_OBS]),
               exact={"missing": np.flatnonzero(~MASK_OBS)},
               notes="5 of 20 responses missing (obs_mask): sites y_observed (15 units) and y_unobserved "
                     "(latent, imputed); twin: the complete-case model (same posterior of a, b, sigma)")


# --------------------------------------------------------------------------------------------
# multivariate observation per plate element, and an inner-plate twin
# --------------------------------------------------------------------------------------------

_rng = np.random.default_rng(13)
MVN_SCALE = np.array([1.0, 0.5])
MVN_X = np.array([0.5, -1.0]) + MVN_SCALE * _rng.normal(size=(15, 2))


def multivariate(x):
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("x", dist.MultivariateNormal(mu, scale_tril=jnp.diag(jnp.asarray(MVN_SCALE))), obs=x)


def multivariate_twin(x):
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
    with numpyro.plate("n", x.shape[0], dim=-2):
        with numpyro.plate("d", 2, dim=-1):
            numpyro.sample("x", dist.Normal(mu, jnp.asarray(MVN_SCALE)), obs=x)


def make_multivariate() -> Zoo:
    prec = 1.0 / 4.0 + MVN_X.shape[0] / MVN_SCALE**2
    mean = (MVN_X.sum(0) / MVN_SCALE**2) / prec
    return Zoo("multivariate", multivariate, (MVN_X,), num_units=15, plate="n", observed=("x",), latent=("mu",),
               twin=multivariate_twin, twin_args=(MVN_X,),
               exact={"posterior_mean": {"mu": mean}, "posterior_sd": {"mu": 1.0 / np.sqrt(prec)}},
               notes="a 2-vector per element (MultivariateNormal, diagonal); twin: inner plate 'd' of Normals")


# --------------------------------------------------------------------------------------------
# subsampled plate
# --------------------------------------------------------------------------------------------

_rng = np.random.default_rng(17)
SUB_X = 0.3 + _rng.normal(size=30)


def subsampled(x, subsample_size=10):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("n", x.shape[0], subsample_size=subsample_size) as idx:
        numpyro.sample("x", dist.Normal(mu, 1.0), obs=jnp.asarray(x)[idx])


def make_subsampled() -> Zoo:
    return Zoo("subsampled", subsampled, (SUB_X,), num_units=30, plate="n", observed=("x",), latent=("mu",),
               notes="plate of 30 subsampled 10 at a time (scale 3 on the observed site)")


# --------------------------------------------------------------------------------------------
# AR(1) time series, conditional on the first value (lagged data as an argument)
# --------------------------------------------------------------------------------------------

_rng = np.random.default_rng(19)
_ar = np.zeros(26)
for _t in range(1, 26):
    _ar[_t] = 0.3 + 0.6 * _ar[_t - 1] + 0.5 * _rng.normal()
AR_PREV, AR_Y = _ar[:-1], _ar[1:]


def ar1(y_prev, y):
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 1.0))
    phi = numpyro.sample("phi", dist.Uniform(-1.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("t", y.shape[0]):
        numpyro.sample("y", dist.Normal(alpha + phi * y_prev, sigma), obs=y)


def make_ar1() -> Zoo:
    return Zoo("ar1", ar1, (AR_PREV, AR_Y), num_units=25, plate="t", observed=("y",),
               latent=("alpha", "phi", "sigma"), notes="y_t | y_{t-1}: units are time steps, in order")


# --------------------------------------------------------------------------------------------
# grouped data: observations with a group index and group random effects
# --------------------------------------------------------------------------------------------

_rng = np.random.default_rng(23)
GRP_G = np.repeat(np.arange(4), [5, 7, 6, 6])
GRP_Y = np.array([-1.0, 0.0, 0.5, 1.2])[GRP_G] + 0.6 * _rng.normal(size=GRP_G.size)


def grouped(g, y, num_groups=4):
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0))
    with numpyro.plate("groups", num_groups):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
    with numpyro.plate("obs", g.shape[0]):
        numpyro.sample("y", dist.Normal(mu + tau * eta[g], 0.6), obs=y)


def make_grouped() -> Zoo:
    return Zoo("grouped", grouped, (GRP_G, GRP_Y), num_units=24, plate="obs", observed=("y",),
               latent=("mu", "tau", "eta"), units=None, exact={"groups": GRP_G},
               notes="default units: the 24 observations; units=GRP_G gives 4 groups (leave-one-group-out)")


ALL = {
    "eight_schools_centered": make_eight_schools_centered,
    "eight_schools_noncentered": make_eight_schools_noncentered,
    "binomial_hierarchical": make_binomial_hierarchical,
    "separate_binomial": make_separate_binomial,
    "linear_regression": make_linear_regression,
    "two_sites": make_two_sites,
    "mixture": make_mixture,
    "masked": make_masked,
    "multivariate": make_multivariate,
    "subsampled": make_subsampled,
    "ar1": make_ar1,
    "grouped": make_grouped,
}
