"""Power posteriors on a temperature ladder: thermodynamic integration and stepping stone.

Every temperature :math:`\\beta_k` of the ladder is drawn by ``num_chains`` independent NUTS chains
(R replicate ladders), all (K + 1) R chains in one vmapped program (:func:`genbayes.batched.run` with
weights of shape ``((K + 1) R, 1)``). The estimate uses the pooled draws; its standard error is the
larger of

- the *between-replicate* SE: the whole estimator on each replicate ladder r (its R chains are
  independent, warm-up included), :math:`\\mathrm{sd}_r(\\hat L_r)/\\sqrt R`, which sees chains that
  settle in different modes or have not mixed, and
- the *within-chain* batch-means SE: the estimator on ``num_batches`` contiguous blocks of every
  chain (Flegal & Jones 2010), which is steadier when the chains mix but misses between-chain
  variation.

Divergences are counted per rung and, like a rung whose importance ESS collapses, make the estimate
invalid when material (more than 1% of a rung's draws).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from . import batched
from .batched import _MAX_DIVERGENT_FRACTION  # a rung is unusable when more than this fraction of its draws diverged
from ._evidence_core import _MIN_ESS_ABS, _check_int, _warn
from ._programs import ProgramCache, family_as_argument, split_args
from ._validation import check_positive_scalar

# Between-replicate SE this many times the within-chain one: the chains disagree (modes, no mixing).
_MIXING_RATIO = 3.0


def check_ladder(ladder, name="ladder"):
    """Validate a temperature ladder: 1-D, finite, within [0, 1], strictly increasing, 0 first, 1 last."""
    if isinstance(ladder, (int, np.integer)) and not isinstance(ladder, bool):
        if ladder < 1:
            raise ValueError(f"`{name}` as a number of steps must be an integer >= 1 (the default ladder has 32), "
                             f"got {ladder!r}.")
        return default_ladder(int(ladder))
    if isinstance(ladder, (str, bytes, bool)) or np.iscomplexobj(ladder):
        raise TypeError(f"`{name}` must be a number of steps or an increasing array of temperatures from 0 to 1, "
                        f"got {ladder!r}.")
    try:
        arr = np.asarray(ladder, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a number of steps or an increasing array of temperatures from 0 to 1, "
                        f"got {ladder!r}.") from None
    if arr.ndim != 1 or arr.shape[0] < 2:
        raise ValueError(f"`{name}` must be a 1-D array of at least two temperatures, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains NaN or infinite temperatures.")
    if np.any(arr < 0) or np.any(arr > 1):
        raise ValueError(f"`{name}` temperatures must lie in [0, 1], got min {arr.min():.4g}, max {arr.max():.4g}.")
    if np.any(np.diff(arr) <= 0):
        raise ValueError(f"`{name}` must be strictly increasing (each temperature above the previous one).")
    if arr[0] != 0.0 or arr[-1] != 1.0:
        raise ValueError(f"`{name}` must start at 0 (the prior) and end at 1 (the posterior), got {arr[0]} .. {arr[-1]}.")
    return arr


def default_ladder(K: int = 32, power: float = 5.0) -> np.ndarray:
    r"""The power ladder :math:`\beta_k = (k/K)^{5}`, k = 0..K (Friel & Pettitt 2008, Sec. 3).

    Example:
        >>> from genbayes.evidence import default_ladder
        >>> default_ladder(4, power=1.0).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    _check_int(K, "K", 1)
    check_positive_scalar(power, "power", hint=" 5 puts most rungs near the prior, 1 spaces them evenly; with "
                          "power <= 0 the rungs are not an increasing ladder from 0 to 1.")
    return (np.arange(K + 1) / K) ** power


def _ti_estimate(ladder, ll):
    r"""Corrected trapezoid rule over the ladder; ll is (K+1, S).

    :math:`\sum_k \Delta\beta_k (E_k + E_{k-1})/2 - \sum_k \Delta\beta_k^2 (V_k - V_{k-1})/12`
    (Friel, Hurn & Wyse 2014, eq. 8); returns (corrected, plain).

    Example:
        >>> import jax.numpy as jnp
        >>> from genbayes._ladder import _ti_estimate
        >>> [round(float(v), 4) for v in _ti_estimate(jnp.array([0.0, 1.0]), jnp.array([[-1.0, -3.0], [-2.0, -2.0]]))]
        [-1.8333, -2.0]
    """
    corrected, plain = _ti_cumulative(ladder, ll)
    return corrected[-1], plain[-1]


