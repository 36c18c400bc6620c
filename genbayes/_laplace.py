r"""The Laplace approximation of the log evidence, at the best of several modes of the unconstrained log joint.

.. math:: \log Z \approx \log p(x, \hat z) + \tfrac d2 \log 2\pi - \tfrac12 \log\det H,

:math:`\hat z` the maximiser of the log joint in the unconstrained space (log-Jacobian included) and H
its negative Hessian there (Tierney & Kadane 1986, eq. 2.6). L-BFGS (Optax) runs from
``num_starts`` points at once, one vmapped program: the median of 15 prior draws (a uniform point
in (-2, 2) of the unconstrained space where that median has no finite log joint, as NumPyro
initialises MCMC) and ``num_starts - 1`` prior draws. The highest log joint is kept; every start's end value is recorded,
and starts that end at other optima are reported (a multimodal posterior, whose other modes'
mass the approximation ignores). Where the Hessian at the best point is not positive definite
there is no Laplace approximation (typically a funnel: a scale parameter heading to 0) and a
:class:`LaplaceError` says so and names the coordinate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._evidence_core import _check_int, _program, _starts_at_prior, _warn
from ._validation import EstimatorFailure

# A start ending this far (Mahalanobis distance under the Laplace covariance) from the best mode, or
# this many nats below it, reached another optimum.
_DISTINCT_DISTANCE = 3.0
_DISTINCT_NATS = 0.1
# Other optima more than this many nats below the best carry negligible mass (e^-10 relative).
_NEGLIGIBLE_NATS = 10.0
# An unconstrained coordinate beyond this (e^-20 ~ 2e-9) is at a boundary of its support.
_EXTREME = 20.0


class LaplaceError(EstimatorFailure):
    """The Laplace approximation does not exist at the best point found (no strict local maximum)."""


def _labels(z0):
    """Names of the flat coordinates, in ``ravel_pytree`` order, and the per-site (name, shape, offset)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(z0)
    labels, layout, off = [], [], 0
    for path, leaf in leaves:
        name = ".".join(str(getattr(p, "key", p)) for p in path)
        shape = np.shape(leaf)
        size = int(np.prod(shape, dtype=int))
        labels += [name] if shape == () else [f"{name}[{', '.join(map(str, i))}]" for i in np.ndindex(shape)]
        layout.append((name, shape, off))
        off += size
    return labels, layout


def _laplace_program(max_iter, tol, num_starts):
    import optax

    opt = optax.lbfgs()

    def body(flat, key):
        logp = flat.log_density(jnp.asarray(1.0))
        f = lambda x: -logp(x)  # noqa: E731
        value_and_grad = optax.value_and_grad_from_state(f)

        def minimise(x0):
            def step(carry):
                x, state, i = carry
                value, grad = value_and_grad(x, state=state)
                updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
                return optax.apply_updates(x, updates), state, i + 1

            def cond(carry):
                x, state, i = carry
                g = optax.tree_utils.tree_get(state, "grad")
                return (i == 0) | ((i < max_iter) & (jnp.max(jnp.abs(g)) > tol))

            x, _, it = jax.lax.while_loop(cond, step, (x0, opt.init(x0), 0))
            return x, it

        k_median, k_uniform, k_starts = jax.random.split(key, 3)
        # the first start, as NumPyro's MCMC initialises but inside this program: the median of 15 prior
        # draws (per unconstrained coordinate), or a uniform draw in (-2, 2) of the unconstrained space
        # where the log joint is not finite at that median (a vague prior's draws underflow to 0)
        median = jnp.median(flat.sample_prior(k_median, 15), axis=0)
        uniform = jax.random.uniform(k_uniform, median.shape, median.dtype, -2.0, 2.0)
        x0 = jnp.where(jnp.isfinite(f(median)) & jnp.all(jnp.isfinite(median)), median, uniform)
        starts = (jnp.concatenate([x0[None], flat.sample_prior(k_starts, num_starts - 1)]) if num_starts > 1
                  else x0[None])
        f0 = jax.vmap(f)(starts)
        # a prior draw can sit where the log joint is not finite (e.g. a precision that underflowed to 0)
        usable = jnp.isfinite(f0) & jnp.all(jnp.isfinite(starts), axis=1)
        starts = jnp.where(usable[:, None], starts, x0)
        xs, its = jax.vmap(minimise)(starts)
        fx = jax.vmap(f)(xs)
        gmax = jax.vmap(lambda x: jnp.max(jnp.abs(jax.grad(f)(x))))(xs)
        best = jnp.argmin(jnp.where(jnp.isfinite(fx), fx, jnp.inf))
        H = jax.hessian(f)(xs[best])
        return xs, fx, gmax, its, usable, best, H

    return body


