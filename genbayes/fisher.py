r"""Per-observation scores and Hessians, Fisher information, empirical Fisher and the sandwich.

For a model with observed data :math:`x_{1:n}` (observations index the *leading* batch axis of
the observed sites) and a parameter value θ (a dict of the model's latent sites, flattened in
``jax.flatten_util.ravel_pytree`` order), with :math:`\log p_i(\theta)` the log density of
observation i summed over every selected observed site (a :class:`genbayes.losses.Loss` site
gives :math:`-\ell(\theta, x_i)`):

- scores :math:`g_i = \nabla_\theta \log p_i(\theta)`, Hessians :math:`H_i = \nabla^2_\theta \log p_i(\theta)`;
- empirical Fisher :math:`\tilde F = \frac1n \sum_i g_i g_i^\top`;
- Fisher :math:`F = \mathbb E_{x \sim p(\cdot\mid\theta)} \frac1n \sum_i g_i g_i^\top` (by simulation from the model);
- sandwich pieces (Huber 1967; for losses, e.g. Lyddon, Holmes & Walker 2019, §2):
  :math:`I = \widehat{\mathrm{Cov}}(g_i)` and :math:`J = -\frac1n \sum_i H_i`, with the loss
  minimiser :math:`\hat\theta \approx N(\theta_0, J^{-1} I J^{-1} / n)`.

Per-observation derivatives use forward mode (``jax.jacfwd``): D passes of O(n) memory, where
reverse mode would hold an n × n intermediate.

Site scales (learning rates, subsampling factors, reweighting) are *not* applied: these are
per-observation quantities of the likelihood or loss itself.

**Observation units.** With ``units=`` (any spec :func:`genbayes.units.find` accepts, or a
:class:`genbayes.units.Units`), "observation i" is *unit* u: :math:`\log p_u(\theta)` sums the
entries of every observed site that belong to unit u (a group of a cluster, the several sites at
one plate index, a multivariate observation), masked entries take no part, and n is the number
of units U. Without ``units=`` observations index the leading batch axis, as before.

**Curvature of non-smooth losses.** The absolute, check and hinge losses have a second derivative
that is zero almost everywhere, so an autodiff Hessian gives :math:`J = 0`. :func:`sandwich`
then replaces each such loss by its uniform-kernel smoothing in the prediction,
:math:`\ell_h(f, y) = \frac1{2h}\int_{f-h}^{f+h} \ell(s, y)\,ds`, whose derivatives are exact
central differences, :math:`\ell_h'(f) = (\ell(f+h) - \ell(f-h))/(2h)` and
:math:`\ell_h''(f) = (\ell'(f+h) - \ell'(f-h))/(2h)`. For the absolute loss this makes
:math:`J` twice a uniform-kernel density estimate of the residuals at 0, i.e. Powell's (1991)
kernel estimator of the quantile-regression sandwich. The bandwidth defaults to Silverman's rule
for the residuals :math:`u_i = y_i - f_i` (for margin losses, the scores :math:`f_i`),
rescaled to the uniform kernel: :math:`h = 1.74 \cdot 0.9 \min(\hat\sigma, \mathrm{IQR}/1.34)\, m^{-1/5}`
(1.74 is the ratio of the canonical bandwidths of the uniform and Gaussian kernels, Marron & Nolle
1988). Smooth losses (``loss.smooth`` not ``False``) use the exact autodiff Hessian.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro.handlers import seed, substitute, trace
from numpyro.primitives import Messenger

from . import _programs
from ._validation import NonFiniteLoss, check_args_finite, guard_empty_plates, is_concrete

__all__ = [
    "per_observation_log_density",
    "scores",
    "hessians",
    "empirical_fisher",
    "fisher",
    "sandwich",
    "Sandwich",
    "auto_bandwidth",
]


# ----------------------------------------------------------------------------- model plumbing


def _trace(model, args, kwargs, params, rng_key=None):
    m = substitute(model, data=params)
    m = seed(m, rng_key if rng_key is not None else jax.random.PRNGKey(0))
    with guard_empty_plates(args, kwargs):
        return trace(m).get_trace(*args, **kwargs)


def _observed_sites(tr, sites):
    obs = [k for k, s in tr.items() if s["type"] == "sample" and s["is_observed"]]
    if sites is None:
        if not obs:
            raise ValueError("The model has no observed sample sites (pass the data as obs=...).")
        return obs
    names = [sites] if isinstance(sites, str) else list(sites)
    for n in names:
        if n not in tr or tr[n]["type"] != "sample":
            raise ValueError(f"`sites` names {n!r}, which is not a sample site of the model; observed sites: {obs}.")
        if not tr[n]["is_observed"]:
            raise ValueError(f"`sites` names {n!r}, which is latent, not observed; observed sites: {obs}.")
    return names


def _latent_sites(tr):
    return [k for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]]


def _check_params(model, args, kwargs, params):
    if not isinstance(params, Mapping):
        raise TypeError(f"`params` must be a dict of latent site name -> value, got {type(params).__name__}.")
    check_args_finite(args, kwargs)
    tr = _trace(model, args, kwargs, {k: v for k, v in params.items()})
    latent = _latent_sites(tr)
    missing = sorted(set(latent) - set(params))
    extra = sorted(set(params) - set(latent))
    if missing:
        raise ValueError(f"`params` lacks values for latent site(s) {missing}; the model's latent sites are {latent}.")
    if extra:
        raise ValueError(f"`params` has site(s) {extra} that are not latent sites of the model (latent: {latent}).")
    return tr


def _per_obs_from_trace(tr, names):
    total = None
    for name in names:
        site = tr[name]
        lp = site["fn"].log_prob(site["value"])
        if jnp.ndim(lp) == 0:
            raise ValueError(
                f"Observed site {name!r} has a scalar log density: put it in a plate over the observations "
                "so that per-observation quantities exist."
            )
        lp = jnp.sum(lp.reshape(lp.shape[0], -1), axis=1)
        if total is not None and total.shape != lp.shape:
            raise ValueError(
                f"Observed sites have different numbers of observations ({total.shape[0]} vs {lp.shape[0]} at "
                f"{name!r}); select one with `sites=`."
            )
        total = lp if total is None else total + lp
    return total


def _resolve_units(model, args, kwargs, units):
    """A :class:`genbayes.units.Units` for per-unit quantities; refuses what they cannot mean."""
    from .units import find

    if units is None:
        return None
    U = find(model, *args, units=units, **kwargs)
    if U.subsampled:
        raise ValueError(f"Per-unit quantities need the full data, but plate(s) {list(U.subsampled)} are subsampled "
                         "(remove subsample_size).")
    if U.enumerated:
        raise NotImplementedError(
            f"The model has discrete latent site(s) {list(U.enumerated)} marked for enumeration; per-unit scores "
            "and Hessians of their marginal likelihood are not implemented here. Marginalise them by hand "
            "(e.g. a MixtureSameFamily observation).")
    return U


def _per_unit_from_trace(tr, U):
    r"""Per-unit log density :math:`\log p_u = \sum_{\text{entries } e \in u} \log p_e`, shape ``(U,)`` (scales not applied)."""
    total = 0.0
    for name, idx in U.index.items():
        site = tr[name]
        lp = site["fn"].log_prob(site["value"])
        shape = U.shapes[name]
        lp = jnp.broadcast_to(lp, shape)
        idx = np.broadcast_to(idx, shape)
        keep = jnp.asarray(idx >= 0)
        total = total + jax.ops.segment_sum(jnp.where(keep, lp, 0.0).ravel(), jnp.asarray(np.maximum(idx, 0).ravel()),
                                            num_segments=U.num_units)
    return total


class _replace_obs(Messenger):
    """Give observed sites other values (simulated data) without touching the model."""

    def __init__(self, fn=None, values=None):
        self.values = values or {}
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["is_observed"] and msg["name"] in self.values:
            msg["value"] = self.values[msg["name"]]


class _resample_obs(Messenger):
    """Replace observed values by draws from their own distributions (data simulated at θ)."""

    def __init__(self, fn=None, rng_key=None, sites=()):
        self.rng_key, self.sites, self.draws = rng_key, set(sites), {}
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["is_observed"] and msg["name"] in self.sites:
            self.rng_key, key = jax.random.split(self.rng_key)
            msg["value"] = msg["fn"].sample(key)
            self.draws[msg["name"]] = msg["value"]


def _flat_log_density(model, args, kwargs, params, sites, wrap=None, units=None):
    """(θ_flat, unravel, f) with f(θ_flat, obs=None) -> per-observation (or per-unit, (U,)) log density."""
    tr = _check_params(model, args, kwargs, params)
    names = _observed_sites(tr, sites)
    if units is not None and sites is not None:
        raise ValueError("Pass either `sites` (observations along the leading axis) or `units` (observation units), "
                         "not both; `units={site: ids or None}` selects sites (None: left out).")
    U = _resolve_units(model, args, kwargs, units)
    if U is not None:
        names = list(U.index)
    flat, unravel = ravel_pytree({k: jnp.asarray(v) for k, v in params.items()})
    m = wrap(model) if wrap is not None else model
    return flat, unravel, _per_unit_fn(m, args, kwargs, names, U, unravel), names, tr


def _per_unit_fn(m, args, kwargs, names, U, unravel):
    """f(θ_flat, obs=None) -> per-observation (``U is None``: sites ``names``) or per-unit log density."""

    def f(theta, obs=None):
        mm = _replace_obs(m, values=obs) if obs else m
        t = _trace(mm, args, kwargs, unravel(theta))
        return _per_obs_from_trace(t, names) if U is None else _per_unit_from_trace(t, U)

    return f


# ----------------------------------------------------------------------------- public API


def per_observation_log_density(model, params, *args, sites=None, units=None, **kwargs):
    r"""Per-observation log density :math:`\log p_i(\theta)` of the observed sites, shape ``(n,)``.

    Summed over the selected observed sites and over every batch axis after the first; site
    scales are not applied. For a :class:`genbayes.losses.Loss` site this is :math:`-\ell(\theta, x_i)`,
    the per-observation term of the Gibbs posterior (Bissiri, Holmes & Walker 2016, eq. 1).

    Args:
        model: a NumPyro model.
        params: dict latent site -> value (all latent sites).
        *args: the model's positional arguments (with the data).
        sites: observed site(s) to include (default: all).
        units: observation units (:mod:`genbayes.units`; default ``None``: observations along the
            leading batch axis); then the result has one entry per unit, summing its entries.
        **kwargs: the model's keyword arguments.

    Returns:
        ``(n,)`` array (``(U,)`` with ``units=``).

    Example:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> from genbayes import fisher
        >>> def model(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("x", dist.Normal(mu, 1.0), obs=x)
        >>> fisher.per_observation_log_density(model, {"mu": 0.0}, jnp.zeros(3)).shape
        (3,)
        >>> fisher.per_observation_log_density(model, {"mu": 0.0}, jnp.zeros(3), units=jnp.array([0, 1, 1])).shape
        (2,)
    """
    flat, _, f, _, _ = _flat_log_density(model, args, kwargs, params, sites, units=units)
    return f(flat)


def scores(model, params, *args, sites=None, units=None, **kwargs):
    r"""Per-observation scores :math:`g_i = \nabla_\theta \log p_i(\theta)`, shape ``(n, D)``.

    D is the length of the flattened ``params`` (``jax.flatten_util.ravel_pytree`` order). The
    score of Fisher (1925, "Theory of statistical estimation"); arguments as in
    :func:`per_observation_log_density`.

    Example:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> from genbayes import fisher
        >>> def model(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("x", dist.Normal(mu, 2.0), obs=x)
        >>> fisher.scores(model, {"mu": 0.0}, jnp.array([4.0, -2.0])).tolist()   # (x - mu) / 4
        [[1.0], [-0.5]]
    """
    flat, _, f, _, _ = _flat_log_density(model, args, kwargs, params, sites, units=units)
    return jax.jacfwd(f)(flat)


def hessians(model, params, *args, sites=None, units=None, **kwargs):
    r"""Per-observation Hessians :math:`H_i = \nabla^2_\theta \log p_i(\theta)`, shape ``(n, D, D)``.

    Exact autodiff Hessians: zero almost everywhere for the absolute, check and hinge losses
    (use :func:`sandwich`, which smooths them, for curvature). Their negative mean is the
    observed information (Efron & Hinkley 1978); arguments as in :func:`per_observation_log_density`.

    Example:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> from genbayes import fisher
        >>> def model(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("x", dist.Normal(mu, 2.0), obs=x)
        >>> fisher.hessians(model, {"mu": 0.0}, jnp.array([4.0, -2.0])).tolist()
        [[[-0.25]], [[-0.25]]]
    """
    flat, _, f, _, _ = _flat_log_density(model, args, kwargs, params, sites, units=units)
    return jax.jacfwd(jax.jacfwd(f))(flat)


def empirical_fisher(model, params, *args, sites=None, units=None, **kwargs):
    r"""Empirical Fisher :math:`\tilde F = \frac1n \sum_i g_i g_i^\top`, shape ``(D, D)``.

    The outer-product-of-scores estimate at the observed data; it equals the Fisher information
    only at the true parameter of a well-specified model (Kunstner, Balles & Hennig 2019,
    "Limitations of the empirical Fisher approximation"). Arguments as in
    :func:`per_observation_log_density`.

    Example:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> from genbayes import fisher
        >>> def model(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("x", dist.Normal(mu, 1.0), obs=x)
        >>> fisher.empirical_fisher(model, {"mu": 0.0}, jnp.array([1.0, -3.0])).tolist()
        [[5.0]]
    """
    g = scores(model, params, *args, sites=sites, units=units, **kwargs)
    return g.T @ g / g.shape[0]


def fisher(model, params, *args, rng_key, num_samples: int = 100, sites=None, units=None, **kwargs):
    r"""Fisher information per observation, :math:`\mathbb E_{x\sim p(\cdot\mid\theta)} \frac1n\sum_i g_i g_i^\top`.

    The expectation is over data simulated from the model at θ (covariates and other arguments
    held fixed), estimated by Monte Carlo over ``num_samples`` simulated data sets (one vmapped
    program). Needs a generative model: a :class:`genbayes.losses.Loss` site cannot be simulated.
    The expected information of Fisher (1925); under a well-specified model it equals the
    sandwich's J and I (Huber 1967).

    Args:
        model: a NumPyro model (generative in its observed sites).
        params: dict latent site -> value (all latent sites).
        *args: the model's positional arguments (with the data).
        rng_key: JAX PRNG key for the simulations.
        num_samples: number of simulated data sets.
        sites: observed site(s) to include (default: all).
        units: observation units (:mod:`genbayes.units`): the information per *unit*.
        **kwargs: the model's keyword arguments.

    Returns:
        ``(D, D)`` array.

    Example:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> from genbayes import fisher
        >>> def model(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("x", dist.Normal(mu, 2.0), obs=x)
        >>> F = fisher.fisher(model, {"mu": 0.0}, jnp.zeros(50), rng_key=jax.random.PRNGKey(0), num_samples=200)
        >>> bool(abs(F[0, 0] - 0.25) < 0.02)         # 1 / sigma^2, Monte Carlo error ~0.0035
        True
    """
    if rng_key is None:
        raise ValueError("`rng_key` is required: pass e.g. jax.random.PRNGKey(0).")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"`num_samples` must be a positive integer, got {num_samples!r}.")
    flat, unravel, f, names, tr = _flat_log_density(model, args, kwargs, params, sites, units=units)
    if units is not None:
        names = [k for k in _observed_sites(tr, None)]

    def one(key):
        h = _resample_obs(model, rng_key=key, sites=names)
        _trace(h, args, kwargs, unravel(flat))
        g = jax.jacfwd(f)(flat, h.draws)
        return g.T @ g / g.shape[0]

    return jnp.mean(jax.vmap(one)(jax.random.split(rng_key, num_samples)), axis=0)


# ----------------------------------------------------------------------------- sandwich / smoothing


def auto_bandwidth(residuals) -> float:
    r"""Uniform-kernel bandwidth :math:`h = 1.74 \cdot 0.9 \min(\hat\sigma, \mathrm{IQR}/1.34)\, m^{-1/5}`.

    Silverman's (1986, eq. 3.31) rule of thumb, multiplied by 1.74, the ratio of the canonical
    bandwidths of the uniform and Gaussian kernels (Marron & Nolle 1988).

    Example:
        >>> import numpy as np
        >>> from genbayes.fisher import auto_bandwidth
        >>> round(auto_bandwidth(np.random.default_rng(0).normal(size=10_000)), 2)
        0.25
    """
    r = np.asarray(residuals, dtype=float).ravel()
    r = r[np.isfinite(r)]
    if r.size < 2:
        raise ValueError("Need at least two finite residuals to choose a bandwidth.")
    sd = np.std(r, ddof=1)
    iqr = np.subtract(*np.percentile(r, [75, 25]))
    spread = min(sd, iqr / 1.34) if iqr > 0 else sd
    if not spread > 0:
        spread = np.mean(np.abs(r)) or 1.0
    return float(1.74 * 0.9 * spread * r.size ** (-0.2))


def _smoothed(loss_fn, h):
    """Uniform-kernel smoothing of ``loss_fn`` in the prediction: exact derivatives by central differences."""

    def smoothed(p, y):
        @jax.custom_jvp
        def f(p):
            return loss_fn(p, y)

        @f.defjvp
        def f_jvp(primals, tangents):
            (p,), (dp,) = primals, tangents
            out = loss_fn(p, y)
            slope = (loss_fn(p + h, y) - loss_fn(p - h, y)) / (2.0 * h)
            return out, jnp.broadcast_to(slope * dp, jnp.shape(out))

        return f(p)

    for attr in ("name", "smooth", "margin"):
        if hasattr(loss_fn, attr):
            setattr(smoothed, attr, getattr(loss_fn, attr))
    return smoothed


def _find_loss(fn):
    """(Loss, rebuild) when ``fn`` is a Loss possibly wrapped in Expanded/Masked distributions."""
    from .losses import Loss

    if isinstance(fn, Loss):
        return fn, lambda new: new
    if isinstance(fn, dist.MaskedDistribution):
        inner, rebuild = _find_loss(fn.base_dist)
        return inner, (None if inner is None else (lambda new: rebuild(new).mask(fn._mask)))
    if isinstance(fn, dist.ExpandedDistribution):
        inner, rebuild = _find_loss(fn.base_dist)
        return inner, (None if inner is None else (lambda new: rebuild(new).expand(fn.batch_shape)))
    return None, None


class _smooth_losses(Messenger):
    """Swap the loss of selected ``Loss`` sites for its uniform-kernel smoothing (bandwidth per site)."""

    def __init__(self, fn=None, bandwidths=None):
        self.bandwidths = bandwidths or {}
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] != "sample" or not msg["is_observed"] or msg["name"] not in self.bandwidths:
            return
        loss, rebuild = _find_loss(msg["fn"])
        if loss is None:
            return
        from .losses import Loss

        new = Loss(_smoothed(loss.loss_fn, self.bandwidths[msg["name"]]), loss.prediction, event_dim=loss._loss_event_dim)
        msg["fn"] = rebuild(new)


def _site_residuals(site):
    loss, _ = _find_loss(site["fn"])
    pred = jnp.broadcast_to(loss.prediction, jnp.broadcast_shapes(jnp.shape(loss.prediction), jnp.shape(site["value"])))
    if getattr(loss.loss_fn, "margin", False):
        return np.asarray(pred)
    return np.asarray(site["value"] - pred)


class Sandwich(NamedTuple):
    r"""The sandwich pieces at θ: :math:`I` (score covariance) and :math:`J` (mean negative Hessian).

    Attributes:
        I: ``(D, D)`` covariance of the per-observation scores.
        J: ``(D, D)`` mean of :math:`-H_i` (for a loss: mean Hessian of the loss; smoothed where needed).
        n: number of observations.
        bandwidths: dict site -> smoothing bandwidth h (only the smoothed sites).

    ``covariance`` is the sandwich :math:`J^{-1} I J^{-1}/n` (Huber 1967) and
    ``llb_learning_rate`` the rate :math:`\mathrm{tr}(J I^{-1} J^\top)/\mathrm{tr}(J)` of Lyddon,
    Holmes & Walker (2019, §3).

    Example:
        >>> import jax.numpy as jnp
        >>> from genbayes.fisher import Sandwich
        >>> s = Sandwich(I=jnp.array([[4.0]]), J=jnp.array([[1.0]]), n=3, bandwidths={})
        >>> round(float(s.covariance[0, 0]), 4), float(s.llb_learning_rate)
        (1.3333, 0.25)
    """

    I: jax.Array
    J: jax.Array
    n: int
    bandwidths: dict

    def _xp(self):
        # concrete matrices: numpy (no eager JAX operation to compile); traced ones: jax.numpy
        return (np, np.asarray(self.I), np.asarray(self.J)) if is_concrete((self.I, self.J)) else (jnp, self.I, self.J)

    @property
    def covariance(self):
        r"""Sandwich covariance of the loss minimiser, :math:`J^{-1} I J^{-1} / n`."""
        xp, I, J = self._xp()
        Jinv = xp.linalg.inv(J)
        return Jinv @ I @ Jinv.T / self.n

    @property
    def llb_learning_rate(self):
        r"""Lyddon, Holmes & Walker (2019) rate :math:`\mathrm{tr}(J I^{-1} J^\top) / \mathrm{tr}(J)`."""
        xp, I, J = self._xp()
        return xp.trace(J @ xp.linalg.solve(I, J.T)) / xp.trace(J)

    def __repr__(self):
        return (
            f"Sandwich(D={self.I.shape[0]}, n={self.n}, tr(I)={float(np.trace(np.asarray(self.I))):.4g}, "
            f"tr(J)={float(np.trace(np.asarray(self.J))):.4g}, bandwidths={self.bandwidths})"
        )


def _sandwich_parts(model, args, kwargs, names, U, params, bws):
    """Per-unit scores g (n, d), per-unit log densities (n,), I = Cov(g) and J = -H / n at ``params``.

    J from the losses smoothed with bandwidths ``bws`` (site -> h) where given. Pure: run under
    ``jit`` by :func:`sandwich`, which checks its inputs and outputs.
    """
    flat, unravel = ravel_pytree({k: jnp.asarray(v) for k, v in params.items()})
    f = _per_unit_fn(model, args, kwargs, names, U, unravel)
    g = jax.jacfwd(f)(flat)
    fj = _per_unit_fn(_smooth_losses(model, bandwidths=bws), args, kwargs, names, U, unravel) if bws else f
    J = -jax.hessian(lambda t: jnp.sum(fj(t)))(flat) / g.shape[0]
    return g, f(flat), jnp.atleast_2d(jnp.cov(g, rowvar=False)), J


def sandwich(model, params, *args, sites=None, bandwidth="auto", units=None, **kwargs) -> Sandwich:
    r"""Sandwich pieces :math:`I = \widehat{\mathrm{Cov}}(g_i)` and :math:`J = -\frac1n\sum_i H_i` at θ.

    With θ the loss minimiser, :math:`\hat\theta \approx N(\theta_0, J^{-1} I J^{-1}/n)`
    (Huber 1967); Lyddon, Holmes & Walker (2019, §3) match the Gibbs posterior
    :math:`N(\hat\theta, (w n J)^{-1})` to it. For losses with zero second derivative almost
    everywhere (``loss.smooth is False``: absolute, check, hinge) J is computed from the
    uniform-kernel smoothing of the loss (see the module docstring).

    Args:
        model: a NumPyro model (observed sites may be :class:`genbayes.losses.Loss` sites).
        params: dict latent site -> value (all latent sites), usually the loss minimiser.
        *args: the model's positional arguments (with the data).
        sites: observed site(s) to include (default: all).
        bandwidth: ``"auto"`` (smooth only non-smooth ``Loss`` sites, Silverman-type bandwidth),
            a positive float (smooth every ``Loss`` site with this h), a dict site -> h, or
            ``None`` (never smooth: exact autodiff Hessian).
        units: observation units (:mod:`genbayes.units`): I is then the covariance of the per-unit
            scores (summed over each unit's entries: a cluster-robust sandwich, Liang & Zeger 1986)
            and J the mean negative Hessian per unit; ``n`` is the number of units.
        **kwargs: the model's keyword arguments.

    Returns:
        :class:`Sandwich`. Warns if J is not positive definite (e.g. a non-smooth user loss
        without ``smooth = False``; pass a bandwidth).

    Example:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> from genbayes import fisher
        >>> from genbayes.losses import Loss, squared
        >>> def model(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("x", Loss(squared, mu), obs=x)
        >>> s = fisher.sandwich(model, {"mu": 0.0}, jnp.array([-2.0, 0.0, 2.0]))
        >>> s.J.tolist(), s.I.tolist()                     # J = 1, I = sample variance (ddof 1)
        ([[1.0]], [[4.0]])
    """
    import warnings

    tr = _check_params(model, args, kwargs, params)
    names = _observed_sites(tr, sites)
    if units is not None:
        if sites is not None:
            raise ValueError("Pass either `sites` (observations along the leading axis) or `units` (observation "
                             "units), not both; `units={site: ids or None}` selects sites (None: left out).")
        U = _resolve_units(model, args, kwargs, units)
        names, units = list(U.index), U
    bws = {}
    for name in names:
        loss, _ = _find_loss(tr[name]["fn"])
        if loss is None or bandwidth is None:
            continue
        if isinstance(bandwidth, Mapping):
            if name in bandwidth:
                bws[name] = bandwidth[name]
        elif isinstance(bandwidth, str):
            if bandwidth != "auto":
                raise ValueError(f"`bandwidth` must be 'auto', a positive float, a dict or None, got {bandwidth!r}.")
            if getattr(loss.loss_fn, "smooth", True) is False:
                if not is_concrete(params):
                    raise ValueError("bandwidth='auto' needs concrete params; pass a numeric bandwidth under jit/vmap.")
                bws[name] = auto_bandwidth(_site_residuals(tr[name]))
        else:
            bws[name] = bandwidth
    for k, h in bws.items():
        if is_concrete(h) and not (np.isfinite(h) and h > 0):
            raise ValueError(f"bandwidth for site {k!r} must be finite and > 0, got {h!r}.")
    # scores from the loss itself (a smoothed subgradient would shrink I); curvature from the smoothing
    if is_concrete((params, bws)):
        # concrete inputs: one compiled program per model, sites and structure (data and params are
        # its inputs), so a first call traces under jit instead of running every operation eagerly
        settings = (tuple(names), None if units is None else units.key, tuple(sorted(bws)))
        part = _programs.data_program("sandwich", model, args, kwargs, settings,
                                      lambda a, kw: partial(_sandwich_parts, model, a, kw, names, units))
        g, values, I, J = part({k: jnp.asarray(v) for k, v in params.items()}, {k: jnp.asarray(h) for k, h in bws.items()})
    else:
        g, values, I, J = _sandwich_parts(model, args, kwargs, names, units, params, bws)
    n = g.shape[0]
    if n < 2:  # the score covariance I has n - 1 degrees of freedom: NaN from one unit
        raise ValueError(f"sandwich needs at least 2 observation units to estimate I (the covariance of the "
                         f"per-unit scores); the data give {n}.")
    if is_concrete(g):
        # a unit whose loss is NaN can still have a finite (zero) gradient: check both
        ok = np.all(np.isfinite(np.asarray(g)), axis=1) & np.isfinite(np.asarray(values))
        bad = np.flatnonzero(~ok)
        if bad.size:  # a NaN-loss unit used to enter I with score 0, as if it were information
            raise NonFiniteLoss(
                f"sandwich: the per-unit loss or its gradient is not finite for {bad.size} of {n} observation units "
                f"(first: unit {int(bad[0])}) at these parameters; check the data there and the loss (a NaN or "
                f"infinite loss value, or a parameter outside the loss's domain).")
    if is_concrete(J):
        eig = np.linalg.eigvalsh(0.5 * (np.asarray(J) + np.asarray(J).T))
        if not np.all(eig > 0):
            warnings.warn(
                f"The mean loss Hessian J is not positive definite (smallest eigenvalue {eig.min():.3g}). "
                "If the loss is piecewise linear, mark it `smooth = False` or pass `bandwidth=`.",
                RuntimeWarning,
                stacklevel=2,
            )
    return Sandwich(I=I, J=J, n=int(n), bandwidths=bws)
