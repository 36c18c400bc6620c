r"""Observation units: what a weight, a held-out set or a bootstrap draw is attached to.

Every tool in genbayes weights *units* of the data: a leave-P-out fold gives weight 0 to P
units, a bootstrap gives each unit a count, a power posterior gives every unit β. A unit is one
exchangeable piece of the data, found once by tracing the model (:func:`find`) and then used by
every tool through :class:`genbayes.reweight` (``units=``). The rules:

- **Default** (``units=None``): every observed sample site (``numpyro.factor`` sites are not
  observations) and each element of the site's *outermost* plate is one unit; when several
  observed sites share that plate, unit *u* is the set of their elements at index *u*. When the
  observed sites lie in different outermost plates, or one lies in no plate, the default is
  ambiguous and :func:`find` raises an error listing the sites with their plates and shapes.
- **By plate** (``units="schools"``): the elements of the named plate; every observed site must
  lie in it.
- **By group** (``units={"y": group_of_y, "z": group_of_z}``, or one integer array when every
  observed site shares the default plate): each observation's group id (an integer array
  broadcasting to the site's batch shape). A unit is a group: leave-one-group-out, cluster
  bootstrap, grouped k-fold. Sites of different sizes (group-level and observation-level data of a
  hierarchical model) can be assigned to the same groups. A site mapped to ``None`` is *fixed*:
  always conditioned on, never weighted. An id of ``-1`` puts an entry in no unit.
- **Masked entries belong to no unit**: entries masked by the model (``obs_mask=``,
  ``handlers.mask``, ``Distribution.mask``) and entries that ``mask={"y": bool_array}`` marks
  ``False``. Entries in no unit take no part in the likelihood (weight 0); a unit all of whose
  entries are masked does not exist (it is never held out or scored).

A weight :math:`w_u` multiplies the unit's **marginal** log-likelihood,

.. math:: \log p_w(x, \theta) = \log \pi(\theta) + \sum_u w_u \log p(x_u \mid \theta),
          \qquad \log p(x_u \mid \theta) = \log \sum_{z_u} p(z_u \mid \theta)\, p(x_u \mid z_u, \theta),

also for discrete latent variables enumerated with ``config_enumerate`` /
``infer={"enumerate": "parallel"}`` (summed out *before* the weight acts; :func:`log_density`),
and for fractional weights (power posteriors, Bayesian bootstrap). Raising the marginal, not the
joint, to the power :math:`w_u` is the weighted likelihood of Bissiri, Holmes & Walker (2016),
the power posterior of Friel & Pettitt (2008) and the leave-group-out posterior of Vehtari,
Gelman & Gabry (2017) with the group's latent variables integrated out.

Continuous unit-level latent variables (random effects) keep their prior: the weight acts on the
observations only, so a unit with weight 0 still has its random effect drawn from the prior — the
leave-one-group-out predictive :math:`p(x_g \mid x_{-g}) = \int p(x_g \mid \theta, \eta_g)
p(\eta_g \mid \theta) p(\theta \mid x_{-g})`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from ._validation import check_args_finite, guard_empty_plates, is_concrete

__all__ = ["Units", "find", "log_density", "log_likelihood", "potential_energy"]


# --------------------------------------------------------------------------------------------
# the resolved mapping
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Units:
    r"""The observation units of a model: a map from each observed entry to a unit id.

    Built by :func:`find`; pass it as ``units=`` to :class:`genbayes.reweight` (weights are then
    one per unit, shape ``(num_units,)``), and every genbayes tool builds it for you.

    Attributes:
        num_units: U, the number of units with data.
        index: dict observed site -> integer array broadcasting to the site's batch shape (the
            plate's *full* size along a subsampled plate): the unit of each entry, ``-1`` for none.
        labels: array ``(U,)``: the plate index (``kind="plate"``) or the group id
            (``kind="groups"``) of each unit.
        kind: ``"plate"`` or ``"groups"``.
        plate: the plate whose elements are the units (``kind="plate"``), else ``None``.
        fixed: observed sites in no unit (conditioned on, never weighted).
        enumerated: the model's discrete latent sites marked for parallel enumeration.
        shapes: dict observed site -> its batch shape in the traced run.
        plates: dict observed site -> names of its plates, outermost first.
        subsampled: names of plates that were subsampled in the traced run.

    Example:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, genbayes as gb
        >>> def model(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=x)
        >>> u = gb.units.find(model, jnp.zeros(4), units=jnp.array([0, 0, 1, 1]))
        >>> u.num_units, u.kind, u.labels.tolist()
        (2, 'groups', [0, 1])

    Reference: Vehtari, Gelman & Gabry (2017) for units as groups (leave-one-group-out).
    """

    num_units: int
    index: dict
    labels: np.ndarray
    kind: str
    plate: str | None
    fixed: tuple
    enumerated: tuple
    shapes: dict
    plates: dict
    subsampled: tuple = ()

    @property
    def sites(self) -> tuple:
        """The observed sites whose entries belong to units."""
        return tuple(self.index)

    @property
    def key(self):
        """A hashable summary (for caches of compiled programs)."""
        return (self.kind, self.plate, self.fixed, self.enumerated,
                tuple((k, v.shape, v.tobytes()) for k, v in self.index.items()))

    def element_weights(self, weights, site):
        """Per-entry weights of ``site`` for unit weights ``weights`` (shape ``(U,)``): 0 off every unit."""
        idx = self.index[site]
        w = jnp.asarray(weights)
        return jnp.where(idx >= 0, w[..., np.maximum(idx, 0)], jnp.zeros((), w.dtype))

    def sizes(self) -> np.ndarray:
        """Number of observed entries in each unit, shape ``(U,)``, summed over sites."""
        out = np.zeros(self.num_units, dtype=int)
        for s, idx in self.index.items():
            full = np.broadcast_to(idx, self.shapes[s]) if not self.subsampled else idx
            np.add.at(out, full[full >= 0].ravel(), 1)
        return out

    def describe(self) -> str:
        """One line per observed site: plates, batch shape and what its units are."""
        lines = []
        for s in self.index:
            lines.append(f"  {s!r}: plates {list(self.plates[s])}, batch shape {self.shapes[s]}")
        for s in self.fixed:
            lines.append(f"  {s!r}: fixed (conditioned on, never weighted)")
        return "\n".join(lines)

    def __repr__(self):
        what = f"plate {self.plate!r}" if self.kind == "plate" else "groups"
        extra = f", fixed={list(self.fixed)}" if self.fixed else ""
        extra += f", enumerated={list(self.enumerated)}" if self.enumerated else ""
        return f"Units({self.num_units} units by {what}, sites={list(self.index)}{extra})"


# --------------------------------------------------------------------------------------------
# finding units by tracing the model
# --------------------------------------------------------------------------------------------


def _trace(model, args, kwargs, concrete=False):
    """The model's trace; abstract (under ``jax.eval_shape``: nothing compiled) unless ``concrete``."""
    from numpyro.handlers import seed, trace

    def get():
        return trace(seed(model, jax.random.PRNGKey(0))).get_trace(*args, **kwargs)

    check_args_finite(args, kwargs)  # every tool traces the model through here: the data are checked once, first
    with guard_empty_plates(args, kwargs):
        if concrete:
            return get()
        box = []
        try:
            jax.eval_shape(lambda: box.append(get()))
        except jax.errors.JAXTypeError:  # a model that needs concrete values
            return get()
        return box[0]


