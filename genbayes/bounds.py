r"""Generalization guarantees for Gibbs posteriors: PAC-Bayes and information-theoretic bounds.

The Gibbs posterior :math:`\rho_w(\theta) \propto e^{-w L(\theta)}\pi(\theta)`, :math:`L = \sum_u \ell_u`
the loss summed over the n observation units (:mod:`genbayes.units`), is the distribution that
minimises :math:`w\,E_\rho[L] + \mathrm{KL}(\rho\,\|\,\pi)` (Catoni 2007, Lemma 1.1.3; Bissiri, Holmes
& Walker 2016), so every ingredient of a PAC-Bayes bound is a by-product of sampling it:

.. math:: \log Z(w) = \log \int e^{-w L}\,d\pi = -\int_0^w E_{\rho_t}[L]\,dt, \qquad \mathrm{KL}(\rho_w \,\|\, \pi) = -w\,E_{\rho_w}[L] - \log Z(w),

the first by thermodynamic integration along the learning rate (Friel & Pettitt 2008, eq. 6, with
the curvature-corrected trapezoid of Friel, Hurn & Wyse 2014, eq. 8), the second because
:math:`\log \rho_w = -wL - \log Z(w) + \log\pi`. The ladder :math:`0 = w_0 < w_1 < \dots < w_K` (0, the
prior, then the requested learning rates) is drawn as *one* batched program
(:func:`genbayes.batched.run` with constant unit weights :math:`w_k`): by default one ChEES-HMC
posterior per rung whose ``num_chains`` chains are independent replicate ladders, rungs where ChEES
fails drawn again by NUTS (``kernel="nuts"``: a NUTS chain per rung and replicate); standard errors
are the larger of the between-replicate and the within-chain batch-means ones (as in
:func:`genbayes.evidence.log_evidence`, method ``"thermodynamic"``).

- :func:`kl_to_prior`: :math:`\mathrm{KL}(\rho_w\|\pi)`, :math:`\log Z(w)` and :math:`E_{\rho_w}[L]`
  at every rate of the ladder.
- :func:`pac_bayes`: for a loss bounded in :math:`[a, b]`, a bound on the expected risk
  :math:`E_{\rho_w} R(\theta)`, :math:`R(\theta) = E_x \ell(\theta, x)`, at every rate, holding for all
  rates of the ladder at once (union bound), so the minimising rate keeps the guarantee.
- :func:`pac_bayes_bound`, :func:`kl_inverse`: the bounds themselves, for an empirical risk and a KL
  you computed otherwise.
- :func:`mutual_information_bound`: the Xu–Raginsky bound on the expected generalization gap, the
  mutual information bounded by :math:`E_S\,\mathrm{KL}(\rho_S\|\pi)` over bootstrap data sets.

The prior and the ladder must be chosen without looking at the data: the guarantees hold for a
data-free π and a fixed set of rates. The bounds hold for the exact empirical risk and KL; here
both are Monte Carlo estimates, whose standard errors are reported beside the bound (``bound_se``).
Use float64 (``numpyro.enable_x64()``) for KL values to be trusted below ~1e-2.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from . import batched
from ._evidence_core import _check_int
from ._ladder import _MAX_DIVERGENT_FRACTION, _MIXING_RATIO, _check_run, _ti_cumulative
from ._programs import data_program
from ._validation import check_key, check_open_unit_interval

__all__ = ["kl_to_prior", "pac_bayes", "pac_bayes_bound", "kl_inverse", "mutual_information_bound", "default_rates",
           "KLToPrior", "PACBayes", "MutualInformationBound", "BOUNDS"]

BOUNDS = ("kl", "catoni", "mcallester")
"""The values of ``pac_bayes(bound=...)``."""


# ---------------------------------------------------------------------------------------------
# the bounds, as pure functions of an empirical risk in [0, 1] and a KL
# ---------------------------------------------------------------------------------------------


def _binary_kl(q, p):
    """kl(q || p) between Bernoulli(q) and Bernoulli(p), with 0 log 0 = 0."""
    q, p = np.asarray(q, float), np.clip(np.asarray(p, float), 1e-300, 1 - 1e-16)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(q > 0, q * np.log(q / p), 0.0)
        b = np.where(q < 1, (1 - q) * np.log((1 - q) / (1 - p)), 0.0)
    return a + b


def kl_inverse(q, c):
    r"""The upper inverse of the binary kl: :math:`\sup\{p \in [q, 1] : \mathrm{kl}(q\,\|\,p) \le c\}`.

    :math:`\mathrm{kl}(q\|p) = q\log\frac qp + (1-q)\log\frac{1-q}{1-p}` increases in p on [q, 1], so the
    supremum is found by bisection (60 halvings: exact to float64 resolution). This turns the
    PAC-Bayes-kl bound :math:`\mathrm{kl}(\hat r\|R) \le c` into :math:`R \le \mathrm{kl}^{-1}(\hat r, c)`
    (Seeger 2002; Maurer 2004).

    Args:
        q: empirical risk(s) in [0, 1] (array-like).
        c: right-hand side(s) ``>= 0``, broadcasting against ``q``.

    Returns:
        NumPy array of the broadcast shape, in [q, 1].

    Example:
        >>> import numpy as np
        >>> from genbayes.bounds import kl_inverse
        >>> p = kl_inverse(0.1, 0.05)
        >>> bool(np.isclose(0.1 * np.log(0.1 / p) + 0.9 * np.log(0.9 / (1 - p)), 0.05)), float(kl_inverse(0.0, np.log(2)))
        (True, 0.5)
    """
    q, c = np.broadcast_arrays(np.asarray(q, float), np.asarray(c, float))
    if np.any(~np.isfinite(q)) or np.any((q < 0) | (q > 1)):
        raise ValueError(f"`q` (an empirical risk) must lie in [0, 1], got values from {np.nanmin(q):.4g} to "
                         f"{np.nanmax(q):.4g}; normalise a loss with range (a, b) by (loss - a) / (b - a).")
    if np.any(np.isnan(c)) or np.any(c < 0):
        raise ValueError("`c` must be >= 0 (a KL divergence plus a confidence term, over n).")
    lo, hi = q.copy(), np.ones_like(q)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = _binary_kl(q, mid) <= c
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return np.where(np.isinf(c), 1.0, lo)


def pac_bayes_bound(empirical_risk, kl, n, *, delta=0.05, bound="kl", num_rates=1, c=None):
    r"""A PAC-Bayes bound on the expected risk :math:`E_\rho R` of a loss in [0, 1], from :math:`\hat r = E_\rho \hat R` and KL.

    With probability at least 1 − δ over the n i.i.d. units, simultaneously for every posterior ρ
    (and, by the union bound, for every one of ``num_rates`` = K settings fixed in advance, each at
    level δ/K):

    - ``"kl"`` (Seeger 2002; Maurer 2004, Thm. 5): :math:`\mathrm{kl}(\hat r\,\|\,R) \le
      (\mathrm{KL} + \log(2\sqrt n\,K/\delta))/n`, inverted by :func:`kl_inverse`;
    - ``"mcallester"`` (McAllester 1999, with Maurer's constant, i.e. Pinsker's inequality applied to
      the kl bound): :math:`R \le \hat r + \sqrt{(\mathrm{KL} + \log(2\sqrt n\,K/\delta))/(2n)}`;
    - ``"catoni"`` (Catoni 2007, Thm. 1.2.6) for a fixed :math:`C = \lambda/n > 0`:
      :math:`R \le \big(1 - \exp(-C\hat r - (\mathrm{KL} + \log(K/\delta))/n)\big) / (1 - e^{-C})`.
      The Gibbs posterior at rate w of a loss with range (a, b) is the ρ minimising this bound for
      :math:`C = w(b - a)`, which is what :func:`pac_bayes` passes.

    Values are capped at 1 (a risk in [0, 1] never exceeds it; a bound at 1 is vacuous).

    Args:
        empirical_risk: :math:`\hat r \in [0, 1]` (array-like).
        kl: :math:`\mathrm{KL}(\rho\|\pi) \ge 0`, broadcasting against it.
        n: the number of i.i.d. units the empirical risk averages.
        delta: confidence level δ in (0, 1).
        bound: ``"kl"``, ``"catoni"`` or ``"mcallester"``.
        num_rates: K, the number of settings the bound is to hold for at once.
        c: Catoni's C > 0 (array-like, broadcasting), required for ``"catoni"`` only.

    Returns:
        NumPy array of bounds on :math:`E_\rho R`, in [0, 1].

    Example:
        >>> import numpy as np
        >>> from genbayes.bounds import pac_bayes_bound
        >>> kl_b = pac_bayes_bound(0.1, 5.0, 1000, delta=0.05)
        >>> mc_b = pac_bayes_bound(0.1, 5.0, 1000, delta=0.05, bound="mcallester")
        >>> bool(0.1 < kl_b < mc_b)                                   # kl is the tighter of the two
        True
        >>> bool(np.isclose(mc_b, 0.1 + np.sqrt((5.0 + np.log(1 / 0.05) + np.log(2 * np.sqrt(1000))) / 2000)))
        True
    """
    _check_choice(bound, "bound", BOUNDS)
    check_open_unit_interval(delta, "delta", hint=" It is the probability that the bound fails, e.g. 0.05.")
    _check_int(n, "n", 1)
    _check_int(num_rates, "num_rates", 1)
    r = np.asarray(empirical_risk, float)
    kl = np.asarray(kl, float)
    if np.any(np.isnan(kl)) or np.any(kl < -1e-9):
        raise ValueError("`kl` must be >= 0 (a KL divergence).")
    kl = np.maximum(kl, 0.0)
    conf = math.log(num_rates / delta)
    if bound == "catoni":
        if c is None:
            raise ValueError("bound='catoni' needs `c`, Catoni's C = lambda / n > 0 (for a Gibbs posterior at rate w "
                             "of a loss with range (a, b), C = w (b - a)).")
        c = np.asarray(c, float)
        if np.any(~np.isfinite(c)) or np.any(c <= 0):
            raise ValueError("`c` (Catoni's C) must be finite and > 0.")
        if np.any((r < 0) | (r > 1)):
            raise ValueError("`empirical_risk` must lie in [0, 1]; normalise a loss with range (a, b) by "
                             "(loss - a) / (b - a).")
        out = -np.expm1(-c * r - (kl + conf) / n) / -np.expm1(-c)
    else:
        rhs = (kl + conf + math.log(2.0 * math.sqrt(n))) / n
        if bound == "kl":
            out = kl_inverse(r, rhs)
        else:
            out = r + np.sqrt(rhs / 2.0)
    return np.minimum(out, 1.0)


def _check_choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


# ---------------------------------------------------------------------------------------------
# the ladder over learning rates: KL and log Z at every rate, from one batched program
# ---------------------------------------------------------------------------------------------


def _check_rates(rates, name="learning_rates"):
    if isinstance(rates, (str, bytes, bool)) or np.iscomplexobj(rates):
        raise TypeError(f"`{name}` must be an increasing array of positive learning rates, got {rates!r}.")
    try:
        arr = np.atleast_1d(np.asarray(rates, dtype=float))
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be an increasing array of positive learning rates, got {rates!r}.") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D array of learning rates, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"`{name}` must be finite and > 0 (the ladder starts at the prior, w = 0, by itself), "
                         f"got {arr.tolist()}.")
    if np.any(np.diff(arr) <= 0):
        raise ValueError(f"`{name}` must be strictly increasing, e.g. np.geomspace(0.1, 100, 32).")
    return arr


def _gibbs_info(model, args, kwargs, rng_key, units):
    """Trace once (before compiling anything): the units, the latent sites, the Loss sites, the trace."""
    from .calibration import _model_info
    from .fisher import _find_loss

    names, U, latent, _, tr = _model_info(model, args, kwargs, rng_key, units)
    not_loss = [k for k in names if _find_loss(tr[k]["fn"])[0] is None]
    if not_loss:
        raise ValueError(
            f"The bounds are for Gibbs posteriors, but the observed site(s) {not_loss} carry no gb.Loss: write the "
            "loss in the model (numpyro.sample('y', gb.Loss(loss_fn, prediction), obs=y)) or wrap a likelihood "
            "model in gb.gibbs(model, loss={'y': loss_fn}); for a likelihood, use "
            "gb.losses.negative_log_likelihood.")
    if not latent:
        raise ValueError("The model has no latent sample site: the Gibbs posterior is its prior, and KL is 0.")
    return U, latent, tr


def _resolve_range(loss_range, tr, U):
    """The per-unit loss range (a, b): given, or the losses' ``loss_range`` when each unit holds one entry."""
    from .fisher import _find_loss

    if loss_range is None:
        ranges = {getattr(_find_loss(tr[k]["fn"])[0].loss_fn, "loss_range", None) for k in U.index}
        if None in ranges or len(ranges) != 1 or np.any(U.sizes() != 1):
            raise ValueError(
                "`loss_range` is needed: the range (a, b) of each unit's loss. It is read from the loss only when "
                "every observed site's loss has one (gb.losses.sigmoid, zero_one) and each unit holds one entry; "
                "PAC-Bayes bounds of this form hold for bounded losses only.")
        loss_range = ranges.pop()
    try:
        a, b = (float(v) for v in loss_range)
    except (TypeError, ValueError):
        raise TypeError(f"`loss_range` must be a pair (a, b) of numbers, got {loss_range!r}.") from None
    if not (np.isfinite(a) and np.isfinite(b) and a < b):
        raise ValueError(f"`loss_range` must be finite with a < b, got {loss_range!r}.")
    return a, b


