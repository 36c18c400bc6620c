"""Tempered SMC (prior to posterior) and data-tempered SMC (one observation unit at a time).

Used by :func:`genbayes.evidence.log_evidence` (``method="smc"``) and
:func:`genbayes.evidence.prequential`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ._evidence_core import (_MIN_ESS_ABS, _check_int, _ess, _mapped_program, _shard_mode, _starts_at_prior, _warn,
                             _weighted_cov)
from ._validation import check_open_unit_interval

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


def _smc_init(flat, key, *, constrain, num_particles):
    """One run's starting state: prior draws, uniform weights, temperature 0."""
    k_init, k_run = jax.random.split(key)
    x = constrain(flat.sample_prior(k_init, num_particles))
    dtype = x.dtype
    w = constrain(jnp.full((num_particles,), 1.0 / num_particles, dtype))
    st = {"x": x, "w": w, "beta": jnp.zeros((), dtype), "cov": _weighted_cov(x, w),
          "step": jnp.asarray(1.0 / flat.dim**0.25, dtype), "log_z": jnp.zeros((), dtype)}
    return {**st, "key": k_run}


# Moves until the particles have forgotten where they started (Chopin & Papaspiliopoulos 2020,
# Sec. 17.2.3; the ``AdaptiveMCMCSequence`` of their ``particles`` package): after the first block of
# ``num_mcmc_steps`` HMC moves, further blocks run while the least-moved coordinate's standardised
# mean squared jump from the pre-move positions, m_j = mean_i (x_ij - x0_ij)^2 / (2 var_j) (about 1
# for an independent draw, 0 for particles that did not move), is below _MOVED_ENOUGH and still grew
# by more than _STILL_GROWING (relative) in the last block, up to ``max_mcmc_steps`` moves in all.
_MOVED_ENOUGH, _STILL_GROWING = 0.5, 0.1


def _moves_until_settled(var, max_blocks, log_density):
    """A BlackJAX SMC ``update_strategy``: blocks of HMC moves until the particles moved enough.

    The moves target ``log_density`` (the tempered posterior at the step's starting temperature,
    :meth:`_FlatModel.tempered`, one evaluation of the model) in place of BlackJAX's
    ``log_prior + β log_likelihood``, the same function written as two evaluations.

    Each block is BlackJAX's ``update_and_take_last`` (``num_mcmc_steps`` moves of every particle,
    keeping the last); every block leaves the current tempered target invariant, so the number of
    blocks may depend on the particle population (like the adapted step size) without changing what
    the particles target. The update's info holds the acceptance of every move made (NaN where a
    block was not run), the number of blocks and the final least-moved coordinate's m_j.
    """
    from blackjax.smc.base import update_and_take_last

    def strategy(mcmc_init_fn, logposterior_fn, step_fn, num_mcmc_steps, n_particles, **kw):
        del logposterior_fn  # log_prior(x) + state.tempering_param * log_likelihood(x): log_density is that
        block, n = update_and_take_last(mcmc_init_fn, log_density, step_fn, num_mcmc_steps, n_particles, **kw)

        def update(keys, x0, params):
            def moved(x):  # the least-moved coordinate's standardised mean squared jump
                return jnp.min(jnp.mean((x - x0) ** 2, axis=0) / (2.0 * var))

            # the first block is the loop's first pass: one copy of the HMC kernel in the program
            def going(c):
                _, _, m, m_prev, b = c
                return (b == 0) | ((b < max_blocks) & (m < _MOVED_ENOUGH) & (m > (1.0 + _STILL_GROWING) * m_prev))

            def another(c):
                x, acc, m, _, b = c
                x, info = block(jax.vmap(lambda k: jax.random.fold_in(k, b))(keys), x, params)
                return x, acc.at[b].set(info.acceptance_rate), moved(x), m, b + 1

            dtype = jnp.result_type(x0)
            acc = jnp.full((max_blocks, jnp.shape(x0)[0], num_mcmc_steps), jnp.nan, dtype)
            zero = jnp.zeros((), dtype)
            x, acc, m, _, b = jax.lax.while_loop(going, another, (x0, acc, zero, zero, jnp.asarray(0)))
            return x, {"acceptance_rate": acc, "num_blocks": b, "moved": m}

        return update, n

    return strategy