def _has_array_mask(fn):
    d = fn
    while isinstance(d, (dist.ExpandedDistribution, dist.MaskedDistribution)):
        if isinstance(d, dist.MaskedDistribution) and not isinstance(d._mask, bool):
            return True
        d = d.base_dist
    return False


def _batch_shape(msg):
    value, fn = msg["value"], msg["fn"]
    batch = tuple(np.shape(value)[: max(np.ndim(value) - fn.event_dim, 0)])
    return tuple(np.broadcast_shapes(batch, tuple(fn.batch_shape)))


def _site_mask(fn, batch_shape):
    """The site's entry mask (True = observed) from ``MaskedDistribution`` layers, or None."""
    mask, d = None, fn
    while isinstance(d, (dist.ExpandedDistribution, dist.MaskedDistribution)):
        if isinstance(d, dist.MaskedDistribution) and not isinstance(d._mask, bool):
            m = np.asarray(d._mask, dtype=bool)
            m = np.broadcast_to(m, np.broadcast_shapes(np.shape(m), tuple(d.batch_shape)))
            if np.ndim(m) < len(batch_shape):
                m = np.broadcast_to(m, batch_shape[len(batch_shape) - np.ndim(m):])
            m = np.broadcast_to(m, batch_shape)
            mask = m if mask is None else mask & m
        elif isinstance(d, dist.MaskedDistribution) and d._mask is False:
            mask = np.zeros(batch_shape, bool)
        d = d.base_dist
    return mask


