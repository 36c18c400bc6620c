r"""Bayesian leave-P-out cross-validation and the marginal-likelihood identity.

With the parameters integrated out, the leave-P-out score is

.. math:: S_{CV}(p) = \binom{n}{p}^{-1} \sum_{|S| = p} \frac1p \sum_{i \in S} \log p(x_i \mid x_{-S}),

and Fong & Holmes (2020, "On the marginal likelihood and cross-validation", Biometrika 107(2),
Proposition 1) show that

.. math:: \log p(x_{1:n}) = \sum_{p=1}^{n} S_{CV}(p),

because averaging the chain rule :math:`\log p(x) = \sum_k \log p(x_{\sigma(k)} \mid x_{\sigma(<k)})`
over all orderings σ puts :math:`S_{CV}(n - k + 1)` at position k. The cumulative score
:math:`S_{CCV}(P) = \sum_{p \le P} S_{CV}(p)` is the mean over training sets T with
:math:`|T| = n - P` of :math:`\log p(x_{-T} \mid x_T)` (their eq. 6).

Every held-out set is a 0/1 weight mask on the likelihood (:class:`genbayes.reweight`), so shapes
never change and all subsets are one vmapped program:

- ``"exact"`` for the :mod:`genbayes.conjugate` families: all subsets enumerated on device
  (chunked with ``jax.lax.map``), or hypergeometric counting for the families whose predictive
  depends on counts only (Beta–Bernoulli, Dirichlet–categorical), or uniformly random subsets
  with a standard error when there are too many;
- ``"psis"``: one full-data NUTS posterior and Pareto-smoothed importance weights (ArviZ's
  ``psislw``; Vehtari, Gelman & Gabry 2017) for every held-out set;
- ``"refit"``: one NUTS posterior per training set, all drawn as one program by
  :func:`genbayes.batched.run`;
- ``"auto"``: exact for conjugate families, otherwise PSIS with refits of the subsets whose
  Pareto k̂ is above ArviZ's threshold :math:`\min(1 - 1/\log_{10} S, 0.7)`.

Functions here are meaningful in float32 but the identity checks need float64
(``numpyro.enable_x64()``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from . import conjugate as _conj
from ._programs import ProgramCache, num_devices, resolve_shard, shard_leading
from ._validation import check_args_finite

__all__ = ["lpo", "cumulative", "identity", "LPOResult", "IdentityReport", "add_cli", "default_memory_budget"]

DEFAULT_MAX_SUBSETS = 2**22
"""Exhaustive leave-p-out enumerates at most this many subsets by default (``max_subsets``)."""
DEFAULT_MEMORY_FRACTION = 0.5
"""Enumeration is refused when it would need more than this fraction of the machine's memory."""
_MAX_RANK = 2**31 - 1  # subsets are ranked in int32 on device
_METHODS = ("auto", "exact", "counting", "enumerate", "psis", "refit")
_DEFAULT_RANDOM = {"exact": 4096, "psis": 1000, "refit": 32}
_EXHAUSTIVE_LIMIT = {"psis": 1000, "refit": 64}


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LPOResult:
    r"""A leave-P-out score: :math:`S_{CV}(p)` (``quantity="S_CV"``) or :math:`S_{CCV}(P)` (``"S_CCV"``).

    Attributes:
        value: the estimate; for ``S_CV`` the mean held-out log predictive density per held-out
            point, for ``S_CCV`` the mean joint log predictive density of the held-out set.
        se: its standard error (0 when exact): Monte Carlo error of the posterior draws plus,
            when subsets are drawn at random, the subset-sampling error.
        p: the number of held-out points.
        method: the method used (``"counting"``, ``"enumerate"``, ``"random"`` for exact values
            on random subsets, ``"psis"``, ``"refit"``, ``"psis+refit"``).
        num_subsets: how many held-out sets were evaluated.
        diagnostics: per-subset arrays where they exist (``values``, ``mc_se``, ``khat``,
            ``refit``, ``subsets`` as a boolean (num_subsets, n) mask) and run information.
        quantity: ``"S_CV"`` or ``"S_CCV"``.
        exhaustive: whether all :math:`\binom{n}{p}` subsets were used.
        n: the number of observations.
        valid: False when the value or its standard error is not finite (NaN / ±inf held-out
            densities, or arithmetic trouble); ``problems`` says why. Never use an invalid value.
        problems: the reasons, as sentences.

    :math:`S_{CV}(p) = \binom{n}{p}^{-1} \sum_{|S|=p} \frac1p \sum_{i \in S} \log p(x_i \mid x_{-S})`
    (Fong & Holmes 2020); ``to_dataframe()`` gives one row per evaluated held-out set.

    Example:
        >>> import jax.numpy as jnp, genbayes as gb
        >>> r = gb.cv.lpo(gb.conjugate.BetaBernoulli(1.0, 1.0), jnp.array([1, 0, 1, 1]), p=1)
        >>> r.quantity, r.p, r.n, r.se, r.exhaustive
        ('S_CV', 1, 4, 0.0, True)
        >>> list(r.to_dataframe().columns)
        ['quantity', 'p', 'value', 'se', 'num_subsets', 'method']
    """

    value: float
    se: float
    p: int
    method: str
    num_subsets: int
    diagnostics: dict
    quantity: str = "S_CV"
    exhaustive: bool = True
    n: int = 0
    valid: bool = True
    problems: tuple = ()

    def __repr__(self):
        extra = "" if self.valid else f", INVALID: {'; '.join(self.problems)}"
        k = self.diagnostics.get("khat")
        if k is not None and np.size(k):
            extra += f", max_khat={float(np.nanmax(k)):.2f}, num_refit={int(np.sum(self.diagnostics.get('refit', 0)))}"
        return (
            f"LPOResult({self.quantity}(p={self.p}) = {self.value:.6g} ± {self.se:.2g}, method={self.method!r}, "
            f"num_subsets={self.num_subsets}{' (all)' if self.exhaustive else ' (random)'}, n={self.n}{extra})"
        )

    def to_dataframe(self):
        """One row per evaluated held-out set (index ``subset``); a one-row summary when only totals were kept."""
        import pandas as pd

        d = self.diagnostics
        if "values" not in d:
            return pd.DataFrame(
                {"quantity": [self.quantity], "p": [self.p], "value": [self.value], "se": [self.se],
                 "num_subsets": [self.num_subsets], "method": [self.method]}
            )
        cols = {"value": np.asarray(d["values"])}
        for k in ("mc_se", "khat", "refit"):
            if k in d:
                cols[k] = np.asarray(d[k])
        if "subsets" in d:
            cols["held_out"] = [tuple(np.flatnonzero(row).tolist()) for row in np.asarray(d["subsets"])]
        df = pd.DataFrame(cols)
        df.index.name = "subset"
        df.attrs.update(quantity=self.quantity, p=self.p, estimate=self.value, se=self.se, method=self.method)
        return df

    def to_elpd_data(self):
        """ArviZ ``ELPDData`` (as from ``arviz.loo``) for a p = 1 PSIS/refit result, for ``arviz.compare``."""
        from .interop import lpo_to_elpd_data

        return lpo_to_elpd_data(self)


@dataclasses.dataclass(frozen=True)
class IdentityReport:
    r"""Both sides of :math:`\log p(x) = \sum_{p=1}^n S_{CV}(p)` (Fong & Holmes 2020, Prop. 1).

    Attributes:
        s_cv: array of :math:`S_{CV}(p)`, indexed by p − 1.
        s_cv_se: their standard errors (0 when exact).
        total: :math:`\sum_p S_{CV}(p)`.
        total_se: its standard error (from whole orderings, which telescope; not the root sum
            of squares of ``s_cv_se``).
        log_evidence: :math:`\log p(x)`; ``log_evidence_source`` says where it came from.
        log_evidence_se: its standard error (0 when exact).
        gap: ``total − log_evidence``.
        se: standard error of the gap, :math:`\sqrt{\text{total\_se}^2 + \text{log\_evidence\_se}^2}`.
        method: how the S_CV(p) were computed.
        log_evidence_source: ``"exact"``, ``"genbayes.evidence.log_evidence(method=...)"`` or
            ``"telescoped permutation sums"`` (then the gap is 0 by construction).
        diagnostics: run information (number of orderings, k̂ values, ...).
        valid: False when any S_CV(p), the total, the log evidence or the gap is not finite;
            ``problems`` says which.
        problems: the reasons, as sentences.

    Example:
        >>> import jax.numpy as jnp, genbayes as gb
        >>> rep = gb.cv.identity(gb.conjugate.BetaBernoulli(1.0, 1.0), jnp.array([1, 0, 1]))
        >>> rep.n, rep.log_evidence_source, bool(abs(rep.gap) < 1e-5)
        (3, 'exact', True)
        >>> rep.to_dataframe().columns.tolist()
        ['s_cv', 's_cv_se', 's_ccv']
    """

    s_cv: np.ndarray
    s_cv_se: np.ndarray
    total: float
    total_se: float
    log_evidence: float
    log_evidence_se: float
    gap: float
    se: float
    method: str
    log_evidence_source: str
    diagnostics: dict
    valid: bool = True
    problems: tuple = ()

    @property
    def n(self) -> int:
        """The number of observation units (n in S_CV(p))."""
        return int(np.shape(self.s_cv)[0])

    def __repr__(self):
        return (
            f"IdentityReport(n={self.n}, sum_p S_CV(p) = {self.total:.6g} ± {self.total_se:.2g}, "
            f"log_evidence = {self.log_evidence:.6g} ± {self.log_evidence_se:.2g} ({self.log_evidence_source}), "
            f"gap = {self.gap:.3g} ± {self.se:.2g}, method={self.method!r}"
            + ("" if self.valid else f", INVALID: {'; '.join(self.problems)}") + ")"
        )

    def to_dataframe(self):
        """Table indexed by ``p``: ``s_cv``, ``s_cv_se`` and the cumulative ``s_ccv`` = Σ_{q ≤ p} S_CV(q)."""
        import pandas as pd

        p = np.arange(1, self.n + 1)
        df = pd.DataFrame({"s_cv": np.asarray(self.s_cv), "s_cv_se": np.asarray(self.s_cv_se),
                           "s_ccv": np.cumsum(np.asarray(self.s_cv))}, index=pd.Index(p, name="p"))
        df.attrs.update(total=self.total, log_evidence=self.log_evidence, gap=self.gap, se=self.se)
        return df

    def plot(self, ax=None):
        """S_CV(p) against p with ±2 SE bars; the title gives Σ_p S_CV(p) and log p(x). Returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        p = np.arange(1, self.n + 1)
        s, se = np.asarray(self.s_cv), np.asarray(self.s_cv_se)
        ax.plot(p, s, "o-", ms=3, label=r"$S_{CV}(p)$")
        if np.any(se > 0):
            ax.fill_between(p, s - 2 * se, s + 2 * se, alpha=0.3, label="±2 SE")
        ax.set_xlabel("p (held-out points)")
        ax.set_ylabel("mean held-out log predictive")
        ax.set_title(
            rf"$\sum_p S_{{CV}}(p)$ = {self.total:.3f}, log p(x) = {self.log_evidence:.3f}, gap {self.gap:.2g}",
            fontsize=9,
        )
        ax.legend(fontsize=8)
        return ax


# --------------------------------------------------------------------------------------------
# resolving the model
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Target:
    family: object  # a ConjugateFamily or None
    model: object
    args: tuple
    kwargs: dict
    units: object  # genbayes.units.Units
    n: int  # U, the number of observation units

    @property
    def conjugate(self):
        return self.family is not None


def _family_of(model):
    if isinstance(model, _conj.ConjugateFamily):
        return model
    if _conj.is_conjugate(model) and getattr(model, "__name__", "") == "model":
        return model.__self__
    return None


def _check_site(site, tr_obs, latent):
    """The backwards-compatible ``site=``: allowed only when it names the model's one observed site."""
    if site is None:
        return
    if not isinstance(site, str):
        raise TypeError(f"`site` must be the name of an observed sample site, got {site!r}; prefer `units=`.")
    if site in latent:
        raise ValueError(f"`site` {site!r} is latent; observations are held out by unit (`units=`), "
                         f"and the observed sites are {sorted(tr_obs)}.")
    if site not in tr_obs:
        raise ValueError(f"`site` {site!r} is not in the model; its observed sites are {sorted(tr_obs)}. "
                         "Leave `site` out: the observed sites are found by tracing (declare units with `units=`).")
    if len(tr_obs) > 1:
        raise ValueError(f"`site`={site!r} names one of several observed sites {sorted(tr_obs)}; every observed site "
                         "belongs to the units, so leave `site` out and declare the units with `units=` "
                         "(see genbayes.units).")


def _resolve(model, args, kwargs, site=None, units=None):
    """The model, its data and its observation units (found once by tracing; :func:`genbayes.units.find`)."""
    from . import units as _units

    fam = _family_of(model)
    if fam is not None:
        if kwargs:
            raise TypeError(f"A conjugate family takes its data positionally; got keyword arguments {sorted(kwargs)}.")
        k = fam.num_data_args
        if len(args) != k:
            raise TypeError(f"{type(fam).__name__} takes {k} data argument(s) after the family, got {len(args)}.")
        if site is not None and site != fam.site:
            raise ValueError(f"`site` {site!r} is not in the model: {type(fam).__name__}'s observed site is {fam.site!r}.")
        data = fam._check_data(*args)
        if units is None or (isinstance(units, str) and units == "data"):
            # fast path: the family's one observed site in plate "data" is the units
            U = _units.find(fam.model, *data)
            return _Target(fam, fam.model, tuple(data), {}, U, int(np.shape(data[-1])[0]))
        model, args = fam.model, tuple(data)  # declared units (groups): the general path on the family's model
    elif not callable(model):
        raise TypeError(f"`model` must be a NumPyro model (a callable) or a gb.conjugate family, got {type(model).__name__}.")
    else:
        check_args_finite(args, kwargs)
    if site is not None:
        tr = _units._trace(model, args, kwargs)
        obs = {k: s for k, s in tr.items() if s["type"] == "sample" and s["is_observed"]}
        latent = {k for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}
        _check_site(site, obs, latent)
    if isinstance(units, (list, tuple)):
        units = np.asarray(units)
    U = _units.find(model, *args, units=units, **kwargs)
    if U.subsampled:
        raise ValueError(f"Plate(s) {list(U.subsampled)} are subsampled; cross-validation needs the full data "
                         "(remove subsample_size).")
    return _Target(None, model, tuple(args), dict(kwargs), U, int(U.num_units))


