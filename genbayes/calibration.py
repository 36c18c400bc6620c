r"""Learning-rate selection for Gibbs posteriors: ``gb.calibrate(model, *args, method=...)``.

The Gibbs posterior :math:`\pi_w(\theta \mid x) \propto \exp(-w \sum_i \ell(\theta, x_i))\,\pi(\theta)`
(Bissiri, Holmes & Walker 2016) is only as good as its learning rate w. Three ways to choose it:

- ``"llb"`` — information matching (Lyddon, Holmes & Walker 2019): make the Gibbs posterior's
  asymptotic covariance :math:`(w n J)^{-1}` match the sandwich :math:`J^{-1} I J^{-1}/n` of the
  loss minimiser in trace, :math:`w = \mathrm{tr}(J I^{-1} J^\top)/\mathrm{tr}(J)`. Cheap: no sampling.
- ``"gpc"`` — generalized posterior calibration (Syring & Martin 2019): tune w by stochastic
  approximation until the 100(1−α)% credible regions of bootstrap Gibbs posteriors cover the
  full-data loss minimiser with frequency 1 − α.
- ``"safebayes"`` — SafeBayes (Grünwald & van Ommen 2017): the w on a grid in (0, 1] that
  minimises the cumulative prequential posterior-expected loss.
- ``"pac-bayes"`` — the w on a ladder fixed in advance that minimises a PAC-Bayes bound on the
  expected risk :math:`E_{\rho_w} R` of a bounded loss (:func:`genbayes.bounds.pac_bayes`).

They target different things. ``llb`` and ``gpc`` target *coverage*: credible regions for the
loss minimiser θ* of the right frequentist size (llb asymptotically, gpc at the sample size).
``safebayes`` targets *prediction*: the posterior-expected (log-)loss of the next observation.
``pac-bayes`` targets *risk with a certificate*: the rate whose randomized predictor has the
smallest guaranteed upper bound on its expected loss (holding with probability 1 − δ, union bound
over the ladder); it cares nothing about the width of credible regions, and its rate grows with
n more slowly than a coverage-calibrated one would need to.

The model is an ordinary NumPyro model whose observed sites carry a :class:`genbayes.losses.Loss`
(or that is wrapped in :class:`genbayes.gibbs`), written at learning rate 1: the returned rate is
the absolute w, to be applied with ``gb.gibbs(..., learning_rate=w)``, ``gb.tempered`` or
``numpyro.handlers.scale``. Use float64 (``numpyro.enable_x64()``) for accurate minimisers.

**Units.** Every method works on the observation units of :mod:`genbayes.units` (``units=``;
default: the elements of the outermost plate of the observed sites), not on single entries:
:math:`\ell_u` sums the loss over unit u's entries (several observed sites of different sizes,
a multivariate observation, a group of observations), masked entries take no part, and n is
the number of units. The bootstraps of gpc resample units (declared groups give the cluster
bootstrap), LLB's I is the covariance of per-unit scores (the cluster-robust sandwich, Liang &
Zeger 1986), SafeBayes predicts unit t+1 from units 1..t. Subsampled plates are refused.

**Hierarchical models.** Latent sites *local* to the units (found by tracing: inside the unit
plate or the outermost plate of an observed site, or with a coordinate that enters the loss of
at most one unit; e.g. ``theta_j`` of eight schools, or the ``y_unobserved`` that ``obs_mask`` imputes) have a
dimension that grows with the units, so no sandwich exists for them: ``llb`` refuses such models
with a ValueError naming the sites, and ``gpc`` (which does not need LLB) calibrates the coverage
of the *global* parameters, its bootstrap posteriors integrating the local ones.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import constrain_fn
from numpyro.primitives import Messenger

from . import batched
from ._programs import data_program
from ._validation import NonFiniteLoss, check_args_finite, check_key, is_concrete
from .fisher import _observed_sites, _trace, sandwich

__all__ = ["calibrate", "Calibration", "loss_minimizer", "METHODS"]

METHODS = ("llb", "gpc", "safebayes", "pac-bayes")
"""The values of ``calibrate(method=...)``."""


@dataclasses.dataclass(frozen=True)
class Calibration:
    r"""A calibrated learning rate w of the Gibbs posterior :math:`\pi_w \propto e^{-w\sum_i \ell(\theta, x_i)}\pi(\theta)`.

    Returned by :func:`calibrate`; the rate comes from information matching (Lyddon, Holmes &
    Walker 2019, §3), generalized posterior calibration (Syring & Martin 2019, Algorithm 1) or
    SafeBayes (Grünwald & van Ommen 2017, §4). ``to_dataframe()`` gives the iteration path
    (gpc), the grid (safebayes) or one row (llb).

    Attributes:
        learning_rate: the chosen w (a float).
        method: ``"llb"``, ``"gpc"`` or ``"safebayes"``.
        diagnostics: method-specific record: ``theta_hat`` (the loss minimiser) and ``n`` always;
            ``I``, ``J``, ``bandwidths`` (llb); ``path`` (dict of per-iteration lists
            ``learning_rate``, ``coverage``, ``source`` — ``"nuts"`` or ``"importance"`` —,
            ``ess_min`` and ``num_divergent``), ``converged``, ``B``, ``alpha``, ``tol``,
            ``region`` (gpc); ``grid``, ``cumulative_loss``, ``expected_loss``, ``start`` (safebayes).

    Example:
        >>> from genbayes.calibration import Calibration
        >>> cal = Calibration(learning_rate=0.25, method="llb", diagnostics={"n": 50})
        >>> cal
        Calibration(method='llb', learning_rate=0.25, n=50)
        >>> cal.to_dataframe()
           learning_rate   n
        0           0.25  50
    """

    learning_rate: float
    method: str
    diagnostics: dict = dataclasses.field(repr=False)

    def __repr__(self):
        d = self.diagnostics
        extra = ""
        if self.method == "gpc":
            p = d["path"]
            extra = (
                f", iterations={len(p['learning_rate'])}, coverage={p['coverage'][-1]:.3f} "
                f"(target {1 - d['alpha']:.3f}, B={d['B']}), converged={d['converged']}"
            )
        elif self.method == "safebayes":
            extra = f", grid={len(d['grid'])} rates, start={d['start']}"
        elif self.method == "llb":
            extra = f", n={d['n']}"
        elif self.method == "pac-bayes":
            extra = f", bound={d['bound']:.4g} ({d['bound_type']}, delta={d['delta']:g}), n={d['n']}"
        return f"Calibration(method={self.method!r}, learning_rate={self.learning_rate:.4g}{extra})"

    def to_dataframe(self):
        """A pandas DataFrame: the iteration path (gpc), the grid (safebayes) or one row (llb)."""
        import pandas as pd

        d = self.diagnostics
        if self.method == "gpc":
            df = pd.DataFrame(d["path"])
            df.index.name = "iteration"
            return df
        if self.method == "safebayes":
            return pd.DataFrame({"learning_rate": np.asarray(d["grid"]), "cumulative_loss": np.asarray(d["cumulative_loss"])})
        if self.method == "pac-bayes":
            return d["pac_bayes"].to_dataframe()
        return pd.DataFrame({"learning_rate": [self.learning_rate], "n": [d["n"]]})


# ----------------------------------------------------------------------------- helpers


def _model_info(model, args, kwargs, rng_key, units=None):
    """Trace once: observed sites in units, the :class:`genbayes.units.Units`, latent and local latent sites.

    Checks scales, discrete latents and subsampling before compiling anything.
    """
    from .units import Units, find

    check_args_finite(args, kwargs)
    tr = _trace(model, args, kwargs, {}, rng_key=rng_key)
    names = _observed_sites(tr, None)
    for name in names:
        scale = tr[name]["scale"]
        if scale is not None and is_concrete(scale) and not np.allclose(np.asarray(scale), 1.0):
            raise ValueError(
                f"Observed site {name!r} already carries a scale (learning rate or subsampling factor); "
                "calibrate needs the model at learning rate 1 and without subsampling. Remove the scale "
                "(e.g. gb.gibbs(..., learning_rate=1.0))."
            )
    discrete = [k for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]
                and getattr(s["fn"].support, "is_discrete", False)]
    if discrete:
        raise ValueError(
            f"calibrate cannot handle the discrete latent site(s) {discrete}: its loss minimiser, sandwich and NUTS "
            "runs need continuous latent variables. Marginalise them by hand (e.g. a MixtureSameFamily "
            "observation) and calibrate that model."
        )
    U = units if isinstance(units, Units) else find(model, *args, units=units, **kwargs)
    if U.subsampled:
        raise ValueError(f"calibrate needs the full data, but plate(s) {list(U.subsampled)} are subsampled "
                         "(remove subsample_size).")
    latent = [k for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]]
    return list(U.index), U, latent, _local_latents(model, args, kwargs, tr, U), tr


class _probe_losses(Messenger):
    """Add the squared prediction to every Loss site's loss: a loss that is flat at the traced point
    (hinge beyond the margin) then still shows which units a parameter enters."""

    def process_message(self, msg):
        if msg["type"] != "sample" or not msg["is_observed"]:
            return
        from .fisher import _find_loss
        from .losses import Loss

        loss, rebuild = _find_loss(msg["fn"])
        if loss is None:
            return
        e = loss._loss_event_dim

        def probe(p, y, fn=loss.loss_fn):
            sq = jnp.sum(p**2, axis=tuple(range(-e, 0))) if e else p**2
            return fn(p, y) + sq

        msg["fn"] = rebuild(Loss(probe, loss.prediction, event_dim=e))


def _local_latents(model, args, kwargs, tr, U):
    r"""Latent sites that belong to units (random effects, imputed values), found by tracing.

    A latent site is *local* when it lies in the plate whose elements are the units or in the
    outermost plate of an observed site in a unit (a latent per observation), or when one of its
    coordinates enters the loss of at most one unit (the derivative of the per-unit losses at the
    traced point, each loss plus its squared prediction so that a flat stretch of a hinge loss
    does not hide a dependence; e.g. a group effect ``a[g]`` written with or without a plate, or a value that
    enters no unit's loss): the information about it does not grow with the number of units.
    """
    plates = set()
    if U.plate is not None:
        plates.add(U.plate)
    for k in U.index:
        if U.plates[k]:
            plates.add(U.plates[k][0])
    latent = [k for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]]
    local = {k for k in latent if any(f.name in plates for f in tr[k]["cond_indep_stack"])}
    ignored = set()  # coordinates that enter no unit's loss: not local, but just as uninformed
    rest = [k for k in latent if k not in local]
    if rest and is_concrete({k: tr[k]["value"] for k in latent}):
        point = {k: jnp.asarray(tr[k]["value"]) for k in latent}

        def make(a, kw):
            loss = _loss_vector(_probe_losses(model), a, kw, U)

            def jacobians(point):  # site -> (U, d_k): d(per-unit loss)/d(site's coordinates)
                out = {}
                for k in rest:
                    flat, unravel = ravel_pytree(point[k])
                    out[k] = jax.jacfwd(lambda t, k=k, unravel=unravel: loss({**point, k: unravel(t)}))(flat)
                return out

            return jacobians

        # one compiled program per model and structure (the data are inputs), not eager operations
        jacobians = data_program("local_latents", model, args, kwargs, (U.key, tuple(rest)), make)(point)
        for k in rest:
            jac = np.asarray(jacobians[k])
            if jac.size == 0:
                continue
            used = np.sum(jac != 0, axis=0)
            if np.any(used == 0):
                ignored.add(k)
            elif np.any(used <= min(1, U.num_units - 1)):
                local.add(k)
    out = _Latents(k for k in latent if k in local or k in ignored)
    out.ignored = [k for k in latent if k in ignored]
    return out


class _Latents(list):
    """The latent sites LLB cannot calibrate; ``ignored``: those among them that enter no unit's loss."""

    ignored: list = []


def _loss_vector(model, args, kwargs, U):
    """params dict -> per-unit loss (U,) (unscaled: the loss at learning rate 1, summed over each unit's entries)."""
    from .fisher import _per_unit_from_trace

    def f(params):
        return -_per_unit_from_trace(_trace(model, args, kwargs, params), U)

    return f


def loss_minimizer(model, *args, rng_key, num_steps: int = 1000, step_size: float = 0.1, units=None, **kwargs) -> dict:
    r"""The empirical-risk minimiser :math:`\hat\theta = \arg\min_\theta \sum_u \ell_u(\theta)` (prior ignored).

    Adam (Optax) with a cosine-decayed step size on the mean loss, in NumPyro's unconstrained
    space, one compiled ``lax.scan``; it tolerates the kinks of absolute/check/hinge losses (the
    decaying step makes the subgradient iterates settle; Adam: Kingma & Ba 2015). θ̂ is the
    point the Gibbs posterior concentrates on (Bissiri, Holmes & Walker 2016, §2). Started at the
    first of 32 uniform draws in (−2, 2) of the unconstrained space where the loss and its gradient
    are finite (NumPyro's ``init_to_uniform``, drawn inside the compiled program); each step moves
    each coordinate by at most about ``step_size``, so parameters far from that box need a larger
    ``step_size``. Raises ``NonFiniteLoss`` (a ``ValueError`` and ``FloatingPointError``) when no draw
    gives a finite loss.

    Args:
        model: the loss model (observed sites carry a :class:`genbayes.losses.Loss`).
        *args: the model's positional arguments.
        rng_key: PRNG key (for the initial point).
        num_steps: Adam iterations.
        step_size: initial Adam step size.
        units: observation units (:mod:`genbayes.units`; default: the outermost plate of the
            observed sites); :math:`\ell_u` sums the loss over unit u's entries, masked entries
            take no part.
        **kwargs: the model's keyword arguments.

    Returns:
        dict latent site -> value (constrained space).

    Example:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> from genbayes.calibration import loss_minimizer
        >>> from genbayes.losses import Loss, absolute
        >>> def model(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("x", Loss(absolute, mu), obs=x)
        >>> th = loss_minimizer(model, jnp.array([0.0, 1.0, 5.0]), rng_key=jax.random.PRNGKey(0))
        >>> round(float(th["mu"]), 2)                         # the median
        1.0
    """
    from ._evidence_core import _layout

    names, U, latent, _, _ = _model_info(model, args, kwargs, rng_key, units)
    z0 = _layout(model, args, kwargs, U, rng_key)  # zeros in the unconstrained layout (nothing compiled)

    def make(args, kwargs):
        risk = _loss_vector(model, args, kwargs, U)
        opt = optax.adam(optax.cosine_decay_schedule(step_size, num_steps, alpha=1e-4))

        def objective(z):
            return jnp.mean(risk(constrain_fn(model, args, kwargs, z)))

        def solve(key, z0):
            # NumPyro's init_to_uniform(radius=2) in the program: the first of _INIT_TRIES uniform draws in
            # (-2, 2) of the unconstrained space where the loss and its gradient are finite
            flat0, unravel = ravel_pytree(z0)
            starts = jax.random.uniform(key, (_INIT_TRIES, flat0.shape[0]), flat0.dtype, -2.0, 2.0)

            def finite(t):
                v, g = jax.value_and_grad(lambda t: objective(unravel(t)))(t)
                return jnp.isfinite(v) & jnp.all(jnp.isfinite(g))

            ok = jax.vmap(finite)(starts)
            z = unravel(starts[jnp.argmax(ok)])

            def step(carry, _):
                z, s = carry
                g = jax.grad(objective)(z)
                upd, s = opt.update(g, s, z)
                return (optax.apply_updates(z, upd), s), None

            (z, _), _ = jax.lax.scan(step, (z, opt.init(z)), None, length=num_steps)
            return constrain_fn(model, args, kwargs, z), jnp.any(ok)

        return solve

    # compiled once per model, units, argument structure and settings (the data are inputs)
    settings = (U.key, int(num_steps), float(step_size))
    out, found = data_program("loss_minimizer", model, args, kwargs, settings, make)(rng_key, z0)
    if not bool(found):
        raise NonFiniteLoss(f"loss_minimizer: the loss or its gradient is not finite at any of {_INIT_TRIES} starting "
                            "points drawn uniformly in (-2, 2) of the unconstrained space; check the loss for NaN "
                            "values (e.g. a loss undefined for some observations) and the data.")
    return {k: out[k] for k in latent}


# starting points tried by loss_minimizer (NumPyro's initialize_model tries up to 100, one at a time)
_INIT_TRIES = 32


def _weighted_quantile(x, w, q):
    """Quantile q of draws x (S,) with normalised weights w (S,): the first draw whose cumulative weight reaches q."""
    order = jnp.argsort(x)
    cw = jnp.cumsum(w[order])
    idx = jnp.clip(jnp.searchsorted(cw, q * cw[-1]), 0, x.shape[0] - 1)
    return x[order][idx]


def _coverage(draws, logw, theta_hat, alpha, region):
    """Per-replicate coverage of theta_hat: draws (B, S, D), log weights (B, S); returns covered (B,) in [0, 1]."""
    w = jax.nn.softmax(logw, axis=-1)

    def one(x, wb):
        if region == "interval":
            lo = jax.vmap(lambda c: _weighted_quantile(c, wb, alpha / 2), in_axes=1)(x)
            hi = jax.vmap(lambda c: _weighted_quantile(c, wb, 1 - alpha / 2), in_axes=1)(x)
            return jnp.mean(((lo <= theta_hat) & (theta_hat <= hi)).astype(x.dtype))  # a bool mean is float32
        mu = wb @ x
        xc = x - mu
        cov = (xc * wb[:, None]).T @ xc + 1e-12 * jnp.eye(x.shape[1])
        L = jnp.linalg.cholesky(cov)
        m_draws = jnp.sum(jax.scipy.linalg.solve_triangular(L, xc.T, lower=True) ** 2, axis=0)
        m_hat = jnp.sum(jax.scipy.linalg.solve_triangular(L, theta_hat - mu, lower=True) ** 2)
        return (m_hat <= _weighted_quantile(m_draws, wb, 1 - alpha)).astype(x.dtype)

    return jax.vmap(one)(draws, w)


@partial(jax.jit, static_argnames=("alpha", "region"))
def _coverage_program(theta_hat, draws, logw, *, alpha, region):
    return _coverage(draws, logw, theta_hat, alpha, region)


def _ess_fraction(logw):
    """Kish effective sample size of the self-normalised weights exp(logw), as a fraction (numpy)."""
    logw = np.asarray(logw)
    w = np.exp(logw - np.max(logw, axis=-1, keepdims=True))
    w = w / np.sum(w, axis=-1, keepdims=True)
    return 1.0 / np.sum(w**2, axis=-1) / logw.shape[-1]


def _check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")


def _pos_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")


def _pos_float(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")


# ----------------------------------------------------------------------------- methods


def _local_error(local, U):
    ignored = getattr(local, "ignored", [])
    local = [k for k in local if k not in ignored]
    if ignored and not local:
        return ValueError(
            f"calibrate(method='llb') cannot calibrate this model: the loss does not depend on latent site(s) "
            f"{ignored} (their derivative is 0 for every unit's loss), so the sandwich J^-1 I J^-1 / n of Lyddon, "
            "Holmes & Walker (2019) is singular. Fix those latents or drop them from the model, or use method='gpc' "
            "(Syring & Martin 2019), which needs no sandwich.")
    what = f"plate {U.plate!r}" if U.plate is not None else "the declared groups"
    return ValueError(
        f"calibrate(method='llb') cannot calibrate this model: latent site(s) {local} are local to the observation "
        f"units ({U.num_units} units by {what}; e.g. random effects or imputed missing values). LLB matches the Gibbs "
        "posterior to the sandwich J^-1 I J^-1 / n of the loss minimiser (Lyddon, Holmes & Walker 2019), which is "
        "defined for global parameters, whose information grows with the number of units; the dimension of a local "
        "latent grows with the units, so its sandwich does not exist (I is singular). Use method='gpc' "
        "(Syring & Martin 2019), which calibrates coverage by a bootstrap over units and handles local latents."
        + (f" (Latent site(s) {ignored} do not enter the loss at all.)" if ignored else "")
    )


def _llb_cause(s, theta_hat, latent):
    """Why the sandwich gave no usable LLB rate: parameters the loss ignores, a singular I, or J not positive definite."""
    I, J = np.asarray(s.I), np.asarray(s.J)
    # the flat layout of the sandwich: ravel_pytree of the latent dict, keys in sorted order
    labels = [k if int(np.size(theta_hat[k])) == 1 else f"{k}[{j}]"
              for k in sorted(theta_hat) for j in range(int(np.size(theta_hat[k])))]
    scale = max(float(np.max(np.abs(J))), float(np.max(np.abs(I))), 1e-300)
    ignored = [labels[i] for i in range(len(labels))
               if np.max(np.abs(J[i])) <= 1e-10 * scale and np.max(np.abs(I[i])) <= 1e-10 * scale]
    if ignored:
        return (f"the loss does not depend on {ignored} (their score and curvature are 0 for every unit), so I and J "
                "are singular. LLB calibrates the parameters the loss identifies: fix those latents or drop them from "
                "the model, or use method='gpc', which needs no sandwich.")
    eig_i = np.linalg.eigvalsh(0.5 * (I + I.T))
    if eig_i.min() <= 1e-12 * max(eig_i.max(), 1e-300):
        return (f"the score covariance I is singular (rank {int(np.sum(eig_i > 1e-12 * eig_i.max()))} of {len(eig_i)}): "
                "the per-unit scores are linearly dependent, e.g. two parameters enter the loss only through their "
                "sum, or too few units inform some parameter. Reparameterise, or use method='gpc'.")
    eig_j = np.linalg.eigvalsh(0.5 * (J + J.T))
    return (f"the mean loss Hessian J is not positive definite (smallest eigenvalue {eig_j.min():.3g}): either the "
            "minimiser did not reach a minimum (pass a converged `theta_hat`, or more `num_steps`), or the loss is "
            "piecewise linear and needs `smooth = False` (or pass `bandwidth=`).")


def _llb(model, args, kwargs, *, rng_key, theta_hat, bandwidth, progress, units=None, **opt):
    del progress
    names, U, latent, local, _ = _model_info(model, args, kwargs, rng_key, units)
    if local:
        raise _local_error(local, U)
    if theta_hat is None:
        theta_hat = loss_minimizer(model, *args, rng_key=rng_key, units=U, **opt, **kwargs)
    elif opt:
        raise TypeError(f"calibrate(method='llb') got unexpected keyword(s) {sorted(opt)}.")
    D = sum(int(np.size(theta_hat[k])) for k in latent)
    if U.num_units <= D:
        raise ValueError(f"calibrate(method='llb') needs more observation units than parameters to estimate the "
                         f"score covariance I, got {U.num_units} units for {D} parameters ({U!r}).")
    with warnings.catch_warnings():  # a J that is not positive definite is an error below, with its cause
        warnings.filterwarnings("ignore", "The mean loss Hessian J is not positive definite", RuntimeWarning)
        s = sandwich(model, theta_hat, *args, bandwidth=bandwidth, units=U, **kwargs)
    eig_i = np.linalg.eigvalsh(0.5 * (np.asarray(s.I) + np.asarray(s.I).T))
    eig_j = np.linalg.eigvalsh(0.5 * (np.asarray(s.J) + np.asarray(s.J).T))
    w = float(s.llb_learning_rate)
    # a singular I or a J without a minimum makes tr(J I^-1 J) / tr(J) a number without meaning
    if not (math.isfinite(w) and w > 0) or eig_i.min() <= 1e-12 * max(eig_i.max(), 1e-300) or eig_j.min() <= 0:
        raise FloatingPointError(f"calibrate(method='llb') has no meaningful learning rate here (the formula gives "
                                 f"{w:.4g}): {_llb_cause(s, theta_hat, latent)}")
    diag = {"theta_hat": theta_hat, "n": U.num_units, "units": U, "I": np.asarray(s.I), "J": np.asarray(s.J),
            "bandwidths": s.bandwidths}
    return w, diag


@partial(jax.jit, static_argnums=(1, 2))
def _bootstrap_counts(key, B, n):
    """B multinomial bootstrap counts over n units, shape (B, n) (each row sums to n): Efron (1979) over units."""
    idx = jax.random.randint(key, (B, n), 0, n)
    return jax.vmap(lambda i: jnp.bincount(i, length=n))(idx).astype(jnp.result_type(float))


def _draws_matrix(samples, params):
    """Flatten the selected sites of (B, S, ...) draws into (B, S, D) (numpy: no eager compilations)."""
    B, S = np.shape(samples[params[0]])[:2]
    return np.concatenate([np.reshape(np.asarray(samples[k]), (B, S, -1)) for k in params], axis=-1)


def _gpc(
    model,
    args,
    kwargs,
    *,
    rng_key,
    theta_hat,
    progress,
    alpha=0.1,
    B=200,
    num_warmup=300,
    num_samples=300,
    max_iter=20,
    tol=None,
    init=None,
    step_size=1.0,
    region="interval",
    params=None,
    ess_threshold=0.5,
    units=None,
    **nuts_kw,
):
    from scipy.stats import chi2
    from tqdm.auto import tqdm

    if not (isinstance(alpha, (float, int)) and 0 < alpha < 1):
        raise ValueError(f"`alpha` must lie in (0, 1) (target coverage 1 - alpha), got {alpha!r}.")
    _pos_int(B, "B", 2)
    _pos_int(max_iter, "max_iter")
    _pos_int(num_samples, "num_samples", 10)
    _pos_float(step_size, "step_size")
    _check_choice(region, "region", ("interval", "ellipsoid"))
    if not (0 <= ess_threshold <= 1):
        raise ValueError(f"`ess_threshold` must lie in [0, 1] (1 disables draw reuse), got {ess_threshold!r}.")
    batched._check_sampler_options(nuts_kw, num_warmup, num_samples)  # before the loss minimiser compiles
    if tol is None:
        # a quarter of the coverage estimate's binomial standard error: stopping at one SE accepts
        # points systematically off-target (seen in tests), the tighter stop lets the SA steps average
        tol = 0.25 * math.sqrt(alpha * (1 - alpha) / B)
    names, U, latent, local, _ = _model_info(model, args, kwargs, rng_key, units)
    n = U.num_units
    glob = [k for k in latent if k not in local]
    if params is None:
        params = glob or latent
    else:
        params = [params] if isinstance(params, str) else list(params)
    bad = sorted(set(params) - set(latent))
    if bad:
        raise ValueError(f"`params` names {bad}, which are not latent sites; latent sites: {latent}.")
    if init is not None:
        _pos_float(init, "init")
    key_min, key_boot, key_run = jax.random.split(rng_key, 3)
    if theta_hat is None:
        if local:
            # no loss minimiser for the global parameters when local latents are free (the loss of
            # eight schools does not involve mu or tau): use the full-data posterior mean at w = 1
            full = batched.run(model, jnp.ones((1, n)), *args, units=U, num_warmup=num_warmup, num_samples=num_samples,
                               rng_key=key_min, progress=False, **nuts_kw, **kwargs)
            theta_hat = {k: jnp.mean(full.samples[k][0], axis=0) for k in latent}
        else:
            theta_hat = loss_minimizer(model, *args, rng_key=key_min, units=U, **kwargs)
    missing = sorted(set(params) - set(theta_hat))
    if missing:
        raise ValueError(f"`theta_hat` lacks the site(s) {missing} whose coverage is targeted (`params`).")
    th = np.concatenate([np.ravel(np.asarray(theta_hat[k])) for k in params])
    D = th.shape[0]
    init_source = "user"
    if init is None:
        init, init_source = 1.0, "fallback: local latents, no LLB" if local else "fallback: LLB failed"
        if not local:
            try:
                init = _llb(model, args, kwargs, rng_key=key_min, theta_hat=theta_hat, bandwidth="auto", progress=False,
                            units=U)[0]
                init_source = "llb"
            except (FloatingPointError, ValueError) as e:
                warnings.warn(f"gpc: LLB could not give a starting rate ({e}); starting from w = 1.",
                              RuntimeWarning, stacklevel=3)
    # fixed bootstrap resamples of the UNITS (common random numbers across iterations): multinomial
    # counts; with group units this is the cluster bootstrap
    counts = np.asarray(_bootstrap_counts(key_boot, B, n))

    def make_boot_loss(args, kwargs):
        loss_vec = _loss_vector(model, args, kwargs, U)

        def boot_loss(samples, counts):
            # L_b(theta_bs) = sum_i c_bi l_i(theta_bs); lax.map over b keeps memory at S x n
            def per_b(xs):
                s_b, c_b = xs
                return jax.vmap(lambda p: loss_vec(p) @ c_b)(s_b)

            return jax.lax.map(per_b, (samples, counts), batch_size=min(B, 16))

        return boot_loss

    boot_loss_fn = data_program("gpc_boot_loss", model, args, kwargs, (U.key, B), make_boot_loss)
    boot_loss = lambda samples: boot_loss_fn(samples, counts)  # noqa: E731

    dof = 1 if region == "interval" else D
    target_q = chi2.ppf(1 - alpha, dof)
    cov_fn = partial(_coverage_program, th, alpha=float(alpha), region=region)
    path = {"learning_rate": [], "coverage": [], "source": [], "ess_min": [], "num_divergent": []}
    log_w = math.log(init)
    src = None  # (w_src, draws (B,S,D), boot losses (B,S)) of the last NUTS run
    converged = False
    bar = tqdm(range(1, max_iter + 1), disable=not progress, desc="gpc", leave=False)
    for t in bar:
        w = math.exp(log_w)
        ess = 0.0
        if src is not None:
            logw_is = -(w - src[0]) * src[2]
            ess = float(np.min(_ess_fraction(logw_is)))
        if src is not None and ess >= ess_threshold:
            c = float(np.mean(cov_fn(src[1], logw_is)))
            source, ndiv = "importance", 0
        else:
            res = batched.run(
                model, w * counts, *args, units=U, num_warmup=num_warmup, num_samples=num_samples,
                rng_key=jax.random.fold_in(key_run, t), progress=False, **nuts_kw, **kwargs,
            )
            draws = _draws_matrix(res.samples, params)
            src = (w, draws, np.asarray(boot_loss({k: res.samples[k] for k in latent})))
            c = float(np.mean(cov_fn(draws, np.zeros(draws.shape[:2], draws.dtype))))
            source, ndiv, ess = "nuts", int(np.sum(res.diagnostics["num_divergent"])), 1.0
        for k, v in zip(path, (w, c, source, ess, ndiv)):
            path[k].append(v)
        bar.set_postfix(w=f"{w:.4g}", coverage=f"{c:.3f}")
        if abs(c - (1 - alpha)) <= tol:
            converged = True
            break
        # Robbins-Monro step on log w; the residual is put on the chi-square scale, where for a
        # Gaussian posterior coverage(w) = F(q * w*/w), so a unit step is a Newton step
        c_clip = min(max(c, 0.5 / B), 1 - 0.5 / B)
        log_w += step_size * t ** (-0.51) * math.log(chi2.ppf(c_clip, dof) / target_q)
    if converged:
        w_final = path["learning_rate"][-1]
    else:
        half = path["learning_rate"][len(path["learning_rate"]) // 2 :]
        w_final = float(np.exp(np.mean(np.log(half))))  # Polyak average of the last half
        warnings.warn(
            f"gpc did not reach coverage {1 - alpha:.3f} +- {tol:.3f} in {max_iter} iterations (last {path['coverage'][-1]:.3f}); "
            f"returning the geometric mean of the last half of the path, w = {w_final:.4g}. Raise max_iter or B.",
            RuntimeWarning,
            stacklevel=3,
        )
    if sum(path["num_divergent"]):
        warnings.warn(f"gpc: {sum(path['num_divergent'])} divergent NUTS transitions; see diagnostics['path'].", RuntimeWarning, stacklevel=3)
    diag = {"theta_hat": theta_hat, "n": n, "path": path, "converged": converged, "B": B, "alpha": alpha, "tol": tol,
            "region": region, "params": params, "init": float(init), "init_source": init_source, "units": U,
            "counts": np.asarray(counts), "local": local}
    return float(w_final), diag


def _log_normalizers(tr, U):
    """w -> per-unit sum of log Z(w) over the entries of the Loss sites, shape (U,); None if some loss lacks one."""
    from .fisher import _find_loss

    parts = []
    for name, idx in U.index.items():
        loss, _ = _find_loss(tr[name]["fn"])
        lz = getattr(getattr(loss, "loss_fn", None), "log_normalizer", None)
        if lz is None:
            return None
        parts.append((lz, U.shapes[name], np.broadcast_to(idx, U.shapes[name])))

    def per_unit(w):
        out = np.zeros(U.num_units)
        for lz, shape, idx in parts:
            v = np.broadcast_to(np.asarray(lz(w), dtype=float), shape)
            np.add.at(out, idx[idx >= 0], v[idx >= 0])
        return out

    return per_unit


def _safebayes(model, args, kwargs, *, rng_key, theta_hat, progress, grid=None, start=None, score="auto", num_warmup=200,
               num_samples=200, units=None, **nuts_kw):
    names, U, latent, local, tr = _model_info(model, args, kwargs, rng_key, units)
    n = U.num_units
    _check_choice(score, "score", ("auto", "log_loss", "loss"))
    log_z = _log_normalizers(tr, U)
    if score == "log_loss" and log_z is None:
        raise ValueError("score='log_loss' needs every loss to have a closed-form `log_normalizer` (squared, absolute, check).")
    if score == "auto":
        score = "log_loss" if log_z is not None else "loss"
        if score == "loss":
            warnings.warn(
                "safebayes: the loss has no `log_normalizer`, so the raw posterior-expected loss is scored; "
                "it usually decreases with w, so the choice tends to the top of the grid.",
                RuntimeWarning,
                stacklevel=3,
            )
    grid = np.geomspace(1 / 16, 1.0, 9) if grid is None else np.asarray(grid, dtype=float).ravel()
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0) or np.any(grid > 1):
        raise ValueError(f"`grid` must hold learning rates in (0, 1], got {grid!r}.")
    start = max(1, n // 4) if start is None else start
    _pos_int(start, "start")
    if start >= n:
        raise ValueError(f"`start` must be < n = {n} units (posteriors on units 1..t for t = start..n-1), got {start}.")
    T = np.arange(start, n)  # posterior on the first t units predicts unit t (0-based), in the units' order
    K = grid.size
    prefix = (np.arange(n)[None, :] < T[:, None]).astype(float)  # (T, n)
    weights = jnp.asarray((grid[:, None, None] * prefix[None]).reshape(K * T.size, n))
    if progress:
        print(f"genbayes.calibrate(safebayes): {K} rates x {T.size} prefixes = {K * T.size} posteriors", flush=True)
    res = batched.run(model, weights, *args, units=U, num_warmup=num_warmup, num_samples=num_samples, rng_key=rng_key, progress=progress, **nuts_kw, **kwargs)
    nxt = jnp.asarray(np.tile(T, K))

    def make(args, kwargs):
        loss_vec = _loss_vector(model, args, kwargs, U)

        def expected_next(samples, nxt):
            def per_row(xs):
                s_r, i = xs
                return jnp.mean(jax.vmap(lambda p: loss_vec(p)[i])(s_r))

            return jax.lax.map(per_row, (samples, nxt), batch_size=16)

        return expected_next

    program = data_program("safebayes_expected_next", model, args, kwargs, U.key, make)
    expected_next = lambda samples: program(samples, nxt)  # noqa: E731

    e = np.asarray(expected_next({k: res.samples[k] for k in latent})).reshape(K, T.size)
    if score == "log_loss":
        # R-log-loss of the normalised density exp(-w l)/Z(w) (Grunwald & van Ommen 2017, eq. 9)
        e = grid[:, None] * e + np.stack([log_z(w)[T] for w in grid])
    cum = e.sum(axis=1)
    if not np.all(np.isfinite(cum)):
        warnings.warn("safebayes: non-finite expected losses; see diagnostics['expected_loss'].", RuntimeWarning, stacklevel=3)
    k = int(np.nanargmin(cum))
    diag = {"theta_hat": theta_hat, "n": n, "units": U, "grid": grid, "cumulative_loss": cum, "expected_loss": e, "start": int(start), "score": score,
            "num_divergent": np.asarray(res.diagnostics["num_divergent"]).reshape(K, T.size)}
    return float(grid[k]), diag


def calibrate(model, *args, method: str = "llb", rng_key, progress: bool = True, theta_hat=None, units=None,
              **kwargs) -> Calibration:
    r"""Choose the learning rate w of the Gibbs posterior :math:`\pi_w \propto e^{-w\sum_i \ell(\theta, x_i)}\pi(\theta)`.

    ``method="llb"`` (Lyddon, Holmes & Walker 2019, §3): :math:`w = \mathrm{tr}(J I^{-1} J^\top)/\mathrm{tr}(J)`
    at the loss minimiser θ̂, with I the covariance of the per-unit loss gradients and J
    the mean per-unit loss Hessian (scalar case :math:`J/I`; squared loss gives :math:`1/\sigma^2`, absolute
    loss :math:`2 f(\mathrm{median})`, check loss :math:`f(q_\tau)/(\tau(1-\tau))`). For losses whose
    second derivative is zero almost everywhere (absolute, check, hinge), J comes from the
    uniform-kernel smoothing of the loss in the prediction: a Powell (1991) kernel estimate of the
    residual density at 0 (see :mod:`genbayes.fisher`). Options: ``bandwidth`` ("auto", a float, a
    dict or None), and ``num_steps``, ``step_size`` of :func:`loss_minimizer`. Defined for global
    parameters only: a model with latent sites local to the units (random effects, imputed values)
    is refused with a ValueError naming them and pointing to ``"gpc"``.

    ``method="gpc"`` (Syring & Martin 2019, Algorithm 1): fix B bootstrap resamples of the units
    (multinomial counts c_b over the U units; group units give the cluster bootstrap); at the current w draw all B Gibbs posteriors :math:`\propto e^{-w \sum_i c_{bi}\ell_i}\pi`
    as *one* vmapped NUTS program (:func:`genbayes.batched.run` with weights :math:`w c_b`);
    estimate the coverage :math:`\hat c(w)` of θ̂ by their 100(1−α)% credible regions; update
    :math:`\log w \leftarrow \log w + \kappa t^{-0.51} \log\{\chi^2_{d,\hat c}/\chi^2_{d,1-\alpha}\}`
    (a Robbins–Monro step whose residual is zero at the target and increases with :math:`\hat c`;
    under a Gaussian posterior a unit step is a Newton step) until :math:`|\hat c - (1-\alpha)| \le`
    ``tol``. Regions: ``region="interval"`` (per-coordinate equal-tailed intervals, coverage averaged
    over coordinates, d = 1) or ``"ellipsoid"`` (posterior-covariance Mahalanobis ball at the
    (1−α) quantile of the draws' own distances, d = dim θ). Between NUTS runs, draws are reused by
    importance reweighting, log weight :math:`-(w' - w)\sum_i c_{bi}\ell_i(\theta)`, while the
    smallest effective sample size over replicates is at least ``ess_threshold`` × S. Options:
    ``alpha`` (0.1), ``B`` (200), ``num_warmup``/``num_samples`` (300), ``max_iter`` (20), ``tol``
    (default a quarter binomial standard error, :math:`0.25\sqrt{\alpha(1-\alpha)/B}`), ``init`` (default: the
    llb rate when llb applies and succeeds, else the fallback w = 1, with a warning when llb
    failed; ``diagnostics["init_source"]`` says which), ``step_size`` κ (1), ``region``,
    ``params`` (latent sites whose coverage is targeted; default all global ones, i.e. all
    latent sites not local to the units), ``ess_threshold`` (0.5), and the sampler options of
    :func:`genbayes.batched.run`: NUTS's (``target_accept_prob``, ``dense_mass``, ``max_tree_depth``,
    ``init_strategy``), or ``kernel="chees"`` with ``num_chains``, ``shared_warmup`` and ``nuts_fallback``
    (replicates where ChEES fails drawn again by NUTS; on by default). The bootstrap
    posteriors are alike, which is what ``shared_warmup`` is for: one ChEES warm-up on the mean weights,
    then ``num_warmup`` step-size iterations per replicate (e.g. ``kernel="chees", shared_warmup=150,
    num_warmup=25``). Measured on one iteration (``benchmarks/bench_gibbs.py --only gpc``: quantile
    regression, n = 1000, d = 5, B = 200, idle 2-core machine, one device): 2.5 s against NUTS's 14.7 s
    warm, at about half the effective samples per draw (median min ESS 53 against 110 of 300 draws), so
    2.9 times NUTS's effective samples per second (8.4 times a loop of one compiled NUTS chain, NUTS 2.9
    times); raise ``num_samples`` with it. The coverage test (``tests/test_calibration.py``, exact grid
    intervals on fresh data) passes with both samplers. NUTS stays the default: ChEES's shared
    settings suit alike posteriors, and its short chains need checking on models with funnels.
    A tqdm bar shows the iterations (``progress=False`` hides it). If it does not converge the
    geometric mean of the last half of the path is returned, with a warning. With local latents
    the loss minimiser of the global parameters need not exist (eight schools' loss does not
    involve μ or τ), so the default θ̂ is their full-data posterior mean at w = 1 (one extra
    NUTS run); pass ``theta_hat=`` to choose another reference point.

    ``method="safebayes"`` (Grünwald & van Ommen 2017, §4): for each w on ``grid`` (default 9 rates
    geometrically spaced in [1/16, 1]), the cumulative prequential posterior-expected loss in the
    data's order, :math:`R(w) = \sum_{t=\text{start}}^{n-1} \mathbb E_{\pi_w(\cdot\mid x_{1:t})}[s_w(\theta, x_{t+1})]`;
    return :math:`\arg\min_w R(w)`. With ``score="log_loss"`` (the default when every loss has a
    closed-form ``log_normalizer``), :math:`s_w = w\ell + \log Z(w)`, the log-loss of the normalised
    density :math:`e^{-w\ell}/Z(w)` (their "R-log-loss"); with ``score="loss"``, :math:`s_w = \ell`,
    the raw loss, which for a well-specified loss usually decreases with w (the argmin then sits at
    the top of the grid; a warning says so). All :math:`|grid| \times (n - start)`
    posteriors are one batched NUTS program (prefix weights). Options: ``grid``, ``start``
    (default n // 4), ``score``, ``num_warmup``/``num_samples`` (200).

    ``method="pac-bayes"``: :math:`\arg\min_w` over the ladder ``learning_rates`` (default
    :func:`genbayes.bounds.default_rates`) of the PAC-Bayes bound ``bound`` ("kl", "catoni",
    "mcallester") on :math:`E_{\rho_w} R` at level ``delta`` (union bound over the ladder, so the
    guarantee holds at the chosen rate), for a loss with range ``loss_range``; all rates are one batched
    ChEES program (rates where ChEES fails drawn again by NUTS; ``kernel="nuts"`` for NUTS throughout)
    (:func:`genbayes.bounds.pac_bayes`, whose result is ``diagnostics["pac_bayes"]``).
    Options: ``learning_rates``, ``delta`` (0.05), ``bound`` ("kl"), ``loss_range`` and the run
    options of :func:`genbayes.bounds.kl_to_prior`. Unlike llb and gpc it targets the risk, not the
    coverage of credible regions (see the module docstring).

    Args:
        model: NumPyro model with ``Loss`` observed sites (or a ``gb.gibbs``-wrapped likelihood
            model) at learning rate 1.
        *args: the model's positional arguments (with the data).
        method: ``"llb"``, ``"gpc"``, ``"safebayes"`` or ``"pac-bayes"``.
        rng_key: JAX PRNG key (required).
        progress: show progress (gpc iterations, safebayes compilation).
        theta_hat: the loss minimiser as a dict latent site -> value (default: :func:`loss_minimizer`).
        units: the observation units (:func:`genbayes.units.find`: ``None`` for the outermost plate
            of the observed sites, a plate name, group ids, a dict site -> group ids, or a
            :class:`genbayes.units.Units`); n below is their number U.
        **kwargs: method options above; any other keyword is passed to the model.

    Returns:
        :class:`Calibration` (``learning_rate``, ``method``, ``diagnostics``).

    Raises:
        ValueError: unknown method or option values, a model whose observed sites carry a scale,
            non-finite data, ambiguous units (observed sites without a plate or in different
            plates: the message lists them), discrete latent sites, or (llb) latent sites local to
            the units — before any compilation.

    Example:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, genbayes as gb
        >>> from genbayes.calibration import calibrate
        >>> from genbayes.losses import Loss, squared
        >>> def model(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("x", Loss(squared, mu), obs=x)
        >>> x = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (4000,))
        >>> cal = calibrate(model, x, method="llb", rng_key=jax.random.PRNGKey(1))
        >>> bool(abs(cal.learning_rate - 0.25) < 0.02)        # 1 / sigma^2
        True
        >>> pairs = jnp.arange(4000) // 2                      # units = pairs of observations
        >>> cal = calibrate(model, x, method="llb", units=pairs, rng_key=jax.random.PRNGKey(1))
        >>> cal.diagnostics["n"], bool(abs(cal.learning_rate - 0.25) < 0.03)   # i.i.d. pairs: same rate
        (2000, True)
    """
    _check_choice(method, "method", METHODS)
    check_key(rng_key)
    options = {
        "llb": {"bandwidth", "num_steps", "step_size"},
        "gpc": {"alpha", "B", "num_warmup", "num_samples", "max_iter", "tol", "init", "step_size", "region",
                "params", "ess_threshold", "target_accept_prob", "dense_mass", "max_tree_depth", "init_strategy",
                "kernel", "num_chains", "shared_warmup", "nuts_fallback"},
        "safebayes": {"grid", "start", "score", "num_warmup", "num_samples", "target_accept_prob", "dense_mass",
                      "max_tree_depth", "init_strategy"},
        "pac-bayes": {"learning_rates", "delta", "bound", "loss_range", "num_warmup", "num_samples", "num_chains",
                      "num_batches", "num_low_rungs", "dense_mass", "target_accept_prob", "shard", "chunk_size",
                      "kernel"},
    }[method]
    opt = {k: kwargs.pop(k) for k in list(kwargs) if k in options}
    check_args_finite(args, kwargs)  # the data, positional or keyword (the settings are popped above)
    from .units import _trace as _structure

    _structure(model, args, kwargs)  # abstract, nothing compiled: empty data and model errors surface here
    opt["units"] = units
    if method == "llb":
        w, diag = _llb(model, args, kwargs, rng_key=rng_key, theta_hat=theta_hat, bandwidth=opt.pop("bandwidth", "auto"), progress=progress, **opt)
    elif method == "pac-bayes":
        from .bounds import pac_bayes

        res = pac_bayes(model, *args, rng_key=rng_key, progress=progress, **opt, **kwargs)
        w = res.best_rate
        diag = {"n": res.n, "pac_bayes": res, "bound": res.best_bound, "bound_type": res.bound_type,
                "delta": res.delta, "empirical_risk": float(res.empirical_risk[res.best_index])}
    elif method == "gpc":
        w, diag = _gpc(model, args, kwargs, rng_key=rng_key, theta_hat=theta_hat, progress=progress, **opt)
    else:
        w, diag = _safebayes(model, args, kwargs, rng_key=rng_key, theta_hat=theta_hat, progress=progress, **opt)
    return Calibration(learning_rate=float(w), method=method, diagnostics=diag)
