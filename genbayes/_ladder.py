"""Power posteriors on a temperature ladder: thermodynamic integration and stepping stone."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from . import batched
from ._evidence_core import _MIN_ESS_ABS, _check_int, _warn

def check_ladder(ladder, name="ladder"):
    """Validate a temperature ladder: 1-D, finite, within [0, 1], strictly increasing, 0 first, 1 last."""
    if isinstance(ladder, (int, np.integer)) and not isinstance(ladder, bool):
        return default_ladder(int(ladder))
    arr = np.asarray(ladder, dtype=float)
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
    return (np.arange(K + 1) / K) ** power


def _ti_estimate(ladder, ll):
    """Corrected trapezoid rule over the ladder; ll is (K+1, S)."""
    E = jnp.mean(ll, axis=1)
    V = jnp.var(ll, axis=1, ddof=1)
    db = jnp.diff(ladder)
    plain = jnp.sum(db * (E[1:] + E[:-1]) / 2.0)
    correction = jnp.sum(db**2 / 12.0 * (V[1:] - V[:-1]))
    return plain - correction, plain


def _ss_estimate(ladder, ll):
    db = jnp.diff(ladder)
    lw = db[:, None] * ll[:-1]
    S = ll.shape[1]
    return jnp.sum(logsumexp(lw, axis=1) - jnp.log(S))


@partial(jax.jit, static_argnums=2)  # one program, not one eager compilation per operation
def _ladder_estimates(lad, ll, num_batches):
    """Both power-posterior estimators, their batch-means SEs and the per-rung importance ESS; ll is (K+1, S)."""
    B, S = ll.shape
    ti, ti_plain = _ti_estimate(lad, ll)
    # batch means: the whole estimator on each of M contiguous blocks of every chain
    blocks = ll.reshape(B, num_batches, S // num_batches).transpose(1, 0, 2)
    ti_b = jax.vmap(lambda b: _ti_estimate(lad, b)[0])(blocks)
    ss_b = jax.vmap(lambda b: _ss_estimate(lad, b))(blocks)
    lw = jnp.diff(lad)[:, None] * ll[:-1]
    w = jnp.exp(lw - logsumexp(lw, axis=1, keepdims=True))
    return {
        "thermodynamic": ti, "thermodynamic_uncorrected": ti_plain,
        "thermodynamic_se": jnp.std(ti_b, ddof=1) / jnp.sqrt(num_batches),
        "stepping_stone": _ss_estimate(lad, ll),
        "stepping_stone_se": jnp.std(ss_b, ddof=1) / jnp.sqrt(num_batches),
        "mean_log_likelihood": jnp.mean(ll, axis=1), "var_log_likelihood": jnp.var(ll, axis=1, ddof=1),
        "rung_ess": 1.0 / jnp.sum(w**2, axis=1),
    }


def _power_posteriors(model, args, kwargs, rng_key, *, ladder=32, num_warmup=500, num_samples=1000,
                      num_batches=10, dense_mass=True, target_accept_prob=0.8, units, progress=False, shard=None):
    ladder = check_ladder(ladder)
    _check_int(num_samples, "num_samples", 2)
    _check_int(num_batches, "num_batches", 2)
    if num_samples % num_batches:
        raise ValueError(f"`num_samples` ({num_samples}) must be a multiple of `num_batches` ({num_batches}).")
    from .units import log_likelihood

    # one constant weight β per temperature on the one unit that holds every likelihood entry
    weights = jnp.asarray(ladder)[:, None]
    res = batched.run(model, weights, *args, num_warmup=num_warmup, num_samples=num_samples, rng_key=rng_key,
                      units=units, dense_mass=dense_mass, target_accept_prob=target_accept_prob,
                      progress=progress, shard=shard, **kwargs)
    # log p(x | θ) at every draw: the (marginal, when enumerated) likelihood of the unit, (B, S)
    ll = log_likelihood(model, res.samples, *args, units=units, batch_ndims=2, **kwargs)[..., 0]
    est = _ladder_estimates(jnp.asarray(ladder, ll.dtype), ll, num_batches)
    diag = {
        "ladder": np.asarray(ladder),
        # per-rung arrays as NumPy, the estimators and their SEs as floats
        **{k: np.asarray(v) if jnp.ndim(v) else float(v) for k, v in est.items()},
        "num_divergent": np.asarray(res.diagnostics["num_divergent"]),
        "mean_accept_prob": np.asarray(res.diagnostics["mean_accept_prob"]),
        "num_samples": num_samples,
        "num_warmup": num_warmup,
        "devices": res.devices,
    }
    return diag


def _power_evidence(method, model, args, kwargs, rng_key, **kw):
    diag = _power_posteriors(model, args, kwargs, rng_key, **kw)
    problems = []
    S = diag["num_samples"]
    bad = np.flatnonzero(diag["rung_ess"] < max(0.1 * S, _MIN_ESS_ABS))
    if bad.size:
        lad = diag["ladder"]
        k = int(bad[np.argmin(diag["rung_ess"][bad])])
        problems.append(
            f"the ladder is too coarse: between temperatures {lad[k]:.3g} and {lad[k + 1]:.3g} the importance "
            f"ESS is {diag['rung_ess'][k]:.1f} of {S} draws ({bad.size} rungs below 10%); use more temperatures"
        )
    gap = abs(diag["thermodynamic"] - diag["thermodynamic_uncorrected"])
    if method == "thermodynamic" and gap > max(0.1, 2 * diag["thermodynamic_se"]):
        problems.append(f"the trapezoid rule's curvature correction is {gap:.3g} nats, so the discretisation "
                        "error is of that order; use more temperatures")
    ndiv = int(np.sum(diag["num_divergent"]))
    if ndiv:
        problems.append(f"{ndiv} divergent NUTS transitions across the ladder")
    _warn(problems, method, diag)
    return diag[method], diag[f"{method}_se"], diag