def _laplace(model, args, kwargs, rng_key, *, max_iter=1000, tol=1e-6, num_starts=8, units):
    r"""Multi-start Laplace approximation of the log evidence (Tierney & Kadane 1986, eq. 2.6).

    :math:`\log Z \approx \log p(x, \hat z) + \tfrac d2 \log 2\pi - \tfrac12 \log\det H` at the best of
    ``num_starts`` L-BFGS runs (the median of 15 prior draws and ``num_starts - 1`` prior draws, one
    vmapped program that also finds the starts: nothing runs eagerly before it).

    Args:
        model, args, kwargs: the model (a conjugate family moved into ``args``) and its arguments.
        rng_key: key of the prior draws that start L-BFGS.
        max_iter, tol: L-BFGS iterations and the gradient max-norm at which it stops.
        num_starts: number of starts (>= 1).
        units: the tempered likelihood's units (:func:`genbayes.evidence._evidence_units`).

    Returns:
        ``(log_z, 0.0, diag)``; ``diag`` has ``mode``, ``start_log_joint`` (every start's end value),
        ``start_grad_max``, ``start_iterations``, ``start_distance`` (Mahalanobis, under the Laplace
        covariance, from the best), ``num_distinct_starts``, ``hessian_eigenvalues``. Not converged:
        invalid. Other optima: a caution.

    Raises:
        LaplaceError: (an :class:`genbayes.evidence.EstimatorFailure`) when the best point has no
            numerically positive-definite Hessian, or L-BFGS is still climbing towards a boundary.

    Example:
        >>> import jax, jax.numpy as jnp, genbayes as gb
        >>> from genbayes.evidence import log_evidence
        >>> fam = gb.conjugate.NormalKnownVariance(0.0, 1.0, 1.0)
        >>> ev = log_evidence(fam, jnp.array([0.5, 1.5]), method="laplace", rng_key=jax.random.PRNGKey(0))
        >>> ev.diagnostics["start_log_joint"].shape, ev.diagnostics["num_distinct_starts"]
        ((8,), 0)
    """
    _check_int(max_iter, "max_iter", 1)
    _check_int(num_starts, "num_starts", 1)
    if not (isinstance(tol, (int, float, np.floating)) and np.isfinite(tol) and tol > 0):
        raise ValueError(f"`tol` must be a positive finite number (gradient max-norm at which L-BFGS stops), got {tol!r}.")
    _starts_at_prior(units, "method='laplace'", "Drop `sites` (approximate the evidence of all observed sites), or "
                                                "use 'stepping_stone'/'thermodynamic', whose ladder starts from the "
                                                "posterior given the other sites.")
    run = _program("laplace", model, args, kwargs, units, (max_iter, tol, num_starts),
                   _laplace_program(max_iter, tol, num_starts), rng_key)
    labels, layout = _labels(run.z0)
    d = len(labels)
    xs, fx, gmax, its, usable, best, H = jax.device_get(run(rng_key))
    best = int(best)
    x, H = np.asarray(xs[best]), np.asarray(H)
    diag = {
        "mode": {name: x[off:off + int(np.prod(shape, dtype=int))].reshape(shape) for name, shape, off in layout},
        "iterations": int(its[best]), "grad_max": float(gmax[best]), "dim": d,
        "num_starts": num_starts, "best_start": best,
        "start_log_joint": -np.asarray(fx), "start_grad_max": np.asarray(gmax),
        "start_iterations": np.asarray(its), "start_usable": np.asarray(usable),
    }
    if not np.isfinite(fx[best]):
        raise LaplaceError("method='laplace': the log joint is not finite at the end of every L-BFGS start, so "
                           "there is no mode to approximate; check the model's support and data, or use "
                           f"{_alternatives()}.")
    H = 0.5 * (H + H.T)
    eig, vec = (np.linalg.eigh(H) if np.all(np.isfinite(H)) else (np.full(d, np.nan), np.eye(d)))
    diag["hessian_eigenvalues"] = eig
    converged = bool(gmax[best] <= 1e3 * tol)
    # a positive (or bounded) parameter at its boundary sits at an extreme unconstrained value
    extreme = [int(i) for i in np.argsort(-np.abs(x)) if abs(x[i]) > _EXTREME][:3]
    # numerically positive definite: the smallest eigenvalue above rounding of the largest
    pd = bool(np.all(np.isfinite(eig)) and eig[0] > 100 * d * np.finfo(H.dtype).eps * eig[-1])
    if not pd or (not converged and extreme):
        k = int(np.nanargmax(np.abs(vec[:, 0])))
        why = (f"the Hessian of the log joint is not positive definite there, numerically (eigenvalues "
               f"{eig[0]:.3g} .. {eig[-1]:.3g}, the smallest mostly along {labels[k]!r})" if not pd else
               "the log joint is still increasing there, towards a boundary of the support")
        where = ("; at the boundary: " + ", ".join(
            f"{labels[i]!r} unconstrained {x[i]:.3g} (e^{x[i]:.3g} = {np.exp(x[i]):.3g})" for i in extreme)
            if extreme else "")
        # flat only where L-BFGS stopped at a stationary point; still climbing is a funnel or a boundary
        flat = converged and bool(np.all(np.isfinite(eig)) and abs(eig[0]) <= 1e-8 * max(abs(eig[-1]), 1.0))
        cause = (f"The log joint is (nearly) flat along {labels[k]!r}: a latent it does not depend on (no proper "
                 "prior, e.g. an imputed masked value) or a parameter the data and prior do not identify"
                 if flat and not extreme else
                 "Typically a funnel, a scale parameter heading to 0 (its log to -inf) as in a centred hierarchical "
                 "model, where the density grows without bound, or another boundary of the support")
        raise LaplaceError(
            f"method='laplace': no mode for the Laplace approximation: at the best of {num_starts} L-BFGS "
            f"starts (gradient max-norm {gmax[best]:.3g} after {int(its[best])} iterations{where}) {why}. "
            f"{cause}. The Laplace approximation does not exist for this model; use {_alternatives()}.")
    log_z = float(-fx[best] + 0.5 * d * np.log(2 * np.pi) - 0.5 * np.sum(np.log(eig)))
    problems, invalid = [], []
    if not converged:
        invalid.append(f"L-BFGS stopped with gradient max-norm {float(gmax[best]):.3g} after {int(its[best])} "
                       "iterations at the best start: not at a mode (raise `max_iter`, or use "
                       f"{_alternatives()})")
    # other optima: converged starts that end far from the best (in posterior sd units) or lower
    ok = np.isfinite(fx) & (gmax <= 1e3 * tol)
    delta = xs - x
    dist = np.sqrt(np.maximum(np.einsum("si,ij,sj->s", delta, H, delta), 0.0))
    distinct = ok & ((dist > _DISTINCT_DISTANCE) | (fx - fx[best] > _DISTINCT_NATS))
    diag["start_distance"] = dist
    diag["num_distinct_starts"] = int(distinct.sum())
    if distinct.any():
        gaps = fx[distinct] - fx[best]
        what = (f"{int(distinct.sum())} of {num_starts} starts ended at other optima (log joint lower by "
                f"{gaps.min():.3g} to {gaps.max():.3g} nats, up to {dist[distinct].max():.1f} posterior sds away)")
        if gaps.min() > _NEGLIGIBLE_NATS:
            problems.append(what + ": local modes of negligible mass; the best one is used (a single start "
                            "could have returned a local mode)")
        else:
            problems.append(what + ": the posterior is multimodal and the Laplace approximation at the best "
                            f"mode ignores the others' mass; use {_alternatives()}")
    # prior draws whose log joint was not finite started from the first start instead
    diag["num_unusable_starts"] = int((~np.asarray(usable)).sum())
    _warn(problems, "laplace", diag, invalid=invalid)
    return log_z, 0.0, diag


def _alternatives():
    from .evidence import METHODS

    names = [m for m in ("smc", "stepping_stone", "thermodynamic", "bridge") if m in METHODS]
    return "method=" + " / ".join(repr(m) for m in names)