def _ti_cumulative(ladder, ll):
    r"""The integral up to every rung: :math:`\int_0^{\beta_k} E_\beta[\ell]\,d\beta`, k = 0..K; ll is (K+1, S).

    The corrected trapezoid rule of :func:`_ti_estimate` stopped at each rung (0 at the first);
    returns (corrected, plain), each of shape (K+1,). :mod:`genbayes.bounds` reads log Z(w) at every
    learning rate of its ladder from it.

    Example:
        >>> import jax.numpy as jnp
        >>> from genbayes._ladder import _ti_cumulative
        >>> [round(float(v), 4) for v in _ti_cumulative(jnp.array([0.0, 1.0, 2.0]), jnp.full((3, 2), -1.0))[1]]
        [0.0, -1.0, -2.0]
    """
    E = jnp.mean(ll, axis=1)
    V = jnp.var(ll, axis=1, ddof=1)
    db = jnp.diff(ladder)
    zero = jnp.zeros(1, dtype=E.dtype)
    plain = jnp.concatenate([zero, jnp.cumsum(db * (E[1:] + E[:-1]) / 2.0)])
    correction = jnp.concatenate([zero, jnp.cumsum(db**2 / 12.0 * (V[1:] - V[:-1]))])
    return plain - correction, plain


def _ss_estimate(ladder, ll):
    r"""Stepping stone :math:`\sum_k \log \frac1S \sum_s e^{\Delta\beta_k \ell_s^{(k-1)}}` (Xie et al. 2011, eq. 9); ll is (K+1, S).

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from genbayes._ladder import _ss_estimate
        >>> v = float(_ss_estimate(jnp.array([0.0, 1.0]), jnp.array([[-1.0, -3.0], [-2.0, -2.0]])))
        >>> bool(np.isclose(v, np.log(np.mean(np.exp([-1.0, -3.0])))))
        True
    """
    db = jnp.diff(ladder)
    lw = db[:, None] * ll[:-1]
    S = ll.shape[1]
    return jnp.sum(logsumexp(lw, axis=1) - jnp.log(S))


def _check_run(num_samples, num_chains, num_batches):
    """The replicate-ladder settings: at least 2 chains, batches of at least 2 draws dividing num_samples."""
    _check_int(num_samples, "num_samples", 2)
    _check_int(num_chains, "num_chains", 2)
    _check_int(num_batches, "num_batches", 2)
    if num_samples % num_batches or num_samples // num_batches < 2:
        raise ValueError(f"`num_samples` ({num_samples}) must be a multiple of `num_batches` ({num_batches}) "
                         "with at least 2 draws per batch.")