def _check_p(p, n, name="p"):
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)):
        raise TypeError(f"`{name}` must be an integer in 1..n = 1..{n}, got {p!r}.")
    if not 1 <= p <= n:
        raise ValueError(f"`{name}` must lie in 1..n = 1..{n}, got {p}.")
    return int(p)


def _check_method(method, target):
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}, got {method!r}.")
    if method in ("exact", "counting", "enumerate") and not target.conjugate:
        raise ValueError(
            f"method={method!r} needs a gb.conjugate family (closed-form predictive); for a general NumPyro "
            "model use method='psis', 'refit' or 'auto'."
        )
    if method == "counting" and not _is_counting(target.family):
        raise ValueError(
            "method='counting' works for BetaBernoulli and DirichletCategorical only (predictive depends on counts)."
        )
    if method == "auto":
        return "exact" if target.conjugate else "auto"
    return method


def _check_num_subsets(num_subsets):
    if num_subsets is None:
        return None
    if isinstance(num_subsets, bool) or not isinstance(num_subsets, (int, np.integer)) or not 0 < num_subsets <= _MAX_RANK:
        raise ValueError(f"`num_subsets` must be a positive integer at most 2^31 − 1 (or None for the default), "
                         f"got {num_subsets!r}.")
    return int(num_subsets)


def _float():
    return jnp.result_type(float)


def default_memory_budget() -> int:
    """Bytes that CV may use by default: ``DEFAULT_MEMORY_FRACTION`` (one half) of the memory available now.

    Available memory is ``os.sysconf('SC_AVPHYS_PAGES') × SC_PAGE_SIZE`` (POSIX), or half of the
    physical memory where that is not known; 4 GiB where neither is.

    Example:
        >>> from genbayes.cv import default_memory_budget
        >>> default_memory_budget() > 0
        True
    """
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * page
        except (ValueError, OSError):
            avail = os.sysconf("SC_PHYS_PAGES") * page // 2
    except (ValueError, OSError, AttributeError):
        avail = 8 << 30
    return int(DEFAULT_MEMORY_FRACTION * avail)


def _check_memory_budget(memory_budget):
    if memory_budget is None:
        return default_memory_budget()
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, float, np.integer, np.floating)) \
            or not np.isfinite(memory_budget) or memory_budget <= 0:
        raise ValueError(f"`memory_budget` must be a positive number of bytes (or None for half the available "
                         f"memory), got {memory_budget!r}.")
    return int(memory_budget)


def _fmt_bytes(b):
    b = float(b)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if b < 1024 or unit == "PiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024


# --------------------------------------------------------------------------------------------
# subsets: enumeration by rank (combinatorial number system) and uniform random draws
# --------------------------------------------------------------------------------------------


def _binom_table(n, p):
    # C(i, k) for i in 0..n, k in 0..p, clipped: only compared with ranks < 2^31.
    t = np.zeros((n + 1, p + 1), dtype=np.int64)
    for i in range(n + 1):
        for k in range(p + 1):
            t[i, k] = min(math.comb(i, k), 2**31 - 1)
    return jnp.asarray(t, dtype=jnp.int32)


def _unrank(rank, n, p, table):
    """The rank-th p-subset of 0..n−1 in colexicographic order, as a 0/1 mask (vmappable)."""

    def step(carry, i):
        r, k = carry
        c = table[i, k]
        take = (k > 0) & (r >= c)
        r = jnp.where(take, r - c, r)
        k = jnp.where(take, k - 1, k)
        return (r, k), take

    _, takes = jax.lax.scan(step, (rank.astype(jnp.int32), jnp.int32(p)), jnp.arange(n - 1, -1, -1))
    return takes[::-1].astype(_float())


@partial(jax.jit, static_argnames=("n", "p"))
def _unrank_batch(ranks, table, n, p):
    return jax.vmap(lambda r: _unrank(r, n, p, table))(ranks)


@partial(jax.jit, static_argnames=("n", "p"))
def _random_masks(key, index, n, p):
    """Uniformly random p-subsets of 0..n−1 as 0/1 masks, the i-th from ``fold_in(key, index[i])``.

    Subset i depends on its index only, so how the subsets are split into batches (which follows
    the memory budget) does not change them: same key, same subsets, on any machine.
    """
    u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), (n,)))(index)
    ranks = jnp.argsort(jnp.argsort(u, axis=1), axis=1)
    return (ranks < p).astype(_float())


