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

from ._validation import check_nonnegative_finite, is_concrete

__all__ = ["reweight", "tempered"]


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

    def __init__(self, fn=None, *, weights, sites=None):
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