def _is_enumerated(msg):
    return (msg["type"] == "sample" and not msg["is_observed"]
            and msg["infer"].get("enumerate") == "parallel")


def _plate_info(tr):
    sizes, subsampled = {}, []
    for name, s in tr.items():
        if s["type"] == "plate":
            size, sub = s["args"]
            sizes[name] = int(size)
            if sub is not None and int(sub) != int(size):
                subsampled.append(name)
    return sizes, tuple(subsampled)


def _ambiguous(obs, why):
    lines = "\n".join(
        f"  {k!r}: plates {[f.name for f in reversed(s['cond_indep_stack'])] or 'none'}, batch shape {_batch_shape(s)}"
        for k, s in obs.items())
    return ValueError(
        f"Cannot tell the observation units of this model: {why}. Its observed sites (outermost plate first):\n"
        f"{lines}\nDeclare them with `units=`: a plate name (units='groups'), or each observation's group id "
        "per site (units={'y': group_of_y, 'z': group_of_z}; map a site to None to condition on it without "
        "weighting it). See genbayes.units."
    )


def find(model, *args, units=None, mask=None, **kwargs) -> Units:
    r"""Trace ``model(*args, **kwargs)`` once and return its observation :class:`Units`.

    The rules (default, by plate, by group, masks, enumerated latents) are in :mod:`genbayes.units`.

    Args:
        model: a NumPyro model.
        *args, **kwargs: its arguments (as for ``MCMC.run``).
        units: ``None`` (default: the outermost plate shared by the observed sites), a plate name,
            an integer group-id array (shared by every observed site), or a dict observed site ->
            group-id array (or ``None`` for a fixed site), or a :class:`Units` (returned as is).
        mask: optional dict observed site -> boolean array broadcasting to its batch shape;
            ``False`` entries belong to no unit and are dropped from the likelihood.

    Returns:
        :class:`Units`.

    Raises:
        ValueError: no observed site; ambiguous default units (the message lists every observed
            site with its plates and shape); an unknown plate or site name; group ids that are not
            integers >= -1 or do not broadcast to the site; a declared site that is latent.

    Example:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, genbayes as gb
        >>> def schools(sigma, y):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        ...     tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        ...     with numpyro.plate("J", y.shape[0]):
        ...         theta = numpyro.sample("theta", dist.Normal(mu, tau))
        ...         numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)
        >>> gb.units.find(schools, jnp.ones(8), jnp.zeros(8))
        Units(8 units by plate 'J', sites=['obs'])

    Reference: Vehtari, Gelman & Gabry (2017) for leave-one-group-out; Bissiri, Holmes & Walker
    (2016) for weighted likelihoods.
    """
    if isinstance(units, Units):
        return units
    if mask is not None and not isinstance(mask, Mapping):
        raise TypeError(f"`mask` must be a dict observed site -> boolean array, got {type(mask).__name__}.")
    tr = _trace(model, args, kwargs)
    obs = {k: s for k, s in tr.items()
           if s["type"] == "sample" and s["is_observed"] and not isinstance(s["fn"], dist.Unit)}
    if not obs:
        raise ValueError("The model has no observed sample site (no `obs=` data), so it has no observation units; "
                         "pass the data to the model, e.g. numpyro.sample('y', ..., obs=y).")
    sizes, subsampled = _plate_info(tr)
    enumerated = tuple(k for k, s in tr.items() if _is_enumerated(s))
    shapes = {k: _batch_shape(s) for k, s in obs.items()}
    plates = {k: tuple(f.name for f in reversed(s["cond_indep_stack"])) for k, s in obs.items()}
    frames = {k: {f.name: f for f in s["cond_indep_stack"]} for k, s in obs.items()}

    def plate_index(site, plate):
        f = frames[site][plate]
        n = sizes.get(plate, f.size)
        shape = list(shapes[site])
        if -f.dim > len(shape):
            raise ValueError(f"Observed site {site!r} lies in plate {plate!r} (dim {f.dim}) but its batch shape "
                             f"{shapes[site]} has no such dimension.")
        idx = np.arange(n).reshape((n,) + (1,) * (-f.dim - 1))
        if plate in subsampled:
            return idx
        shape[len(shape) + f.dim] = n
        return np.broadcast_to(idx, shape)

    fixed = ()
    if units is None or isinstance(units, str):
        if units is None:
            outer = {k: (p[0] if p else None) for k, p in plates.items()}
            if any(v is None for v in outer.values()):
                raise _ambiguous(obs, f"site(s) {sorted(k for k, v in outer.items() if v is None)} lie in no plate")
            if len(set(outer.values())) > 1:
                raise _ambiguous(obs, f"the observed sites lie in different outermost plates {sorted(set(outer.values()))}")
            plate = next(iter(outer.values()))
        else:
            plate = units
            if plate not in sizes:
                raise ValueError(f"`units`={plate!r} is not a plate of the model; its plates are {sorted(sizes)}.")
            outside = sorted(k for k in obs if plate not in plates[k])
            if outside:
                raise _ambiguous(obs, f"site(s) {outside} are not in plate {plate!r}")
        kind = "plate"
        index = {k: plate_index(k, plate) for k in obs}
    else:
        kind, plate = "groups", None
        if not isinstance(units, Mapping):
            outer = {k: (p[0] if p else None) for k, p in plates.items()}
            if any(v is None for v in outer.values()) or len(set(outer.values())) > 1:
                raise _ambiguous(obs, "a single group-id array needs every observed site in one outermost plate; "
                                      "pass a dict site -> group ids instead")
            units = {k: units for k in obs}
        unknown = sorted(set(units) - set(tr))
        if unknown:
            raise ValueError(f"`units` names site(s) {unknown}, which the model does not sample; "
                             f"its observed sites are {sorted(obs)}.")
        latent = sorted(k for k in units if k not in obs)
        if latent:
            raise ValueError(f"`units` names site(s) {latent}, which are latent; only observed sites belong to units "
                             f"(observed: {sorted(obs)}).")
        missing = sorted(set(obs) - set(units))
        if missing:
            raise _ambiguous(obs, f"`units` gives no group ids for observed site(s) {missing} (map a site to None "
                                  "to condition on it without weighting it)")
        fixed = tuple(k for k in obs if units[k] is None)
        index = {}
        for k in obs:
            if units[k] is None:
                continue
            g = np.asarray(units[k])
            if not np.issubdtype(g.dtype, np.integer):
                raise TypeError(f"`units[{k!r}]` must be an integer array of group ids, got dtype {g.dtype}.")
            if any(p in subsampled for p in plates[k]):
                raise ValueError(f"Observed site {k!r} lies in a subsampled plate; group units need the full data "
                                 "(remove subsample_size).")
            if np.any(g < -1):
                raise ValueError(f"`units[{k!r}]` has ids below -1; use ids 0, 1, ... (and -1 for 'in no unit').")
            try:
                np.broadcast_shapes(np.shape(g), shapes[k])
                if np.ndim(g) > len(shapes[k]) or np.broadcast_shapes(np.shape(g), shapes[k]) != shapes[k]:
                    raise ValueError
            except ValueError:
                raise ValueError(f"`units[{k!r}]` of shape {np.shape(g)} does not broadcast to the batch shape "
                                 f"{shapes[k]} of observed site {k!r}; give one group id per observation.") from None
            index[k] = np.broadcast_to(g, shapes[k])
    # masks: the model's own (obs_mask, handlers.mask) and the user's; mask values need a concrete run
    if any(_has_array_mask(obs[k]["fn"]) for k in index):
        ctr = _trace(model, args, kwargs, concrete=True)
        obs = {k: ctr[k] for k in obs}
    for k in index:
        if any(p in subsampled for p in plates[k]):
            continue
        m = _site_mask(obs[k]["fn"], shapes[k])
        if mask is not None and k in mask:
            um = np.asarray(mask[k], dtype=bool)
            try:
                um = np.broadcast_to(um, shapes[k])
            except ValueError:
                raise ValueError(f"`mask[{k!r}]` of shape {np.shape(mask[k])} does not broadcast to the batch shape "
                                 f"{shapes[k]} of observed site {k!r}.") from None
            m = um if m is None else m & um
        if m is not None:
            index[k] = np.where(m, index[k], -1)
    if mask is not None:
        bad = sorted(set(mask) - set(index))
        if bad:
            raise ValueError(f"`mask` names site(s) {bad} that are not observed sites in units ({sorted(index)}).")
    if not index:
        raise ValueError("`units` leaves no observed site in a unit (every site is fixed).")
    present = np.unique(np.concatenate([np.ravel(v) for v in index.values()]))
    present = present[present >= 0]
    if present.size == 0:
        raise ValueError("Every observed entry is masked: the model has no observation units.")
    relabel = np.full(int(present.max()) + 1, -1)
    relabel[present] = np.arange(present.size)
    index = {k: np.where(v >= 0, relabel[np.maximum(v, 0)], -1).astype(np.int32) for k, v in index.items()}
    return Units(num_units=int(present.size), index=index, labels=present, kind=kind, plate=plate, fixed=fixed,
                 enumerated=enumerated, shapes=shapes, plates=plates, subsampled=subsampled)