class _Plan:
    """Which subsets to evaluate, in batches that are reproducible one by one (for --resume)."""

    def __init__(self, n, p, total, exhaustive, rng_key, batch_size, fixed=None):
        self.n, self.p, self.total, self.exhaustive, self.fixed = n, p, total, exhaustive, fixed
        self.rng_key, self.batch_size = rng_key, max(1, int(batch_size))
        self.num_batches = -(-total // self.batch_size)
        self._table = _binom_table(n, p) if exhaustive and fixed is None else None

    def count(self, b):
        """How many subsets batch b holds."""
        return min(self.batch_size, self.total - b * self.batch_size)

    def indices(self, b):
        """The numbers of batch b's subsets (ranks when exhaustive, else the random draws' indices), int32.

        Padded to a power of two (repeating the last subset) so that few distinct shapes are
        compiled; the padding rows are dropped. Formed in int64; the plan never enumerates more
        than 2^31 − 1 subsets, so the int32 numbers on device cannot overflow.
        """
        lo, m = b * self.batch_size, self.count(b)
        size = 1 << max(m - 1, 0).bit_length()
        return jnp.asarray(np.minimum(np.arange(lo, lo + size, dtype=np.int64), self.total - 1).astype(np.int32))

    @property
    def source(self):
        """What turns a subset's number into its mask: the binomial table (exhaustive) or the key (random)."""
        return self._table if self.exhaustive else self.rng_key

    def masks(self, b):
        lo, m = b * self.batch_size, self.count(b)
        if self.fixed is not None:
            return self.fixed[lo : lo + m]
        if self.exhaustive:
            return _unrank_batch(self.indices(b), self._table, self.n, self.p)[:m]
        return _random_masks(self.rng_key, self.indices(b), self.n, self.p)[:m]


# --------------------------------------------------------------------------------------------
# exact values for conjugate families
# --------------------------------------------------------------------------------------------


def _is_counting(fam):
    return isinstance(fam, (_conj.BetaBernoulli, _conj.DirichletCategorical))


def _exact_subset_value(fam, data, mask, joint):
    """Exact score of one held-out set (mask = 1 held out): mean pointwise, or joint log p(x_S | x_-S)."""
    n = mask.shape[0]
    train = 1.0 - mask
    if not joint:
        return fam.held_out_log_predictive(data, mask) / jnp.sum(mask)
    # chain rule inside the held-out set: x_S in index order, each given x_T and the earlier held-out points
    idx = jnp.arange(n)

    def term(i):
        w = train + mask * (idx < i)
        test = tuple(jnp.take(d, i[None], axis=0) for d in data)
        return fam.log_predictive_weighted(test, data, w)[0]

    return jnp.sum(mask * jax.vmap(term)(idx))


def _exact_values_batched(fam, data, masks, joint, chunk):
    f = lambda m: _exact_subset_value(fam, data, m, joint)  # noqa: E731
    return jax.lax.map(f, masks, batch_size=min(chunk, masks.shape[0]))


_exact_values_one_device = jax.jit(_exact_values_batched, static_argnames=("joint", "chunk"))
_EXACT_SHARDED = ProgramCache(maxsize=8)


def _numbered_values_batched(index, fam, data, source, *, exhaustive, n, p, joint, chunk):
    """Exact values of the p-subsets numbered ``index``, each mask made on device from its number.

    The same subsets as :meth:`_Plan.masks` (``_unrank`` of a rank, or the random draw of
    ``fold_in(key, index)``), without the masks of the whole batch ever being materialised, so that
    with several devices each device (each host) makes only its own subsets' masks.
    """
    dt = _float()

    def one(i):
        if exhaustive:
            mask = _unrank(i, n, p, source)
        else:
            u = jax.random.uniform(jax.random.fold_in(source, i), (n,))
            mask = (jnp.argsort(jnp.argsort(u)) < p).astype(dt)
        return _exact_subset_value(fam, data, mask, joint)

    return jax.lax.map(one, index, batch_size=min(chunk, index.shape[0]))


_NUMBERED_STATIC = ("exhaustive", "n", "p", "joint", "chunk")
_numbered_values_one_device = jax.jit(_numbered_values_batched, static_argnames=_NUMBERED_STATIC)


def _plan_values(fam, data, plan, b, joint, chunk):
    """Exact values of batch b of ``plan`` (a float array, padded rows included), split across all devices when several."""
    static = dict(exhaustive=plan.exhaustive, n=plan.n, p=plan.p, joint=joint, chunk=chunk)
    if not resolve_shard(None):
        return _numbered_values_one_device(plan.indices(b), fam, data, plan.source, **static)
    run, _ = _EXACT_SHARDED.get(("numbered", tuple(static.items()), num_devices()), lambda: shard_leading(
        partial(_numbered_values_batched, **static), (0, None, None, None), axis_name="subset"))
    return run(plan.indices(b), fam, data, plan.source)


def _exact_values(fam, data, masks, joint, chunk):
    """Exact values of the held-out sets ``masks`` (rows), split across all devices when there are several.

    Every set's value is computed by the same per-set program wherever it runs, and the sets are
    independent, so the values do not depend on the device or process count (no cross-set sum on
    device). With several devices the rows go through :func:`genbayes._programs.shard_leading`
    (every process's devices in a ``jax.distributed`` job); each device evaluates ``chunk`` sets at
    a time, so the memory per host is ``chunk`` sets per local device.
    """
    if not resolve_shard(None):
        return _exact_values_one_device(fam, data, masks, joint=joint, chunk=chunk)
    run, _ = _EXACT_SHARDED.get((joint, chunk, num_devices()), lambda: shard_leading(
        lambda m, f, d: _exact_values_batched(f, d, m, joint, chunk), (0, None, None), axis_name="subset"))
    return run(masks, fam, data)


def _counts_and_alpha(fam, x):
    if isinstance(fam, _conj.BetaBernoulli):
        alpha = jnp.stack([fam.b, fam.a])
        K = 2
    else:
        alpha = fam.alpha
        K = alpha.shape[0]
    counts = np.bincount(np.asarray(x).astype(np.int64), minlength=K)
    return jnp.asarray(counts), alpha


def _as_float64(fam):
    """The family with its floating-point parameters in float64 (call inside ``x64()``)."""
    def cast(v):
        a = np.asarray(v)
        return jnp.asarray(a, jnp.float64) if np.issubdtype(a.dtype, np.floating) else v

    return jax.tree_util.tree_map(cast, fam)


def _counting_all_p(fam, x, chunk=256, ps=None):
    r"""Exact S_CV(p) for every p by hypergeometric counting (count-based predictives only), in float64.

    A held-out point of category k shares its held-out set with p − 1 of the other n − 1 points;
    the number j of them also in category k is hypergeometric, and the training count is
    c_k − 1 − j, so :math:`S_{CV}(p) = \sum_k \frac{c_k}{n} E_j[\log(\alpha_k + c_k - 1 - j)] - \log(A + n - p)`.

    Always computed in float64 (a scoped ``jax.enable_x64``), whatever the caller's precision:
    in float32 the log-factorials of the hypergeometric weights lose about 6e-4 relative at
    n = 10^4, p = n − 1. Index arithmetic is int64/float64, so no product overflows at any n.
    Returns a NumPy float64 array of S_CV(p) for p in ``ps`` (default all p = 1..n, indexed by p − 1).
    """
    from ._config import x64

    with x64():
        counts, alpha = _counts_and_alpha(_as_float64(fam), x)
        n = int(np.sum(np.asarray(counts)))
        ps = np.arange(1, n + 1) if ps is None else np.asarray(ps)
        out = _counting_core(jnp.asarray(np.asarray(counts), jnp.int64), jnp.asarray(np.asarray(alpha), jnp.float64),
                             jnp.asarray(ps, jnp.int64), n=n, chunk=chunk)
        return np.asarray(out, dtype=np.float64)


@partial(jax.jit, static_argnames=("n", "chunk"))
def _counting_core(counts, alpha, ps, *, n, chunk):
    dt = _float()
    alpha = alpha.astype(dt)
    lf = gammaln(jnp.arange(n + 1, dtype=dt) + 1.0)  # log factorials
    N = n - 1
    A = jnp.sum(alpha)
    # Hoeffding: P(|j − E j| >= t) <= 2 exp(−2 t²/d) < 1e-19 for t = sqrt(23 n), so a window of
    # that half-width around the mean holds all the mass to double precision (speed for large n).
    half = int(math.ceil(math.sqrt(23.0 * n))) + 2
    width = min(n, 2 * half + 1)

    def logc(a, b):
        ok = (b >= 0) & (b <= a) & (a >= 0)
        a_, b_ = jnp.clip(a, 0, n), jnp.clip(b, 0, n)
        return jnp.where(ok, lf[a_] - lf[b_] - lf[jnp.clip(a_ - b_, 0, n)], -jnp.inf)

    def one_category(ck, ak, d):
        K = ck - 1
        # the window's centre d·K/N in floating point: the integer product d·K overflows int32 at n ≳ 46,000
        centre = jnp.round(d.astype(dt) * jnp.maximum(K, 0).astype(dt) / max(N, 1)).astype(ck.dtype)
        j = jnp.clip(centre - half, 0, n - width) + jnp.arange(width, dtype=ck.dtype)
        lpmf = logc(K, j) + logc(N - K, d - j)
        lpmf = lpmf - jnp.max(lpmf)
        w = jnp.where(jnp.isfinite(lpmf), jnp.exp(lpmf), 0.0)
        ll = jnp.log(jnp.maximum(ak + (ck - 1 - j).astype(dt), 1e-300).astype(dt))
        val = jnp.sum(w * jnp.where(w > 0, ll, 0.0)) / jnp.sum(w)  # normalised: rounding cannot leak mass
        return jnp.where(ck > 0, ck.astype(dt) / n * val, 0.0)

    def one_p(p):
        d = p - 1
        per_k = jax.vmap(lambda ck, ak: one_category(ck, ak, d))(counts, alpha)
        return jnp.sum(per_k) - jnp.log(A + (n - p).astype(dt))

    return jax.lax.map(one_p, ps.astype(counts.dtype), batch_size=min(chunk, ps.shape[0]))


def _enumerate_all_p(fam, data, chunk=1 << 14, memory_budget=None):
    """Exact S_CV(p) for every p from all 2^n − 1 held-out sets (bit masks), one chunked program.

    Needs about ``chunk`` predictives over n points at a time (the subsets are generated from their
    ranks chunk by chunk, and each chunk's values are added into per-size sums), so memory does not
    grow with 2^n; a ValueError says how much before anything is compiled when that is above
    ``memory_budget``. The program is compiled once per (family type, n, chunk, dtype): the
    family's hyperparameters and the data are its inputs.
    """
    n = int(np.shape(data[-1])[0])
    if n > 30:
        raise ValueError(f"enumerating all 2^n − 1 subsets needs n <= 30, got n = {n}.")
    budget = _check_memory_budget(memory_budget)
    isz = jnp.dtype(_float()).itemsize
    chunk = max(1, min(chunk, 2**n - 1, (budget // 2) // (6 * n * isz)))
    needed = chunk * 6 * n * isz
    if needed > budget:
        raise ValueError(f"enumerating all 2^{n} − 1 held-out sets needs about {_fmt_bytes(needed)}, above "
                         f"memory_budget = {_fmt_bytes(budget)}; raise memory_budget, or lower max_subsets below "
                         f"2^{n} − 1 to use random orderings.")
    if resolve_shard(None):
        # the local devices run at once on this host's memory: the budget's chunk is split between them
        sums = _enumerate_sums_sharded(fam, tuple(data), n, max(1, chunk // jax.local_device_count()))
    else:
        sums = _enumerate_sums(fam, tuple(data), n=n, chunk=chunk)
    counts = jnp.asarray([math.comb(n, p) for p in range(1, n + 1)], dtype=_float())
    return sums / counts


@partial(jax.jit, static_argnames=("n", "chunk"))
def _enumerate_sums(fam, data, n, chunk):
    """Σ over held-out sets S of size p of the mean held-out log predictive, for p = 1..n (index p − 1).

    Subset r (1 ≤ r < 2^n) holds out the points whose bits are set in r. ``jax.lax.fori_loop`` over
    chunks of ``chunk`` consecutive ranks; each chunk is one vmapped predictive, summed by size.
    """
    return _enumerate_range(0, -(-(2**n - 1) // chunk), fam, data, n=n, chunk=chunk)[1:]


_ENUMERATE_SHARDED = ProgramCache(maxsize=8)


def _enumerate_sums_sharded(fam, data, n, chunk):
    """:func:`_enumerate_sums` with the chunks split into one contiguous range per device (every host's, in a
    ``jax.distributed`` job); each device returns its per-size sums and they are added here.

    The same values as on one device up to the association of the sums (each device's running
    sum, then the D partial sums in device order).
    """
    D = num_devices()
    bounds = np.round(np.linspace(0, -(-(2**n - 1) // chunk), D + 1)).astype(np.int32)
    run, _ = _ENUMERATE_SHARDED.get(("enumerate", n, chunk, D), lambda: shard_leading(
        jax.vmap(partial(_enumerate_range, n=n, chunk=chunk), in_axes=(0, 0, None, None)), (0, 0, None, None),
        axis_name="subsets"))
    parts = run(jnp.asarray(bounds[:-1]), jnp.asarray(bounds[1:]), fam, data)  # (D, n + 1)
    return jnp.sum(parts, axis=0)[1:]


def _enumerate_range(lo, hi, fam, data, *, n, chunk):
    """Per-size sums (index p = 0..n) of the mean held-out log predictive over the subsets of chunks lo..hi − 1."""
    total = 2**n - 1
    bits = jnp.arange(n, dtype=jnp.int32)
    dt = _float()

    def value(r):
        mask = ((r >> bits) & 1).astype(dt)
        return _exact_subset_value(fam, data, mask, joint=False)

    def body(c, acc):
        r = 1 + c * chunk + jnp.arange(chunk, dtype=jnp.int32)
        ok = r <= total  # the last chunk runs past 2^n − 1: those rows are dropped
        r = jnp.where(ok, r, 1)
        vals = jnp.where(ok, jax.vmap(value)(r), 0.0)
        size = jax.lax.population_count(r)
        return acc + jax.ops.segment_sum(vals, size, num_segments=n + 1)

    return jax.lax.fori_loop(lo, hi, body, jnp.zeros(n + 1, dt))


# --------------------------------------------------------------------------------------------
# MCMC-based estimates (PSIS and refits)
# --------------------------------------------------------------------------------------------


def _pointwise_loglik(target, samples):
    """log p(x_u | θ_s) for every draw and unit (marginal over enumerated latents): shape (S, U)."""
    from .units import log_likelihood

    return log_likelihood(target.model, samples, *target.args, units=target.units, **target.kwargs)


def _mcmc_opts(num_warmup, num_samples, num_chains):
    for name, v, lo in (("num_warmup", num_warmup, 0), ("num_samples", num_samples, 1), ("num_chains", num_chains, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"`{name}` must be an integer >= {lo}, got {v!r}.")


_REFIT_OPTIONS = ("kernel", "num_chains", "shared_warmup", "nuts_fallback", "target_accept_prob", "dense_mass",
                  "max_tree_depth", "init_strategy", "chunk_size")


def _check_refit_kwargs(refit_kwargs, num_warmup, num_samples):
    """Validate ``refit_kwargs`` (sampler options of gb.batched.run for the refits) before anything compiles."""
    from . import batched

    if refit_kwargs is None:
        return {}
    if not isinstance(refit_kwargs, dict):
        raise TypeError(f"`refit_kwargs` must be a dict of genbayes.batched.run sampler options (e.g. "
                        f"{{'kernel': 'chees', 'shared_warmup': 150}}), got {type(refit_kwargs).__name__}.")
    bad = sorted(set(refit_kwargs) - set(_REFIT_OPTIONS))
    if bad:
        raise ValueError(f"`refit_kwargs` got {bad}; it takes the sampler options {list(_REFIT_OPTIONS)} "
                         "(num_warmup and num_samples are arguments of the call itself).")
    batched._check_sampler_options(refit_kwargs, num_warmup, num_samples)
    return dict(refit_kwargs)


def _ess_ratio(x):
    """Relative efficiency ESS / draws of each column of x (chains, draws, k), via NumPyro."""
    from numpyro.diagnostics import effective_sample_size

    x = np.asarray(x, dtype=float)
    ess = effective_sample_size(x)
    return np.clip(np.nan_to_num(ess / (x.shape[0] * x.shape[1]), nan=1.0), 1e-3, 1.0)


class _FullPosterior:
    """Full-data NUTS draws (num_chains chains as replicates of gb.batched with unit weights)."""

    def __init__(self, target, rng_key, num_warmup, num_samples, num_chains):
        from .batched import run

        w = jnp.ones((num_chains, target.n), _float())
        res = run(target.model, w, *target.args, num_warmup=num_warmup, num_samples=num_samples,
                  rng_key=rng_key, units=target.units, progress=False, **target.kwargs)
        self.draws = res.samples
        flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in res.samples.items()}
        self.loglik = np.asarray(_pointwise_loglik(target, flat), dtype=np.float64)  # (S, n)
        # by unit, draws contiguous (n, S): PSIS gathers the held-out units' rows
        self.loglik_by_unit = np.ascontiguousarray(self.loglik.T)
        self.max_by_unit = self.loglik_by_unit.max(axis=1)  # (n,): shift for the predictives
        self.num_chains, self.num_samples = num_chains, num_samples
        # as arviz.loo: relative efficiency = mean ESS of the parameters / number of draws
        per = [_ess_ratio(np.asarray(v).reshape(num_chains, num_samples, -1)) for v in res.samples.values()]
        self.r_eff = float(np.mean(np.concatenate(per))) if num_chains > 1 else 1.0
        self.divergences = int(np.sum(np.asarray(res.diagnostics["num_divergent"])))


def _khat_threshold(num_draws):
    from .interop import psis_khat_threshold

    return psis_khat_threshold(num_draws)


def _psis_batch(post, masks, joint):
    """PSIS estimates for held-out masks (m, n): values, per-draw influence ψ (m, S), k̂ (m,).

    Every mask holds p ones. The held-out sums log p(x_S | θ_s) and the predictives at the held-out
    points are gathered from the (n, S) log-likelihoods, one held-out unit of every set at a time:
    O(m p S) work and O(m S) memory, rather than products with the (m, n) masks (O(m n S): for
    leave-one-out, n times the work of the smoothing itself).
    """
    from .interop import _psis_log_weights as psis_log_weights

    L = post.loglik_by_unit  # (n, S)
    M = np.asarray(masks) > 0
    m = M.shape[0]
    p = int(M[0].sum())
    cols = np.nonzero(M)[1].reshape(m, p)  # the p held-out units of each set
    neg_held = -L[cols[:, 0]]  # (m, S): −log p(x_S | θ_s), the log importance ratios
    for k in range(1, p):
        neg_held -= L[cols[:, k]]
    lw, khat = psis_log_weights(neg_held, reff=post.r_eff)  # normalized smoothed log weights (m, S)
    W = np.exp(lw)
    if joint:
        shift = neg_held.min(1)  # (m,): −max_s log p(x_S | θ_s)
        q = np.exp(-(neg_held - shift[:, None]))  # (m, S)
        qhat = np.sum(W * q, axis=1)
        values = np.log(qhat) - shift
        psi = W * (q / qhat[:, None] - 1.0)
    else:
        lpd_sum = np.zeros(m)
        grad = np.zeros_like(W)  # (m, S): Σ_{i ∈ S} p(x_i | θ_s) / (p · E_w[p(x_i | θ)])
        for k in range(p):
            shift = post.max_by_unit[cols[:, k]]  # (m,)
            Pk = np.exp(L[cols[:, k]] - shift[:, None])  # p(x_i | θ_s) on a shifted scale, (m, S)
            Phat = np.einsum("js,js->j", W, Pk)  # E_w[p(x_i | θ)] on the same scale
            with np.errstate(divide="ignore"):
                lpd_sum += np.log(Phat) + shift
            grad += Pk / (p * Phat[:, None])
        values = lpd_sum / p
        psi = W * (grad - 1.0)
    return values, psi, np.asarray(khat)


def _refit_batch(target, masks, joint, rng_key, num_warmup, num_samples, refit_kwargs=None):
    """Refit estimates for held-out masks (m, n): values, Monte Carlo variances (m,), diagnostics.

    ``refit_kwargs``: sampler options of :func:`genbayes.batched.run` (e.g. ``kernel="chees"``,
    ``shared_warmup``); a posterior's draws are then its chains', one after the other.
    """
    from .batched import run

    res = run(target.model, 1.0 - jnp.asarray(masks, _float()), *target.args, num_warmup=num_warmup,
              num_samples=num_samples, rng_key=rng_key, units=target.units, progress=False,
              **(refit_kwargs or {}), **target.kwargs)
    m = masks.shape[0]
    flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in res.samples.items()}
    L = np.asarray(_pointwise_loglik(target, flat), dtype=np.float64).reshape(m, num_samples, target.n)
    M = np.asarray(masks, dtype=np.float64)
    p = M.sum(1)
    S = num_samples
    if joint:
        held = np.einsum("msn,mn->ms", L, M)
        shift = held.max(1, keepdims=True)
        q = np.exp(held - shift)
        qhat = q.mean(1)
        values = np.log(qhat) + shift[:, 0]
        psi = (q / qhat[:, None] - 1.0) / S
    else:
        shift = L.max(1, keepdims=True)
        P = np.exp(L - shift)
        Phat = P.mean(1)  # (m, n)
        values = np.sum(M * (np.log(Phat) + shift[:, 0]), axis=1) / p
        A = M / Phat / p[:, None]
        psi = (np.einsum("msn,mn->ms", P, A) - 1.0) / S
    C = res.num_chains  # chains per posterior (1 for NUTS), chain c holds draws [c S/C, (c+1) S/C)
    r = _ess_ratio(psi.reshape(m, C, S // C).transpose(1, 2, 0))
    mc_var = np.sum(psi**2, axis=1) / r
    return values, mc_var, {"num_divergent": np.asarray(res.diagnostics["num_divergent"])}


# --------------------------------------------------------------------------------------------
# batches: evaluate, store (for --resume), combine
# --------------------------------------------------------------------------------------------


class _Runner:
    """Evaluates one batch of held-out sets with a fixed method; shared by lpo/cumulative and the CLI."""

    def __init__(self, target, p, method, joint, num_subsets, rng_key, max_subsets, batch_size,
                 num_warmup, num_samples, num_chains, chunk, subsets=None, memory_budget=None, max_batch_size=None,
                 refit_kwargs=None):
        self.target, self.p, self.joint, self.chunk = target, p, joint, chunk
        self.refit_kwargs = refit_kwargs
        self.num_warmup, self.num_samples, self.num_chains = num_warmup, num_samples, num_chains
        n = target.n
        total_possible = math.comb(n, p)
        base = "exact" if method in ("exact", "enumerate") else method
        # ranks of enumerated subsets are int32 on device: never enumerate more than 2^31 − 1
        enum_cap = min(max_subsets, _MAX_RANK)
        if subsets is not None:
            exhaustive, total = True, int(subsets.shape[0])
        elif num_subsets is None:
            if base == "exact":
                exhaustive = total_possible <= enum_cap
                if method == "enumerate" and not exhaustive:
                    raise ValueError(
                        f"method='enumerate' needs C(n, p) = {total_possible} <= max_subsets = {enum_cap}"
                        + (" (at most 2^31 − 1 subsets can be enumerated)" if max_subsets > _MAX_RANK else
                           "; raise max_subsets") + ", or pass num_subsets for random subsets."
                    )
            else:
                exhaustive = total_possible <= _EXHAUSTIVE_LIMIT["psis" if base == "auto" else base]
            total = total_possible if exhaustive else _DEFAULT_RANDOM["psis" if base == "auto" else base]
        else:
            exhaustive, total = False, num_subsets
        self.base, self.exhaustive, self.total = base, exhaustive, total
        self.keep_values = base != "exact" or total <= 100_000
        self.keep_subsets = self.keep_values and total * n <= 10_000_000
        self.memory_budget = _check_memory_budget(memory_budget)
        if self.total * (16 + 8 * n) > self.memory_budget // 4:  # per-set diagnostics are a luxury: drop them first
            self.keep_subsets = False
            self.keep_values = self.keep_values and self.total * 16 <= self.memory_budget // 4
        batch_size, self.chunk, self.memory_needed = self._size(batch_size, self.memory_budget, max_batch_size)
        key_post, key_sub, self.key_refit = jax.random.split(rng_key, 3)
        self.plan = _Plan(n, p, total, exhaustive, key_sub, batch_size, fixed=subsets)
        self.post = None
        if base in ("psis", "auto"):
            self.post = _FullPosterior(target, key_post, num_warmup, num_samples, num_chains)
            self.threshold = _khat_threshold(num_chains * num_samples)

    def _costs(self, chunk):
        """(fixed bytes, bytes per held-out set in a batch) of this plan: an upper estimate of the peak."""
        n, isz = self.target.n, jnp.dtype(_float()).itemsize
        retained = self.total * (16 if self.keep_values else 0) + self.total * n * (8 if self.keep_subsets else 0)
        if self.base == "exact":
            # masks (padded to a power of two, ≤ 2×) and the unranking scan's (n, m) intermediates, measured
            # at ≈ 2.2× the masks: 5 n words per set; each jax.lax.map step evaluates `chunk` predictives
            # over n points (n² for the joint chain rule), with a few temporaries of that size
            per_chunk_set = 6 * n * (n if self.joint else 1) * isz
            return retained + chunk * per_chunk_set + 4 * (n + 1) * (self.p + 1), 5 * n * isz
        if self.base == "refit":
            # batched NUTS draws of every set, their pointwise log-likelihoods (S, n) and exp of them, in float64
            return retained, 3 * 8 * self.num_samples * n + 8 * n
        S = self.num_chains * self.num_samples
        fixed = retained + 3 * 8 * S * n  # the full posterior's (S, n) log-likelihoods, their exp, a copy
        per = 8 * (3 * S + 5 * n)  # per set: held-out sums and weights over S draws, predictives over n
        if self.base == "auto":  # high-k̂ sets of a batch are refit in one program
            per = max(per, 3 * 8 * self.num_samples * n + 8 * n)
        return fixed, per

    def _size(self, batch_size, budget, max_batch_size=None):
        """(batch size, chunk, bytes needed) within ``budget``; a ValueError before anything is allocated if it cannot fit."""
        chunk = self.chunk
        if self.base == "exact":
            per_chunk_set = 6 * self.target.n * (self.target.n if self.joint else 1) * jnp.dtype(_float()).itemsize
            chunk = max(1, min(chunk, (budget // 2) // per_chunk_set))
        fixed, per = self._costs(chunk)
        if batch_size is None:
            size = min(self.total, max(0, (budget - fixed) // per), max_batch_size or self.total)
            if size < 1:
                raise ValueError(
                    f"leave-{self.p}-out ({self.base}, n = {self.target.n}, {self.total} held-out sets) needs at least "
                    f"{_fmt_bytes(fixed + per)} (one set per batch), above memory_budget = {_fmt_bytes(budget)}. "
                    "Raise memory_budget, or use fewer draws (num_samples, num_chains) or random subsets (num_subsets).")
        else:
            size = min(batch_size, self.total)
        needed = fixed + size * per
        if needed > budget:
            raise ValueError(
                f"batch_size = {batch_size} held-out sets of n = {self.target.n} ({self.base}) need about "
                f"{_fmt_bytes(needed)}, above memory_budget = {_fmt_bytes(budget)}; leave batch_size out (it is then "
                "sized from the budget), lower it, or raise memory_budget.")
        return int(size), int(chunk), int(needed)

    def method_name(self, any_refit):
        if self.base == "exact":
            return "enumerate" if self.exhaustive else "random"
        if self.base == "auto":
            return "psis+refit" if any_refit else "psis"
        return self.base

    def _refit_auto(self, masks, vals, mc_var, refit, b):
        r"""``method="auto"``: refit the high-k̂ sets, and check that PSIS can be trusted on the others.

        k̂ is itself estimated from the draws, and it underestimates the tail when the ratios'
        heavy tail is rarely sampled: with unit-specific parameters (a separate, not pooled,
        model) every leave-one-out ratio :math:`1/p(x_u \mid \theta_u)` has shape k ≈ 1, yet some
        k̂ come out near 0.5 and their PSIS values are off by many nominal SE. So when any set
        needs a refit, a few sets below the threshold (at least 2, or 5 %) are refit in the same
        program as checks. If a check disagrees with its PSIS value by more than 3 combined SE,
        PSIS is not trusted in this batch: all its sets are refit (when at most 64 remain),
        otherwise the batch is flagged ``psis_unreliable`` and a warning is given.
        """
        m = len(vals)
        low = np.flatnonzero(~refit)
        rng = np.random.default_rng([int(b), int(np.asarray(jax.random.key_data(self.key_refit)).ravel()[-1])])
        num_check = min(len(low), max(2, -(-m // 20)))
        check = np.sort(rng.choice(low, size=num_check, replace=False)) if num_check else np.zeros(0, int)
        idx = np.concatenate([np.flatnonzero(refit), check]).astype(int)
        v2, mv2, d = _refit_batch(self.target, masks[jnp.asarray(idx)], self.joint,
                                  jax.random.fold_in(self.key_refit, b), self.num_warmup, self.num_samples,
                                  self.refit_kwargs)
        divergent = np.asarray(d["num_divergent"]).tolist()
        vals, mc_var = vals.copy(), mc_var.copy()
        nh = int(np.sum(refit))
        hi = idx[:nh]
        vals[hi], mc_var[hi] = v2[:nh], mv2[:nh]
        checked = np.zeros(m, bool)
        checked[check] = True
        z = np.abs(vals[check] - v2[nh:]) / np.sqrt(mc_var[check] + mv2[nh:])
        refit = refit.copy()
        unreliable = False
        if np.any(z > 3.0):
            rest = np.setdiff1d(low, check)
            vals[check], mc_var[check] = v2[nh:], mv2[nh:]  # the refits replace the untrusted PSIS values
            refit[check] = True
            if len(rest) <= _EXHAUSTIVE_LIMIT["refit"]:
                if len(rest):
                    v3, mv3, d3 = _refit_batch(self.target, masks[jnp.asarray(rest)], self.joint,
                                               jax.random.fold_in(jax.random.fold_in(self.key_refit, b), 1),
                                               self.num_warmup, self.num_samples, self.refit_kwargs)
                    vals[rest], mc_var[rest] = v3, mv3
                    refit[rest] = True
                    divergent += np.asarray(d3["num_divergent"]).tolist()
            else:
                unreliable = True
        return vals, mc_var, refit, checked, unreliable, divergent

    def batch(self, b):
        """Statistics of batch b (a JSON-serialisable dict)."""
        m = self.plan.count(b)
        # the exact method makes planned subsets' masks on device from their numbers (on every device,
        # only its own); the masks of the batch are formed here only when they are recorded
        numbered = self.base == "exact" and self.plan.fixed is None
        masks = self.plan.masks(b) if not numbered or self.keep_subsets else None
        out = {"batch": b, "count": m}
        if self.base == "exact":
            # several devices run at once on one host's memory: the budget's chunk is split between them
            chunk = max(1, self.chunk // jax.local_device_count()) if resolve_shard(None) else self.chunk
            fam, data = self.target.family, tuple(self.target.args)
            if numbered:
                vals = np.asarray(_plan_values(fam, data, self.plan, b, self.joint, chunk), dtype=np.float64)[:m]
            else:
                size = 1 << max(m - 1, 0).bit_length()
                padded = jnp.concatenate([masks, jnp.repeat(masks[:1], size - m, axis=0)]) if size > m else masks
                vals = np.asarray(_exact_values(fam, data, padded, self.joint, chunk), dtype=np.float64)[:m]
                del padded
            mc_var = np.zeros(m)
            psi_sum = None
        elif self.base == "refit":
            vals, mc_var, d = _refit_batch(self.target, masks, self.joint, jax.random.fold_in(self.key_refit, b),
                                           self.num_warmup, self.num_samples, self.refit_kwargs)
            psi_sum = None
            out["num_divergent"] = d["num_divergent"].tolist()
        else:
            vals, psi, khat = _psis_batch(self.post, masks, self.joint)
            refit = np.asarray(khat > self.threshold) if self.base == "auto" else np.zeros(m, bool)
            mc_var = np.sum(psi**2, axis=1) / self.post.r_eff
            checked = np.zeros(m, bool)
            if np.any(refit):
                vals, mc_var, refit, checked, unreliable, d = self._refit_auto(masks, vals, mc_var, refit, b)
                psi = psi * (~refit)[:, None]
                out["num_divergent"] = d
                out["checked"] = checked.tolist()
                out["psis_unreliable"] = unreliable
            # draws are shared by all PSIS subsets: their errors add per draw, not in quadrature
            psi_sum = psi[~refit].sum(0)
            out["khat"] = khat.tolist()
            out["refit"] = refit.tolist()
        out["sum"] = float(np.sum(vals))
        out["sumsq"] = float(np.sum(vals**2))
        if self.base == "refit":
            out["indep_mc_var"] = float(np.sum(mc_var))  # independent refits: variances add
        elif self.base == "exact":
            out["indep_mc_var"] = 0.0
        else:
            out["indep_mc_var"] = float(np.sum(mc_var[refit]))
        if psi_sum is not None:
            out["psi_sum"] = psi_sum.tolist()
        if self.keep_values:  # decided from the total, so that what is kept over all batches stays bounded
            out["values"] = vals.tolist()
            out["mc_se"] = np.sqrt(mc_var).tolist()
            if self.keep_subsets:
                out["subsets"] = np.asarray(masks).astype(np.int8).tolist()
        return out

    def combine(self, stats):
        stats = sorted(stats, key=lambda s: s["batch"])
        count = sum(s["count"] for s in stats)
        mean = sum(s["sum"] for s in stats) / count
        mc_var = sum(s["indep_mc_var"] for s in stats) / count**2
        psis = [np.asarray(s["psi_sum"]) for s in stats if "psi_sum" in s]
        if psis:
            psi_bar = np.sum(psis, axis=0) / count
            mc_var += float(np.sum(psi_bar**2)) / self.post.r_eff
        var = mc_var
        if not self.exhaustive:
            sumsq = sum(s["sumsq"] for s in stats)
            samp_var = max(sumsq / count - mean**2, 0.0) * count / max(count - 1, 1)
            var += samp_var / count
        diag = {"n": self.target.n}
        for k in ("values", "mc_se", "khat", "refit", "subsets", "num_divergent"):
            if all(k in s for s in stats) and stats:
                diag[k] = np.concatenate([np.asarray(s[k]) for s in stats])
        if self.base == "auto":
            diag["checked"] = np.concatenate([np.asarray(s.get("checked", np.zeros(s["count"], bool)), bool)
                                              for s in stats])
            diag["psis_unreliable"] = any(s.get("psis_unreliable", False) for s in stats)
        any_refit = bool(np.any(diag.get("refit", False)))
        if self.post is not None:
            diag.update(r_eff=self.post.r_eff, num_draws=self.post.num_chains * self.post.num_samples,
                        khat_threshold=self.threshold, full_posterior_divergences=self.post.divergences)
            if "khat" in diag:
                high = diag["khat"] > self.threshold
                diag["num_high_khat"] = int(np.sum(high))
        return LPOResult(
            value=float(mean), se=float(np.sqrt(var)), p=self.p, method=self.method_name(any_refit),
            num_subsets=int(count), diagnostics=diag, quantity="S_CCV" if self.joint else "S_CV",
            exhaustive=self.exhaustive, n=self.target.n,
        )


def _checked(res):
    """``res`` marked invalid (``valid=False`` with the reason) when its value or SE is not finite, and warned about."""
    problems = []
    vals = res.diagnostics.get("values")
    if not np.isfinite(res.value):
        nbad = "" if vals is None else f" ({int(np.sum(~np.isfinite(np.asarray(vals, float))))} of {np.size(vals)} held-out sets not finite)"
        problems.append(f"{res.quantity} is {res.value}: some held-out log densities are NaN or infinite{nbad}")
    if not np.isfinite(res.se):
        problems.append(f"its standard error is {res.se}")
    if not problems:
        return res
    res = dataclasses.replace(res, valid=False, problems=tuple(res.problems) + tuple(problems))
    warnings.warn(f"genbayes.cv: the result is invalid ({'; '.join(problems)}); see `.problems`.", RuntimeWarning,
                  stacklevel=4)
    return res


def _warn_result(res):
    d = res.diagnostics
    if "khat" in d and d.get("num_high_khat", 0) > 0:
        refit = int(np.sum(d.get("refit", 0)))
        how = f"{refit} of them were refit" if refit else "use method='auto' to refit them, or method='refit'"
        warnings.warn(
            f"{d['num_high_khat']} of {res.num_subsets} held-out sets have Pareto k̂ above "
            f"{d['khat_threshold']:.2f} (PSIS unreliable there); {how}. See `.diagnostics['khat']`.",
            RuntimeWarning, stacklevel=4,
        )
    if d.get("psis_unreliable", False):
        warnings.warn(
            "PSIS is unreliable for this model (refits of held-out sets below the k̂ threshold disagree with their "
            "PSIS values by more than 3 SE, so k̂ underestimates the tails) and there are too many held-out sets to "
            "refit them all; the estimate may be biased beyond its SE (`.diagnostics['psis_unreliable']`). Use "
            "method='refit' (with num_subsets=...).", RuntimeWarning, stacklevel=4)
    if "num_divergent" in d and np.any(np.asarray(d["num_divergent"]) > 0):
        warnings.warn("Some refits had divergent transitions; see `.diagnostics['num_divergent']`.",
                      RuntimeWarning, stacklevel=4)


def _check_subsets(subsets, n, p, pname):
    if subsets is None:
        return None
    try:
        arr = np.asarray(subsets)
    except ValueError:  # ragged list of index sequences
        arr = np.empty(0)
    if arr.ndim == 2 and arr.shape[1] == n and (arr.dtype == bool or np.all(np.isin(arr, (0, 1)))):
        masks = arr.astype(bool)
    else:
        try:
            rows = [np.asarray(s, dtype=np.int64).reshape(-1) for s in subsets]
        except (TypeError, ValueError):
            raise TypeError("`subsets` must be a boolean (m, n) mask array or a list of index sequences.") from None
        masks = np.zeros((len(rows), n), bool)
        for r, idx in enumerate(rows):
            if np.any(idx < 0) or np.any(idx >= n) or len(set(idx.tolist())) != len(idx):
                raise ValueError(f"`subsets`[{r}] must hold distinct indices in 0..{n - 1}, got {idx.tolist()}.")
            masks[r, idx] = True
    if masks.shape[0] == 0:
        raise ValueError("`subsets` is empty.")
    sizes = masks.sum(1)
    if np.any(sizes != p):
        raise ValueError(f"every held-out set in `subsets` must have {pname} = {p} points; sizes are {sorted(set(sizes.tolist()))}.")
    return jnp.asarray(masks, _float())


def _score(model, args, kwargs, *, p, site, units, method, num_subsets, rng_key, joint, max_subsets, batch_size,
           num_warmup, num_samples, num_chains, chunk, pname, subsets=None, memory_budget=None, refit_kwargs=None):
    target = _resolve(model, args, kwargs, site, units)
    p = _check_p(p, target.n, pname)
    subsets = _check_subsets(subsets, target.n, p, pname)
    if subsets is not None and num_subsets is not None:
        raise ValueError("Pass either `subsets` or `num_subsets`, not both.")
    method = _check_method(method, target)
    num_subsets = _check_num_subsets(num_subsets)
    _mcmc_opts(num_warmup, num_samples, num_chains)
    refit_kwargs = _check_refit_kwargs(refit_kwargs, num_warmup, num_samples)
    if isinstance(max_subsets, bool) or not isinstance(max_subsets, (int, np.integer)) or max_subsets < 1:
        raise ValueError(f"`max_subsets` must be a positive integer, got {max_subsets!r}.")
    exact_family = target.conjugate and method in ("exact", "counting", "enumerate")
    needs_key = (not exact_family or num_subsets is not None or (
        subsets is None and method != "counting" and not (method == "exact" and _is_counting(target.family))
        and math.comb(target.n, p) > min(max_subsets, _MAX_RANK)))
    if rng_key is None:
        if needs_key:
            raise ValueError("`rng_key` is required for this method (random subsets or MCMC): pass jax.random.PRNGKey(0).")
        rng_key = jax.random.PRNGKey(0)
    counting = target.conjugate and num_subsets is None and subsets is None and (
        method == "counting" or (method == "exact" and _is_counting(target.family))
    )
    if counting:
        s = _counting_all_p(target.family, target.args[0], ps=np.arange(1, p + 1) if joint else [p])
        value = float(np.sum(s) if joint else s[0])
        return _checked(LPOResult(value=value, se=0.0, p=p, method="counting", num_subsets=math.comb(target.n, p),
                                  diagnostics={"n": target.n}, quantity="S_CCV" if joint else "S_CV", exhaustive=True,
                                  n=target.n))
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"`batch_size` must be a positive integer (or None: sized from memory_budget), got {batch_size!r}.")
    runner = _Runner(target, p, method, joint, num_subsets, rng_key, max_subsets, batch_size,
                     num_warmup, num_samples, num_chains, chunk, subsets=subsets, memory_budget=memory_budget,
                     refit_kwargs=refit_kwargs)
    stats = [runner.batch(b) for b in range(runner.plan.num_batches)]
    res = _checked(runner.combine(stats))
    _warn_result(res)
    return res


def lpo(model, *args, p, units=None, site=None, method="auto", num_subsets=None, rng_key=None, max_subsets=DEFAULT_MAX_SUBSETS,
        num_warmup=500, num_samples=1000, num_chains=4, batch_size=None, chunk=1 << 14, subsets=None,
        memory_budget=None, refit_kwargs=None, **kwargs) -> LPOResult:
    r"""Bayesian leave-p-out score :math:`S_{CV}(p)`: mean held-out log predictive per held-out point.

    .. math:: S_{CV}(p) = \binom{n}{p}^{-1} \sum_{|S|=p} \frac1p \sum_{i \in S} \log p(x_i \mid x_{-S})

    (Fong & Holmes 2020, Biometrika 107(2)). ``p = 1`` is Bayesian leave-one-out
    (``elpd_loo / n`` in ArviZ's terms).

    Args:
        model: a NumPyro model (its arguments follow, as for ``MCMC.run``), or a
            :mod:`genbayes.conjugate` family followed by its data.
        p: number of held-out units, 1..n, where n is the number U of observation units.
        units: the observation units that are held out and scored (:mod:`genbayes.units`):
            ``None`` (default: each element of the outermost plate shared by the observed sites,
            found by tracing), a plate name, group ids (an integer array, or a dict observed site
            -> group ids) for leave-one-group-out, or a :class:`genbayes.units.Units`. Masked
            entries (``obs_mask``) belong to no unit and are never held out or scored. A unit's
            score is its marginal log predictive (discrete latents enumerated).
        site: kept for old code: the name of the model's only observed site (an error otherwise).
        method: ``"auto"``, ``"exact"`` (conjugate: counting, else enumeration, else random
            subsets), ``"counting"``, ``"enumerate"``, ``"psis"`` or ``"refit"`` (module docstring).
        num_subsets: evaluate this many uniformly random held-out sets instead of the default
            (all sets when there are at most ``max_subsets`` (exact), 1000 (psis) or 64 (refit);
            otherwise 4096, 1000 or 32 random ones).
        rng_key: JAX PRNG key (needed for random subsets and MCMC).
        max_subsets: largest number of subsets to enumerate exactly (never more than 2^31 − 1;
            above it, random subsets).
        num_warmup, num_samples, num_chains: NUTS settings (full posterior: ``num_chains``
            chains; refits: one chain per training set).
        refit_kwargs: sampler options of :func:`genbayes.batched.run` for the refits (``"refit"``,
            and ``"auto"``'s refits): NUTS's ``target_accept_prob``, ``dense_mass``, ``max_tree_depth``,
            or ``kernel="chees"`` with ``num_chains``, ``shared_warmup`` and ``nuts_fallback`` (refits where
            ChEES fails drawn again by NUTS; on by default). Training sets of one size
            give alike posteriors, the case of ``shared_warmup`` (one ChEES warm-up on the mean
            weights, then ``num_warmup`` step-size iterations per refit, e.g. ``{"kernel": "chees",
            "shared_warmup": 300}`` with ``num_warmup=25``); ``num_samples`` is then split over the
            chains and the Monte Carlo SE uses their multi-chain ESS.
        batch_size: subsets per batch (default: as many as fit in ``memory_budget``; for
            ``"refit"``/``"auto"`` the refits' random keys follow the batches, so pass it to get
            the same refits on machines with different memory).
        chunk: subsets per vmapped chunk inside ``jax.lax.map`` for exact enumeration (lowered
            to fit ``memory_budget``).
        memory_budget: bytes the computation may use (default :func:`default_memory_budget`,
            half the available memory). Batches are sized from it; when even one held-out set
            per batch (or the given ``batch_size``) would need more, a ValueError says how much,
            before anything is compiled or allocated.
        subsets: evaluate exactly these held-out sets (a boolean ``(m, n)`` mask or a list of
            index sequences, each of size p) instead of all or random ones; ``se`` is then the
            Monte Carlo error only, and two methods on the same sets can be compared pairwise.
        **kwargs: the model's keyword arguments.

    Returns:
        :class:`LPOResult`. High Pareto k̂ and refit divergences are reported in its
        diagnostics and warned about.

    Example:
        >>> import jax.numpy as jnp, genbayes as gb
        >>> from genbayes import cv
        >>> r = cv.lpo(gb.conjugate.BetaBernoulli(1.0, 1.0), jnp.array([1, 0, 1, 1]), p=2)  # (3 log .5 + 3 (log .75 + log .25)/2)/6
        >>> r.method, round(r.value, 4)
        ('counting', -0.7651)
    """
    return _score(model, args, kwargs, p=p, site=site, units=units, method=method, num_subsets=num_subsets, rng_key=rng_key,
                  joint=False, max_subsets=max_subsets, batch_size=batch_size, num_warmup=num_warmup,
                  num_samples=num_samples, num_chains=num_chains, chunk=chunk, pname="p", subsets=subsets,
                  memory_budget=memory_budget, refit_kwargs=refit_kwargs)


def cumulative(model, *args, P, units=None, site=None, method="auto", num_subsets=None, rng_key=None,
               max_subsets=DEFAULT_MAX_SUBSETS, num_warmup=500, num_samples=1000, num_chains=4, batch_size=None,
               chunk=1 << 12, subsets=None, memory_budget=None, refit_kwargs=None, **kwargs) -> LPOResult:
    r"""Cumulative cross-validation score :math:`S_{CCV}(P) = \sum_{p \le P} S_{CV}(p)`.

    Computed directly as the mean joint held-out log predictive over training sets of size n − P,

    .. math:: S_{CCV}(P) = \binom{n}{P}^{-1} \sum_{|T| = n-P} \log p(x_{-T} \mid x_T)

    (Fong & Holmes 2020; for conjugate families by the chain rule inside the held-out set,
    for PSIS with importance ratios :math:`1/p(x_{-T} \mid \theta)`, for refits as
    :math:`\log \frac1S \sum_s p(x_{-T} \mid \theta_s)`). Arguments as in :func:`lpo`, with ``P``
    for ``p``; ``value`` is not divided by P.

    Example:
        >>> import jax.numpy as jnp, genbayes as gb
        >>> from genbayes import cv
        >>> fam = gb.conjugate.NormalKnownVariance(0.0, 1.0, 1.0)
        >>> x = jnp.array([0.3, -1.2, 0.8])
        >>> r = cv.cumulative(fam, x, P=3)   # P = n: the whole log evidence
        >>> bool(abs(r.value - float(fam.log_evidence(x))) < 1e-5)
        True
    """
    return _score(model, args, kwargs, p=P, site=site, units=units, method=method, num_subsets=num_subsets, rng_key=rng_key,
                  joint=True, max_subsets=max_subsets, batch_size=batch_size, num_warmup=num_warmup,
                  num_samples=num_samples, num_chains=num_chains, chunk=chunk, pname="P", subsets=subsets,
                  memory_budget=memory_budget, refit_kwargs=refit_kwargs)


# --------------------------------------------------------------------------------------------
# the identity
# --------------------------------------------------------------------------------------------


def _exact_log_evidence(fam, data):
    """The family's closed-form log evidence, in float64 (scoped), as the counting terms are."""
    from ._config import x64

    with x64():
        return float(_as_float64(fam).log_evidence(*(np.asarray(d) for d in data)))


def _permutations(key, R, n):
    return jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, R))


def _terms_to_report(terms, method, log_evidence, log_evidence_se, source, diagnostics):
    terms = np.asarray(terms, dtype=np.float64)  # (R, n): terms[r, k] = log p(x_σr(k) | x_σr(<k))
    R, n = terms.shape
    # position k (0-based) carries S_CV(n - k): reverse so index p - 1 holds S_CV(p)
    s_cv = terms.mean(0)[::-1]
    s_se = (terms.std(0, ddof=1) / np.sqrt(R))[::-1] if R > 1 else np.full(n, np.nan)
    sums = terms.sum(1)
    total = float(sums.mean())
    total_se = float(sums.std(ddof=1) / np.sqrt(R)) if R > 1 else float("nan")
    if log_evidence is None:
        log_evidence, log_evidence_se = total, 0.0
    gap = total - log_evidence
    diagnostics = dict(diagnostics, num_permutations=R, log_z_per_ordering=sums)
    return IdentityReport(s_cv=s_cv, s_cv_se=s_se, total=total, total_se=total_se, log_evidence=float(log_evidence),
                          log_evidence_se=float(log_evidence_se), gap=float(gap),
                          se=float(np.hypot(total_se, log_evidence_se)), method=method,
                          log_evidence_source=source, diagnostics=diagnostics)


# Early posteriors (a few points, a vague prior) are broad, correlated ridges and funnels: with
# NUTS's default diagonal mass matrix and target acceptance 0.8 they gave divergences and terms
# biased by ~0.1 nats at position 2 (see identity's docstring for the measurements).
_IDENTITY_NUTS = {"dense_mass": True, "target_accept_prob": 0.95}


def _checkpoints(n, stride):
    r"""Refit positions along an ordering: 0, 1, 2, ... with step :math:`\min(\text{stride}, \max(1, \lfloor c/2 \rfloor))`.

    Importance weights that carry the posterior given :math:`x_{\sigma(<c)}` forward over j more
    points have log-weight variance growing like j/c (each point adds about 1/c of the information
    already there), so the step is at most half the prefix: early, where the posterior is broad and
    moves fast, every prefix is refitted; later every ``stride``-th.
    """
    cps, c = [], 0
    while c < n:
        cps.append(c)
        c += min(stride, max(1, c // 2))
    return np.asarray(cps)


def _prior_loglik(target, R, num_draws, rng_key):
    """log p(x_u | θ) for ``num_draws`` independent prior draws θ per ordering, shape (R, num_draws, U); None if unavailable.

    Exact independent draws (``numpyro.infer.Predictive``) replace NUTS on the prior, which is the
    broadest and most funnel-shaped distribution of the sequence. Not used for models with
    enumerated discrete latents (their unit likelihoods are marginal over them), or when the
    prior cannot be sampled (e.g. improper priors): then the c = 0 refit is NUTS like the others.
    """
    from numpyro.handlers import seed, trace

    from ._programs import data_program
    from .units import _trace

    if target.units.enumerated:
        return None
    try:
        tr = _trace(target.model, target.args, target.kwargs)
        latent = tuple(k for k, v in tr.items() if v["type"] == "sample" and not v["is_observed"])

        def make(args, kwargs):
            def draw(key):  # what Predictive(model, num_samples=R * num_draws) draws, as a cached program
                def one(k):
                    t = trace(seed(target.model, k)).get_trace(*args, **kwargs)
                    return {n: t[n]["value"] for n in latent}

                return jax.vmap(one)(jax.random.split(key, R * num_draws))

            return draw

        draws = data_program("prior_draws", target.model, target.args, target.kwargs, (latent, R * num_draws),
                             make)(rng_key)
        L = np.asarray(_pointwise_loglik(target, draws), dtype=np.float64)
    except Exception:  # noqa: BLE001 - improper or unsampleable prior: fall back to NUTS at c = 0
        return None
    if not np.all(np.isfinite(L) | (L == -np.inf)):
        return None
    return L.reshape(R, num_draws, target.n)


def _permutation_terms(target, orders, stride, rng_key, num_warmup, num_samples, num_prior_draws=None, nuts_kwargs=None):
    r"""One-step-ahead terms along each ordering from refits at checkpoints and importance weights between.

    For ordering σ and checkpoint c (:func:`_checkpoints`: every prefix early, every ``stride``-th
    later), draws θ_s from the posterior given x_σ(<c): independent prior draws for c = 0
    (``num_prior_draws`` per ordering, default 8 × ``num_samples``), NUTS (gb.batched, 0/1
    weights) otherwise. For c ≤ k < next checkpoint,
    :math:`\log p(x_{\sigma(k)} \mid x_{\sigma(<k)}) \approx \log \sum_s w_s p(x_{\sigma(k)} \mid \theta_s)` with
    :math:`w_s \propto \prod_{c \le j < k} p(x_{\sigma(j)} \mid \theta_s)` Pareto-smoothed (ArviZ psislw).
    Weights that add data are bounded by the likelihood, so they are far tamer than leave-out ratios.
    """
    from .batched import run
    from .interop import _psis_log_weights as psis_log_weights

    orders = np.asarray(orders)
    R, n = orders.shape
    nuts = {**_IDENTITY_NUTS, **(nuts_kwargs or {})}
    checkpoints = _checkpoints(n, stride)
    key_prior, rng_key = jax.random.split(rng_key)
    S0 = num_prior_draws or 8 * num_samples
    L0 = _prior_loglik(target, R, S0, key_prior)
    fit = checkpoints if L0 is None else checkpoints[1:]
    C = len(fit)
    rank = np.argsort(orders, axis=1)  # rank[r, i] = position of point i in ordering r
    L, divergent = {}, np.zeros((R, len(checkpoints)), dtype=np.int64)
    if C:
        W = (rank[:, None, :] < fit[None, :, None]).astype(np.float64).reshape(R * C, n)
        res = run(target.model, jnp.asarray(W, _float()), *target.args, num_warmup=num_warmup,
                  num_samples=num_samples, rng_key=rng_key, units=target.units, progress=False, **nuts, **target.kwargs)
        flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in res.samples.items()}
        Lfit = np.asarray(_pointwise_loglik(target, flat), dtype=np.float64).reshape(R, C, num_samples, n)
        divergent[:, len(checkpoints) - C:] = np.asarray(res.diagnostics["num_divergent"]).reshape(R, C)
        for ci in range(C):
            L[len(checkpoints) - C + ci] = Lfit[:, ci]
    if L0 is not None:
        L[0] = L0
    terms = np.empty((R, n))
    khat = np.full((R, n), np.nan)
    lw_rows, where = [], []
    bounds = list(checkpoints[1:]) + [n]
    for r in range(R):  # Python loops over bookkeeping only; the heavy work (NUTS) is one program above
        for ci, (c, hi) in enumerate(zip(checkpoints, bounds)):
            Lc = L[ci][r][:, orders[r]]  # (S, n) in ordering r
            cum = np.cumsum(Lc[:, c:hi], axis=1)  # cum[:, j] = Σ_{c..c+j} log p
            terms[r, c] = np.logaddexp.reduce(Lc[:, c]) - np.log(Lc.shape[0])  # numpy: no eager compilations
            for k in range(c + 1, hi):
                lw_rows.append(cum[:, k - c - 1])
                where.append((r, k, ci))
    if lw_rows:
        lw, kh = psis_log_weights(np.stack(lw_rows), reff=1.0)
        for (r, k, ci), lwi, khi in zip(where, lw, kh):
            x = L[ci][r][:, orders[r, k]]
            terms[r, k] = float(np.logaddexp.reduce(lwi + x))
            khat[r, k] = khi
    diag = {"terms": terms, "khat": khat, "checkpoints": checkpoints, "stride": stride,
            "prior_draws": 0 if L0 is None else S0,
            "num_divergent": divergent, "orders": orders}
    return terms, diag


def _checked_report(fn):
    """Wrap :func:`identity`: a report with a non-finite S_CV(p), total, log evidence or gap is marked invalid and warned about."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        rep = fn(*args, **kwargs)
        s = np.asarray(rep.s_cv, dtype=np.float64)
        problems = []
        bad = np.flatnonzero(~np.isfinite(s))
        if bad.size:
            problems.append(f"{bad.size} of the {s.size} S_CV(p) are not finite (first at p = {int(bad[0]) + 1})")
        for name in ("total", "log_evidence", "gap"):
            v = getattr(rep, name)
            if not np.isfinite(v):
                problems.append(f"{name} is {v}")
        if not problems:
            return rep
        rep = dataclasses.replace(rep, valid=False, problems=tuple(rep.problems) + tuple(problems))
        warnings.warn("genbayes.cv.identity: the result is invalid (" + "; ".join(problems) + "); see `.problems`.",
                      RuntimeWarning, stacklevel=2)
        return rep

    return wrapper


@_checked_report
def identity(model, *args, units=None, site=None, method="auto", rng_key=None, num_permutations=None, stride=None,
             max_subsets=DEFAULT_MAX_SUBSETS, evidence_method="smc", num_warmup=300, num_samples=500,
             evidence_kwargs=None, smc_kwargs=None, nuts_kwargs=None, num_prior_draws=None, order=None,
             memory_budget=None, **kwargs) -> IdentityReport:
    r"""Check :math:`\log p(x) = \sum_{p=1}^n S_{CV}(p)` (Fong & Holmes 2020, Proposition 1).

    Conjugate families (``method="auto"`` or ``"exact"``): every S_CV(p) exactly, by counting
    (Beta–Bernoulli, Dirichlet–categorical, any n) or by enumerating all :math:`2^n - 1`
    held-out sets when that is at most ``max_subsets``; otherwise from ``num_permutations``
    random orderings with exact one-step-ahead terms (each ordering sums exactly to log p(x)).
    The log evidence is the family's closed form.

    Other models: random orderings σ_r; :math:`S_{CV}(n-k+1)` is the mean over orderings of
    the k-th one-step-ahead term. ``method="auto"``/``"permutation"``: refits at every
    ``stride``-th prefix (gb.batched) and Pareto-smoothed importance weights in between
    (:func:`_permutation_terms`); ``method="smc"``: the terms of
    ``genbayes.evidence.prequential`` (data-tempered SMC). The terms of one ordering telescope
    to an estimate of log p(x), so the sum is far less noisy than independent subsets per p.
    The default (``"permutation"``) is chosen to be unbiased where the posterior is broad early on:
    (1) the first term uses ``num_prior_draws`` independent prior draws (``numpyro.infer.Predictive``)
    instead of NUTS on the prior; (2) every early prefix is refitted, and later the step between
    refits is at most half the prefix (importance weights that carry a posterior given c points
    over j more have log-weight variance growing like j/c), at most ``stride``; (3) the refits use
    a dense mass matrix and target acceptance 0.95, because posteriors given one or two points
    under a vague prior are correlated ridges on which NUTS's defaults diverged. Measured on a
    Gaussian linear regression (Normal-Gamma prior written in plain NumPyro, coefficient prior
    sd 10σ, n = 40) against the exact terms of the same orderings (32 orderings, four seeds):
    the earlier default (refits every ``stride`` = 4 points, diagonal mass) was biased low by
    0.33 ± 0.16 and 0.36 ± 0.19 nats, almost all of it in positions 1-3 (importance weights from
    the prior with Pareto k̂ up to 17) and position 1 (NUTS); this default's sums differ from the
    exact ones by −0.03 ± 0.06, −0.03 ± 0.05, −0.05 ± 0.04 and 0.02 ± 0.05 nats. With the
    default settings, gap / SE against the exact evidence over seeds 0-3 was 0.25, 1.35, 0.50,
    −0.31 (vague prior, n = 40; earlier default −3.35, −1.08, −1.11, −1.17), −0.07, 0.43, 0.56,
    −1.79 (conjugate-scale prior, n = 20) and −1.91, 0.53, 0.30, −0.27 (n = 60); SE 0.04-0.10 nats.
    ``se`` is the Monte Carlo standard error across orderings (each ordering's exact terms
    telescope to log p(x), so the spread of the sums is Monte Carlo error only).

    **Time series** (``order="data"``, alias ``"time"``): one ordering, the data's own order of
    the units, repeated ``num_permutations`` times as independent Monte Carlo runs. The terms are
    then the one-step-ahead (leave-future-out) log predictive densities
    :math:`\log p(x_k \mid x_{<k})` of Bürkner, Gabry & Vehtari (2020), and their sum is still
    :math:`\log p(x)` (the chain rule holds in any order); ``s_cv[p - 1]`` is then the term of
    unit n − p, not a leave-p-out average. Random orderings need units that are exchangeable;
    the data order does not.
    ``log_evidence`` comes from ``genbayes.evidence.log_evidence(method=evidence_method)`` when
    that module is installed, otherwise from the telescoped sums (then the gap is 0 by
    construction, and ``log_evidence_source`` says so).

    Args:
        model, *args, **kwargs, units, site: as in :func:`lpo`; the orderings are over units,
            and every observed site must be in units (no fixed sites), so that the sum is
            log p(all data).
        method: ``"auto"``, ``"exact"``, ``"permutation"`` or ``"smc"``.
        rng_key: JAX PRNG key (not needed for exact counting or enumeration).
        num_permutations: number of random orderings (default 200 for conjugate families, 16 for
            ``"permutation"``, 8 for ``"smc"``).
        stride: the largest step between refits along an ordering (default ``max(1, n // 10)``);
            the refit positions are :func:`_checkpoints`: every prefix while the step c/2 is
            below 1, then steps of ``min(stride, c // 2)``.
        nuts_kwargs: options of :func:`genbayes.batched.run` for the refits (default
            ``{"dense_mass": True, "target_accept_prob": 0.95}``).
        num_prior_draws: independent prior draws per ordering for the first term (default
            8 × ``num_samples``).
        evidence_method, evidence_kwargs: passed to ``genbayes.evidence.log_evidence``.
        smc_kwargs: with ``method="smc"``, options of ``genbayes.evidence.prequential``
            (``num_particles``, ``num_mcmc_steps``, ``num_leapfrog``).
        num_warmup, num_samples: NUTS settings of the refits.
        order: ``None`` (random orderings of the units) or ``"data"`` / ``"time"`` (the data's
            own order: leave-future-out terms of a time series; see above).
        memory_budget: bytes the exact enumeration may use (default
            :func:`default_memory_budget`); above it a ValueError says how much it needs.

    Counting runs in float64 whatever the caller's precision (see :func:`_counting_all_p`);
    other paths need ``numpyro.enable_x64()`` for identity checks at 1e-9. Any non-finite
    S_CV(p), total, log evidence or gap makes the report ``valid=False`` with the reason in
    ``problems`` (and a RuntimeWarning).

    Returns:
        :class:`IdentityReport`.

    Example:
        >>> import jax.numpy as jnp, genbayes as gb
        >>> from genbayes import cv
        >>> rep = cv.identity(gb.conjugate.GammaPoisson(2.0, 1.0), jnp.array([0, 3, 1, 2, 2]))
        >>> rep.method, bool(abs(rep.gap) < 1e-4)
        ('enumerate', True)
    """
    target = _resolve(model, args, kwargs, site, units)
    n = target.n
    if target.units.fixed:
        raise ValueError(
            f"`units` leaves observed site(s) {list(target.units.fixed)} fixed (conditioned on, never held out), but "
            "the identity is for log p(all data): with fixed sites both sides would be conditional on them. Put "
            "every observed site in units (the default), or use gb.cv.lpo / gb.cv.cumulative.")
    if method not in ("auto", "exact", "permutation", "smc"):
        raise ValueError(f"`method` must be 'auto', 'exact', 'permutation' or 'smc', got {method!r}.")
    if method == "exact" and not target.conjugate:
        raise ValueError("method='exact' needs a gb.conjugate family; use 'auto', 'permutation' or 'smc'.")
    if num_permutations is not None and (isinstance(num_permutations, bool) or not isinstance(num_permutations, (int, np.integer)) or num_permutations < 2):
        raise ValueError(f"`num_permutations` must be an integer >= 2, got {num_permutations!r}.")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or not 1 <= stride <= n):
        raise ValueError(f"`stride` must be an integer in 1..n = 1..{n}, got {stride!r}.")
    _mcmc_opts(num_warmup, num_samples, 1)
    if num_prior_draws is not None and (isinstance(num_prior_draws, bool) or not isinstance(num_prior_draws, (int, np.integer)) or num_prior_draws < 1):
        raise ValueError(f"`num_prior_draws` must be a positive integer (or None for 8 × num_samples), got {num_prior_draws!r}.")
    if order not in (None, "data", "time"):
        raise ValueError(f"`order` must be None (random orderings of the units) or 'data' / 'time' (the data's own "
                         f"order, for time series), got {order!r}.")
    in_order = order is not None
    if nuts_kwargs is not None and not isinstance(nuts_kwargs, dict):
        raise TypeError(f"`nuts_kwargs` must be a dict of genbayes.batched.run options (e.g. {{'dense_mass': False}}), "
                        f"got {type(nuts_kwargs).__name__}.")

    if target.conjugate and method in ("auto", "exact"):
        fam, data = target.family, target.args
        log_z = _exact_log_evidence(fam, data)
        if in_order:  # the chain rule in the data's order, term by term in closed form
            terms = np.asarray(_conj.sequence_log_predictive(fam, *data, order=jnp.arange(n)), np.float64)
            total = float(np.sum(terms))
            return IdentityReport(s_cv=terms[::-1], s_cv_se=np.zeros(n), total=total, total_se=0.0,
                                  log_evidence=log_z, log_evidence_se=0.0, gap=total - log_z, se=0.0,
                                  method="exact (data order)", log_evidence_source="exact",
                                  diagnostics={"n": n, "terms": terms[None], "order": "data"})
        if _is_counting(fam) or 2**n - 1 <= max_subsets:
            if _is_counting(fam):
                s, how = np.asarray(_counting_all_p(fam, data[0]), np.float64), "counting"
            else:
                s, how = np.asarray(_enumerate_all_p(fam, data, memory_budget=memory_budget), np.float64), "enumerate"
            total = float(np.sum(s))
            return IdentityReport(s_cv=s, s_cv_se=np.zeros(n), total=total, total_se=0.0, log_evidence=log_z,
                                  log_evidence_se=0.0, gap=total - log_z, se=0.0, method=how,
                                  log_evidence_source="exact", diagnostics={"n": n})
        if rng_key is None:
            raise ValueError(f"`rng_key` is required: 2^n − 1 > max_subsets = {max_subsets}, so random orderings are used.")
        R = num_permutations or 200
        orders = _permutations(rng_key, R, n)
        terms = jax.vmap(lambda o: _conj.sequence_log_predictive(fam, *data, order=o))(orders)
        return _terms_to_report(terms, "permutation (exact terms)", log_z, 0.0, "exact", {"n": n})

    if rng_key is None:
        raise ValueError("`rng_key` is required: pass jax.random.PRNGKey(0).")
    key_perm, key_fit, key_ev = jax.random.split(rng_key, 3)
    R = num_permutations or (8 if method == "smc" else 16)
    if method == "smc":
        from .evidence import prequential  # lazy: the evidence module is optional here

        pq = prequential(target.model, *target.args, num_permutations=R, rng_key=key_fit, units=target.units,
                         order="data" if in_order else None, **(smc_kwargs or {}), **target.kwargs)
        terms, diag = np.asarray(pq.terms), {"orders": np.asarray(pq.orders), "log_z_smc": np.asarray(pq.log_z)}
        how = "smc (data order)" if in_order else "smc"
    else:
        orders = np.tile(np.arange(n), (R, 1)) if in_order else np.asarray(_permutations(key_perm, R, n))
        terms, diag = _permutation_terms(target, orders, stride or max(1, n // 10), key_fit, num_warmup, num_samples,
                                         num_prior_draws, nuts_kwargs)
        how = "permutation (data order)" if in_order else "permutation"
        khat = diag["khat"]
        thr = _khat_threshold(num_samples)
        bad = int(np.sum(khat[np.isfinite(khat)] > thr))
        if bad:
            warnings.warn(f"{bad} one-step-ahead terms have Pareto k̂ above {thr:.2f}; use a smaller `stride`.",
                          RuntimeWarning, stacklevel=2)
        if np.any(diag["num_divergent"] > 0):
            warnings.warn("Some refits had divergent transitions; see `.diagnostics['num_divergent']`.",
                          RuntimeWarning, stacklevel=2)
    diag["n"] = n
    if in_order:
        diag["order"] = "data"
    if target.conjugate:
        return _terms_to_report(terms, how, _exact_log_evidence(target.family, target.args), 0.0, "exact", diag)
    try:
        from .evidence import log_evidence as _log_evidence
    except ImportError:
        return _terms_to_report(terms, how, None, None, "telescoped permutation sums (gap 0 by construction)", diag)
    ev = _log_evidence(target.model, *target.args, method=evidence_method, rng_key=key_ev,
                       **(evidence_kwargs or {}), **target.kwargs)
    diag["evidence"] = ev
    return _terms_to_report(terms, how, float(ev.log_z), float(ev.se),
                            f"genbayes.evidence.log_evidence(method={evidence_method!r})", diag)


# --------------------------------------------------------------------------------------------
# command line: genbayes cv MODEL [--p ...] [--method ...] [--resume FILE]
# --------------------------------------------------------------------------------------------

CLI_MODELS = ("beta_bernoulli", "normal_known_variance", "gamma_poisson", "dirichlet_categorical",
              "normal_gamma_regression", "logistic_regression")
"""The bundled model names ``genbayes cv`` accepts (besides ``PATH.py:FUNCTION``)."""


_BREAST_CANCER_ROWS = 569


def cli_model(name, n, seed):
    """``(model, args)`` for a CLI model name: a conjugate family on simulated data, or logistic regression."""
    from .cli import UsageError

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UsageError(f"--n must be a positive integer, got {n!r}.")
    rng = np.random.default_rng(seed)
    if name == "beta_bernoulli":
        return _conj.BetaBernoulli(2.0, 2.0), (rng.binomial(1, 0.3, n).astype(np.int32),)
    if name == "normal_known_variance":
        return _conj.NormalKnownVariance(0.0, 4.0, 1.0), (rng.normal(1.0, 1.0, n),)
    if name == "gamma_poisson":
        return _conj.GammaPoisson(2.0, 1.0), (rng.poisson(3.0, n).astype(np.int32),)
    if name == "dirichlet_categorical":
        return _conj.DirichletCategorical(np.ones(3)), (rng.choice(3, n, p=[0.5, 0.3, 0.2]).astype(np.int32),)
    if name == "normal_gamma_regression":
        X = np.column_stack([np.ones(n), rng.normal(size=n)])
        y = X @ np.array([1.0, 2.0]) + rng.normal(size=n)
        return _conj.NormalGammaRegression(np.zeros(2), np.ones(2), 2.0, 2.0), (X, y)
    if name == "logistic_regression":
        if n > _BREAST_CANCER_ROWS:
            raise UsageError(f"--n {n} is more than the {_BREAST_CANCER_ROWS} rows of the breast cancer data that "
                             f"logistic_regression uses; pass --n {_BREAST_CANCER_ROWS} or less.")
        from .models import logistic_regression as lr

        X, y = lr.breast_cancer(num_features=3, n=n, seed=seed)
        return lr.model, (X, y)
    raise UsageError(f"MODEL must be one of {CLI_MODELS}, got {name!r}.")


# ---- resume files: a versioned header, validated and checksummed records, an exclusive lock, atomic rewrites

_RESUME_FORMAT = "genbayes cv resume"
_RESUME_VERSION = 1
_TEST_PAUSE_ENV = "_GENBAYES_CV_TEST_PAUSE"  # tests only: "<stage>:<seconds>" pauses at a named moment (see _pause)


def _pause(stage):
    """Test hook: with ``_GENBAYES_CV_TEST_PAUSE=<stage>:<seconds>``, say so on stderr and sleep, so a test can kill here."""
    spec = os.environ.get(_TEST_PAUSE_ENV, "")
    if spec.split(":")[0] == stage:
        import sys
        import time

        print(f"PAUSE {stage}", file=sys.stderr, flush=True)
        time.sleep(float(spec.split(":")[1]))


def _run_digest(config, data):
    """SHA-256 of the run's settings and the bytes, dtypes and shapes of its data."""
    import hashlib

    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for a in data:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _record_check(digest, rec):
    import hashlib

    body = json.dumps({k: v for k, v in rec.items() if k != "check"}, sort_keys=True)
    return hashlib.sha256((digest + body).encode()).hexdigest()[:32]


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic_write(path, data: bytes, *, replace):
    """Write ``data`` to a temporary file beside ``path``, fsync it, and rename it onto ``path``.

    A kill at any moment leaves either the old file or the new one, never a mixture or an empty
    file. With ``replace=False`` an existing ``path`` is never replaced (a hard link, which fails
    if the name exists). A symbolic link at ``path`` is replaced by the file, never followed.
    """
    import tempfile

    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        if os.path.isfile(path) and not os.path.islink(path):
            mode = os.stat(path).st_mode & 0o777  # a rewrite keeps the file's permissions
        else:
            umask = os.umask(0o022)
            os.umask(umask)
            mode = 0o666 & ~umask  # as open() would create it (mkstemp's are 0600)
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _pause("rewrite")
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links
                if os.path.lexists(path):
                    raise FileExistsError(path) from None
                os.replace(tmp, path)
        _fsync_dir(directory)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


class _ResumeFile:
    """One ``--resume`` file: locked for this process, read and checked, appended to batch by batch."""

    def __init__(self, path, config, digest, plan=None, expect=None):
        self.path, self.config, self.digest, self.plan, self.expect = os.path.abspath(path), config, digest, plan, expect
        self.shown = path
        self._lock_fd = None

    # -- locking
    def lock(self):
        import fcntl

        from .cli import UsageError

        lock_path = self.path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            raise UsageError(f"--resume {self.shown}: cannot open its lock file {lock_path} ({e.strerror}).") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UsageError(f"--resume {self.shown} is in use by another genbayes process (it holds {lock_path}); "
                             "wait for it to finish, or use another file.") from None
        self._lock_fd = fd

    def unlock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    # -- reading
    def _fail(self, line_no, why):
        from .cli import UsageError

        where = f"line {line_no}" if line_no else "the file"
        raise UsageError(f"--resume {self.shown}, {where}: {why}. The file was edited or damaged; nothing was "
                         "changed. Move it away to start afresh.")

    def header_batch_size(self):
        """The batch size in the file's header (None when the file does not exist yet); refuses foreign files."""
        if not os.path.lexists(self.path) and not os.path.islink(self.path):
            return None
        head, _ = self._header()
        bs = head.get("batch_size")
        if not isinstance(bs, int) or isinstance(bs, bool) or bs < 1:
            self._fail(1, f"the header's batch_size {bs!r} is not a positive integer")
        return bs

    def _header(self):
        """(header dict, text): the file checked to be a genbayes resume file of this run, read without writing."""
        from .cli import UsageError

        if os.path.islink(self.path):
            raise UsageError(f"--resume {self.shown} is a symbolic link; genbayes does not write through links. "
                             "Pass the file's real path.")
        if not os.path.isfile(self.path):
            raise UsageError(f"--resume {self.shown} exists and is not a regular file.")
        with open(self.path, "rb") as fh:
            raw = fh.read()
        not_ours = (f"--resume {self.shown} exists and is not a genbayes cv resume file ({{}}); it was left untouched. "
                    "Choose another name.")
        if not raw:
            raise UsageError(not_ours.format("it is empty"))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(not_ours.format("it is not UTF-8 text")) from None
        first = text.partition("\n")[0]
        try:
            head = json.loads(first)
        except (ValueError, RecursionError):
            head = None
        if not isinstance(head, dict) or head.get("format") != _RESUME_FORMAT:
            raise UsageError(not_ours.format("its first line is not a genbayes header"))
        if head.get("version") != _RESUME_VERSION:
            raise UsageError(f"--resume {self.shown} has format version {head.get('version')!r}; this genbayes reads "
                             f"version {_RESUME_VERSION}. Use a new file.")
        if head.get("hash") != self.digest:
            raise UsageError(
                f"--resume {self.shown} was written for a different run {head.get('config')}; this run is "
                f"{self.config} (or the data differ). Use a new file or the same options.")
        return head, text

    def read(self):
        """Check the file and return its finished batches {batch: record}; create it (header only) if absent."""
        from .cli import UsageError

        if not os.path.lexists(self.path):
            header = {"format": _RESUME_FORMAT, "version": _RESUME_VERSION, "hash": self.digest,
                      "config": self.config, "batch_size": self.plan.batch_size, "num_batches": self.plan.num_batches}
            try:
                _atomic_write(self.path, (json.dumps(header) + "\n").encode(), replace=False)
            except FileExistsError:
                raise UsageError(f"--resume {self.shown} appeared while starting; run again.") from None
            return {}
        head, text = self._header()
        first, _, rest = text.partition("\n")
        if head.get("batch_size") != self.plan.batch_size or head.get("num_batches") != self.plan.num_batches:
            self._fail(1, f"the header's batch_size/num_batches {head.get('batch_size')}/{head.get('num_batches')} "
                          f"differ from this run's {self.plan.batch_size}/{self.plan.num_batches}")
        lines = rest.split("\n")
        cut = not text.endswith("\n")  # a kill cut the last record short: that batch is redone
        complete = lines[:-1]  # the piece after the last newline is "" or the cut record
        stats, seen = {}, {}
        for i, line in enumerate(complete, start=2):
            if not line.strip():
                self._fail(i, "an empty line")
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError) as e:
                self._fail(i, f"not a JSON record ({type(e).__name__})")
            self._validate(i, rec)
            b = rec["batch"]
            if b in seen:
                self._fail(i, f"batch {b} again (first on line {seen[b]})")
            seen[b] = i
            stats[b] = {k: v for k, v in rec.items() if k != "check"}
        if cut:
            keep = "\n".join([first, *complete]) + "\n"
            _atomic_write(self.path, keep.encode(), replace=True)
        return stats

    def _validate(self, i, rec):
        """Types, index range and counts first (clear reasons), then the record's checksum.

        Non-finite numbers are refused unless the checksum shows that this run computed them (a
        batch whose held-out densities were NaN resumes to the same invalid result).
        """
        def num(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if not isinstance(rec, dict):
            self._fail(i, "not a JSON object")
        b = rec.get("batch")
        if not isinstance(b, int) or isinstance(b, bool) or not 0 <= b < self.plan.num_batches:
            self._fail(i, f"batch index {b!r} is not an integer in 0..{self.plan.num_batches - 1}")
        m = min(self.plan.batch_size, self.plan.total - b * self.plan.batch_size)
        if rec.get("count") != m or isinstance(rec.get("count"), bool):
            self._fail(i, f"count {rec.get('count')!r} of batch {b}, which has {m} held-out sets")
        nonfinite = []
        for k in ("sum", "sumsq", "indep_mc_var"):
            v = rec.get(k)
            if not num(v):
                self._fail(i, f"{k!r} is {v!r}, not a number")
            if not math.isfinite(v):
                nonfinite.append(f"{k!r} is {v!r}, not a finite number")
        for k, length in self.expect.items():
            if k not in rec:
                continue
            v = rec[k]
            n_ok = length(m) if callable(length) else length
            if not isinstance(v, list) or len(v) != n_ok:
                self._fail(i, f"{k!r} is not a list of {n_ok} entries")
            if k in ("values", "mc_se", "psi_sum", "khat"):
                if not all(num(x) for x in v):
                    self._fail(i, f"{k!r} holds a non-number")
                if k != "khat" and not all(math.isfinite(x) for x in v):
                    nonfinite.append(f"{k!r} holds a non-finite number")
            if k in ("refit", "checked") and not all(isinstance(x, bool) for x in v):
                self._fail(i, f"{k!r} holds a non-boolean")
            if k == "subsets" and not all(isinstance(r, list) and len(r) == self.plan.n and sum(r) == self.plan.p
                                          and all(x in (0, 1) and not isinstance(x, bool) for x in r) for r in v):
                self._fail(i, f"'subsets' rows are not 0/1 masks of {self.plan.n} with {self.plan.p} ones")
        if rec.get("check") != _record_check(self.digest, rec):
            self._fail(i, nonfinite[0] if nonfinite else "its checksum does not match its contents")

    # -- writing
    def append(self, rec):
        rec = dict(rec, check=_record_check(self.digest, rec))
        line = (json.dumps(rec) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
        try:
            if os.environ.get(_TEST_PAUSE_ENV, "").startswith("append:"):
                os.write(fd, line[: len(line) // 2])
                os.fsync(fd)
                _pause("append")
                os.write(fd, line[len(line) // 2:])
            else:
                os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_cli_args(args):
    """CLI options that the library would accept silently or fail on deep inside: one-line errors first."""
    from . import _cli_models
    from .cli import UsageError

    _cli_models.check_spec(args.model, CLI_MODELS)
    own = _cli_models.is_own_model(args.model, CLI_MODELS)
    if own and args.n is not None:
        raise UsageError(f"--n sets the size of a bundled model's simulated data; {args.model} takes its data from "
                         "--data, so leave --n out.")
    if not own and args.data is not None:
        raise UsageError(f"--data is for your own model (PATH.py:FUNCTION); the bundled {args.model} makes its own "
                         "data (size --n).")
    if not own and args.n is None:
        args.n = 40

    def positive(name, v, lo=1):
        if v is not None and v < lo:
            raise UsageError(f"--{name} must be an integer >= {lo}, got {v}.")

    positive("n", args.n)
    positive("num-subsets", args.num_subsets)
    positive("batch-size", args.batch_size)
    positive("num-warmup", args.num_warmup, 0)
    positive("num-samples", args.num_samples)
    positive("num-chains", args.num_chains)
    positive("max-batches", args.max_batches, 0)
    bad_p = [p for p in args.p if not 1 <= p <= (args.n or p)]  # own data: checked against its units later
    if bad_p:
        raise UsageError(f"--p must lie in 1..n = 1..{args.n}, got {bad_p}.")
    if len(set(args.p)) != len(args.p):
        raise UsageError(f"--p lists a value twice: {args.p}.")
    if args.memory_budget is not None and args.memory_budget <= 0:
        raise UsageError(f"--memory-budget must be positive, got {args.memory_budget}.")
    if args.output is not None:
        _check_output(args.output, args.force, "--output")


def _check_output(path, force, flag):
    from .cli import UsageError

    if os.path.islink(path) and not force:
        raise UsageError(f"{flag} {path} is a symbolic link; genbayes does not write through links. Pass --force to "
                         "replace the link itself (its target is never written), or choose another name.")
    if os.path.lexists(path) and not force:
        raise UsageError(f"{flag} {path} already exists; pass --force to replace it, or choose another name.")
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a directory.")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"{flag} {path}: the folder {parent} does not exist.")


def _memory_arg(text):
    """``--memory-budget``: bytes, with an optional K/M/G/T suffix (powers of 1024)."""
    import argparse

    t = str(text).strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    try:
        v = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2G, 500M, 1e9)") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive size, got {text!r}")
    return int(v)


def _run_cli(args) -> int:
    import contextlib

    from ._config import x64

    _check_cli_args(args)
    with x64() if args.x64 else contextlib.nullcontext():  # scoped: the command may run inside a process
        return _run_cli_body(args)


def _as_usage_error(fn, *a, option=None, **kw):
    """Call ``fn``; the library's argument errors (ValueError/TypeError raised while setting up) become
    UsageError, prefixed with the command-line ``option`` they concern when one is given."""
    from .cli import UsageError

    try:
        return fn(*a, **kw)
    except UsageError:
        raise
    except (ValueError, TypeError) as e:
        raise UsageError(f"{option}: {e}" if option else str(e)) from e


def _cli_problem(args):
    """``(model, args, kwargs, config)`` of the command: a bundled model (:func:`cli_model`) or the user's own.

    The user's model file and data (``genbayes._cli_models``) are fingerprinted into the resume
    ``config``: editing either makes an old resume file refuse to continue.
    """
    from . import _cli_models

    if not _cli_models.is_own_model(args.model, CLI_MODELS):
        model, data = cli_model(args.model, args.n, args.seed)
        return model, data, {}, {}
    prob = _cli_models.load(args.model, args.data)
    _cli_models.check_model(prob, args.units)
    print(f"genbayes cv: {prob.description}", flush=True)
    return prob.model, prob.args, prob.kwargs, {"data": args.data, "source_sha256": prob.source_digest,
                                                "keywords": sorted(prob.kwargs)}


def _run_cli_body(args) -> int:
    import time

    from .cli import UsageError

    model, data, model_kwargs, own_config = _cli_problem(args)
    key = jax.random.PRNGKey(args.seed)
    results = []
    for p in args.p:
        target = _as_usage_error(_resolve, model, data, model_kwargs, None, args.units,
                                 option=f"--units {args.units}" if args.units else None)
        p = _as_usage_error(_check_p, p, target.n)
        method = _as_usage_error(_check_method, args.method, target)
        if method == "counting" or (method == "exact" and _is_counting(target.family) and args.num_subsets is None):
            res = lpo(model, *data, p=p, method="counting", units=args.units, **model_kwargs)
            results.append(res)
            print(res, flush=True)
            continue
        default_bs = {"exact": 1 << 16, "refit": 16}.get("exact" if method in ("exact", "enumerate") else method, 256)
        config = {"model": args.model, "n": args.n, "seed": args.seed, "p": p, "method": args.method,
                  "num_subsets": args.num_subsets, "batch_size": args.batch_size, "num_warmup": args.num_warmup,
                  "num_samples": args.num_samples, "num_chains": args.num_chains, "x64": bool(args.x64),
                  "units": args.units, **own_config}
        path = store = None
        header_bs = None
        if args.resume:
            path = args.resume if len(args.p) == 1 else f"{args.resume}.p{p}"
            store = _ResumeFile(path, config, _run_digest(config, [*data, *(model_kwargs[k] for k in sorted(model_kwargs))]))
            store.header_batch_size()  # a foreign file is refused before even a lock file is made beside it
            store.lock()
        t_setup = time.perf_counter()  # the printed time covers the full-data posterior and compilation too
        try:
            if store is not None:
                header_bs = store.header_batch_size()  # checks the header before anything runs; None if new
            # without --batch-size the batches are sized from the memory budget (at most default_bs), and a
            # resumed run keeps the file's batches, whatever memory this machine has now
            runner = _as_usage_error(
                _Runner, target, p, method, False, args.num_subsets, jax.random.fold_in(key, p), DEFAULT_MAX_SUBSETS,
                args.batch_size or header_bs, args.num_warmup, args.num_samples, args.num_chains, 1 << 14,
                memory_budget=args.memory_budget, max_batch_size=default_bs)
            stats = {}
            if store is not None:
                expect = {"values": lambda m: m, "mc_se": lambda m: m, "khat": lambda m: m, "refit": lambda m: m,
                          "checked": lambda m: m, "subsets": lambda m: m}
                if runner.post is not None:
                    expect["psi_sum"] = runner.post.num_chains * runner.post.num_samples
                store.plan, store.expect = runner.plan, expect
            if store is not None:
                stats = store.read()
            todo = [b for b in range(runner.plan.num_batches) if b not in stats]
            if stats:
                print(f"genbayes cv: resuming p={p} from {path}: {len(stats)} of {runner.plan.num_batches} batches "
                      "done", flush=True)
            from tqdm.auto import tqdm

            t0 = time.perf_counter()
            done_now = 0
            try:
                for b in tqdm(todo, desc=f"p={p}", disable=not args.progress):
                    if args.max_batches is not None and done_now >= args.max_batches:
                        print(f"genbayes cv: stopped after {done_now} new batches (--max-batches); rerun with the "
                              f"same --resume file to continue.", flush=True)
                        return 3
                    rec = runner.batch(b)
                    if store is not None:
                        store.append(rec)
                    stats[b] = rec
                    done_now += 1
                    _pause("batch")
            except KeyboardInterrupt:
                saved = (f"{len(stats)} of {runner.plan.num_batches} batches of p={p} are saved in {path}; run the "
                         "same command again to continue." if path else "nothing was saved (use --resume FILE).")
                raise _Interrupted(f"genbayes cv: interrupted; {saved}") from None
        finally:
            if store is not None:
                store.unlock()
        res = _checked(runner.combine(list(stats.values())))
        _warn_result(res)
        results.append(res)
        print(f"{res}  [{time.perf_counter() - t_setup:.1f} s in all, {time.perf_counter() - t0:.1f} s of them "
              "evaluating held-out sets]", flush=True)
    if args.output:
        import pandas as pd

        _check_output(args.output, args.force, "--output")
        csv = pd.DataFrame({"p": [r.p for r in results], "value": [r.value for r in results],
                            "se": [r.se for r in results], "method": [r.method for r in results],
                            "num_subsets": [r.num_subsets for r in results], "valid": [r.valid for r in results]}
                           ).to_csv(index=False)
        try:
            _atomic_write(args.output, csv.encode(), replace=bool(args.force))
        except FileExistsError:
            raise UsageError(f"--output {args.output} appeared while running; pass --force to replace it.") from None
    return 0 if all(r.valid for r in results) else 1


class _Interrupted(KeyboardInterrupt):
    """Ctrl-C in ``genbayes cv``: carries the one-line message that says what was saved."""


def add_cli(subparsers):
    """Add ``genbayes cv MODEL [--data FILE] [--p ...] [--method ...] [--resume FILE]`` to an argparse subparsers object.

    MODEL is a bundled name (``CLI_MODELS``) or your own NumPyro model, ``PATH.py:FUNCTION`` or
    ``package.module:FUNCTION``, with its arguments from ``--data`` (a CSV or NPZ file matched to
    the model's parameters by name, or ``PATH.py:FUNCTION`` / ``:FUNCTION`` returning them; rules
    in ``genbayes._cli_models``). Its observation units are found as :func:`genbayes.units.find`
    finds them (``--units PLATE`` to choose a plate).

    Args:
        subparsers: the object returned by ``argparse.ArgumentParser.add_subparsers()``.

    Returns:
        The ``cv`` subparser; its ``func`` default runs the command and returns the exit code.

    ``--resume FILE`` is safe to point anywhere: a file that does not start with a genbayes
    header (format, version, SHA-256 of the model name, data and settings) is refused before it
    is opened for writing; links are refused; every record carries a checksum and is validated
    (batch index, count, finite numbers, list lengths), and a bad one is refused naming its line;
    ``FILE.lock`` (``fcntl.flock``) keeps a second process out; rewrites (dropping a record cut
    by a kill) go to a temporary file that is fsynced and renamed; Ctrl-C ends with one line
    saying what was saved (exit 130). ``--output`` never replaces a file or writes through a
    link without ``--force``. Mistakes in the command line are one-line messages (exit 2).

    Example:
        >>> import argparse
        >>> from genbayes import cv
        >>> parser = argparse.ArgumentParser(prog="genbayes")
        >>> _ = cv.add_cli(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["cv", "beta_bernoulli", "--p", "1", "2"])
        >>> args.command, args.model, args.p
        ('cv', 'beta_bernoulli', [1, 2])
    """
    sp = subparsers.add_parser(
        "cv", help="Bayesian leave-p-out cross-validation S_CV(p) (resumable)",
        description="Leave-p-out cross-validation S_CV(p) for your own NumPyro model (MODEL = PATH.py:FUNCTION or "
                    "package.module:FUNCTION, data from --data FILE.csv|FILE.npz|PATH.py:FUNCTION|:FUNCTION, "
                    "matched to the model's parameters by name; a 2-D argument X is the CSV columns X[0], X[1], ...) "
                    "or for a bundled model: conjugate families on simulated data, logistic_regression on "
                    "scikit-learn's breast cancer data. With --resume FILE each "
                    "finished batch of held-out sets is appended to FILE, and rerunning the same command continues "
                    "where a killed run stopped, with nothing lost or counted twice.")
    sp.add_argument("model", metavar="MODEL",
                    help=f"PATH.py:FUNCTION or package.module:FUNCTION (your model), or one of {', '.join(CLI_MODELS)}")
    sp.add_argument("--data", default=None, metavar="FILE",
                    help="your model's arguments: FILE.csv (a column per parameter, X[0], X[1], ... for a 2-D X), "
                         "FILE.npz (an array per parameter), PATH.py:FUNCTION or :FUNCTION (a function in the model's "
                         "file returning a dict or tuple of arguments)")
    sp.add_argument("--p", type=int, nargs="+", default=[1], help="held-out set sizes (default 1)")
    sp.add_argument("--method", default="auto", choices=_METHODS,
                    help="how each held-out predictive is computed: auto (default: exact where known, else PSIS "
                         "with refits where k-hat is high), exact/counting/enumerate (conjugate families), psis "
                         "(from one full-data posterior), refit (NUTS on every training set)")
    sp.add_argument("--units", default=None, metavar="PLATE",
                    help="observation units: a plate name of the model (default: the outermost plate of its observed "
                         "sites; see genbayes.units)")
    sp.add_argument("--resume", metavar="FILE", default=None,
                    help="append finished batches to FILE (created with a genbayes header; any other file is "
                         "refused, never changed; FILE.lock beside it keeps a second process out); rerun to resume")
    sp.add_argument("--n", type=int, default=None,
                    help="number of observations of a bundled model's simulated data (default 40)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the rng_key (and of a bundled model's data)")
    sp.add_argument("--num-subsets", type=int, default=None,
                    help="evaluate this many random held-out sets (default: all when at most 2^22, else 4096 "
                         "(exact), 1000 (psis), 32 (refit))")
    sp.add_argument("--batch-size", type=int, default=None, help="held-out sets per saved batch")
    sp.add_argument("--num-warmup", type=int, default=300, help="NUTS warm-up draws per chain (default 300)")
    sp.add_argument("--num-samples", type=int, default=500, help="NUTS draws kept per chain (default 500)")
    sp.add_argument("--num-chains", type=int, default=4,
                    help="chains of the full-data posterior (default 4); refits run one chain per training set")
    sp.add_argument("--max-batches", type=int, default=None, help="stop after this many new batches (exit code 3)")
    sp.add_argument("--x64", action="store_true", help="compute in float64")
    sp.add_argument("--output", default=None, help="write a CSV summary here (an existing file only with --force)")
    sp.add_argument("--force", action="store_true", help="replace an existing --output file")
    sp.add_argument("--memory-budget", type=_memory_arg, default=None, metavar="SIZE",
                    help="memory the run may use, e.g. 4G (default: half the available memory); batches are sized "
                         "from it")
    sp.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    sp.set_defaults(func=_run_cli)
    return sp
