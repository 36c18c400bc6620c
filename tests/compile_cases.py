"""Every public entry point, called with inputs of fixed shapes whose *values* depend on ``i``.

``CASES[name](i)`` runs one entry point on data, hyperparameters and random key drawn from seed
``i``; calls with different ``i`` have the same shapes and structure, so a second call should
compile nothing (issue 21). Used by ``tests/test_second_call.py`` (asserts it) and
``benchmarks/compile_counts.py`` (prints the counts of the first and second calls).
Sizes are tiny: this measures compilation, not accuracy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import genbayes as gb
from genbayes.losses import Loss, squared

NUTS_SMALL = {"num_warmup": 10, "num_samples": 10, "progress": False}


def loc_model(x):
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("x", dist.Normal(mu, 1.0), obs=x)


def loss_model(x):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("x", Loss(squared, mu), obs=x)


def _num(out):
    """One number summarising a result (to check that the second call computed something else)."""
    for attr in ("value", "total", "learning_rate", "log_z", "samples", "terms", "losses"):
        if hasattr(out, attr):
            out = getattr(out, attr)
            break
    if isinstance(out, dict) and all(hasattr(v, "log_z") for v in out.values()):
        out = [v.log_z for v in out.values()]
    return float(sum(np.sum(np.asarray(leaf, dtype=np.float64)) for leaf in jax.tree_util.tree_leaves(out)))


def _x(i, n=8):
    return jnp.asarray(np.random.default_rng(i).normal(0.5 * i, 1.0, size=n))


def _bits(i, n=8):
    return jnp.asarray(np.random.default_rng(i).integers(0, 2, size=n))


def _key(i):
    return jax.random.PRNGKey(100 + i)


def _nkv(i):
    return gb.conjugate.NormalKnownVariance(0.1 * i, 1.0 + 0.5 * i, 1.0 + 0.1 * i)


def _bb(i):
    return gb.conjugate.BetaBernoulli(1.0 + i, 2.0 + 0.5 * i)


# ------------------------------------------------------------------------------------ cv


def cv_lpo_enumerate(i):
    return _num(gb.cv.lpo(_nkv(i), _x(i), p=2, method="enumerate"))


def cv_lpo_counting(i):
    return _num(gb.cv.lpo(_bb(i), _bits(i), p=3, method="counting"))


def cv_lpo_random(i):
    return _num(gb.cv.lpo(_nkv(i), _x(i, 30), p=10, method="exact", num_subsets=64, rng_key=_key(i)))


def cv_lpo_psis(i):
    return _num(gb.cv.lpo(loc_model, _x(i), p=1, method="psis", rng_key=_key(i), num_warmup=20, num_samples=20, num_chains=1))


def cv_lpo_refit(i):
    return _num(gb.cv.lpo(loc_model, _x(i, 5), p=1, method="refit", rng_key=_key(i), num_warmup=10, num_samples=10))


def cv_lpo_auto(i):
    return _num(gb.cv.lpo(loc_model, _x(i), p=1, rng_key=_key(i), num_warmup=20, num_samples=20, num_chains=1))


def cv_cumulative_enumerate(i):
    return _num(gb.cv.cumulative(_nkv(i), _x(i), P=3, method="enumerate"))


def cv_cumulative_psis(i):
    return _num(gb.cv.cumulative(loc_model, _x(i), P=2, method="psis", rng_key=_key(i), num_warmup=20, num_samples=20,
                     num_chains=1, num_subsets=16))


def cv_identity_enumerate(i):
    return _num(gb.cv.identity(_nkv(i), _x(i, 10)))


def cv_identity_counting(i):
    return _num(gb.cv.identity(_bb(i), _bits(i, 10)))


def cv_identity_exact_permutations(i):
    return _num(gb.cv.identity(_nkv(i), _x(i, 10), max_subsets=100, num_permutations=8, rng_key=_key(i)))


def cv_identity_data_order(i):
    return _num(gb.cv.identity(_nkv(i), _x(i, 10), order="data"))


def cv_identity_permutation(i):
    return _num(gb.cv.identity(loc_model, _x(i, 6), method="permutation", rng_key=_key(i), num_permutations=2, num_warmup=10,
                   num_samples=10, num_prior_draws=20, evidence_method="laplace"))


def cv_identity_smc(i):
    return _num(gb.cv.identity(loc_model, _x(i, 6), method="smc", rng_key=_key(i), num_permutations=2,
                   smc_kwargs={"num_particles": 32, "num_mcmc_steps": 1, "num_leapfrog": 2}, evidence_method="laplace"))


# ------------------------------------------------------------------------------------ calibrate


def calibrate_llb(i):
    return _num(gb.calibrate(loss_model, _x(i, 50), method="llb", rng_key=_key(i), num_steps=50))


def calibrate_gpc(i):
    return _num(gb.calibrate(loss_model, _x(i, 20), method="gpc", rng_key=_key(i), B=8, max_iter=2, init=1.0, progress=False,
                 num_warmup=10, num_samples=10))


def calibrate_safebayes(i):
    return _num(gb.calibrate(loss_model, _x(i, 10), method="safebayes", rng_key=_key(i), grid=[0.5, 1.0], start=7,
                 progress=False, num_warmup=10, num_samples=10))


def _bounded_model(x, y):
    b = numpyro.sample("b", dist.Normal(0.0, 2.0))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("y", Loss(gb.losses.sigmoid(1.0), b * x), obs=y)


_LADDER_SMALL = {"num_warmup": 10, "num_samples": 20, "num_chains": 2, "num_batches": 2, "num_low_rungs": 2,
                 "progress": False}


def bounds_pac_bayes(i):
    return float(np.sum(gb.bounds.pac_bayes(_bounded_model, _x(i, 10), _bits(i, 10), learning_rates=[1.0, 2.0],
                                            rng_key=_key(i), **_LADDER_SMALL).bound))


# ------------------------------------------------------------------------------------ evidence


def _ev(method, options=None, model=None):
    def case(i):
        return _num(gb.evidence.log_evidence(model or _nkv(i), _x(i), method=method, rng_key=_key(i), options=options))

    case.__name__ = f"evidence_{method}"
    return case


def evidence_compare(i):
    return _num(gb.evidence.compare(_nkv(i), _x(i), methods=["exact", "laplace"], rng_key=_key(i)))


def evidence_prequential(i):
    return _num(gb.evidence.prequential(loc_model, _x(i, 5), num_permutations=2, rng_key=_key(i), num_particles=32,
                            num_mcmc_steps=1, num_leapfrog=2))


def bridge_sampling(i):
    fam = _nkv(i)
    x = _x(i)
    post = fam.posterior(x)  # the posterior is the same family: exact draws of its mean
    mu = post.prior_mean + jnp.sqrt(post.prior_var) * jax.random.normal(jax.random.PRNGKey(i), (2, 100))
    draws = {"mu": mu}
    from genbayes.bridge import bridge_sampling as bs

    return _num(bs(fam, x, samples=draws, rng_key=_key(i)))


# ------------------------------------------------------------------------------------ batched


def batched_run(i):
    w = jnp.asarray(np.random.default_rng(i).dirichlet(np.ones(8), 3) * 8)
    return _num(gb.batched.run(loc_model, w, _x(i), rng_key=_key(i), **NUTS_SMALL))


def batched_posterior_samples(i):
    w = jnp.asarray(np.random.default_rng(i).dirichlet(np.ones(8), 3) * 8)
    return _num(gb.batched.posterior_samples(loc_model, w, _x(i), rng_key=_key(i), **NUTS_SMALL))


def batched_run_chees_shared(i):
    w = jnp.asarray(np.random.default_rng(i).dirichlet(np.ones(8), 3) * 8)
    return _num(gb.batched.run(loc_model, w, _x(i), rng_key=_key(i), kernel="chees", num_chains=2, num_warmup=5,
                               num_samples=10, shared_warmup=10, progress=False))


# ------------------------------------------------------------------------------------ vcd, infomax


def _vcd_svi():
    from numpyro.infer import SVI
    from numpyro.infer.autoguide import AutoNormal

    return SVI(loc_model, AutoNormal(loc_model), numpyro.optim.Adam(0.05), loss=gb.vcd.VCD(num_mcmc_steps=2))


_VCD_SVI = []


def vcd_fit(i):
    if not _VCD_SVI:
        _VCD_SVI.append(_vcd_svi())
    return _num(gb.vcd.fit(_VCD_SVI[0], jax.random.key(i), 20, _x(i), num_warmup=5, num_chunks=2))


def _im_guide(x):
    numpyro.sample("mu", dist.Normal(numpyro.param("m", 0.0), 0.5))


def infomax_train(i):
    return _num(gb.infomax.train(loc_model, _im_guide, gb.infomax.BetaELBO(1.0), _x(i), num_steps=20, rng_key=_key(i)))


def sgmcmc_run(i):
    return _num(gb.sgmcmc.run(loss_model, _x(i, 40), batch_size=8, step_size=1e-3, num_samples=20, num_warmup=10,
                              batch_args=0, control_variates=True, num_chains=2, rng_key=_key(i), progress=False))


CASES = {f.__name__: f for f in [
    cv_lpo_enumerate, cv_lpo_counting, cv_lpo_random, cv_lpo_psis, cv_lpo_refit, cv_lpo_auto,
    cv_cumulative_enumerate, cv_cumulative_psis,
    cv_identity_enumerate, cv_identity_counting, cv_identity_exact_permutations, cv_identity_data_order,
    cv_identity_permutation, cv_identity_smc,
    calibrate_llb, calibrate_gpc, calibrate_safebayes, bounds_pac_bayes,
    _ev("exact"), _ev("laplace"),
    _ev("thermodynamic", {"ladder": 4, "num_warmup": 10, "num_samples": 20, "num_chains": 2, "progress": False}),
    _ev("stepping_stone", {"ladder": 4, "num_warmup": 10, "num_samples": 20, "num_chains": 2, "progress": False}),
    _ev("smc", {"num_particles": 32, "num_runs": 2, "num_mcmc_steps": 1, "num_leapfrog": 2}),
    _ev("bridge", {"num_warmup": 20, "num_samples": 40, "num_chains": 2, "progress": False}),
    evidence_compare, evidence_prequential, bridge_sampling,
    batched_run, batched_posterior_samples, batched_run_chees_shared,
    vcd_fit, infomax_train, sgmcmc_run,
]}

SLOW = {"cv_identity_permutation", "cv_lpo_auto", "cv_identity_smc", "calibrate_gpc", "cv_lpo_psis",
        "evidence_thermodynamic", "evidence_smc", "calibrate_safebayes", "evidence_stepping_stone", "cv_lpo_refit",
        "cv_cumulative_psis", "calibrate_llb", "evidence_laplace", "vcd_fit", "evidence_bridge", "batched_run",
        "bounds_pac_bayes", "batched_run_chees_shared"}
"""Cases whose two calls took more than ~13 s in the suite on 2 shared cores (NUTS, SMC, HMC compilations)."""

KNOWN_COMPILES = {}
"""Second-call compilations not yet removed, by case (none left: the permutation path's prior draws were a
fresh ``Predictive`` program on every call until they became a cached program)."""