# --------------------------------------------------------------------------------------------
# log densities in which a weight acts on each unit's marginal likelihood
# --------------------------------------------------------------------------------------------


def _enum_model(model, args, kwargs):
    """``model`` wrapped for parallel enumeration the way NumPyro's ``initialize_model`` wraps it."""
    from numpyro.contrib.funsor import config_enumerate, enum
    from numpyro.infer.util import _guess_max_plate_nesting

    from numpyro.handlers import seed, trace

    tr = trace(seed(model, 0)).get_trace(*args, **kwargs)
    return enum(config_enumerate(model), -_guess_max_plate_nesting(tr) - 1)


def _enumerated_log_density(model, args, kwargs, params):
    r"""Log joint of an enumerated model with each observed site's scale applied to the *marginal*.

    NumPyro's ``numpyro.contrib.funsor.log_density`` multiplies every factor by its site's scale
    before summing the discrete variables out, which gives :math:`w \log \sum_z (p(z) p(x \mid z))^w`
    terms' logs rather than :math:`w \log \sum_z p(z) p(x \mid z)`. Here the factors that involve an
    enumerated variable are contracted unscaled with the unit plate kept, and the scale of their
    observed sites multiplies each plate element's marginal afterwards.
    """
    import funsor
    from numpyro.contrib.funsor.infer_util import plate_to_enum_plate
    from numpyro.contrib.funsor.enum_messenger import trace as packed_trace
    from numpyro.handlers import substitute

    funsor.set_backend("jax")
    model = substitute(model, data=params)
    with plate_to_enum_plate():
        tr = packed_trace(model).get_trace(*args, **kwargs)
    enum_vars = {k for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]
                 and s["infer"].get("enumerate") == "parallel"}
    total = 0.0
    enum_factors, obs_scales, plates_of = [], [], {}
    for name, s in tr.items():
        if s["type"] != "sample":
            continue
        lp = s["fn"].log_prob(s["value"], s["intermediates"]) if s["intermediates"] else s["fn"].log_prob(s["value"])
        dim_to_name = s["infer"]["dim_to_name"]
        if any(n.startswith("_time") or n.startswith("_PREV_") for n in dim_to_name.values()):
            raise NotImplementedError(
                f"Site {name!r} is inside a numpyro.contrib.control_flow.scan / markov context; genbayes cannot "
                "weight units of a model whose enumerated variables form a Markov chain (the per-unit marginal "
                "likelihood does not factorise). Marginalise the chain by hand (a forward algorithm in a factor).")
        if not enum_vars.intersection(dim_to_name.values()):
            scale = s["scale"]
            total = total + jnp.sum(lp if scale is None else scale * lp)
            continue
        for f in s["cond_indep_stack"]:
            plates_of.setdefault(name, set()).add(f.name)
        if all(d == 1 for d in jnp.shape(lp)) and not dim_to_name:
            lp = lp.squeeze()
        enum_factors.append(funsor.to_funsor(lp, output=funsor.Real, dim_to_name=dim_to_name))
        if s["is_observed"]:
            obs_scales.append((name, s, lp))
    if not enum_factors:
        return total
    # the unit plate: the outermost plate of the observed sites tied to an enumerated variable
    outer = set()
    for name, s, _ in obs_scales:
        frames = [f for f in s["cond_indep_stack"]]
        if not frames:
            raise NotImplementedError(f"Observed site {name!r} depends on an enumerated variable but lies in no plate; "
                                      "its marginal likelihood is not a sum over units.")
        outer.add(frames[-1].name)
    if len(outer) != 1:
        raise NotImplementedError(f"Observed sites tied to enumerated variables lie in different outermost plates "
                                  f"{sorted(outer)}; genbayes cannot weight their marginal likelihoods per unit.")
    unit_plate = outer.pop()
    for v in enum_vars:
        if unit_plate not in plates_of.get(v, set()):
            raise NotImplementedError(
                f"Enumerated site {v!r} is not inside plate {unit_plate!r}: a discrete latent variable shared by "
                "all units couples them, so a weight cannot act on each unit's marginal likelihood. Put the "
                "variable inside the plate, or sample it explicitly (e.g. with numpyro.infer.DiscreteHMCGibbs).")
    plates = frozenset().union(*plates_of.values()) - {unit_plate}
    with funsor.interpretations.lazy:
        lazy = funsor.sum_product.sum_product(funsor.ops.logaddexp, funsor.ops.add, enum_factors,
                                              eliminate=frozenset(enum_vars) | plates, plates=plates)
    marginal = funsor.optimizer.apply_optimizer(lazy)
    if set(marginal.inputs) != {unit_plate}:
        raise NotImplementedError(f"Cannot reduce the enumerated factors to one marginal per element of plate "
                                  f"{unit_plate!r} (left with inputs {sorted(marginal.inputs)}).")
    ell = marginal.data  # (n_plate,)
    # the weight of each plate element: the scale of its observed sites, read along the unit plate
    def along_plate(s, lp):
        scale = s["scale"]
        if scale is None or not jnp.ndim(scale):
            return jnp.full(jnp.shape(ell), 1.0 if scale is None else scale)
        dim = next(f.dim for f in s["cond_indep_stack"] if f.name == unit_plate)
        full = jnp.moveaxis(jnp.broadcast_to(scale, jnp.shape(lp)), dim, 0)
        full = full.reshape(full.shape[0], -1)
        if is_concrete(full) and not np.allclose(full, full[:, :1]):
            raise NotImplementedError(f"Observed site {s['name']!r} has different weights within one element of plate "
                                      f"{unit_plate!r}, whose marginal likelihood (an enumerated variable is summed "
                                      "out) can take one weight only; make the units whole plate elements.")
        return full[:, 0]

    weights = [along_plate(s, lp) for _, s, lp in obs_scales]
    if is_concrete(weights) and any(not np.allclose(w, weights[0]) for w in weights[1:]):
        raise NotImplementedError(
            f"Observed sites {[n for n, _, _ in obs_scales]} share enumerated variables but carry different weights "
            f"in one element of plate {unit_plate!r}; a weight acts on the element's marginal likelihood, so they "
            "must belong to the same unit.")
    full = weights[0]
    return total + jnp.sum(jnp.where(full > 0, full * ell, 0.0))


