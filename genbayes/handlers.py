"""The weighted-likelihood core: NumPyro effect handlers that reweight observations.

Almost every tool in genbayes is "the same posterior, with each observation's log-likelihood
multiplied by a weight" (ordinary Bayes: 1; power posterior: β; leave-P-out fold: 0/1;
bootstrap: counts or Dirichlet weights). :class:`reweight` is that one operation, written as
a NumPyro ``Messenger`` with *static shapes*: weights never change the shape of anything, so
thousands of folds, replicates or temperatures become one ``jax.vmap``-ed, jit-compiled program.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.primitives import Messenger

from ._validation import check_args_finite, check_nonnegative_finite, guard_empty_plates, is_concrete

__all__ = ["reweight", "tempered", "gibbs"]


def _as_site_set(sites, argname: str = "sites"):
    if sites is None:
        return None
    if isinstance(sites, str):
        return frozenset([sites])
    if isinstance(sites, Iterable):
        out = frozenset(sites)
        if not all(isinstance(s, str) for s in out):
            raise TypeError(f"`{argname}` must be a site name or an iterable of site names, got {sites!r}.")
        if not out:
            raise ValueError(f"`{argname}` is empty; pass None to reweight every observed site.")
        return out
    raise TypeError(f"`{argname}` must be a site name or an iterable of site names, got {sites!r}.")


class reweight(Messenger):
    r"""Multiply the per-observation log density of observed sites by ``weights``.

    For an observed site with per-observation log densities :math:`\log p(x_i \mid \theta)` the
    handler contributes

    .. math:: \sum_i w_i \log p(x_i \mid \theta)

    to the joint log density instead of :math:`\sum_i \log p(x_i \mid \theta)`. This is the
    weighted (generalized) likelihood of Bissiri, Holmes & Walker (2016, eq. 1 with loss
    :math:`-\log p`), and covers power posteriors (:math:`w_i = \beta`), leave-P-out folds
    (:math:`w_i \in \{0, 1\}`) and bootstraps (counts or Dirichlet weights).

    Weights of exactly 0 drop the observation: its density is masked out
    (``handlers.mask``) as well as scaled, so an observation whose log density is
    :math:`-\infty` (outside the support, or a degenerate parameter) gives 0, never NaN.
    NumPyro's own ``handlers.scale`` refuses 0, which is why this is its own handler. One
    consequence: :math:`\partial/\partial w_i` of the log density at exactly :math:`w_i = 0`
    is 0, not :math:`\log p(x_i \mid \theta)`; at every :math:`w_i > 0` it is the
    log-likelihood term.

    Args:
        fn: a NumPyro model (or ``None`` to use as a context manager).
        weights: array broadcastable to each selected observed site's batch shape
            (for a site in a plate over ``n``, shape ``(n,)`` or a scalar), or a dict mapping
            site names to such arrays. Entries must be finite and ``>= 0``. Under a subsampling
            ``plate``, weights of the plate's full size are indexed by the subsample.
            Traced values (inside ``jit``/``vmap``/``grad``) are accepted and not checked.
        sites: the observed sites to reweight (a name or an iterable of names); ``None``
            reweights every observed site except ``numpyro.factor`` sites (which are not
            observations; name one explicitly to reweight it). Latent sites and priors are
            never touched.
        units: a :class:`genbayes.units.Units` (from :func:`genbayes.units.find`): ``weights``
            are then one per observation *unit*, shape ``(num_units,)`` (or a scalar), and each
            entry of an observed site takes its unit's weight (0 for entries in no unit, e.g.
            masked ones; fixed sites keep weight 1). This is how every genbayes tool weights data.
            With enumerated discrete latents the weight must act on the unit's *marginal*
            likelihood: evaluate the density with :func:`genbayes.units.log_density`, not
            NumPyro's enumerated ``log_density`` (which weights each joint term before summing).

    Raises:
        ValueError: for negative or non-finite weights (when concrete), weights whose shape
            does not broadcast to a site's batch shape, or a name in ``sites`` that does not
            occur in the model.

    Example:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> from numpyro.infer.util import log_density
        >>> import genbayes as gb
        >>> def model(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=x)
        >>> x = jnp.array([0.5, -1.0, 2.0])
        >>> lp_fold, _ = log_density(gb.reweight(model, weights=jnp.array([1.0, 0.0, 1.0])), (x,), {}, {"mu": 0.0})
        >>> lp_two, _ = log_density(model, (x[jnp.array([0, 2])],), {}, {"mu": 0.0})
        >>> bool(jnp.allclose(lp_fold, lp_two))
        True

    Reference: Bissiri, Holmes & Walker (2016), "A general framework for updating belief
    distributions", JRSS B 78(5).
    """

    def __init__(self, fn=None, *, weights, sites=None, units=None):
        from .units import Units

        if units is not None:
            if not isinstance(units, Units):
                raise TypeError(
                    f"`units` must be a gb.units.Units (from gb.units.find(model, *args, units=...)), got "
                    f"{type(units).__name__}; resolve a plate name or group ids with gb.units.find first."
                )
            if sites is not None or isinstance(weights, Mapping):
                raise ValueError("With `units`, pass one weight per unit (shape (num_units,)), not `sites` or a dict.")
            if is_concrete(weights) and np.ndim(weights) not in (0, 1) or (
                    np.ndim(weights) == 1 and np.shape(weights)[0] != units.num_units):
                raise ValueError(
                    f"`weights` must have shape ({units.num_units},), one per unit of {units!r}, or be a scalar; "
                    f"got shape {tuple(np.shape(weights))}."
                )
        self.units = units
        if isinstance(weights, Mapping):
            if sites is not None:
                raise ValueError("Pass either `weights` as a dict of site -> weights, or `sites`, not both.")
            self.weights = {k: self._check(v, f"weights[{k!r}]") for k, v in weights.items()}
            self.sites = _as_site_set(list(weights))
        else:
            self.weights = self._check(weights, "weights")
            self.sites = _as_site_set(sites)
        self._seen, self._all_sites, self._subsample_indices = set(), set(), {}
        super().__init__(fn)

    def __call__(self, *args, **kwargs):
        # the data are checked where the model is called, positional or keyword, before it runs
        check_args_finite(args, kwargs)
        with guard_empty_plates(args, kwargs):
            return super().__call__(*args, **kwargs)

    @staticmethod
    def _check(w, name):
        check_nonnegative_finite(w, name, hint=" Use 0 to drop an observation.")
        return w if not is_concrete(w) or hasattr(w, "dtype") else np.asarray(w, dtype=float)

    # -- context-manager bookkeeping: report unknown site names once the model has run --
    def __enter__(self):
        self._seen, self._all_sites, self._subsample_indices = set(), set(), {}
        return super().__enter__()

    def __exit__(self, exc_type, exc_value, traceback):
        out = super().__exit__(exc_type, exc_value, traceback)
        if exc_type is None and self.sites is not None:
            missing = sorted(self.sites - self._seen)
            if missing:
                raise ValueError(
                    f"`sites` names {missing}, which the model does not sample; "
                    f"its sample sites are {sorted(self._all_sites)}."
                )
        return out

    def postprocess_message(self, msg):
        if msg["type"] == "plate":
            # remember subsample indices so full-size weights can follow a subsampling plate
            self._subsample_indices[msg["name"]] = (msg["args"][0], msg["value"])

    def process_message(self, msg):
        if msg["type"] != "sample":
            return
        self._all_sites.add(msg["name"])
        if self.sites is not None and msg["name"] in self.sites:
            self._seen.add(msg["name"])
        if not msg["is_observed"]:
            return
        if self.sites is None and isinstance(msg["fn"], dist.Unit):
            # numpyro.factor sites (and the Jacobian terms NumPyro adds while computing
            # potentials) are not observations: only reweight them when named explicitly
            return
        if self.sites is not None and msg["name"] not in self.sites:
            return
        if self.units is not None:
            if msg["name"] in self.units.fixed:
                return
            if msg["name"] not in self.units.index:
                raise ValueError(
                    f"Observed site {msg['name']!r} is not in `units` {self.units!r}; build the units from the same "
                    "model and arguments (gb.units.find)."
                )
            w = jnp.broadcast_to(jnp.asarray(self.weights), (self.units.num_units,))
            w = self.units.element_weights(w, msg["name"])
        else:
            w = self.weights[msg["name"]] if isinstance(self.weights, dict) else self.weights
        w = jnp.asarray(w)
        value = msg["value"]
        event_dim = msg["fn"].event_dim
        batch_shape = tuple(jnp.shape(value)[: max(jnp.ndim(value) - event_dim, 0)])
        batch_shape = tuple(np.broadcast_shapes(batch_shape, tuple(msg["fn"].batch_shape)))
        w = self._follow_subsampling(w, msg, batch_shape)
        try:
            out_shape = np.broadcast_shapes(jnp.shape(w), batch_shape)
        except ValueError:
            out_shape = None
        if out_shape != batch_shape:
            raise ValueError(
                f"`weights` of shape {tuple(jnp.shape(w))} do not broadcast to the batch shape "
                f"{batch_shape} of observed site {msg['name']!r}; pass one weight per observation "
                f"(shape {batch_shape}) or a scalar."
            )
        msg["fn"] = msg["fn"].mask(w > 0)
        msg["scale"] = w if msg["scale"] is None else msg["scale"] * w

    def _follow_subsampling(self, w, msg, batch_shape):
        for frame in msg["cond_indep_stack"]:
            size, idx = self._subsample_indices.get(frame.name, (None, None))
            if idx is None or jnp.ndim(w) < -frame.dim:
                continue
            if jnp.shape(idx)[0] != size and jnp.shape(w)[frame.dim] == size:
                w = jnp.take(w, idx, axis=frame.dim)
        return w


class tempered(reweight):
    r"""Power likelihood: multiply the log-likelihood of observed sites by ``temperature``.

    .. math:: \pi_\beta(\theta \mid x) \propto p(x \mid \theta)^{\beta}\, \pi(\theta)

    the power posterior of thermodynamic integration and tempered SMC (Friel & Pettitt 2008).
    Since :math:`\partial_\beta \log[p(x\mid\theta)^\beta \pi(\theta)] = \log p(x \mid \theta)`,
    the gradient of the tempered log density with respect to ``temperature`` is the
    thermodynamic-integration integrand (for :math:`\beta > 0`; see :class:`reweight` for
    :math:`\beta = 0`).

    Args:
        fn: a NumPyro model (or ``None`` to use as a context manager).
        temperature: a finite scalar :math:`\beta \ge 0` (usually in ``[0, 1]``), possibly traced.
        sites: observed sites to temper; ``None`` tempers all of them.

    Example:
        >>> import genbayes as gb
        >>> tempered_model = gb.tempered(lambda: None, temperature=0.5)

    Reference: Friel & Pettitt (2008), "Marginal likelihood estimation via power posteriors",
    JRSS B 70(3), eq. (2).
    """

    def __init__(self, fn=None, *, temperature, sites=None):
        if is_concrete(temperature) and np.ndim(temperature) != 0:
            raise ValueError(
                f"`temperature` must be a scalar, got shape {np.shape(temperature)}; "
                "use gb.reweight for per-observation weights."
            )
        check_nonnegative_finite(temperature, "temperature", hint=" A power posterior needs beta >= 0.")
        self.temperature = temperature
        super().__init__(fn, weights=temperature, sites=sites)


def _check_learning_rate(lr, name):
    from ._validation import is_concrete as _concrete

    if not _concrete(lr):
        return
    arr = np.asarray(lr)
    if not (np.issubdtype(arr.dtype, np.number) and arr.dtype != bool):
        raise TypeError(f"`{name}` must be numeric, got {lr!r}.")
    from ._validation import _reject_complex

    _reject_complex(arr, name)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(
            f"`{name}` must be finite and > 0, got {lr!r}. A learning rate of 0 would ignore the data "
            "(the posterior is the prior); use gb.reweight with weight 0 to drop observations."
        )


class gibbs(Messenger):
    r"""Turn a likelihood model into a Gibbs (loss-based) posterior.

    For each observed site named in ``loss`` the likelihood :math:`p(y_i \mid \theta)` is replaced by
    :math:`\exp(-w\, \ell(f_i(\theta), y_i))` with :math:`f_i` the site distribution's ``mean``
    (or ``predict[site](distribution)``), giving

    .. math:: \pi_w(\theta \mid y) \propto \exp\Big(-w \sum_i \ell(f_i(\theta), y_i)\Big)\,\pi(\theta),

    the general Bayesian update of Bissiri, Holmes & Walker (2016, eq. 1). The site's
    distribution is replaced by :class:`genbayes.losses.Loss` and its scale multiplied by w, so
    plates, masks (kept), subsampling and :class:`reweight` compose as usual. Sites that are not
    observed in a run (``obs=None``, e.g. under ``numpyro.infer.Predictive``) are left untouched,
    so the model's generative path still simulates from the likelihood.

    Args:
        fn: a NumPyro model (or ``None`` to use as a context manager).
        loss: dict observed-site name -> loss ``loss(prediction, observation)`` (see
            :mod:`genbayes.losses`), or one loss for every observed site.
        learning_rate: w > 0, a scalar (or an array broadcasting to the site's batch shape), or a
            dict site -> such a value. May be a traced JAX value (vmap over rates); concrete values
            are checked.
        predict: optional dict site -> ``distribution -> prediction`` (default ``d.mean``), e.g.
            ``{"y": lambda d: d.loc}`` or a quantile.

    Raises:
        ValueError: for a learning rate that is zero, negative or not finite (at construction); a
            ``loss``/``learning_rate``/``predict`` name that is not a sample site of the model, or a
            named site that is latent while the model observes other sites (after the model runs).
        TypeError: for a loss that is not callable.

    Example:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, genbayes as gb
        >>> from genbayes.handlers import gibbs
        >>> from genbayes.losses import absolute
        >>> from numpyro.infer.util import log_density
        >>> def model(y):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("n", y.shape[0]):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> y = jnp.array([1.0, -2.0])
        >>> lp, _ = log_density(gibbs(model, loss={"y": absolute}, learning_rate=2.0), (y,), {}, {"mu": 0.0})
        >>> round(float(lp - dist.Normal(0.0, 1.0).log_prob(0.0)), 6)      # -2 * (1 + 2)
        -6.0
    """

    def __init__(self, fn=None, *, loss, learning_rate=1.0, predict=None):
        if isinstance(loss, Mapping):
            if not loss:
                raise ValueError("`loss` is empty; map at least one observed site name to a loss.")
            for k, v in loss.items():
                if not isinstance(k, str):
                    raise TypeError(f"`loss` keys must be site names (str), got {k!r}.")
                if not callable(v):
                    raise TypeError(f"`loss[{k!r}]` must be a callable loss(prediction, observation), got {v!r}.")
            self.loss = dict(loss)
        elif callable(loss):
            self.loss = loss
        else:
            raise TypeError(f"`loss` must be a dict site -> loss or a single loss callable, got {loss!r}.")
        if isinstance(learning_rate, Mapping):
            for k, v in learning_rate.items():
                _check_learning_rate(v, f"learning_rate[{k!r}]")
        else:
            _check_learning_rate(learning_rate, "learning_rate")
        self.learning_rate = learning_rate
        if predict is not None:
            if not isinstance(predict, Mapping) or not all(callable(v) for v in predict.values()):
                raise TypeError("`predict` must be a dict site -> callable(distribution) -> prediction.")
        self.predict = dict(predict or {})
        self._reset()
        super().__init__(fn)

    def _reset(self):
        self._all_sites, self._observed, self._latent_named = set(), set(), set()

    def __call__(self, *args, **kwargs):
        # the data are checked where the model is called, positional or keyword, before it runs
        check_args_finite(args, kwargs)
        with guard_empty_plates(args, kwargs):
            return super().__call__(*args, **kwargs)


    def _named(self):
        names = set(self.predict)
        if isinstance(self.loss, dict):
            names |= set(self.loss)
        if isinstance(self.learning_rate, Mapping):
            names |= set(self.learning_rate)
        return names

    def __enter__(self):
        self._reset()
        return super().__enter__()

    def __exit__(self, exc_type, exc_value, traceback):
        out = super().__exit__(exc_type, exc_value, traceback)
        if exc_type is None:
            names = self._named()
            missing = sorted(names - self._all_sites)
            if missing:
                raise ValueError(
                    f"gb.gibbs names site(s) {missing}, which the model does not sample; its sample sites "
                    f"are {sorted(self._all_sites)}."
                )
            if self._latent_named and self._observed:
                raise ValueError(
                    f"gb.gibbs gives a loss to site(s) {sorted(self._latent_named)}, which are latent "
                    f"(not observed); the observed sites are {sorted(self._observed)}. Losses apply to "
                    "observed sites only."
                )
        return out

    def _lookup(self, table, name, default=None):
        if isinstance(table, Mapping):
            return table.get(name, default)
        return table

    def process_message(self, msg):
        if msg["type"] != "sample":
            return
        name = msg["name"]
        self._all_sites.add(name)
        loss_fn = self._lookup(self.loss, name)
        if not msg["is_observed"]:
            if isinstance(self.loss, Mapping) and name in self.loss:
                self._latent_named.add(name)
            return
        import numpyro.distributions as dist

        # numpyro.factor terms (and the Jacobian sites NumPyro's initialisation adds, `_s_log_det`) are
        # dist.Unit "observations" with no data: not likelihood terms, so no loss replaces them
        if isinstance(msg["fn"], dist.Unit) and name not in self._named():
            return
        self._observed.add(name)
        if loss_fn is None:
            return
        from .losses import Loss

        base, outer_batch, masks = msg["fn"], msg["fn"].batch_shape, []
        # plates and masks wrap the site's distribution (Expanded/Masked, in either order); predict
        # from the original distribution and re-apply every mask to the loss
        while isinstance(base, (dist.ExpandedDistribution, dist.MaskedDistribution)):
            if isinstance(base, dist.MaskedDistribution):
                masks.append(base._mask)
            base = base.base_dist
        getter = self.predict.get(name)
        try:
            prediction = getter(base) if getter is not None else base.mean
        except (NotImplementedError, ValueError) as e:
            raise ValueError(
                f"gb.gibbs cannot take the mean of site {name!r} ({type(base).__name__}) as its prediction; "
                f"pass predict={{{name!r}: lambda d: ...}}."
            ) from e
        new = Loss(loss_fn, prediction, event_dim=base.event_dim)
        if tuple(new.batch_shape) != tuple(outer_batch):
            new = new.expand(outer_batch)
        for m in masks:
            new = new.mask(m)
        msg["fn"] = new
        lr = self._lookup(self.learning_rate, name, 1.0)
        lr = jnp.asarray(lr)
        try:
            ok = np.broadcast_shapes(jnp.shape(lr), tuple(outer_batch)) == tuple(outer_batch)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"`learning_rate` of shape {tuple(jnp.shape(lr))} does not broadcast to the batch shape "
                             f"{tuple(outer_batch)} of observed site {name!r}; pass a scalar or one rate per observation.")
        msg["scale"] = lr if msg["scale"] is None else msg["scale"] * lr
