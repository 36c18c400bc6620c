"""Tempered SMC (prior to posterior) and data-tempered SMC (one observation unit at a time).

Used by :func:`genbayes.evidence.log_evidence` (``method="smc"``) and
:func:`genbayes.evidence.prequential`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ._evidence_core import (_MIN_ESS_ABS, _check_int, _ess, _mapped_program, _shard_mode, _starts_at_prior, _warn,
                             _weighted_cov)
from ._programs import devices_used

def _mcmc_params(cov, step_size, num_leapfrog):
    return {
        "step_size": jnp.reshape(step_size, (1,)),
        "inverse_mass_matrix": cov[None],
        "num_integration_steps": jnp.array([num_leapfrog]),
    }


def _adapt_step_size(step_size, acceptance, target=0.65):
    # Between SMC steps the HMC step size follows the particles' last acceptance rate (Buchholz,
    # Chopin & Jacob 2021, Sec. 3): up when acceptance is above target, down when below.
    # Capped at 1.5: with the particle covariance as mass matrix the target is roughly a standard
    # normal, for which leapfrog is unstable at step size 2.
    return jnp.clip(step_size * jnp.exp(acceptance - target), 1e-4, 1.5)


def _tempered_smc(flat, key, *, constrain, num_particles, target_ess, num_mcmc_steps, num_leapfrog, max_steps):
    """One adaptive tempered SMC run from the prior to the posterior (vmapped over runs by the caller)."""
    import blackjax
    from blackjax.smc import resampling

    hmc_kernel = blackjax.hmc.build_kernel()
    d = flat.dim
    step0 = jnp.asarray(1.0 / d**0.25, dtype=flat.flat0.dtype)

    def one(key):
        k_init, k_loop = jax.random.split(key)
        x0 = constrain(flat.sample_prior(k_init, num_particles))
        state = blackjax.adaptive_tempered_smc.init(x0)
        n_f = jnp.asarray(num_particles, x0.dtype)
        cov0 = _weighted_cov(x0, jnp.full((num_particles,), 1.0 / n_f))
        records = {
            "beta": jnp.full((max_steps,), jnp.nan, x0.dtype),
            "ess": jnp.full((max_steps,), jnp.nan, x0.dtype),
            "acceptance": jnp.full((max_steps,), jnp.nan, x0.dtype),
            "increment": jnp.full((max_steps,), jnp.nan, x0.dtype),
        }

        def cond(c):
            i, state, *_ = c
            return (state.tempering_param < 1.0) & (i < max_steps)

        def body(c):
            i, state, cov, step_size, log_z, key, rec = c
            key, k = jax.random.split(key)
            alg = blackjax.adaptive_tempered_smc(
                flat.log_prior,
                flat.log_likelihood,
                hmc_kernel,
                blackjax.hmc.init,
                _mcmc_params(cov, step_size, num_leapfrog),
                resampling.systematic,
                target_ess,
                num_mcmc_steps=num_mcmc_steps,
            )
            state, info = alg.step(k, state)
            state = state._replace(particles=constrain(state.particles), weights=constrain(state.weights))
            acc = jnp.mean(info.update_info.acceptance_rate)
            rec = {
                "beta": rec["beta"].at[i].set(state.tempering_param),
                "ess": rec["ess"].at[i].set(_ess(state.weights)),
                "acceptance": rec["acceptance"].at[i].set(acc),
                "increment": rec["increment"].at[i].set(info.log_likelihood_increment),
            }
            cov = _weighted_cov(state.particles, state.weights)
            return i + 1, state, cov, _adapt_step_size(step_size, acc), log_z + info.log_likelihood_increment, key, rec

        c0 = (0, state, cov0, step0, jnp.zeros((), x0.dtype), k_loop, records)
        num_steps, state, _, step_size, log_z, _, rec = jax.lax.while_loop(cond, body, c0)
        return log_z, num_steps, state.tempering_param, rec

    return one(key)


def _smc_evidence(model, args, kwargs, rng_key, *, num_particles=1000, num_runs=8, target_ess=0.5,
                  num_mcmc_steps=10, num_leapfrog=5, max_steps=500, units, shard=None):
    _check_int(num_particles, "num_particles", 2)
    _check_int(num_runs, "num_runs", 2)
    _check_int(num_mcmc_steps, "num_mcmc_steps", 1)
    _check_int(num_leapfrog, "num_leapfrog", 1)
    _check_int(max_steps, "max_steps", 1)
    if not 0.0 < float(target_ess) < 1.0:
        raise ValueError(f"`target_ess` is a fraction of the particles and must lie in (0, 1), got {target_ess!r}.")
    _starts_at_prior(units, "method='smc'", "Drop `sites` (estimate the evidence of all observed sites), or use "
                                             "'stepping_stone'/'thermodynamic', whose ladder starts from the "
                                             "posterior given the other sites.")
    mode = _shard_mode(shard, num_runs)
    k_setup, k_run = jax.random.split(rng_key)
    settings = dict(num_particles=num_particles, target_ess=float(target_ess),
                    num_mcmc_steps=num_mcmc_steps, num_leapfrog=num_leapfrog, max_steps=max_steps)
    run = _mapped_program("smc", model, args, kwargs, units, tuple(settings.items()),
                          partial(_tempered_smc, **settings), 1, k_setup, mode)
    out = run(jax.random.split(k_run, num_runs))
    devices = devices_used(out)
    log_zs, num_steps, final_beta, rec = out
    log_zs, num_steps, final_beta = np.asarray(log_zs), np.asarray(num_steps), np.asarray(final_beta)
    rec = {k: np.asarray(v) for k, v in rec.items()}
    R = num_runs
    log_z = float(logsumexp(log_zs) - np.log(R))  # log of the mean of the unbiased Z estimates
    se = float(np.std(log_zs, ddof=1) / np.sqrt(R))
    min_ess = float(np.nanmin(rec["ess"]))
    min_acc = float(np.nanmin(rec["acceptance"]))
    diag = {
        "log_z_runs": log_zs,
        "num_steps": num_steps,
        "num_resampling": num_steps,  # BlackJAX resamples at every step
        "beta": rec["beta"],
        "ess": rec["ess"],
        "acceptance": rec["acceptance"],
        "increments": rec["increment"],
        "min_ess": min_ess,
        "min_acceptance": min_acc,
        "num_particles": num_particles,
        "num_runs": R,
        "shard": mode,
        "devices": devices,
    }
    problems, invalid = [], []
    # Reasons the estimate must not be used: the number is kept for inspection, Evidence.valid is False.
    if not np.all(np.isfinite(log_zs)) or not np.isfinite(log_z):
        invalid.append(f"{int(np.sum(~np.isfinite(log_zs)))} of {R} runs gave a non-finite log evidence "
                       "(non-finite log weights or log-likelihoods)")
    if np.any(~(final_beta >= 1.0)):
        invalid.append(f"{int(np.sum(~(final_beta >= 1.0)))} of {R} runs stopped at max_steps={max_steps} (or on "
                       f"a non-finite temperature) before reaching the posterior (temperature {np.nanmin(final_beta):.3g})")
    ess_floor = max(0.1 * num_particles, _MIN_ESS_ABS)
    if not np.isfinite(min_ess) or min_ess < min(_MIN_ESS_ABS, 0.02 * num_particles):
        invalid.append(f"the effective sample size degenerated to {min_ess:.1f} of {num_particles} particles")
    elif min_ess < ess_floor:
        problems.append(f"the effective sample size fell to {min_ess:.1f} of {num_particles} particles; "
                        "use more particles")
    if not np.isfinite(min_acc) or min_acc < 0.01:
        invalid.append(f"HMC moves accepted only {min_acc:.1%} at some step: the particles did not move, "
                       "so the tempered targets were not reached")
    elif min_acc < 0.1:
        problems.append(f"HMC moves accepted only {min_acc:.1%} at some step; the particles barely move")
    if np.std(log_zs) > 1.0:
        problems.append(f"independent runs disagree (sd {np.std(log_zs):.2f} nats); use more particles or moves")
    _warn(problems, "smc", diag, invalid=invalid)
    return log_z, se, diag


def _data_tempered_smc(flat, order, key, *, constrain, n, num_particles, num_mcmc_steps, num_leapfrog):
    """One data-tempered SMC sweep along ``order`` (vmapped over orderings by the caller)."""
    import blackjax
    from blackjax.smc import resampling
    from blackjax.smc.base import SMCState
    from blackjax.smc.from_mcmc import build_kernel

    hmc_kernel = blackjax.hmc.build_kernel()
    step_fn = build_kernel(hmc_kernel, blackjax.hmc.init, resampling.systematic)
    dtype = flat.flat0.dtype
    step0 = jnp.asarray(1.0 / flat.dim**0.25, dtype=dtype)

    def factory(mask):
        return flat.log_density(mask)

    def one(order, key):
        k_init, k_loop = jax.random.split(key)
        rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
        x0 = constrain(flat.sample_prior(k_init, num_particles))
        w0 = constrain(jnp.full((num_particles,), 1.0 / num_particles, dtype))
        state = SMCState(x0, w0, {})
        cov0 = _weighted_cov(x0, w0)

        def body(c, k):
            state, cov, step_size, log_z, key = c
            key, sub = jax.random.split(key)
            # BlackJAX's partial_posteriors_smc moves the particles towards the *new* partial
            # posterior before weighting them by the new point's likelihood, which biases the
            # incremental weight upwards. Here the moves leave the current partial posterior
            # invariant and the weight is the likelihood of the entering point (Chopin 2002).
            old = factory((rank < k).astype(dtype))
            new = factory((rank <= k).astype(dtype))
            state, info = step_fn(sub, state, num_mcmc_steps, _mcmc_params(cov, step_size, num_leapfrog), old,
                                  lambda x: new(x) - old(x))
            state = state._replace(particles=constrain(state.particles), weights=constrain(state.weights))
            acc = jnp.mean(info.update_info.acceptance_rate)
            inc = info.log_likelihood_increment
            out = (inc, _ess(state.weights), acc, step_size)
            cov = _weighted_cov(state.particles, state.weights)
            return (state, cov, _adapt_step_size(step_size, acc), log_z + inc, key), out

        (_, _, _, log_z, _), (terms, ess, acc, steps) = jax.lax.scan(
            body, (state, cov0, step0, jnp.zeros((), dtype), k_loop), jnp.arange(n)
        )
        return terms, log_z, ess, acc, steps

    return one(order, key)