def log_density(model, args, kwargs, params, *, enumerated=None):
    r"""Log joint density, with every observed-site weight acting on the unit's marginal likelihood.

    For a model without enumerated discrete latents this is ``numpyro.infer.util.log_density``.
    With enumerated sites (``config_enumerate``) it is

    .. math:: \log \pi(\theta) + \sum_u w_u \log \sum_{z_u} p(z_u \mid \theta)\, p(x_u \mid z_u, \theta),

    the weights :math:`w_u` being the scales that :class:`genbayes.reweight` (or ``tempered``, or a
    subsampling plate) put on the observed sites; NumPyro's own enumerated density would weight
    each joint term before the sum over :math:`z_u`.

    Args:
        model, args, kwargs: the model (usually wrapped in :class:`genbayes.reweight`) and its arguments.
        params: dict latent site -> constrained value (enumerated sites excluded).
        enumerated: whether the model has enumerated sites (``None``: trace it to find out).

    Returns:
        The scalar log density.

    Example:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, genbayes as gb
        >>> def model(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=x)
        >>> x = jnp.array([0.5, -1.0])
        >>> lp = gb.units.log_density(gb.reweight(model, weights=0.5), (x,), {}, {"mu": 0.0})
        >>> round(float(lp), 4) == round(float(dist.Normal(0, 1).log_prob(0.0) + 0.5 * dist.Normal(0, 1).log_prob(x).sum()), 4)
        True

    Reference: Bissiri, Holmes & Walker (2016); Friel & Pettitt (2008).
    """
    if enumerated is None:
        enumerated = bool(_enumerated_sites(model, args, kwargs))
    if not enumerated:
        from numpyro.infer.util import log_density as np_log_density

        return np_log_density(model, args, kwargs, params)[0]
    return _enumerated_log_density(_enum_model(model, args, kwargs), args, kwargs, params)