def _smc_step(flat, st, scale, *, constrain, target_ess, num_mcmc_steps, max_mcmc_steps, num_leapfrog):
    """One adaptive tempered SMC step of one run (the caller maps it over runs).

    The next temperature keeps the ESS at ``target_ess`` (BlackJAX ``adaptive_tempered_smc``); the
    particles are resampled and moved by HMC, whose inverse mass matrix is the particles' weighted
    covariance and whose step size is the run's adapted one times ``scale`` (the caller retries a step
    with a smaller ``scale`` when the moves were rejected); blocks of ``num_mcmc_steps`` moves are
    repeated, up to ``max_mcmc_steps`` moves, while the particles have not moved enough
    (:func:`_moves_until_settled`). A run at temperature 1 is left as it is.
    """
    import blackjax
    from blackjax.smc import resampling
    from blackjax.smc.tempered import TemperedSMCState

    key, k = jax.random.split(st["key"])
    # BlackJAX moves the particles at the step's starting temperature (tempered.py: state.tempering_param)
    strategy = _moves_until_settled(jnp.diag(st["cov"]), max(1, max_mcmc_steps // num_mcmc_steps),
                                    flat.tempered(st["beta"]))
    alg = blackjax.adaptive_tempered_smc(
        flat.log_prior, flat.log_likelihood, blackjax.hmc.build_kernel(), blackjax.hmc.init,
        _mcmc_params(st["cov"], st["step"] * scale, num_leapfrog), resampling.systematic, target_ess,
        num_mcmc_steps=num_mcmc_steps, update_strategy=strategy)
    new, info = alg.step(k, TemperedSMCState(st["x"], st["w"], st["beta"]))
    x, w = constrain(new.particles), constrain(new.weights)
    acc = jnp.nanmean(info.update_info["acceptance_rate"])
    step = st["step"] * scale
    out = {"x": x, "w": w, "beta": new.tempering_param, "cov": _weighted_cov(x, w),
           "step": _adapt_step_size(step, acc), "log_z": st["log_z"] + info.log_likelihood_increment, "key": key}
    done = st["beta"] >= 1.0
    out = jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), st, out)
    rec = {"beta": out["beta"], "ess": _ess(out["w"]), "acceptance": jnp.where(done, jnp.nan, acc),
           "increment": jnp.where(done, jnp.nan, info.log_likelihood_increment), "step_size": step,
           "num_moves": jnp.where(done, jnp.nan, num_mcmc_steps * info.update_info["num_blocks"]).astype(acc.dtype),
           "moved": jnp.where(done, jnp.nan, info.update_info["moved"])}
    return out, rec


# A step whose moves accepted less than this (mean over particles) is redone from the same particles
# with the step size times _RETRY_SCALE, up to _MAX_RETRIES times: HMC on a funnel-like tempered target
# (a centred hierarchical model near temperature 1) needs a much smaller step than the previous one.
_RETRY_BELOW, _RETRY_SCALE, _MAX_RETRIES = 0.2, 0.25, 4
_RECORDS = ("beta", "ess", "acceptance", "increment", "step_size", "num_moves", "moved")


def _smc_run(flat, key, *, constrain, num_particles, max_steps, **step_settings):
    """One whole adaptive tempered SMC run, prior to posterior, in one ``while_loop`` (mapped over runs).

    Each tempering step is one :func:`_smc_step`, redone from the same particles with a smaller step
    size while its moves are rejected (``_RETRY_*``). Per-step records are kept in arrays of length
    ``max_steps`` (NaN after the run's last step) with the number of retries.
    """
    st = _smc_init(flat, key, constrain=constrain, num_particles=num_particles)
    dtype = st["beta"].dtype

    def step_with_retries(st):
        # the first attempt is the loop's first pass (scale 1): one copy of the step in the program
        def again(c):
            _, rec, _, tries = c
            return (tries < 0) | ((tries < _MAX_RETRIES) & (rec["acceptance"] < _RETRY_BELOW))  # NaN: done

        def attempt(c):
            _, _, scale, tries = c
            scale = jnp.where(tries < 0, jnp.ones((), dtype), scale * _RETRY_SCALE)
            new, rec = _smc_step(flat, st, scale, constrain=constrain, **step_settings)
            return new, rec, scale, tries + 1

        rec0 = {k: jnp.zeros((), dtype) for k in _RECORDS}
        new, rec, _, tries = jax.lax.while_loop(again, attempt, (st, rec0, jnp.ones((), dtype), jnp.asarray(-1)))
        return new, rec, tries

    def going(c):
        st, _, _, i = c
        return (i < max_steps) & (st["beta"] < 1.0)  # a NaN temperature stops the run too

    def one_step(c):
        st, recs, retries, i = c
        new, rec, tries = step_with_retries(st)
        recs = {k: recs[k].at[i].set(rec[k]) for k in _RECORDS}
        return new, recs, retries.at[i].set(tries), i + 1

    recs = {k: jnp.full((max_steps,), jnp.nan, dtype) for k in _RECORDS}
    init = (st, recs, jnp.zeros(max_steps, jnp.int32), jnp.asarray(0))
    st, recs, retries, n = jax.lax.while_loop(going, one_step, init)
    return {"log_z": st["log_z"], "beta": st["beta"], "x": st["x"], "records": recs, "retries": retries,
            "num_steps": n}