def _ladder_estimates(lad, ll, num_batches):
    """Both estimators (pooled draws), their SEs and per-rung diagnostics; ll is (K+1, R, S).

    Traced inside the ladder's compiled program (no eager operations after sampling).
    """
    K1, R, S = ll.shape
    M = num_batches
    pooled = ll.reshape(K1, R * S)
    ti, ti_plain = _ti_estimate(lad, pooled)
    ss = _ss_estimate(lad, pooled)
    # replicate ladders: chain r of every temperature is one independent run of the whole method
    chains = ll.transpose(1, 0, 2)  # (R, K+1, S)
    ti_r = jax.vmap(lambda b: _ti_estimate(lad, b)[0])(chains)
    ss_r = jax.vmap(lambda b: _ss_estimate(lad, b))(chains)
    # batch means: the estimator on each of M contiguous blocks of every chain, R*M batches
    blocks = ll.reshape(K1, R * M, S // M).transpose(1, 0, 2)
    ti_b = jax.vmap(lambda b: _ti_estimate(lad, b)[0])(blocks)
    ss_b = jax.vmap(lambda b: _ss_estimate(lad, b))(blocks)
    # importance ESS of the step from rung k-1 to k, within each chain (out of S), then over all draws
    lw = jnp.diff(lad)[:, None, None] * ll[:-1]
    w = jnp.exp(lw - logsumexp(lw, axis=2, keepdims=True))
    lwp = jnp.diff(lad)[:, None] * pooled[:-1]
    wp = jnp.exp(lwp - logsumexp(lwp, axis=1, keepdims=True))
    sd = lambda v, n: jnp.std(v, ddof=1) / jnp.sqrt(n)  # noqa: E731
    return {
        "thermodynamic": ti, "thermodynamic_uncorrected": ti_plain, "stepping_stone": ss,
        "thermodynamic_replicates": ti_r, "stepping_stone_replicates": ss_r,
        "thermodynamic_se_between": sd(ti_r, R), "stepping_stone_se_between": sd(ss_r, R),
        "thermodynamic_se_within": sd(ti_b, R * M), "stepping_stone_se_within": sd(ss_b, R * M),
        "mean_log_likelihood": jnp.mean(pooled, axis=1), "var_log_likelihood": jnp.var(pooled, axis=1, ddof=1),
        "rung_ess": jnp.mean(1.0 / jnp.sum(w**2, axis=2), axis=1),
        "rung_ess_pooled": 1.0 / jnp.sum(wp**2, axis=1),
        "rung_mean_log_likelihood": jnp.mean(ll, axis=2),  # (K+1, R): a chain off on its own shows here
    }


_PROGRAMS = ProgramCache(maxsize=16)


def _estimates_program(model, args, kwargs, units, num_batches):
    """``(samples, ladder) -> estimates``: log-likelihoods of the draws and both estimators, one program.

    The data are inputs of the program (not constants), so a second ladder with new data of the
    same shapes compiles nothing here.
    """
    from .units import log_likelihood

    model, args = family_as_argument(model, args)
    dyn, rebuild, static_key = split_args(args, kwargs)

    def build():
        def fn(dyn_leaves, samples, lad, R):
            a, kw = rebuild(dyn_leaves)
            # log p(x | θ) at every draw: the (marginal, when enumerated) likelihood of the one unit
            ll = log_likelihood(model, samples, *a, units=units, batch_ndims=2, **kw)[..., 0]
            K1 = lad.shape[0]
            return _ladder_estimates(lad, ll.reshape(K1, R, ll.shape[-1]), num_batches)

        return jax.jit(fn, static_argnums=3)

    key = None if static_key is None else (model, units.key, static_key, num_batches)
    compiled, _ = _PROGRAMS.get(key, build)
    return lambda samples, lad, R: compiled(dyn, samples, lad, R)


def _power_posteriors(model, args, kwargs, rng_key, *, ladder=32, num_warmup=500, num_samples=1000,
                      num_chains=4, num_batches=10, dense_mass=True, target_accept_prob=0.8, units,
                      progress=False, shard=None):
    """Run the ladder (R = ``num_chains`` chains per temperature) and compute both estimators.

    Args:
        model, args, kwargs: the NumPyro model and its arguments.
        rng_key: JAX key; chain r of temperature k uses row k R + r of :func:`genbayes.batched.run`.
        ladder: K or the temperatures (:func:`check_ladder`).
        num_warmup, num_samples: NUTS warm-up and kept draws per chain.
        num_chains: independent replicate ladders (>= 2): their spread gives the between-replicate SE.
        num_batches: contiguous blocks per chain for the within-chain batch-means SE.
        dense_mass, target_accept_prob, progress, shard: as in :func:`genbayes.batched.run`.
        units: the tempered likelihood's units.

    Returns:
        the diagnostics dict: both estimates (pooled draws) and SEs (``*_se`` the larger of ``*_se_between``
        and ``*_se_within``), ``*_replicates`` (R,), ``divergences_per_rung`` (K+1,), ``num_divergent``
        (per chain, (K+1) R), ``rung_ess`` (per chain, averaged; out of ``num_samples``), ``rung_ess_pooled``.

    Example:
        >>> import jax, jax.numpy as jnp, genbayes as gb
        >>> from genbayes.evidence import _evidence_units
        >>> from genbayes._ladder import _power_posteriors
        >>> fam = gb.conjugate.NormalKnownVariance(0.0, 1.0, 1.0)
        >>> y = jnp.array([0.5, 1.5])
        >>> d = _power_posteriors(fam.model, (y,), {}, jax.random.PRNGKey(0), units=_evidence_units(fam.model, (y,), {}),
        ...                       ladder=3, num_warmup=50, num_samples=40, num_chains=2, num_batches=4)
        >>> d["divergences_per_rung"].shape, d["stepping_stone_replicates"].shape
        ((4,), (2,))
    """
    ladder = check_ladder(ladder)
    _check_run(num_samples, num_chains, num_batches)
    K1, R = ladder.shape[0], num_chains

    # one constant weight β per chain on the one unit that holds every likelihood entry;
    # row k R + r is chain r of temperature k (independent keys: R independent replicate ladders)
    weights = np.repeat(ladder, R)[:, None]
    res = batched.run(model, weights, *args, num_warmup=num_warmup, num_samples=num_samples, rng_key=rng_key,
                      units=units, dense_mass=dense_mass, target_accept_prob=target_accept_prob,
                      progress=progress, shard=shard, **kwargs)
    est = _estimates_program(model, args, kwargs, units, num_batches)(res.samples, np.asarray(ladder), R)
    est = jax.device_get(est)
    div = np.asarray(res.diagnostics["num_divergent"]).reshape(K1, R)
    diag = {
        "ladder": np.asarray(ladder),
        # per-rung arrays as NumPy, the estimators and their SEs as floats
        **{k: np.asarray(v) if np.ndim(v) else float(v) for k, v in est.items()},
        "num_divergent": div.reshape(-1),
        "divergences_per_rung": div.sum(axis=1),
        "mean_accept_prob": np.asarray(res.diagnostics["mean_accept_prob"]).reshape(K1, R),
        "num_chains": R,
        "num_samples": num_samples,
        "num_warmup": num_warmup,
        "num_batches": num_batches,
        "devices": res.devices,
    }
    for m in ("thermodynamic", "stepping_stone"):
        # not underestimated when the chains disagree (between) nor by chance when they agree (within)
        diag[f"{m}_se"] = max(diag[f"{m}_se_between"], diag[f"{m}_se_within"])
    return diag


def _power_evidence(method, model, args, kwargs, rng_key, **kw):
    """Thermodynamic integration or stepping stone: ``(log_z, se, diag)`` with run-time checks.

    Invalid (``Evidence.valid`` False): a non-finite estimate; more than 1% divergent draws at
    some temperature; a rung whose importance ESS collapsed (below 20 draws of a chain, or 1%).
    Cautions: any divergence, rung ESS below 10% of a chain's draws, a large trapezoid
    correction, chains that disagree (between-replicate SE over 3 times the within-chain SE).
    Both methods' reasons are kept (``diag["thermodynamic_invalid"]``, ``diag["stepping_stone_invalid"]``)
    for a caller that reports the other estimator of the same run.
    """
    diag = _power_posteriors(model, args, kwargs, rng_key, **kw)
    checks = {m: _checks(diag, m) for m in ("thermodynamic", "stepping_stone")}
    for m, (_, invalid) in checks.items():
        diag[f"{m}_invalid"] = tuple(invalid)
    problems, invalid = checks[method]
    _warn(problems, method, diag, invalid=invalid)
    return diag[method], diag[f"{method}_se"], diag


def _checks(diag, method):
    """(cautions, invalid reasons) of one estimator of a ladder run."""
    problems, invalid = [], []
    S, R, lad = diag["num_samples"], diag["num_chains"], diag["ladder"]
    if not (np.isfinite(diag[method]) and np.isfinite(diag[f"{method}_se"])):
        invalid.append(f"the estimate or its SE is not finite ({diag[method]}, {diag[f'{method}_se']}): some "
                       "log-likelihood of the draws is not finite")
    ess = diag["rung_ess"]
    collapsed = np.flatnonzero(~(ess >= max(0.01 * S, _MIN_ESS_ABS)))
    low = np.flatnonzero(~(ess >= max(0.1 * S, _MIN_ESS_ABS)))
    if low.size:
        k = int(low[np.argmin(ess[low])])
        msg = (f"the ladder is too coarse: between temperatures {lad[k]:.3g} and {lad[k + 1]:.3g} the importance "
               f"ESS is {ess[k]:.1f} of {S} draws per chain ({low.size} rungs below 10%"
               + (f", {collapsed.size} below {max(0.01 * S, _MIN_ESS_ABS):.0f}" if collapsed.size else "")
               + "); use more temperatures")
        (invalid if collapsed.size else problems).append(msg)
    per_rung = diag["divergences_per_rung"]
    ndiv = int(per_rung.sum())
    if ndiv:
        frac = per_rung / (R * S)
        k = int(np.argmax(frac))
        msg = (f"{ndiv} divergent NUTS transitions across the ladder, most at temperature {lad[k]:.3g} "
               f"({int(per_rung[k])} of {R * S} draws, {100 * frac[k]:.2g}%)")
        if frac[k] > _MAX_DIVERGENT_FRACTION:
            invalid.append(msg + f"; above {100 * _MAX_DIVERGENT_FRACTION:.0f}% the power posterior is not explored "
                           "(reparameterise, e.g. non-centred, or raise target_accept_prob)")
        else:
            problems.append(msg)
    gap = abs(diag["thermodynamic"] - diag["thermodynamic_uncorrected"])
    if method == "thermodynamic" and gap > max(0.1, 2 * diag["thermodynamic_se"]):
        problems.append(f"the trapezoid rule's curvature correction is {gap:.3g} nats, so the discretisation "
                        "error is of that order; use more temperatures")
    between, within = diag[f"{method}_se_between"], diag[f"{method}_se_within"]
    if between > _MIXING_RATIO * within:
        problems.append(f"the {R} replicate ladders disagree: between-replicate SE {between:.3g} is "
                        f"{between / within:.1f} times the within-chain SE {within:.3g} (modes or slow mixing); "
                        f"the SE reported is the between-replicate one, with only {R - 1} degrees of freedom")
    return problems, invalid