def _enumerated_sites(model, args, kwargs):
    tr = _trace(model, args, kwargs)
    return [k for k, s in tr.items() if _is_enumerated(s)]


def potential_energy(model, args, kwargs, params, *, enumerated=False):
    r"""Potential energy :math:`-\log p_w(x, \theta)` at *unconstrained* ``params`` (with the Jacobian).

    The enumeration-aware twin of ``numpyro.infer.util.potential_energy``: with enumerated sites
    every weight acts on a unit's marginal likelihood (:func:`log_density`). ``model`` must already
    be wrapped for enumeration (as :func:`genbayes.batched.run` does) when ``enumerated``.

    Example:
        >>> import numpyro, numpyro.distributions as dist, genbayes as gb
        >>> model = lambda: numpyro.sample("s", dist.HalfNormal(1.0))
        >>> round(float(gb.units.potential_energy(model, (), {}, {"s": 0.0})), 4)   # -log(2 phi(1)) - 0
        0.7258

    Reference: Hoffman & Gelman (2014) for the potential of NUTS; Bissiri, Holmes & Walker (2016).
    """
    from numpyro.infer.util import _unconstrain_params, log_density as np_log_density

    m = _unconstrain_params(model, params)
    if enumerated:
        return -_enumerated_log_density(m, args, kwargs, {})
    return -np_log_density(m, args, kwargs, {})[0]