def _smc_evidence(model, args, kwargs, rng_key, *, num_particles=1000, num_runs=8, target_ess=0.5,
                  num_mcmc_steps=10, max_mcmc_steps=None, num_leapfrog=5, max_steps=500, units, shard=None):
    _check_int(num_particles, "num_particles", 2)
    _check_int(num_runs, "num_runs", 2)
    _check_int(num_mcmc_steps, "num_mcmc_steps", 1)
    if max_mcmc_steps is None:
        max_mcmc_steps = 4 * num_mcmc_steps
    _check_int(max_mcmc_steps, "max_mcmc_steps", 1)
    if max_mcmc_steps < num_mcmc_steps:
        raise ValueError(f"`max_mcmc_steps` ({max_mcmc_steps}) must be at least `num_mcmc_steps` ({num_mcmc_steps}): "
                         "it caps the moves per tempering step, of which num_mcmc_steps always run.")
    _check_int(num_leapfrog, "num_leapfrog", 1)
    _check_int(max_steps, "max_steps", 1)
    check_open_unit_interval(target_ess, "target_ess", hint=" It is the fraction of the particles kept effective.")
    _starts_at_prior(units, "method='smc'", "Drop `sites` (estimate the evidence of all observed sites), or use "
                                             "'stepping_stone'/'thermodynamic', whose ladder starts from the "
                                             "posterior given the other sites.")
    mode = _shard_mode(shard, num_runs)
    k_setup, k_run = jax.random.split(rng_key)
    R = num_runs
    settings = dict(num_particles=num_particles, max_steps=max_steps, target_ess=float(target_ess),
                    num_mcmc_steps=num_mcmc_steps, max_mcmc_steps=max_mcmc_steps, num_leapfrog=num_leapfrog)
    # One compiled program runs every run to the posterior (runs one after another on each device,
    # sharded across devices). Not vmapped: the runs' numbers of tempering steps, move blocks and
    # retries differ, and under vmap every run would wait for the longest at each of them (radiata
    # pine, 8 runs x 1000 particles, idle 2 cores: warm 5.6 s vmapped, 2.9 s in sequence, same draws).
    # (A hang on a factor model's MultivariateNormal likelihood was jaxlib 0.10's batched-LAPACK
    # thread-pool deadlock, avoided in _mapped_program: see _evidence_core._LAPACK_PRIMITIVES.)
    run = _mapped_program("smc", model, args, kwargs, units, tuple(settings.items()),
                          partial(_smc_run, **settings), 1, k_setup, mode, sequential=True)
    out, devices = run(jax.random.split(k_run, R))
    used = max(int(np.max(np.asarray(out["num_steps"]))), 1)
    rec = {k: np.asarray(v)[:, :used] for k, v in out["records"].items()}  # (R, steps)
    state = {"x": out["x"], "log_z": out["log_z"], "beta": out["beta"]}
    retries = np.asarray(out["retries"])[:, :used]
    log_zs, final_beta = np.asarray(state["log_z"]), np.asarray(state["beta"])
    num_steps = np.asarray(out["num_steps"])
    # the log of the mean of the unbiased Z estimates (numpy, not jax.scipy: no eager compilations)
    log_z = float(np.logaddexp.reduce(log_zs) - np.log(R))
    se = float(np.std(log_zs, ddof=1) / np.sqrt(R))
    min_ess = float(np.nanmin(rec["ess"]))
    min_acc = float(np.nanmin(rec["acceptance"])) if np.any(np.isfinite(rec["acceptance"])) else float("nan")
    diag = {
        "log_z_runs": log_zs,
        "num_steps": num_steps,
        "num_resampling": num_steps,  # BlackJAX resamples at every step
        "beta": rec["beta"],
        "ess": rec["ess"],
        "acceptance": rec["acceptance"],
        "increments": rec["increment"],
        "step_size": rec["step_size"],
        "num_retries": retries,  # (R, steps): redone attempts of each step
        "num_moves": rec["num_moves"],  # (R, steps): HMC moves made at each step (blocks of num_mcmc_steps)
        "moved": rec["moved"],  # (R, steps): least-moved coordinate's standardised squared jump (~1: forgotten)
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
    moved = rec["moved"]
    if np.any(np.isfinite(moved)) and np.nanmin(moved) < 0.05:
        r, i = np.unravel_index(np.nanargmin(moved), moved.shape)
        beta_moved = rec["beta"][r, i - 1] if i else 0.0  # the moves target the step's starting temperature
        problems.append(f"after {int(rec['num_moves'][r, i])} HMC moves at temperature {beta_moved:.3g} the "
                        f"particles had barely left their starting points (least-moved coordinate: mean squared "
                        f"jump {np.nanmin(moved):.3f} of an independent draw's); raise `max_mcmc_steps` or "
                        "`num_leapfrog`")
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