def _check_in_range(lo, hi, loss_range, where):
    a, b = loss_range
    tol = 1e-6 * (b - a)
    if lo < a - tol or hi > b + tol:
        raise ValueError(
            f"The loss takes values outside `loss_range`=({a:g}, {b:g}) on the data {where}: from {lo:.6g} to "
            f"{hi:.6g}. The bound needs every unit's loss within the range at every θ; pass the true range, or "
            "use a bounded loss (gb.losses.sigmoid).")


def _unit_losses_at_trace(model, args, kwargs, tr, latent, U):
    from .units import log_likelihood

    params = {k: jnp.asarray(tr[k]["value"])[None] for k in latent}
    return -np.asarray(log_likelihood(model, params, *args, units=U, **kwargs))[0]


def _curves(lad, ll):
    """Rows log Z, KL, E[log-lik], uncorrected log Z at every rung, from ll of shape (K+1, S)."""
    logz, plain = _ti_cumulative(lad, ll)
    e = jnp.mean(ll, axis=1)
    return jnp.stack([logz, lad * e - logz, e, plain])


def _estimates(lad, ll, num_batches):
    """Pooled (4, K+1), per replicate ladder (R, 4, K+1) and per batch (R M, 4, K+1); ll is (K+1, R, S)."""
    K1, R, S = ll.shape
    pooled = _curves(lad, ll.reshape(K1, R * S))
    reps = jax.vmap(lambda x: _curves(lad, x))(ll.transpose(1, 0, 2))
    blocks = ll.reshape(K1, R * num_batches, S // num_batches).transpose(1, 0, 2)
    bat = jax.vmap(lambda x: _curves(lad, x))(blocks)
    return pooled, reps, bat


def _se_parts(reps, bat, axis):
    """(between-replicate, within-chain batch-means) standard errors."""
    R, RM = reps.shape[axis], bat.shape[axis]
    return np.std(reps, axis=axis, ddof=1) / math.sqrt(R), np.std(bat, axis=axis, ddof=1) / math.sqrt(RM)


def _se(reps, bat, axis):
    """The larger of the between-replicate and the within-chain batch-means standard errors."""
    return np.maximum(*_se_parts(reps, bat, axis))


def _rate_ladder(model, args, kwargs, rng_key, rates, U, latent, counts=None, *, num_warmup=500, num_samples=1000,
                 num_chains=4, num_batches=10, num_low_rungs=16, dense_mass=False, target_accept_prob=None,
                 progress=False, shard=None, chunk_size=8, kernel=None):
    """Draw the Gibbs posteriors at 0 and every rate, for each row of ``counts`` (data-set weights), in one program.

    The ladder ``lad`` is 0, ``num_low_rungs`` rates geometric from 1e-4 ``rates[0]`` (excluded), then ``rates``.
    Row ``(b K1 + k) R + r`` of :func:`genbayes.batched.run` is chain r at rate ``lad[k]`` for data set b
    (unit weights ``lad[k] * counts[b]``). Returns a dict: ``reported`` (the rungs of ``rates``), ``samples``
    (the draws there, (B, K, R S, ...)), ``pooled`` (B, 4, K1), ``reps`` (B, R, 4, K1), ``batches``
    (B, R M, 4, K1) (rows: log Z, KL, E[log-lik], uncorrected log Z), ``loss_min``/``loss_max`` (the
    per-unit loss over all draws), ``divergent`` (B, K1, R).
    """
    from .units import log_likelihood

    _check_run(num_samples, num_chains, num_batches)
    if kernel is None:  # ChEES has no dense mass matrix
        kernel = "nuts" if dense_mass else "chees"
    if kernel not in batched._KERNELS:
        raise ValueError(f"`kernel` must be one of {batched._KERNELS} or None (ChEES, or NUTS with dense_mass=True), "
                         f"got {kernel!r}.")
    # below the first rate E_t[L] falls fastest (from the prior's mean loss): the integral needs rungs
    # geometric from 1e-4 w_1 there; they are integrated over but not reported
    _check_int(num_low_rungs, "num_low_rungs", 0)
    low = rates[0] * np.geomspace(1e-4, 1.0, num_low_rungs + 1)[:-1] if num_low_rungs else np.zeros(0)
    lad = np.concatenate([[0.0], low, rates])
    K1, R = lad.size, num_chains
    counts = np.ones((1, U.num_units)) if counts is None else np.asarray(counts, float)
    B = counts.shape[0]
    row_counts = np.repeat(counts, K1 * R, axis=0)  # (B K1 R, U)
    settings = dict(units=U, num_warmup=num_warmup, rng_key=rng_key, progress=progress, shard=shard,
                    chunk_size=chunk_size, target_accept_prob=target_accept_prob, dense_mass=dense_mass, kernel=kernel)
    redrawn = np.zeros((B, K1), bool)
    if kernel == "chees":  # one posterior per rung, its R chains ChEES's chains: (B K1, R S) -> (B K1 R, S)
        # rungs where ChEES fails are drawn again by R NUTS chains (batched.run's nuts_fallback)
        res = batched.run(model, np.tile(lad, B)[:, None] * np.repeat(counts, K1, axis=0), *args,
                          num_samples=R * num_samples, num_chains=R, **settings, **kwargs)
        samples = {k: np.reshape(res.samples[k], (B * K1 * R, num_samples) + np.shape(res.samples[k])[2:])
                   for k in latent}
        divergent = np.asarray(res.diagnostics["num_divergent"]).reshape(B, K1, 1)  # per rung, chains together
        redrawn = np.asarray(res.diagnostics["redrawn"]).reshape(B, K1)
    else:
        weights = np.tile(np.repeat(lad, R), B)[:, None] * row_counts
        res = batched.run(model, weights, *args, num_samples=num_samples, **settings, **kwargs)  # checks `kernel`
        samples = {k: res.samples[k] for k in latent}
        divergent = np.asarray(res.diagnostics["num_divergent"]).reshape(B, K1, R)

    def make(args, kwargs):
        def fn(samples, row_counts, lad):
            def per_row(xs):
                s, c = xs
                ll = log_likelihood(model, s, *args, units=U, **kwargs)  # (S, U)
                return ll @ c, jnp.min(-ll), jnp.max(-ll)

            tot, lo, hi = jax.lax.map(per_row, (samples, row_counts), batch_size=8)
            ll = tot.reshape(B, K1, R, num_samples)
            est = jax.vmap(lambda x: _estimates(lad, x, num_batches))(ll)
            return est, jnp.min(lo), jnp.max(hi)

        return fn

    program = data_program("bounds_rate_ladder", model, args, kwargs, (U.key, B, K1, R, num_samples, num_batches),
                           make)
    (pooled, reps, bat), lo, hi = jax.device_get(
        program(samples, jnp.asarray(row_counts), jnp.asarray(lad)))
    reported = np.arange(K1 - rates.size, K1)
    # the draws at the reported rates, chains pooled: (B, K, R S, ...) (held-out risks, predictions)
    draws = {k: np.asarray(samples[k]).reshape((B, K1, R * num_samples) + np.shape(samples[k])[2:])[:, reported]
             for k in latent}
    return {"ladder": lad, "reported": reported, "samples": draws, "pooled": np.asarray(pooled),
            "reps": np.asarray(reps), "batches": np.asarray(bat), "loss_min": float(lo), "loss_max": float(hi),
            "divergent": divergent, "redrawn": redrawn,
            "num_samples": num_samples, "num_chains": R, "devices": res.devices}


def _ladder_checks(run, what):
    """(cautions, invalid reasons) of a rate ladder; warned here, recorded by the caller."""
    problems, invalid = [], []
    lad, S, R = run["ladder"], run["num_samples"], run["num_chains"]
    pooled = run["pooled"]
    if not np.all(np.isfinite(pooled)):
        invalid.append("some log Z or KL estimate is not finite (a loss of the draws is not finite)")
    frac = run["divergent"].sum(axis=2) / (R * S)  # (B, K1)
    if np.any(frac > 0):
        b, k = np.unravel_index(np.argmax(frac), frac.shape)
        # a rung above 1% is unusable, with every rung after it: `_rungs_ok` flags those rates
        problems.append(f"{int(run['divergent'].sum())} divergent transitions, most at learning rate "
                        f"{lad[k]:.4g} ({100 * frac[b, k]:.2g}% of its draws)"
                        + ("; above 1% the Gibbs posterior there is not explored (raise target_accept_prob or "
                           "reparameterise)" if frac[b, k] > _MAX_DIVERGENT_FRACTION else ""))
    se = _se(run["reps"][:, :, 0], run["batches"][:, :, 0], axis=1)  # (B, K1) SE of log Z
    gap = np.abs(pooled[:, 0] - pooled[:, 3])
    bad = gap > np.maximum(0.1, 2 * se)
    if np.any(bad):
        b, k = np.unravel_index(np.argmax(np.where(bad, gap, -1)), gap.shape)
        problems.append(f"the trapezoid rule's curvature correction reaches {gap[b, k]:.3g} nats at learning rate "
                        f"{lad[k]:.4g}, so log Z and KL there carry a discretisation error of that order; use more "
                        "learning rates (a denser ladder from 0)")
    # chains that disagree on E[L] at a rung (several modes of a non-convex loss, or no mixing): the SE there is
    # the between-replicate one, with R - 1 degrees of freedom, and the draws mix the modes by chance
    reported = run["reported"]
    between, within = _se_parts(run["reps"][:, :, 2], run["batches"][:, :, 2], axis=1)
    apart = (between > _MIXING_RATIO * within)[:, reported]
    if np.any(apart):
        w = lad[reported][np.any(apart, axis=0)]
        problems.append(f"the {R} chains disagree on the expected loss at {w.size} rate(s) ({w.min():.4g} to "
                        f"{w.max():.4g}): between-chain SE over {_MIXING_RATIO:g} times the within-chain SE (several "
                        "modes, as a non-convex loss can have, or slow mixing); the SE there is the between-chain one, "
                        f"with {R - 1} degrees of freedom, and the draws mix the modes in proportions set by chance")
    ok = _rungs_ok(run)
    if not np.all(ok[:, reported]):
        b, k = np.unravel_index(np.argmin(ok[:, reported]), ok[:, reported].shape)
        msg = (f"the estimates at learning rates >= {lad[reported][k]:.4g} are unusable (a rung with over 1% divergent "
               "transitions, a non-finite value, or a KL below 0 or falling with the rate, which KL(rho_w || pi) "
               "cannot do: chains that did not explore the Gibbs posterior); they are flagged in `rate_valid` and "
               "never chosen. Use a smaller top rate, more warm-up, or a better-conditioned model")
        (problems if np.any(ok[:, reported]) else invalid).append(msg)
    for p in invalid:
        warnings.warn(f"{what}: INVALID: {p}.", RuntimeWarning, stacklevel=4)
    for p in problems:
        warnings.warn(f"{what}: {p}.", RuntimeWarning, stacklevel=4)
    return problems, invalid, ok[:, reported]


def _rungs_ok(run, z=3.0):
    """(B, K1) whether each rung's estimates are usable; a bad rung spoils every later one (log Z is cumulative).

    KL(ρ_w‖π) is non-decreasing in w (its derivative is w Var_{ρ_w}(L) >= 0), so a KL estimate that falls
    by more than z standard errors from one rung to the next, or lies z SE below 0, means chains that did
    not explore their Gibbs posterior.
    """
    S, R = run["num_samples"], run["num_chains"]
    pooled = run["pooled"]
    kl = pooled[:, 1]
    se = _se(run["reps"][:, :, 1], run["batches"][:, :, 1], axis=1)
    good = np.all(np.isfinite(pooled), axis=1) & np.isfinite(se)
    good &= run["divergent"].sum(axis=2) / (R * S) <= _MAX_DIVERGENT_FRACTION
    good &= kl >= -z * se - 1e-3
    falls = kl[:, 1:] < kl[:, :-1] - z * np.sqrt(se[:, 1:] ** 2 + se[:, :-1] ** 2) - 1e-3
    good[:, 1:] &= ~falls
    return np.cumprod(good, axis=1).astype(bool)


_RUN_OPTIONS = ("num_warmup", "num_samples", "num_chains", "num_batches", "num_low_rungs", "dense_mass",
                "target_accept_prob", "progress", "shard", "chunk_size", "kernel")


def _split_options(kwargs):
    return {k: kwargs.pop(k) for k in list(kwargs) if k in _RUN_OPTIONS}


def _all_valid(res):
    """``res.rate_valid``, or all True when it was not recorded."""
    return np.ones(res.learning_rates.size, bool) if res.rate_valid is None else np.asarray(res.rate_valid)


def _frame(columns):
    import pandas as pd

    df = pd.DataFrame(columns)
    df.index.name = "rate"
    return df


@dataclasses.dataclass(frozen=True)
class KLToPrior:
    r"""KL(ρ_w ‖ π), log Z(w) and :math:`E_{\rho_w}[L]` of a Gibbs posterior at every rate of a ladder, with SEs.

    Returned by :func:`kl_to_prior`: :math:`\log Z(w) = -\int_0^w E_{\rho_t}[L]\,dt` (thermodynamic
    integration along the rate, Friel & Pettitt 2008) and :math:`\mathrm{KL}(\rho_w\|\pi) = -w E_{\rho_w}[L] - \log Z(w)`.

    Attributes:
        learning_rates: the rates w (K,), increasing.
        kl, kl_se: the KL divergence to the prior and its standard error (K,).
        log_z, log_z_se: the log normalising constant of :math:`e^{-wL}\pi` and its SE (K,).
        expected_loss, expected_loss_se: :math:`E_{\rho_w}[L]`, L the loss summed over the n units (K,).
        n: the number of observation units.
        valid: False when no number may be used (``diagnostics["invalid"]`` says why).
        rate_valid: (K,) whether the estimates at each rate are usable (None: all); a rate fails with
            over 1% divergent transitions, a non-finite value, or a KL below 0 or falling with w (KL is
            non-decreasing in w), and, log Z being cumulative, so does every higher rate.
        diagnostics: ``ladder`` (0, the low rungs and the rates), ``samples`` (dict latent site ->
            draws at each reported rate, chains pooled, shape ``(K, R S, ...)``), ``replicates``
            (R, 4, K) and ``batches`` (R M, 4, K) (rows log Z, KL, E[log-lik], uncorrected log Z),
            ``divergent`` (per rung and chain, (K1, R); with ChEES (K1, 1), a rung's chains
            together), ``redrawn_with_nuts`` (the ladder rates where ChEES failed and NUTS drew again),
            ``warnings``, ``invalid``, ``time_s``.

    Example:
        >>> import numpy as np
        >>> from genbayes.bounds import KLToPrior
        >>> r = KLToPrior(np.array([1.0, 2.0]), np.array([0.1, 0.3]), np.array([0.01, 0.02]), np.array([-5.0, -9.0]),
        ...               np.array([0.02, 0.03]), np.array([4.9, 4.4]), np.array([0.1, 0.1]), n=10, valid=True,
        ...               diagnostics={})
        >>> r
        KLToPrior(n=10, 2 rates 1..2, KL 0.1..0.3, valid=True)
        >>> list(r.to_dataframe().columns)[:3]
        ['learning_rate', 'kl', 'kl_se']
    """

    learning_rates: np.ndarray
    kl: np.ndarray
    kl_se: np.ndarray
    log_z: np.ndarray
    log_z_se: np.ndarray
    expected_loss: np.ndarray
    expected_loss_se: np.ndarray
    n: int
    valid: bool
    diagnostics: dict = dataclasses.field(repr=False)
    rate_valid: np.ndarray | None = None

    def __repr__(self):
        w = self.learning_rates
        return (f"KLToPrior(n={self.n}, {w.size} rates {w[0]:.4g}..{w[-1]:.4g}, KL {self.kl.min():.4g}.."
                f"{self.kl.max():.4g}, valid={self.valid})")

    def to_dataframe(self):
        """A pandas DataFrame, one row per learning rate."""
        return _frame({"learning_rate": self.learning_rates, "kl": self.kl, "kl_se": self.kl_se, "log_z": self.log_z,
                       "log_z_se": self.log_z_se, "expected_loss": self.expected_loss,
                       "expected_loss_se": self.expected_loss_se, "rate_valid": _all_valid(self)})


def _kl_record(run, rates, n, problems, invalid, t0, ok, b=0):
    """The :class:`KLToPrior` of data set b of a rate-ladder run (the rung at w = 0 dropped)."""
    import time

    k = run["reported"]
    p, reps, bat = run["pooled"][b][:, k], run["reps"][b][..., k], run["batches"][b][..., k]
    se = _se(reps, bat, axis=0)
    diag = {"ladder": run["ladder"], "samples": {k: v[b] for k, v in run["samples"].items()}, "replicates": reps,
            "batches": bat, "divergent": run["divergent"][b], "redrawn_with_nuts": run["ladder"][run["redrawn"][b]],
            "warnings": tuple(invalid) + tuple(problems), "invalid": tuple(invalid), "devices": run["devices"],
            "time_s": time.perf_counter() - t0}
    return KLToPrior(learning_rates=rates, kl=p[1], kl_se=se[1], log_z=p[0], log_z_se=se[0], expected_loss=-p[2],
                     expected_loss_se=se[2], n=n, valid=not invalid, diagnostics=diag, rate_valid=ok[b])


def kl_to_prior(model, *args, learning_rates, rng_key, units=None, **kwargs) -> KLToPrior:
    r"""KL(ρ_w ‖ π) and log Z(w) of a Gibbs posterior at every learning rate of a ladder, from one batched run.

    .. math:: \log Z(w) = -\int_0^w E_{\rho_t}[L]\,dt, \qquad \mathrm{KL}(\rho_w\|\pi) = -w\,E_{\rho_w}[L] - \log Z(w),

    :math:`\rho_w \propto e^{-wL}\pi`, :math:`L(\theta) = \sum_u \ell_u(\theta)` the loss summed over the
    observation units. The integral is the corrected trapezoid rule (Friel, Hurn & Wyse 2014, eq. 8)
    over the ladder 0, w_1, ..., w_K, stopped at each rate; all K + 1 rungs × ``num_chains`` chains
    are one batched ChEES (or NUTS) program (:func:`genbayes.batched.run`; see ``kernel`` below). The
    discretisation error is that of the ladder: give rates dense enough from 0 (a warning says when the curvature correction is
    large). Rates above 1 are allowed (w is a weight on the loss, not a temperature). A non-convex
    loss can give a Gibbs posterior several modes that no chain crosses at high rates; a warning
    names the rates where the chains disagree on :math:`E_{\rho_w}[L]` (between-chain SE over 3 times
    the within-chain one), whose SE is then the between-chain one.

    Args:
        model: a NumPyro model whose observed sites carry :class:`genbayes.Loss` (or wrapped in
            :class:`genbayes.gibbs`), written at learning rate 1, with a proper prior.
        *args, **kwargs: the model's arguments (data).
        learning_rates: the rates w_1 < ... < w_K (> 0).
        rng_key: JAX PRNG key.
        units: the observation units (:func:`genbayes.units.find`).
        **kwargs: also the run options ``num_warmup`` (500), ``num_samples`` (1000), ``num_chains`` (4,
            replicate ladders, >= 2), ``num_batches`` (10), ``num_low_rungs`` (16: extra rungs geometric
            from :math:`10^{-4} w_1` to :math:`w_1`, where :math:`E_t[L]` falls fastest from the prior's mean
            loss; integrated over, not reported), ``dense_mass`` (False),
            ``target_accept_prob`` (None: 0.8 for NUTS, 0.651 for ChEES), ``progress`` (False), ``shard``,
            ``chunk_size`` (8; see :func:`genbayes.batched.run`: the rows are in increasing rate, so a
            chunk holds neighbouring rates, whose NUTS trees are alike, and waits less for the deepest
            tree; ``None`` runs all rows as one vmap. Measured by ``benchmarks/bench_bounds.py --quick``
            on a loaded 2-core machine: 1.2 and 1.6 times faster warm than one vmap in two runs),
            ``kernel`` (default ``None``: ``"chees"``, or ``"nuts"`` with ``dense_mass=True``; ``"chees"``:
            one ChEES-HMC posterior per rate whose ``num_chains`` chains are the replicates, sharing its
            adapted step size, trajectory length and diagonal mass matrix (see :func:`genbayes.batched.run`),
            so every chain of a rate takes the same leapfrog steps; a rate where ChEES fails (over 1%
            divergent draws or a non-finite draw: on a steep Gibbs posterior one chain started far out can
            spoil the shared step size) is drawn again by a NUTS chain per replicate, and
            ``diagnostics["redrawn_with_nuts"]`` lists those rates. ``"nuts"``: a NUTS chain per rate and
            replicate throughout. Measured by ``benchmarks/bench_bounds.py --devices 2`` (idle 2 cores,
            32 rates × 2 chains × (500 + 1000), warm, equal draws, two runs): ChEES 2.35 / 2.52 s (no
            rate redrawn), NUTS in chunks of 8 5.21 / 5.45 s, a loop of compiled NUTS chains 9.47 /
            9.24 s, i.e. 4.0× / 3.7× the loop (about 3× at equal Monte Carlo error: ChEES's bound SEs
            were ~10% larger than NUTS's); in the sigmoid-loss test of ``tests/test_bounds.py`` (n = 120,
            rates to 120) ChEES failed at 2-3 of the 10 rates ≥ 32 on three of four keys, and the NUTS
            redraws matched quadrature. ChEES's mass matrix is diagonal: on strongly correlated
            posteriors it fails often (the power posteriors of the radiata pine regression: 20-22 of 33
            temperatures redrawn), and there ``kernel="nuts", dense_mass=True`` is faster).

    Returns:
        :class:`KLToPrior`.

    Raises:
        ValueError: bad rates, a model without a Loss site or with a scale on it, before compiling.

    Example:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, genbayes as gb
        >>> def model(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("x", gb.Loss(gb.losses.squared, mu), obs=x)
        >>> x = jnp.array([0.3, -0.5, 1.2, 0.8])
        >>> r = gb.bounds.kl_to_prior(model, x, learning_rates=jnp.linspace(0.25, 2.0, 8), num_warmup=150,
        ...                           num_samples=300, num_chains=2, num_low_rungs=4, rng_key=jax.random.PRNGKey(0))
        >>> v = 1 / (2.0 * 4 + 1.0); m = v * 2.0 * float(x.sum())        # closed form at w = 2
        >>> exact = 0.5 * (v + m**2 - 1 - jnp.log(v))
        >>> bool(abs(r.kl[-1] - exact) < 4 * r.kl_se[-1] + 0.02)
        True
    """
    import time

    t0 = time.perf_counter()
    check_key(rng_key)
    rates = _check_rates(learning_rates)
    opt = _split_options(kwargs)
    U, latent, _ = _gibbs_info(model, args, kwargs, rng_key, units)
    run = _rate_ladder(model, args, kwargs, rng_key, rates, U, latent, **opt)
    problems, invalid, ok = _ladder_checks(run, "kl_to_prior")
    return _kl_record(run, rates, U.num_units, problems, invalid, t0, ok)


# ---------------------------------------------------------------------------------------------
# PAC-Bayes
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PACBayes:
    r"""A PAC-Bayes bound on the expected risk of the Gibbs posterior at every rate of a ladder.

    Returned by :func:`pac_bayes` (bounds of Seeger 2002, Maurer 2004, Catoni 2007, McAllester 1999).
    Risks are in the loss's own units (range ``loss_range``): with
    probability at least 1 − δ over the data, :math:`E_{\rho_w} R \le` ``bound`` at every rate at once.

    Attributes:
        learning_rates: the rates w (K,).
        empirical_risk, empirical_risk_se: :math:`E_{\rho_w}[L]/n` and its SE.
        kl, kl_se: KL(ρ_w ‖ π) and its SE.
        bound, bound_se: the bound on :math:`E_{\rho_w} R` and its Monte Carlo SE.
        bound_type: ``"kl"``, ``"catoni"`` or ``"mcallester"``.
        delta: the confidence level δ (shared by the K rates through the union bound).
        loss_range: (a, b).
        n: the number of units.
        valid: False when no number may be used (``diagnostics["invalid"]``).
        diagnostics: as :class:`KLToPrior`'s, with ``kl_to_prior`` (the :class:`KLToPrior`).
        rate_valid: (K,) usable rates, as :class:`KLToPrior`'s; the minimising rate is chosen among them.

    Example:
        >>> import numpy as np
        >>> from genbayes.bounds import PACBayes
        >>> r = PACBayes(np.array([1.0, 4.0]), np.array([0.3, 0.2]), np.zeros(2), np.array([0.5, 3.0]), np.zeros(2),
        ...              np.array([0.45, 0.40]), np.zeros(2), "kl", 0.05, (0.0, 1.0), 100, True, {})
        >>> r.best_rate, r
        (4.0, PACBayes(bound='kl', delta=0.05, n=100, best rate 4 (bound 0.4, empirical risk 0.2), valid=True))
    """

    learning_rates: np.ndarray
    empirical_risk: np.ndarray
    empirical_risk_se: np.ndarray
    kl: np.ndarray
    kl_se: np.ndarray
    bound: np.ndarray
    bound_se: np.ndarray
    bound_type: str
    delta: float
    loss_range: tuple
    n: int
    valid: bool
    diagnostics: dict = dataclasses.field(repr=False)
    rate_valid: np.ndarray | None = None

    @property
    def best_index(self) -> int:
        """Index of the usable rate (``rate_valid``) with the smallest bound (the first on ties)."""
        return int(np.nanargmin(np.where(_all_valid(self), self.bound, np.inf)))

    @property
    def best_rate(self) -> float:
        """The learning rate minimising the bound (the guarantee holds there: union bound over the ladder)."""
        return float(self.learning_rates[self.best_index])

    @property
    def best_bound(self) -> float:
        """The smallest bound over the ladder."""
        return float(self.bound[self.best_index])

    def __repr__(self):
        k = self.best_index
        return (f"PACBayes(bound={self.bound_type!r}, delta={self.delta:g}, n={self.n}, best rate "
                f"{self.learning_rates[k]:.4g} (bound {self.bound[k]:.4g}, empirical risk "
                f"{self.empirical_risk[k]:.4g}), valid={self.valid})")

    def to_dataframe(self):
        """A pandas DataFrame, one row per learning rate."""
        return _frame({"learning_rate": self.learning_rates, "empirical_risk": self.empirical_risk,
                       "empirical_risk_se": self.empirical_risk_se, "kl": self.kl, "kl_se": self.kl_se,
                       "bound": self.bound, "bound_se": self.bound_se, "rate_valid": _all_valid(self)})

    def plot(self, ax=None, test_risk=None):
        """Bound and empirical risk against the learning rate (log axis), the minimising rate marked.

        Args:
            ax: a Matplotlib axes (default: a new figure).
            test_risk: optional held-out risks at the rates (array (K,)), drawn beside them.

        Returns:
            the axes.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        w = self.learning_rates
        for y, se, label in ((self.bound, self.bound_se, f"PAC-Bayes bound ({self.bound_type}, δ={self.delta:g})"),
                             (self.empirical_risk, self.empirical_risk_se, "empirical risk E_ρ[r̂]")):
            line, = ax.plot(w, y, marker="o", ms=3, label=label)
            ax.fill_between(w, y - 2 * se, y + 2 * se, color=line.get_color(), alpha=0.2, label="± 2 Monte Carlo SE")
        if test_risk is not None:
            ax.plot(w, np.asarray(test_risk), marker="s", ms=3, label="held-out risk E_ρ[R_test]")
        ax.axvline(self.best_rate, color="grey", ls="--", label=f"minimising rate w = {self.best_rate:.3g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate w")
        ax.set_ylabel(f"risk (loss range {self.loss_range[0]:g}..{self.loss_range[1]:g})")
        ax.set_title(f"Gibbs posterior: PAC-Bayes bound against the learning rate (n = {self.n})")
        ax.legend()
        return ax


def default_rates(n, loss_range=(0.0, 1.0), num=32):
    r"""The default ladder of :func:`pac_bayes`: ``num`` rates with :math:`w(b - a)` geometric from 0.1 to :math:`4\sqrt n`.

    Catoni's constant :math:`C = w(b - a)` (Catoni 2007, Thm. 1.2.6) ranges from nearly the prior
    (C = 0.1: the empirical risk counts for little) to :math:`4\sqrt n`, past the :math:`C \sim \sqrt n`
    where the bounds of a noisy problem are usually smallest; a nearly separable problem can gain from
    higher rates (pass them), whose Gibbs posteriors are also harder for NUTS to explore.

    Example:
        >>> from genbayes.bounds import default_rates
        >>> r = default_rates(100, (0.0, 2.0), num=3)
        >>> [round(v, 4) for v in r.tolist()]
        [0.05, 1.0, 20.0]
    """
    a, b = loss_range
    return np.geomspace(0.1, 4.0 * math.sqrt(n), num) / (b - a)


def _bound_curves(risk, kl, n, rates, loss_range, delta, bound):
    """The bound (in loss units) for risks (normalised) and KLs of shape (..., K)."""
    a, b = loss_range
    c = rates * (b - a) if bound == "catoni" else None
    r = np.clip(risk, 0.0, 1.0)  # Monte Carlo rounding at the ends of the range
    kl = np.maximum(kl, 0.0)  # a KL estimate below 0 is Monte Carlo error; the bound grows with KL
    return a + (b - a) * pac_bayes_bound(r, kl, n, delta=delta, bound=bound, num_rates=rates.size, c=c)


def pac_bayes(model, *args, learning_rates=None, rng_key, delta=0.05, bound="kl", loss_range=None, units=None,
              **kwargs) -> PACBayes:
    r"""PAC-Bayes bounds on the expected risk of the Gibbs posterior at every learning rate, from one batched run.

    For a loss with every unit's value in :math:`[a, b]` and n i.i.d. units, with probability at least
    1 − δ over the data, for every rate w of the ladder at once,

    .. math:: E_{\rho_w} R(\theta) \le a + (b - a)\,B\big(\hat r_w, \mathrm{KL}(\rho_w\|\pi), n, \delta/K\big),

    :math:`R(\theta) = E_x\,\ell(\theta, x)` the risk, :math:`\hat r_w = (E_{\rho_w}[L]/n - a)/(b - a)` the
    normalised empirical risk and B one of :func:`pac_bayes_bound`'s bounds: ``"kl"`` (Seeger 2002;
    Maurer 2004), ``"catoni"`` (Catoni 2007, Thm. 1.2.6, with :math:`C = w(b-a)`, the constant for
    which ρ_w is the bound's minimiser) or ``"mcallester"`` (McAllester 1999). The union bound over
    the K rates (each at δ/K) makes the guarantee hold at the rate chosen afterwards, ``best_rate``.
    KL and :math:`E_{\rho_w}[L]` come from :func:`kl_to_prior`'s ladder.

    The guarantee concerns :math:`E_{\rho_w} R` for the loss in the model; for a surrogate (sigmoid)
    trained loss, :math:`1\{sf \le 0\} \le 2\,\mathrm{sigmoid}_c(f)`, so the 0–1 risk is at most twice it.
    Estimates are Monte Carlo: ``bound_se`` is the bound's standard error (replicate ladders and
    batch means), not part of the guarantee.

    Args:
        model: NumPyro model with :class:`genbayes.Loss` observed sites at rate 1 (or ``gb.gibbs``-wrapped).
        *args, **kwargs: the model's arguments (data).
        learning_rates: increasing rates (default :func:`default_rates`: 32 rates, :math:`w(b-a)`
            from 0.1 to :math:`4\sqrt n`); fixed before seeing the data.
        rng_key: JAX PRNG key.
        delta: δ in (0, 1).
        bound: ``"kl"`` (the tightest), ``"catoni"`` or ``"mcallester"``.
        loss_range: (a, b) bounding each unit's loss; default the losses' ``loss_range``
            (:func:`genbayes.losses.sigmoid`). Checked on the data at a prior draw before sampling
            and at every draw after.
        units: the observation units (:func:`genbayes.units.find`).
        **kwargs: also the run options of :func:`kl_to_prior`.

    Returns:
        :class:`PACBayes` (``.plot()`` draws bound and empirical risk against the rate).

    Raises:
        ValueError: δ outside (0, 1), an unknown bound, no Loss site, no known range, a loss outside
            the range on the data (before compiling when found at the prior draw), bad rates.

    Example:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, genbayes as gb
        >>> def model(x, y):
        ...     b = numpyro.sample("b", dist.Normal(0.0, 3.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("y", gb.Loss(gb.losses.sigmoid(0.5), b * x), obs=y)
        >>> x = jax.random.normal(jax.random.PRNGKey(0), (200,)); y = (x + 0.5 * jax.random.normal(
        ...     jax.random.PRNGKey(1), (200,)) > 0).astype(int)
        >>> r = gb.bounds.pac_bayes(model, x, y, learning_rates=jnp.geomspace(0.5, 200.0, 6), rng_key=jax.random.PRNGKey(2),
        ...                         num_warmup=100, num_samples=200, num_chains=2, num_low_rungs=6)
        >>> bool(r.empirical_risk[r.best_index] < r.best_bound < 0.5)
        True
    """
    import time

    t0 = time.perf_counter()
    check_key(rng_key)
    check_open_unit_interval(delta, "delta", hint=" It is the probability that the bound fails, e.g. 0.05.")
    _check_choice(bound, "bound", BOUNDS)
    opt = _split_options(kwargs)
    U, latent, tr = _gibbs_info(model, args, kwargs, rng_key, units)
    loss_range = _resolve_range(loss_range, tr, U)
    rates = _check_rates(default_rates(U.num_units, loss_range) if learning_rates is None else learning_rates)
    lu = _unit_losses_at_trace(model, args, kwargs, tr, latent, U)
    _check_in_range(lu.min(), lu.max(), loss_range, "at a prior draw")
    run = _rate_ladder(model, args, kwargs, rng_key, rates, U, latent, **opt)
    _check_in_range(run["loss_min"], run["loss_max"], loss_range, "at the posterior draws")
    problems, invalid, ok = _ladder_checks(run, "pac_bayes")
    klr = _kl_record(run, rates, U.num_units, problems, invalid, t0, ok)
    k = run["reported"]
    return _pac_record(klr, run["reps"][0][..., k], run["batches"][0][..., k], rates, loss_range, delta, bound, t0)


def _pac_record(klr, reps, bat, rates, loss_range, delta, bound, t0):
    import time

    n = klr.n
    a, b = loss_range
    norm = lambda e_ll: (-e_ll / n - a) / (b - a)  # noqa: E731  E[log-lik] -> normalised empirical risk
    curve = lambda x: _bound_curves(norm(x[..., 2, :]), x[..., 1, :], n, rates, loss_range, delta, bound)  # noqa: E731
    emp = klr.expected_loss / n
    bnd = _bound_curves(norm(-klr.expected_loss), klr.kl, n, rates, loss_range, delta, bound)
    bse = _se(curve(reps), curve(bat), axis=0)
    diag = dict(klr.diagnostics, kl_to_prior=klr, time_s=time.perf_counter() - t0)
    return PACBayes(learning_rates=rates, empirical_risk=emp, empirical_risk_se=klr.expected_loss_se / n, kl=klr.kl,
                    kl_se=klr.kl_se, bound=bnd, bound_se=bse, bound_type=bound, delta=float(delta),
                    loss_range=(a, b), n=n, valid=klr.valid, diagnostics=diag, rate_valid=klr.rate_valid)


# ---------------------------------------------------------------------------------------------
# the information-theoretic bound
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MutualInformationBound:
    r"""The Xu–Raginsky bound :math:`\sqrt{2\sigma^2 I(W;S)/n}` on the expected generalization gap, at every rate.

    Returned by :func:`mutual_information_bound` (Xu & Raginsky 2017, Thm. 1); :math:`I(W;S) \le E_S\,\mathrm{KL}(\rho_S\|\pi)` is
    estimated by the mean KL over ``num_datasets`` bootstrap data sets.

    Attributes:
        learning_rates: the rates w (K,).
        mean_kl, mean_kl_se: the mean over data sets of KL(ρ_S ‖ π) and its SE (data sets and Monte Carlo).
        bound: :math:`\sqrt{2\sigma^2\,\overline{\mathrm{KL}}/n}` (K,).
        empirical_risk: mean over data sets of :math:`E_{\rho_S}[L]/n` (K,).
        sigma: the sub-Gaussian constant σ of the loss.
        n: the number of units.
        num_datasets: the number of bootstrap data sets.
        valid: False when no number may be used.
        rate_valid: (K,) rates usable on every bootstrap data set (as :class:`KLToPrior`'s).
        diagnostics: ``kl`` and its Monte Carlo SE ``kl_se`` (num_datasets, K), ``empirical_risk``
            (num_datasets, K), ``counts`` (the bootstrap counts of the units),
            ``warnings``, ``invalid``, ``time_s``.

    Example:
        >>> import numpy as np
        >>> from genbayes.bounds import MutualInformationBound
        >>> MutualInformationBound(np.array([1.0]), np.array([2.0]), np.array([0.1]), np.array([0.1]),
        ...                        np.array([0.3]), 0.5, 100, 8, True, {})
        MutualInformationBound(sigma=0.5, n=100, 8 data sets, 1 rates, bound 0.1..0.1, valid=True)
    """

    learning_rates: np.ndarray
    mean_kl: np.ndarray
    mean_kl_se: np.ndarray
    bound: np.ndarray
    empirical_risk: np.ndarray
    sigma: float
    n: int
    num_datasets: int
    valid: bool
    diagnostics: dict = dataclasses.field(repr=False)
    rate_valid: np.ndarray | None = None

    def __repr__(self):
        return (f"MutualInformationBound(sigma={self.sigma:g}, n={self.n}, {self.num_datasets} data sets, "
                f"{self.learning_rates.size} rates, bound {self.bound.min():.4g}..{self.bound.max():.4g}, "
                f"valid={self.valid})")

    def to_dataframe(self):
        """A pandas DataFrame, one row per learning rate."""
        return _frame({"learning_rate": self.learning_rates, "mean_kl": self.mean_kl, "mean_kl_se": self.mean_kl_se,
                       "bound": self.bound, "empirical_risk": self.empirical_risk, "rate_valid": _all_valid(self)})


def mutual_information_bound(model, *args, learning_rates, rng_key, num_datasets=16, sigma=None, loss_range=None,
                             units=None, **kwargs) -> MutualInformationBound:
    r"""The Xu–Raginsky bound on the expected generalization gap of the Gibbs posterior, at every rate.

    For a loss that is σ-sub-Gaussian under the data distribution at every θ (a loss in [a, b] is
    (b − a)/2-sub-Gaussian, Hoeffding 1963), the randomized learner W ~ ρ_S trained on S of n i.i.d.
    units has

    .. math:: \big|E[R(W) - \hat R_S(W)]\big| \le \sqrt{2\sigma^2 I(W; S)/n}

    (Xu & Raginsky 2017, Thm. 1; Russo & Zou 2016), and :math:`I(W;S) = E_S\,\mathrm{KL}(\rho_S\|\bar\rho)
    \le E_S\,\mathrm{KL}(\rho_S\|\pi)` for any data-free π (the mixture :math:`\bar\rho = E_S\rho_S`
    minimises the mean KL). The expectation over S is estimated by ``num_datasets`` bootstrap
    resamples of the units (multinomial counts c_b, the Gibbs posterior :math:`\propto e^{-w\sum_u c_{bu}
    \ell_u}\pi`), each KL by :func:`kl_to_prior`'s ladder; all data sets × rates × chains are one batched
    program. The bootstrap stands in for fresh data sets from the population (an approximation:
    resamples repeat units), so the result estimates the bound rather than certifying it.

    Args:
        model, *args, **kwargs: as :func:`kl_to_prior` (with its run options).
        learning_rates: increasing rates (> 0).
        rng_key: JAX PRNG key (resamples and chains).
        num_datasets: bootstrap data sets (>= 2).
        sigma: the sub-Gaussian constant; default (b − a)/2 from ``loss_range``.
        loss_range: (a, b), needed when ``sigma`` is not given; default the loss's ``loss_range``.
        units: the observation units.

    Returns:
        :class:`MutualInformationBound`.

    Example:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, genbayes as gb
        >>> def model(x, y):
        ...     b = numpyro.sample("b", dist.Normal(0.0, 3.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("y", gb.Loss(gb.losses.sigmoid(0.5), b * x), obs=y)
        >>> x = jax.random.normal(jax.random.PRNGKey(0), (50,)); y = (x > 0).astype(int)
        >>> r = gb.bounds.mutual_information_bound(model, x, y, learning_rates=jnp.array([1.0, 4.0, 16.0]),
        ...         num_datasets=2, rng_key=jax.random.PRNGKey(1), num_warmup=100, num_samples=100, num_chains=2,
        ...         num_low_rungs=4)
        >>> bool(r.bound[0] < r.bound[-1] < 0.5)                   # more information at a higher rate
        True
    """
    import time

    t0 = time.perf_counter()
    check_key(rng_key)
    rates = _check_rates(learning_rates)
    _check_int(num_datasets, "num_datasets", 2)
    opt = _split_options(kwargs)
    U, latent, tr = _gibbs_info(model, args, kwargs, rng_key, units)
    if sigma is None:
        a, b = _resolve_range(loss_range, tr, U)
        sigma = (b - a) / 2.0
    elif not (isinstance(sigma, (int, float, np.floating, np.integer)) and np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"`sigma` (the sub-Gaussian constant of the loss) must be a finite number > 0, got {sigma!r}.")
    n = U.num_units
    key_boot, key_run = jax.random.split(rng_key)
    idx = np.asarray(jax.random.randint(key_boot, (num_datasets, n), 0, n))
    counts = np.stack([np.bincount(i, minlength=n) for i in idx]).astype(float)
    run = _rate_ladder(model, args, kwargs, key_run, rates, U, latent, counts, **opt)
    problems, invalid, ok = _ladder_checks(run, "mutual_information_bound")
    k = run["reported"]
    kl = run["pooled"][:, 1, k]  # (B, K)
    kl_mc_se = _se(run["reps"][:, :, 1, k], run["batches"][:, :, 1, k], axis=1)
    mean_kl = kl.mean(axis=0)
    se = np.sqrt(kl.var(axis=0, ddof=1) / num_datasets + np.mean(kl_mc_se**2, axis=0) / num_datasets)
    risk = -run["pooled"][:, 2, k] / n
    diag = {"kl": kl, "kl_se": kl_mc_se, "empirical_risk": risk, "counts": counts, "ladder": run["ladder"],
            "warnings": tuple(invalid) + tuple(problems), "invalid": tuple(invalid), "time_s": time.perf_counter() - t0}
    return MutualInformationBound(learning_rates=rates, mean_kl=mean_kl, mean_kl_se=se,
                                  bound=np.sqrt(2 * sigma**2 * np.maximum(mean_kl, 0.0) / n),
                                  empirical_risk=risk.mean(axis=0), sigma=float(sigma), n=n,
                                  num_datasets=int(num_datasets), valid=not invalid, diagnostics=diag,
                                  rate_valid=np.all(ok, axis=0))