def log_likelihood(model, samples, *args, units, batch_ndims=1, **kwargs):
    r"""Per-unit log-likelihood :math:`\log p(x_u \mid \theta_s)` at each draw, shape ``(S, U)``.

    The derivative of the unit-weighted log density with respect to the unit weights at
    :math:`w = 1` (the weighted density is linear in :math:`w`), so it is the *marginal*
    likelihood of each unit when discrete latents are enumerated, sums the entries of every
    observed site that belong to the unit, and gives 0 for nothing masked.

    Args:
        model: a NumPyro model.
        samples: dict latent site -> draws with ``batch_ndims`` leading axes (enumerated sites
            absent), as from ``MCMC.get_samples()``.
        *args, **kwargs: the model's arguments.
        units: a :class:`Units` from :func:`find` (or a spec that :func:`find` accepts).
        batch_ndims: number of leading sample axes (1 or 2).

    Example:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, genbayes as gb
        >>> def model(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=x)
        >>> x = jnp.array([0.0, 1.0, 2.0])
        >>> ll = gb.units.log_likelihood(model, {"mu": jnp.zeros(2)}, x, units=[0, 0, 1])
        >>> ll.shape, bool(jnp.allclose(ll[0, 1], dist.Normal(0, 1).log_prob(2.0)))
        ((2, 2), True)

    Reference: Vehtari, Gelman & Gabry (2017): the pointwise (per-unit) log-likelihood of PSIS-LOO.
    """
    from .handlers import reweight

    if not isinstance(units, Units):
        spec = np.asarray(units) if isinstance(units, (list, tuple)) else units
        units = find(model, *args, units=spec, **kwargs)
    from ._programs import data_program

    enumerated = bool(units.enumerated)
    U = units.num_units

    def make(args, kwargs):
        base = _enum_model(model, args, kwargs) if enumerated else model

        def one(params):
            def f(w):
                m = reweight(base, weights=w, units=units)
                if enumerated:
                    return _enumerated_log_density(m, args, kwargs, params)
                from numpyro.infer.util import log_density as np_log_density

                return np_log_density(m, args, kwargs, params)[0]

            return jax.grad(f)(jnp.ones(U, dtype=jnp.result_type(float)))

        fn = one
        for _ in range(batch_ndims):
            fn = jax.vmap(fn)
        return fn

    # compiled once per model, units and argument structure: new data of the same shapes reuse it
    return data_program("log_likelihood", model, args, kwargs, (units.key, batch_ndims), make)(samples)
