r"""Log marginal likelihood (evidence) estimators and one-sweep prequential SMC.

:func:`log_evidence` estimates :math:`\log Z = \log p(x) = \log \int p(x \mid \theta)\,\pi(\theta)\,d\theta`
for any NumPyro model by one of

- ``"exact"``: the closed form of a :mod:`genbayes.conjugate` family;
- ``"laplace"``: a Gaussian approximation at the mode, in the unconstrained space (Jacobian included);
- ``"thermodynamic"`` (Friel & Pettitt 2008) and ``"stepping_stone"`` (Xie et al. 2011): power
  posteriors :math:`\pi_\beta \propto p(x \mid \theta)^\beta \pi(\theta)` on a temperature ladder,
  every temperature drawn by NUTS in *one* vmapped program (:func:`genbayes.batched.run` with
  constant weights β, i.e. :class:`genbayes.tempered`);
- ``"smc"``: adaptive tempered SMC (BlackJAX ``adaptive_tempered_smc``, HMC moves), independent runs
  in one program, one after another (split across devices when there are several);
- ``"nested"``: NumPyro's nested-sampling wrapper (needs the optional ``jaxns<3``).

:func:`prequential` runs data-tempered SMC along R orderings of the observation units
(:mod:`genbayes.units`; one vmapped program); the log mean incremental weight when unit
:math:`x_{\sigma(k)}` enters estimates :math:`\log p(x_{\sigma(k)} \mid x_{\sigma(<k)})`, so averaging
position k over random orderings estimates every leave-p-out score :math:`S_{CV}(p)` at once and each
ordering's sum estimates :math:`\log Z` (Fong & Holmes 2020, Prop. 1); in the data's own order
(``order="data"``) the terms are the one-step-ahead (leave-future-out) scores of a time series
(Bürkner, Gabry & Vehtari 2020).

Every estimator tempers the likelihood of all observed sites, and with discrete latents enumerated
(``config_enumerate``) the temperature acts on each unit's marginal likelihood.

All estimators are meaningful in float64 (``numpyro.enable_x64()``); in float32 the radiata-pine
style models (parameters in the thousands, precisions near 1e-5) lose digits.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ._evidence_core import (_MIN_ESS_ABS, _check_int, _mapped_program, _shard_mode,
                             _starts_at_prior)
from ._ladder import _power_evidence, check_ladder, default_ladder
from ._laplace import _laplace
from ._programs import family_as_argument
from ._smc import _data_tempered_smc, _smc_evidence
from ._validation import EstimatorFailure, check_args_finite, check_key
from ._validation import _concrete_scalar as _check_real_scalar
from .bridge import bridge_sampling
from .conjugate import ConjugateFamily, is_conjugate

__all__ = [
    "Evidence",
    "Prequential",
    "log_evidence",
    "prequential",
    "compare",
    "Comparison",
    "bridge_sampling",
    "BayesFactor",
    "bayes_factor",
    "posterior_probabilities",
    "EstimatorFailure",
    "default_ladder",
    "METHODS",
]

METHODS = ("exact", "laplace", "thermodynamic", "stepping_stone", "smc", "bridge", "nested")
"""The estimators :func:`log_evidence` knows (``method=``)."""


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Evidence:
    """A log marginal likelihood estimate.

    Attributes:
        log_z: the estimate of :math:`\\log p(x)`.
        se: its Monte Carlo standard error (0.0 for the deterministic ``"exact"`` and ``"laplace"``;
            the Laplace approximation's bias is not a standard error and is not included).
        method: the method that produced it.
        diagnostics: method-specific details (ESS, acceptance, ladder, time in ``"time_s"``, ...);
            ``diagnostics["warnings"]`` lists every problem found, ``diagnostics["invalid"]`` those
            that make the estimate unusable.
        valid: False when a run-time check failed (``diagnostics["invalid"]`` says which): the
            number is then kept for inspection but must not be used to compare models.

    Example:
        >>> from genbayes.evidence import Evidence
        >>> Evidence(-310.1283, 0.0, "exact")  # radiata pine, Friel & Wyse (2012)
        Evidence(method='exact', log_z=-310.1283, se=0.0000)
    """

    log_z: float
    se: float
    method: str
    diagnostics: dict = dataclasses.field(default_factory=dict, compare=False)
    valid: bool = True

    def __repr__(self):
        t = self.diagnostics.get("time_s")
        ts = f", time={t:.2f}s" if t is not None else ""
        bad = "" if self.valid else ", INVALID: " + "; ".join(self.diagnostics.get("invalid", ()))
        return f"Evidence(method={self.method!r}, log_z={self.log_z:.4f}, se={self.se:.4f}{ts}{bad})"

    def to_dataframe(self):
        """One-row pandas DataFrame: method, log_z, se, valid, time_s."""
        import pandas as pd

        return pd.DataFrame([{"method": self.method, "log_z": self.log_z, "se": self.se, "valid": self.valid,
                              "time_s": self.diagnostics.get("time_s")}])


@dataclasses.dataclass(frozen=True)
class Prequential:
    r"""One-step-ahead log predictive terms of the n observation units along R orderings (data-tempered SMC).

    Attributes:
        terms: ``(R, n)``; ``terms[r, k]`` estimates :math:`\log p(x_{\sigma_r(k)} \mid x_{\sigma_r(<k)})`,
            :math:`x_u` the entries of unit u (:mod:`genbayes.units`).
        orders: ``(R, n)`` integer orderings :math:`\sigma_r` of the units (all ``0..n-1`` with
            ``order="data"``).
        log_z: ``(R,)`` each ordering's log evidence estimate (the running sum of its terms).
        s_cv: ``(n,)``; ``s_cv[p - 1]`` = mean over r of ``terms[r, n - p]``, an estimate of
            :math:`S_{CV}(p)`, the mean log predictive of a held-out unit given n − p others (random
            orderings); with ``order="data"`` it is the one-step-ahead term of unit n − p.
        s_cv_se: ``(n,)`` standard errors of ``s_cv`` (spread over orderings / sqrt(R)).
        diagnostics: ``ess`` (R, n) ESS of the incremental weights at each step, ``acceptance``
            (R, n) mean HMC acceptance of the moves before each step, ``num_resampling`` (R,)
            (BlackJAX resamples at every step), ``step_size`` (R, n), ``num_particles``, ``time_s``.

    The identity behind ``s_cv``: by the chain rule along any ordering, the terms of one ordering
    sum to :math:`\log p(x)`, and averaging the k-th term over orderings gives
    :math:`S_{CV}(n-k+1)`, so :math:`\sum_p S_{CV}(p) = \log p(x)` (Fong & Holmes 2020, Prop. 1).

    Example:
        >>> import numpy as np
        >>> from genbayes.evidence import Prequential
        >>> t = np.array([[-1.0, -0.5], [-0.9, -0.6]])
        >>> pq = Prequential(t, np.array([[0, 1], [1, 0]]), t.sum(1), t.mean(0)[::-1], np.zeros(2),
        ...                  {"ess": np.ones((2, 2)), "num_particles": 100})
        >>> pq.log_z_mean, float(pq.s_cv.sum())
        (-1.5, -1.5)
    """

    terms: np.ndarray
    orders: np.ndarray
    log_z: np.ndarray
    s_cv: np.ndarray
    s_cv_se: np.ndarray
    diagnostics: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def num_permutations(self) -> int:
        """R, the number of orderings."""
        return int(self.terms.shape[0])

    @property
    def log_z_mean(self) -> float:
        """Mean over orderings of the log evidence estimates."""
        return float(np.mean(self.log_z))

    @property
    def log_z_se(self) -> float:
        """Standard error of :attr:`log_z_mean`: sd of the per-ordering estimates / √R (NaN for R = 1)."""
        R = self.num_permutations
        return float(np.std(self.log_z, ddof=1) / np.sqrt(R)) if R > 1 else float("nan")

    def __repr__(self):
        R, n = self.terms.shape
        return (
            f"Prequential(R={R}, n={n}, log_z={self.log_z_mean:.4f} ± {self.log_z_se:.4f}, "
            f"min_ess={float(np.min(self.diagnostics['ess'])):.1f} of {self.diagnostics['num_particles']})"
        )

    def to_dataframe(self):
        """pandas DataFrame with one row per p: ``p``, ``s_cv``, ``se``."""
        import pandas as pd

        n = self.terms.shape[1]
        return pd.DataFrame({"p": np.arange(1, n + 1), "s_cv": self.s_cv, "se": self.s_cv_se})


# ---------------------------------------------------------------------------------------------
# shared plumbing: model resolution, input checks, flat unconstrained densities
# ---------------------------------------------------------------------------------------------


def _resolve(model):
    """(family or None, NumPyro model)."""
    if is_conjugate(model):
        family = model if isinstance(model, ConjugateFamily) else model.__self__
        return family, family.model
    if not callable(model):
        raise TypeError(f"`model` must be a NumPyro model (a callable) or a gb.conjugate family, got {model!r}.")
    return None, model


def _trace(model, args, kwargs):
    """The model's trace, for its structure only (abstract values: use shapes, never values)."""
    from .units import _trace as trace_structure

    return trace_structure(model, args, kwargs)


def _observed_sites(model, args, kwargs):
    tr = _trace(model, args, kwargs)
    import numpyro.distributions as dist

    # numpyro.factor sites are not observations (gb.reweight leaves them alone too)
    obs = {k: s for k, s in tr.items()
           if s["type"] == "sample" and s["is_observed"] and not isinstance(s["fn"], dist.Unit)}
    if not obs:
        raise ValueError(
            "The model has no observed sample site (no `obs=` data), so it has no likelihood and its "
            "evidence is 1; pass the data to the model (e.g. numpyro.sample('y', ..., obs=y))."
        )
    latent = [k for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]]
    if not latent:
        raise ValueError("The model has no latent sample site; its evidence is just its likelihood.")
    return tr, obs


def _evidence_units(model, args, kwargs, sites=None):
    r"""One observation unit holding every observed entry: the units of a tempered likelihood.

    A power posterior :math:`\pi(\theta)\, p(x \mid \theta)^\beta` gives every unit the same
    weight β, so the evidence estimators need no partition of the data, only *which* entries are
    likelihood: all observed sites (``sites=None``), or the named ones, the others being fixed
    (conditioned on at full weight, part of the "prior"). Masked entries belong to no unit. As a
    :class:`genbayes.units.Units` it also carries the model's enumerated sites, so β acts on the
    marginal likelihood :math:`\prod_u \sum_{z_u} p(z_u)\,p(x_u \mid z_u)`.
    """
    from .units import _batch_shape, find

    tr, obs = _observed_sites(model, args, kwargs)
    if sites is not None:
        names = {sites} if isinstance(sites, str) else set(sites)
        unknown = sorted(names - set(obs))
        if unknown:
            where = ", ".join(f"{k!r} ({'latent' if k in tr else 'not in the model'})" for k in unknown)
            raise ValueError(f"`sites` names {where}; the model's observed sites are {sorted(obs)}.")
    spec = {k: (np.zeros(_batch_shape(s), np.int32) if sites is None or k in names else None) for k, s in obs.items()}
    return find(model, *args, units=spec, **kwargs)


# ---------------------------------------------------------------------------------------------
# tempered SMC
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# power posteriors: thermodynamic integration and stepping stone
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Laplace
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# nested sampling (optional)
# ---------------------------------------------------------------------------------------------


def _nested(model, args, kwargs, rng_key, *, constructor_kwargs=None, termination_kwargs=None):
    try:
        from numpyro.contrib.nested_sampling import NestedSampler
    except ImportError as e:
        raise ImportError(
            "method='nested' uses numpyro.contrib.nested_sampling, which needs jaxns<3 (and "
            "tensorflow-probability): pip install 'genbayes[nested]'. The other methods need nothing extra."
        ) from e
    ns = NestedSampler(model, constructor_kwargs=constructor_kwargs, termination_kwargs=termination_kwargs)
    ns.run(rng_key, *args, **kwargs)
    res = ns._results
    return float(res.log_Z_mean), float(res.log_Z_uncert), {"num_likelihood_evaluations": int(res.total_num_likelihood_evaluations)}


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------

_OPTIONS = {
    "exact": set(),
    "laplace": {"max_iter", "tol", "num_starts", "sites"},
    "thermodynamic": {"ladder", "num_warmup", "num_samples", "num_chains", "num_batches", "dense_mass",
                      "target_accept_prob", "sites", "progress", "shard"},
    "smc": {"num_particles", "num_runs", "target_ess", "num_mcmc_steps", "max_mcmc_steps", "num_leapfrog",
            "max_steps", "sites",
            "shard"},
    "bridge": {"num_warmup", "num_samples", "num_chains", "proposal", "maxiter", "tol", "dense_mass",
               "target_accept_prob", "progress", "sites"},
    "nested": {"constructor_kwargs", "termination_kwargs"},
}
_OPTIONS["stepping_stone"] = _OPTIONS["thermodynamic"]


def _check_not_options(model, kwargs, method):
    """A method setting passed as a model keyword (``ladder=12``) fails deep inside NumPyro; name the fix."""
    import inspect

    try:
        params = inspect.signature(model).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    misplaced = sorted(k for k in kwargs if k in _OPTIONS[method] and k not in params)
    if misplaced:
        shown = ", ".join(f"{k!r}: {kwargs[k]!r}" for k in misplaced)
        what = f"{misplaced[0]!r} is a setting" if len(misplaced) == 1 else f"{misplaced} are settings"
        raise TypeError(f"{what} of method={method!r}, not a model argument: pass options={{{shown}}}.")


def log_evidence(model, *args, method: str, rng_key=None, options: dict | None = None, **kwargs) -> Evidence:
    r"""Estimate the log marginal likelihood :math:`\log p(x) = \log\int p(x\mid\theta)\pi(\theta)\,d\theta`.

    Methods (a guide to choosing one: the documentation page "Evidence of your own model"):

    - ``"exact"``: a :mod:`genbayes.conjugate` family's closed form.
    - ``"laplace"``: :math:`\log p(x, \hat z) + \tfrac d2 \log 2\pi - \tfrac12\log|H|` at the mode
      :math:`\hat z` of the unconstrained log joint (log-Jacobian included), H its negative Hessian
      (Tierney & Kadane 1986). Found with Optax L-BFGS from ``num_starts`` starts at once (a valid point
      and prior draws), keeping the highest mode; other optima are reported. ``se`` is 0: its bias is
      not Monte Carlo error. Without a strict mode (a funnel whose scale runs to 0, an unidentified
      direction) it raises :class:`EstimatorFailure` naming the coordinate.
    - ``"thermodynamic"``: :math:`\log Z = \int_0^1 E_{\pi_\beta}[\log p(x\mid\theta)]\,d\beta`
      (Friel & Pettitt 2008, eq. 6) by the trapezoid rule with the curvature correction
      :math:`-\sum_k \tfrac{(\Delta\beta_k)^2}{12}(V_k - V_{k-1})`, V the variance of the log-likelihood
      (Friel, Hurn & Wyse 2014, eq. 8).
    - ``"stepping_stone"``: :math:`\sum_k \log \tfrac1S\sum_s p(x\mid\theta_s^{(k-1)})^{\beta_k-\beta_{k-1}}`
      (Xie et al. 2011, eq. 9).
      Both power-posterior methods draw all K + 1 temperatures with NUTS as one vmapped program
      (:func:`genbayes.batched.run`, constant weights β), ``num_chains`` independent chains per
      temperature (replicate ladders). The estimate pools them; the standard error is the larger of the
      spread of the per-replicate estimates over :math:`\sqrt{R}` and the within-chain batch-means SE
      (``num_batches`` contiguous blocks), so chains that disagree widen it. More than 1% divergent
      draws in a rung, or a rung whose importance ESS collapsed, make the estimate invalid.
    - ``"bridge"``: bridge sampling (Meng & Wong 1996; Gronau et al. 2017) from ``num_chains`` NUTS
      chains run here; see :func:`bridge_sampling` to use draws you already have.
    - ``"smc"``: adaptive tempered SMC from prior to posterior (BlackJAX ``adaptive_tempered_smc``, the
      next temperature chosen so the ESS is ``target_ess`` of the particles; HMC moves with the particles'
      covariance as inverse mass matrix; Del Moral, Doucet & Jasra 2006). :math:`\log\hat Z = \sum_t \log
      \sum_j W_j^{(t-1)} e^{(\beta_t-\beta_{t-1})\log p(x\mid\theta_j)}`; ``num_runs`` independent runs
      run in one program, one after another, ``log_z`` is the log of their mean :math:`\hat Z` and ``se`` the spread of
      :math:`\log\hat Z` over runs divided by :math:`\sqrt{R}`.
    - ``"nested"``: ``numpyro.contrib.nested_sampling`` (optional extra ``genbayes[nested]``, ``jaxns<3``).

    The likelihood tempered is that of *every* observed site (``numpyro.factor`` terms stay in the
    prior), its masked entries excluded (:mod:`genbayes.units`; option ``sites`` names a subset, the
    other observed sites then being conditioned on: the power-posterior methods estimate
    :math:`\log p(x_{sites} \mid x_{other})`, and ``"smc"``/``"laplace"``, which start from the prior,
    refuse it). Discrete latents enumerated with ``config_enumerate`` are summed out *before* β acts:
    :math:`\pi_\beta \propto \pi(\theta) \prod_u (\sum_{z_u} p(z_u)\,p(x_u \mid z_u, \theta))^\beta`
    (:func:`genbayes.units.log_density`), so every method estimates the marginal evidence.

    Use float64 (``numpyro.enable_x64()``) for values to be trusted beyond ~1e-3 relative.

    Args:
        model: a NumPyro model, or a :mod:`genbayes.conjugate` family (its ``.model`` is used for the
            approximate methods).
        *args, **kwargs: the model's arguments (data), as for ``MCMC.run``.
        method: one of ``"exact"``, ``"laplace"``, ``"thermodynamic"``, ``"stepping_stone"``, ``"smc"``,
            ``"bridge"``, ``"nested"``.
        rng_key: JAX PRNG key (required except for ``"exact"``).
        options: method settings, e.g. ``{"ladder": 32, "num_samples": 1000}`` (power posteriors:
            ``ladder`` (K or an increasing array from 0 to 1), ``num_warmup``, ``num_samples``,
            ``num_chains``, ``num_batches``, ``dense_mass``, ``target_accept_prob``, ``sites``, ``progress``;
            bridge: ``num_warmup``, ``num_samples``, ``num_chains``, ``proposal``, ``maxiter``, ``tol``,
            ``dense_mass``, ``target_accept_prob``, ``progress``; smc:
            ``num_particles``, ``num_runs``, ``target_ess``, ``num_mcmc_steps`` (HMC moves per tempering
            step, at least), ``max_mcmc_steps`` (at most; default 4× ``num_mcmc_steps``: further blocks of
            moves run while some coordinate's particles have not moved about half as far as an independent
            draw would), ``num_leapfrog``, ``max_steps``, ``sites``; laplace: ``max_iter``, ``tol``, ``num_starts``). ``shard`` (power posteriors
            and smc): split temperatures, runs or particles across all visible devices (default
            when more than one is visible; smc also takes ``"runs"`` or ``"particles"``, see
            :func:`prequential`); ``diagnostics["devices"]`` says how many were used.

    Returns:
        :class:`Evidence`. Poor ladders, collapsing ESS, low acceptance, divergences or unconverged
        optimisation are listed in ``diagnostics["warnings"]`` and raised as ``RuntimeWarning``; those
        that make the number unusable are in ``diagnostics["invalid"]`` and set ``valid=False``.

    Raises:
        EstimatorFailure: the method cannot produce a value at all (Laplace without a mode).

    Example:
        >>> import jax, jax.numpy as jnp, genbayes as gb
        >>> from genbayes.evidence import log_evidence
        >>> fam = gb.conjugate.NormalKnownVariance(0.0, 1.0, 1.0)
        >>> y = jnp.array([0.3, -0.2, 1.1])
        >>> ex = log_evidence(fam, y, method="exact")
        >>> la = log_evidence(fam, y, method="laplace", rng_key=jax.random.PRNGKey(0))
        >>> bool(abs(ex.log_z - la.log_z) < 1e-3)   # Gaussian posterior: Laplace is exact
        True
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"`options` must be a dict of method settings, e.g. {{'num_particles': 500}}, got {options!r}.")
    options = dict(options or {})
    unknown = set(options) - _OPTIONS[method]
    if unknown:
        raise TypeError(f"Unknown option(s) {sorted(unknown)} for method={method!r}; "
                        f"valid options are {sorted(_OPTIONS[method])}.")
    family, np_model = _resolve(model)
    _check_not_options(np_model, kwargs, method)
    t0 = time.perf_counter()
    if method == "exact":
        if family is None:
            raise ValueError("method='exact' needs a gb.conjugate family (e.g. gb.conjugate.BetaBernoulli(1, 1)) "
                             "followed by its data; for other models use 'smc', 'stepping_stone', "
                             "'thermodynamic' or 'laplace'.")
        if kwargs:
            raise TypeError(f"A conjugate family takes its data positionally; got keyword arguments {sorted(kwargs)}.")
        log_z = float(family.log_evidence(*args))
        return Evidence(log_z, 0.0, method, {"time_s": time.perf_counter() - t0})
    check_key(rng_key)
    if "ladder" in options:
        options["ladder"] = check_ladder(options["ladder"])
    check_args_finite(args, kwargs)
    _observed_sites(np_model, args, kwargs)
    pm, pargs = family_as_argument(model, args)
    if method != "nested":
        # the likelihood that β tempers: every observed site (or `sites`), as one unit
        options["units"] = _evidence_units(np_model, args, kwargs, options.pop("sites", None))
    if method == "laplace":
        log_z, se, diag = _laplace(pm, pargs, kwargs, rng_key, **options)
    elif method in ("thermodynamic", "stepping_stone"):
        log_z, se, diag = _power_evidence(method, np_model, args, kwargs, rng_key, **options)
    elif method == "smc":
        log_z, se, diag = _smc_evidence(pm, pargs, kwargs, rng_key, **options)
    elif method == "bridge":
        from .bridge import _bridge_evidence

        log_z, se, diag = _bridge_evidence(pm, pargs, kwargs, rng_key, **options)
    else:
        log_z, se, diag = _nested(np_model, args, kwargs, rng_key, **options)
    diag["time_s"] = time.perf_counter() - t0
    return Evidence(float(log_z), float(se), method, diag, valid=not diag.get("invalid"))


class Comparison(dict):
    r"""One model's log evidence by several methods (a dict method -> :class:`Evidence`), and whether they agree.

    Two valid estimates a, b *agree* when :math:`|a - b| \le 3\sqrt{se_a^2 + se_b^2}`. Laplace's
    ``se`` is 0 although its Gaussian approximation has a bias, so a Laplace value outside the Monte
    Carlo estimates' errors is reported as a disagreement too (it usually is its approximation error);
    two estimates both without Monte Carlo error (exact and Laplace) disagree beyond 0.1 nat. Invalid
    estimates (:attr:`Evidence.valid` False) take no part and are listed with their reasons, as are
    methods that failed with an error (``failed``: method -> message). Reporting every estimator
    side by side with its error follows Friel & Wyse (2012), whose review found estimators that
    disagree by more than their errors on the same model.

    Attributes:
        disagreements: tuple of ``(method_a, method_b, difference, z)`` for every disagreeing pair,
            ``z`` the difference over the combined standard error (``inf`` when that is 0).
        agreement: a plain statement of the above, printed by ``repr``.
        failed: ``{method: error message}`` for the methods that raised instead of returning.

    Example:
        >>> from genbayes.evidence import Comparison, Evidence
        >>> c = Comparison({"smc": Evidence(-4.8, 13.0, "smc"), "stepping_stone": Evidence(-54.7, 0.1, "stepping_stone")})
        >>> print(c.agreement)  # doctest: +NORMALIZE_WHITESPACE
        DISAGREEMENT between valid estimates (beyond 3 combined standard errors):
          smc (-4.8000 ± 13.0000) and stepping_stone (-54.7000 ± 0.1000) differ by 49.9000 nats = 3.8 combined SE.
    """

    _Z = 3.0

    def __init__(self, results: dict, failed: dict | None = None):
        super().__init__(results)
        self.failed = dict(failed or {})
        valid = [(m, e) for m, e in results.items() if e.valid and np.isfinite(e.log_z)]
        out = []
        for i, (m1, e1) in enumerate(valid):
            for m2, e2 in valid[i + 1:]:
                d = e1.log_z - e2.log_z
                comb = math.hypot(e1.se, e2.se)
                if (comb > 0 and abs(d) > self._Z * comb) or (comb == 0 and abs(d) > 0.1):
                    out.append((m1, m2, d, abs(d) / comb if comb > 0 else math.inf))
        self.disagreements = tuple(out)

    @property
    def agreement(self) -> str:
        lines = []
        valid = [m for m, e in self.items() if e.valid and np.isfinite(e.log_z)]
        if not valid:
            lines.append("No valid estimate: do not use these values.")
        elif not self.disagreements:
            lo, hi = min(self[m].log_z for m in valid), max(self[m].log_z for m in valid)
            lines.append(f"The {len(valid)} valid estimates agree (range {lo:.4f} .. {hi:.4f}): within {self._Z:g} "
                         "combined standard errors, or 0.1 nat where neither has a Monte Carlo error."
                         if len(valid) > 1 else
                         f"Only one valid estimate ({valid[0]}): nothing to check it against.")
        else:
            lines.append(f"DISAGREEMENT between valid estimates (beyond {self._Z:g} combined standard errors):")
            for m1, m2, d, z in self.disagreements:
                zs = f"{z:.1f} combined SE" if math.isfinite(z) else "neither has a Monte Carlo error"
                note = " (Laplace's se excludes its approximation error)" if "laplace" in (m1, m2) else ""
                lines.append(f"  {m1} ({self[m1].log_z:.4f} ± {self[m1].se:.4f}) and {m2} "
                             f"({self[m2].log_z:.4f} ± {self[m2].se:.4f}) differ by {abs(d):.4f} nats = {zs}{note}.")
        for m, e in self.items():
            if not e.valid:
                lines.append(f"INVALID {m}: " + "; ".join(e.diagnostics.get("invalid", ())) + ".")
        for m, msg in self.failed.items():
            lines.append(f"FAILED {m}: {msg}")
        return "\n".join(lines)

    def to_dataframe(self, exact: float | None = None):
        """Table: method, log_z, se, valid, time_s, and (given ``exact``) error, |error|/SE."""
        return to_dataframe(self, exact=exact)

    def __repr__(self):
        rows = [f"  {m:>15}: {e.log_z:12.4f} ± {e.se:.4f}{'' if e.valid else '  INVALID'}" for m, e in self.items()]
        return "Comparison(\n" + "\n".join(rows) + "\n" + self.agreement + "\n)"


def compare(model, *args, methods=None, rng_key, options: dict | None = None, **kwargs) -> Comparison:
    """Every applicable method's :class:`Evidence`, side by side, with a statement of whether they agree.

    ``methods`` defaults to all available ones: ``"exact"`` only for conjugate families, ``"nested"``
    only when ``jaxns<3`` is installed. ``options`` maps a method name to its options dict
    (settings for a method that is not in ``methods`` are ignored; an unknown name is an error).
    Side by side, as in Friel & Wyse (2012): thermodynamic integration and stepping stone share one
    ladder run when their options agree. A method that fails at run time (e.g. Laplace without a
    positive-definite Hessian) is listed in ``failed`` instead of stopping the comparison; bad
    input still raises.

    Returns:
        :class:`Comparison`: a dict method -> :class:`Evidence` with ``disagreements`` and a plain
        ``agreement`` statement (printed by ``repr``).

    Example:
        >>> import jax, jax.numpy as jnp, genbayes as gb
        >>> from genbayes.evidence import compare
        >>> res = compare(gb.conjugate.BetaBernoulli(1.0, 1.0), jnp.array([1, 0, 1]),
        ...               methods=["exact", "laplace"], rng_key=jax.random.PRNGKey(0))
        >>> sorted(res), res.disagreements  # Laplace is 0.05 nats off: within the 0.1 nat allowance
        (['exact', 'laplace'], ())
    """
    check_key(rng_key)
    if methods is None:
        methods = [m for m in METHODS if m != "nested" or nested_available()]
        if not is_conjugate(model):
            methods.remove("exact")
    if isinstance(methods, str) or not hasattr(methods, "__iter__"):
        raise TypeError(f"`methods` must be a list of method names, e.g. ['smc', 'bridge'], got {methods!r}.")
    methods = list(methods)
    if not methods:
        raise ValueError(f"`methods` is empty; name at least one of {METHODS} (or pass None for all that apply).")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"`methods` must be a subset of {METHODS}, got unknown {bad}.")
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"`options` must be a dict method -> settings dict, e.g. {{'smc': {{'num_runs': 4}}}}, "
                        f"got {options!r}.")
    options = options or {}
    # settings for a known method that is not run are ignored (one settings dict serves several
    # calls); a name that is no method at all is a typo
    unknown = sorted(set(options) - set(METHODS))
    if unknown:
        raise ValueError(f"`options` has settings for {unknown}, which are not methods; the methods are "
                         f"{METHODS}.")
    out, failed = {}, {}
    for i, m in enumerate(methods):
        if m in out:
            continue
        try:
            out[m] = log_evidence(model, *args, method=m, rng_key=jax.random.fold_in(rng_key, i),
                                  options=options.get(m), **kwargs)
        except EstimatorFailure as e:
            failed[m] = str(e)
            continue
        # thermodynamic integration and stepping stone use the same ladder draws: run it once
        other = {"thermodynamic": "stepping_stone", "stepping_stone": "thermodynamic"}.get(m)
        if other in methods and options.get(other) == options.get(m):
            d = out[m].diagnostics
            shared = {**d, "shared_run_with": m, "invalid": d.get(f"{other}_invalid", d.get("invalid", ()))}
            out[other] = Evidence(d[other], d[f"{other}_se"], other, shared, valid=not shared["invalid"])
    return Comparison({m: out[m] for m in methods if m in out}, failed)


@dataclasses.dataclass(frozen=True)
class BayesFactor:
    r"""The log Bayes factor of model 1 against model 2, :math:`\log B_{12} = \log p(x \mid M_1) - \log p(x \mid M_2)`.

    Attributes:
        log_bf: :math:`\log B_{12}`.
        se: its Monte Carlo standard error :math:`\sqrt{se_1^2 + se_2^2}` (independent estimates).
        valid: both evidences valid.
        methods: the two estimators' names.

    Kass & Raftery (1995) read :math:`2\log B_{12}` above 2, 6, 10 as positive, strong, very strong evidence.

    Example:
        >>> from genbayes.evidence import BayesFactor
        >>> BayesFactor(2.0, 0.1, True, ("smc", "smc")).bf  # doctest: +ELLIPSIS
        7.389...
    """

    log_bf: float
    se: float
    valid: bool
    methods: tuple

    @property
    def bf(self) -> float:
        """:math:`B_{12}` itself (may overflow to inf for large log Bayes factors)."""
        return math.exp(self.log_bf) if self.log_bf < 700 else math.inf

    def __repr__(self):
        bad = "" if self.valid else ", INVALID"
        return f"BayesFactor(log_bf={self.log_bf:.4f}, se={self.se:.4f}, bf={self.bf:.4g}{bad})"


def _check_evidence(ev, name):
    if not isinstance(ev, Evidence):
        raise TypeError(f"`{name}` must be an Evidence (from gb.evidence.log_evidence), got {type(ev).__name__}.")
    for field in ("log_z", "se"):
        _check_real_scalar(getattr(ev, field), f"{name}.{field}")
    if not math.isfinite(ev.log_z):
        raise ValueError(f"`{name}.log_z` is {ev.log_z}, not an estimate ({ev.method}); re-estimate it before "
                         "comparing models.")


def bayes_factor(evidence_1: Evidence, evidence_2: Evidence) -> BayesFactor:
    r"""The Bayes factor of model 1 against model 2 from their evidences, :math:`\log B_{12} = \log Z_1 - \log Z_2`.

    As R's ``bridgesampling::bf``; the standard error assumes the two estimates independent.
    Kass & Raftery (1995) read :math:`2\log B_{12}` above 2, 6, 10 as positive, strong, very strong.

    Example:
        >>> from genbayes.evidence import Evidence, bayes_factor
        >>> bayes_factor(Evidence(-301.705, 0.0, "exact"), Evidence(-310.128, 0.0, "exact"))  # radiata pine
        BayesFactor(log_bf=8.4230, se=0.0000, bf=4551)
    """
    _check_evidence(evidence_1, "evidence_1")
    _check_evidence(evidence_2, "evidence_2")
    return BayesFactor(evidence_1.log_z - evidence_2.log_z, math.hypot(evidence_1.se, evidence_2.se),
                       evidence_1.valid and evidence_2.valid, (evidence_1.method, evidence_2.method))


def posterior_probabilities(evidences: dict, prior: dict | None = None) -> dict:
    r"""Posterior model probabilities :math:`p(M_k \mid x) \propto p(x \mid M_k)\,p(M_k)` from evidences.

    As R's ``bridgesampling::post_prob`` (Gronau, Singmann & Wagenmakers 2020). ``evidences`` maps a model name to its :class:`Evidence`;
    ``prior`` to its prior probability (default uniform; normalised here). Invalid or non-finite
    evidences are refused: a probability built on one would be meaningless.

    Example:
        >>> from genbayes.evidence import Evidence, posterior_probabilities
        >>> p = posterior_probabilities({"density": Evidence(-310.128, 0.0, "exact"),
        ...                              "adjusted": Evidence(-301.705, 0.0, "exact")})
        >>> round(p["adjusted"], 6)
        0.99978
    """
    if not isinstance(evidences, dict) or len(evidences) < 2:
        raise ValueError("`evidences` must be a dict of at least two models: name -> Evidence.")
    for k, ev in evidences.items():
        _check_evidence(ev, f"evidences[{k!r}]")
        if not ev.valid or not math.isfinite(ev.log_z):
            raise ValueError(f"`evidences[{k!r}]` is not a valid estimate ({'; '.join(ev.diagnostics.get('invalid', ()))}"
                             "); re-estimate it (more particles, draws or temperatures) before comparing models.")
    if prior is None:
        prior = {k: 1.0 for k in evidences}
    if set(prior) != set(evidences) or any(not (float(v) > 0) for v in prior.values()):
        raise ValueError("`prior` must give a positive prior probability to every model in `evidences`.")
    names = list(evidences)
    lw = np.array([evidences[k].log_z + math.log(float(prior[k])) for k in names])
    w = np.exp(lw - lw.max())
    return dict(zip(names, (w / w.sum()).tolist()))


def nested_available() -> bool:
    """Whether ``method="nested"`` can run (``numpyro.contrib.nested_sampling`` imports)."""
    try:
        import numpyro.contrib.nested_sampling  # noqa: F401
    except ImportError:
        return False
    return True


def to_dataframe(results: dict, exact: float | None = None):
    """Table of a :func:`compare` result: method, log_z, se, valid, time_s, and (given ``exact``) error, |error|/SE.

    ``|error|/SE`` is the distance from ``exact`` in the estimate's own standard errors (NaN where
    ``se`` is 0: Laplace and exact values), as in the demo report.
    """
    import pandas as pd

    rows = []
    for m, ev in results.items():
        row = {"method": m, "log_z": ev.log_z, "se": ev.se, "valid": ev.valid, "time_s": ev.diagnostics.get("time_s")}
        if exact is not None:
            row["error"] = ev.log_z - exact
            row["|error|/SE"] = abs(ev.log_z - exact) / ev.se if ev.se > 0 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# prequential data-tempered SMC
# ---------------------------------------------------------------------------------------------


def _prequential_orders(order, orders, R, n, key):
    """The (R, n) orderings and what they are: ``"random"``, ``"data"`` or ``"given"``."""
    if orders is not None:
        if order is not None:
            raise ValueError("Pass either `order` (None, 'data'/'time' or one permutation) or `orders` (R rows), "
                             "not both.")
        orders = np.asarray(orders)
        if orders.shape != (R, n) or not all(np.array_equal(np.sort(o), np.arange(n)) for o in orders):
            raise ValueError(f"`orders` must be an ({R}, {n}) array whose rows are permutations of 0..{n - 1} "
                             f"(one per ordering, over the {n} observation units).")
        return jnp.asarray(orders), "given"
    if order is None or (isinstance(order, str) and order == "random"):
        return jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, R)), "random"
    if isinstance(order, str):
        if order not in ("data", "time"):
            raise ValueError(f"`order` must be None (random orderings), 'data' (alias 'time': the units in the "
                             f"data's own order) or one permutation of the units, got {order!r}.")
        return jnp.tile(jnp.arange(n), (R, 1)), "data"
    o = np.asarray(order)
    if o.ndim != 1 or o.shape[0] != n or not np.array_equal(np.sort(o), np.arange(n)):
        raise ValueError(f"`order` as an array must be one permutation of the {n} units 0..{n - 1}, "
                         f"got shape {o.shape}.")
    return jnp.tile(jnp.asarray(o), (R, 1)), "given"


def prequential(model, *args, num_permutations: int, rng_key, units=None, order=None, site=None,
                num_particles: int = 1000, num_mcmc_steps: int = 5, num_leapfrog: int = 5, orders=None, shard=None,
                **kwargs) -> Prequential:
    r"""One-step-ahead log predictives of the observation units along R orderings, by data-tempered SMC.

    For each ordering :math:`\sigma_r` of the U observation units (:mod:`genbayes.units`), SMC moves
    from the prior to the posterior one *unit* at a time (the partial posteriors
    :math:`\pi_k \propto \pi(\theta)\prod_{j<k} p(x_{\sigma(j)}\mid\theta)`, written as 0/1 unit
    weights through :class:`genbayes.reweight`; BlackJAX's SMC step, Chopin 2002). Before each
    addition the particles are resampled and moved by HMC targeting :math:`\pi_{k}`; the log mean
    incremental weight

    .. math:: \widehat{\log p}(x_{\sigma(k)} \mid x_{\sigma(<k)}) = \log \tfrac1N \sum_j p(x_{\sigma(k)} \mid \theta_j)

    is ``terms[r, k]``, :math:`p(x_u \mid \theta)` being the unit's likelihood: all its entries over
    every observed site, *marginal* over discrete latents enumerated with ``config_enumerate``
    (:func:`genbayes.units.log_density`). Their sum over k estimates :math:`\log p(x)` for every
    ordering (the chain rule). All R orderings run as one vmapped program.

    Orders:

    - ``order=None``: uniformly random orderings. Position k of a random ordering has k training
      units, so :math:`\hat S_{CV}(p) = \tfrac1R\sum_r` ``terms[r, n - p]`` estimates every
      leave-p-out score in one sweep (Fong & Holmes 2020, Prop. 1). This treats the units as
      conditionally exchangeable given the parameters (i.i.d. given θ); for dependent units (time
      series) random orderings still sum to :math:`\log p(x)` but their terms are not predictions.
    - ``order="data"`` (alias ``"time"``): the units in the data's own order (plate index, or group
      id) in every one of the R runs (independent SMC replicates, so ``s_cv_se`` is the SMC error).
      ``terms[:, k]`` estimates :math:`\log p(x_k \mid x_{<k})`: the one-step-ahead (leave-future-out)
      scores of a time series (Bürkner, Gabry & Vehtari 2020), valid for any model because it is the
      chain rule. ``s_cv[p - 1]`` is then the term of unit n − p (the p-th from last).
    - ``order=`` one permutation of the units: that ordering in every run.

    Args:
        model: a NumPyro model (or a :mod:`genbayes.conjugate` family).
        *args, **kwargs: the model's arguments.
        num_permutations: R >= 1 orderings (or replicates of a fixed order; R >= 2 for standard errors).
        rng_key: JAX PRNG key (orderings and SMC).
        units: the observation units added one at a time: ``None`` (default: each element of the
            outermost plate shared by the observed sites; several sites at one index form one unit),
            a plate name, group ids (an integer array, or a dict site -> group ids), or a
            :class:`genbayes.units.Units` (e.g. from ``gb.units.find(..., mask=...)``). Masked entries
            are in no unit and never scored. Every observed site must belong to units (none fixed).
        order: ``None`` (random), ``"data"`` / ``"time"``, or one permutation of ``0..U-1``.
        site: legacy: add the entries of this one observed site (one batch dimension) as units; the
            model may observe no other site. Not together with ``units``.
        num_particles: SMC particles per ordering (>= 2; fewer than ~100 is flagged).
        num_mcmc_steps, num_leapfrog: HMC moves per addition and leapfrog steps per move.
        orders: optional ``(R, U)`` integer array of orderings (instead of ``order``).
        shard: with several visible devices, where to split the work: ``None``/``True`` (default:
            orderings when R >= devices, else each ordering's particles), ``"runs"`` (orderings, no
            communication), ``"particles"`` (particle arrays; XLA adds the collectives for weights and
            resampling) or ``False`` (one device). ``diagnostics["shard"]`` and ``["devices"]`` (read
            from the outputs' shardings) say where it ran; results equal one device's up to
            rounding (``docs/scaling.md``).

    Returns:
        :class:`Prequential` over the U units (``diagnostics["units"]`` is the
        :class:`genbayes.units.Units`, ``diagnostics["order"]`` ``"random"``, ``"data"`` or
        ``"given"``). Low ESS (below 10% of the particles or below 20) and low acceptance are warned
        about and kept in ``.diagnostics``.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np, genbayes as gb
        >>> from genbayes.evidence import prequential
        >>> fam = gb.conjugate.BetaBernoulli(1.0, 1.0)
        >>> x = jnp.array([1, 0, 1, 1])
        >>> pq = prequential(fam, x, num_permutations=2, num_particles=200, rng_key=jax.random.PRNGKey(0))
        >>> pq.terms.shape, pq.s_cv.shape
        ((2, 4), (4,))
        >>> bool(np.allclose(pq.terms.sum(1), pq.log_z, atol=1e-4))
        True

    Reference: Chopin (2002); Fong & Holmes (2020); Bürkner, Gabry & Vehtari (2020) for the
    data-order (leave-future-out) terms.
    """
    from .units import find

    check_key(rng_key)
    _check_int(num_permutations, "num_permutations", 1)
    _check_int(num_particles, "num_particles", 2)
    _check_int(num_mcmc_steps, "num_mcmc_steps", 1)
    _check_int(num_leapfrog, "num_leapfrog", 1)
    family, np_model = _resolve(model)
    check_args_finite(args, kwargs)
    tr, obs = _observed_sites(np_model, args, kwargs)
    if site is not None:
        if units is not None:
            raise ValueError("Pass either `units` (the observation units to add) or the legacy `site`, not both.")
        if not isinstance(site, str):
            raise TypeError(f"`site` must be the name of an observed site, got {site!r}.")
        if site not in obs:
            where = "is latent" if site in tr else "does not occur in the model"
            raise ValueError(f"`site`={site!r} {where}; the model's observed sites are {sorted(obs)}.")
        if len(obs) > 1:
            raise ValueError(f"`site`={site!r} adds the observations of one site, but the model observes "
                             f"{sorted(obs)}; use `units=` (default: the plate they share) to add all of them.")
        from .units import _batch_shape

        batch_shape = _batch_shape(obs[site])
        if len(batch_shape) != 1:
            raise ValueError(f"Observed site {site!r} must have one batch dimension (a plate over n), "
                             f"got batch shape {batch_shape}; declare its units with `units=` instead.")
        units = {site: np.arange(batch_shape[0], dtype=np.int32)}
    U = find(np_model, *args, units=units, **kwargs)
    _starts_at_prior(U, "prequential", "Assign those sites to units too (a dict site -> group ids), or "
                                       "condition on them inside the model.")
    n = U.num_units
    R = num_permutations
    mode = _shard_mode(shard, R)
    k_ord, k_setup, k_run = jax.random.split(rng_key, 3)
    orders, kind = _prequential_orders(order, orders, R, n, k_ord)
    t0 = time.perf_counter()
    settings = dict(n=n, num_particles=num_particles, num_mcmc_steps=num_mcmc_steps, num_leapfrog=num_leapfrog)
    pm, pargs = family_as_argument(model, args)
    run = _mapped_program("prequential", pm, pargs, kwargs, U, tuple(settings.items()),
                          partial(_data_tempered_smc, **settings), 2, k_setup, mode)
    out, devices = run(orders, jax.random.split(k_run, R))
    terms, log_z, ess, acc, steps = out
    terms, log_z = np.asarray(terms), np.asarray(log_z)
    per_pos = terms[:, ::-1]  # column p-1 holds position n-p
    s_cv = per_pos.mean(axis=0)
    s_cv_se = per_pos.std(axis=0, ddof=1) / np.sqrt(R) if R > 1 else np.full(n, np.nan)
    diag = {
        "ess": np.asarray(ess),
        "acceptance": np.asarray(acc),
        "step_size": np.asarray(steps),
        "num_resampling": np.full(R, n),
        "num_particles": num_particles,
        "units": U,
        "order": kind,
        "shard": mode,
        "devices": devices,
        "time_s": time.perf_counter() - t0,
    }
    problems = []
    min_ess = float(np.min(diag["ess"]))
    if min_ess < max(0.1 * num_particles, _MIN_ESS_ABS):
        r, k = np.unravel_index(np.argmin(diag["ess"]), diag["ess"].shape)
        problems.append(f"the effective sample size fell to {min_ess:.1f} of {num_particles} particles "
                        f"(ordering {r}, step {k}); use more particles")
    if float(np.min(diag["acceptance"][:, 1:], initial=1.0)) < 0.1:
        problems.append("HMC moves accepted less than 10% at some step; the particles barely move")
    if not np.all(np.isfinite(terms)):
        problems.append("some one-step-ahead terms are not finite")
    diag["warnings"] = tuple(problems)
    for p in problems:
        warnings.warn(f"prequential: {p}.", RuntimeWarning, stacklevel=2)
    return Prequential(terms=terms, orders=np.asarray(orders), log_z=log_z, s_cv=s_cv, s_cv_se=s_cv_se,
                       diagnostics=diag)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

CLI_MODELS = ("radiata_density", "radiata_adjusted", "beta_bernoulli", "normal_known_variance", "gamma_poisson",
              "dirichlet_categorical", "normal_gamma_regression", "logistic_regression")
"""The bundled model names ``genbayes evidence`` accepts (besides ``PATH.py:FUNCTION``)."""


def cli_problem(name: str, seed: int = 0, data: str | None = None):
    """(model or family, args, exact log Z or None, description) for a CLI model name.

    ``name`` may also be the user's model, ``PATH.py:FUNCTION`` or ``package.module:FUNCTION``, with
    ``data`` (``--data``) its arguments (rules in ``genbayes._cli_models``); the arguments are then
    ``(args, kwargs)`` and there is no exact value.
    """
    from . import _cli_models, conjugate
    from .cli import UsageError

    _cli_models.check_spec(name, CLI_MODELS)
    if _cli_models.is_own_model(name, CLI_MODELS):
        prob = _cli_models.load(name, data)
        _cli_models.check_model(prob)
        try:  # no observed or no latent site: the library's one-line reason, before anything compiles
            _observed_sites(prob.model, prob.args, prob.kwargs)
        except ValueError as e:
            raise UsageError(f"{prob.description}: {e}") from None
        return prob.model, (prob.args, prob.kwargs), None, prob.description
    if data is not None:
        raise UsageError(f"--data is for your own model (PATH.py:FUNCTION); the bundled {name} brings its own data.")
    from .models import logistic_regression, radiata_pine

    rng = np.random.default_rng(seed)
    if name in ("radiata_density", "radiata_adjusted"):
        cov = "density" if name == "radiata_density" else "adjusted_density"
        X, y = radiata_pine.design(cov)
        fam = radiata_pine.prior()
        return fam, (X, y), float(fam.log_evidence(X, y)), f"radiata pine, {cov} (Friel & Wyse 2012 prior), n=42"
    if name == "beta_bernoulli":
        fam, data = conjugate.BetaBernoulli(2.0, 2.0), (rng.binomial(1, 0.3, 30).astype(np.int32),)
    elif name == "normal_known_variance":
        fam, data = conjugate.NormalKnownVariance(0.0, 4.0, 1.0), (rng.normal(1.0, 1.0, 30),)
    elif name == "gamma_poisson":
        fam, data = conjugate.GammaPoisson(2.0, 1.0), (rng.poisson(3.0, 30).astype(float),)
    elif name == "dirichlet_categorical":
        fam, data = conjugate.DirichletCategorical(np.ones(3)), (rng.choice(3, 30, p=[0.5, 0.3, 0.2]).astype(np.int32),)
    elif name == "normal_gamma_regression":
        X = np.column_stack([np.ones(30), rng.normal(size=30)])
        y = X @ np.array([1.0, -0.5]) + rng.normal(0, 0.5, 30)
        fam, data = conjugate.NormalGammaRegression(np.zeros(2), np.ones(2), 2.0, 1.0), (X, y)
    elif name == "logistic_regression":
        X, y = logistic_regression.breast_cancer(num_features=5, n=200, seed=seed)
        return logistic_regression.model, (X, y), None, "logistic regression, breast cancer (5 features, n=200)"
    else:
        raise ValueError(f"Unknown model {name!r}; choose one of {CLI_MODELS}.")
    return fam, data, float(fam.log_evidence(*data)), f"{type(fam).__name__} on simulated data, n=30"


def _cli_main(args) -> int:
    from ._config import x64

    with x64():
        return _cli_run(args)


def _cli_run(args) -> int:
    from .cli import UsageError

    methods = None
    if args.methods is not None:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        if not methods:
            raise UsageError(f"--methods is empty; give a comma-separated subset of {','.join(METHODS)}, or leave "
                             "it out for all.")
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise UsageError(f"unknown method(s) {bad} in --methods; choose from {','.join(METHODS)}.")
        if "nested" in methods and not nested_available():
            raise UsageError("--methods nested needs the optional extra: pip install 'genbayes[nested]' (jaxns<3).")
    model, data, exact, desc = cli_problem(args.model, seed=args.seed, data=args.data)
    from ._cli_models import is_own_model

    data, model_kwargs = data if is_own_model(args.model, CLI_MODELS) else (data, {})

    opts = {}
    if args.quick:
        opts = {"smc": {"num_particles": 300, "num_runs": 4},
                "thermodynamic": {"num_samples": 500, "num_warmup": 300},
                "stepping_stone": {"num_samples": 500, "num_warmup": 300}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        res = compare(model, *data, methods=methods, rng_key=jax.random.PRNGKey(args.seed), options=opts,
                      **model_kwargs)
    print(f"log evidence: {desc}" + (f"; exact log Z = {exact:.4f}" if exact is not None else ""))
    print(_cli_table(res, exact))
    print(res.agreement)
    for w in caught:
        print(f"warning: {w.message}")
    return 0


def _cli_table(res, exact):
    """The CLI's table, in the demo report's format (``-`` for a cell a row does not have)."""
    from .demos import Section, evidence_columns

    table = evidence_columns(res, exact)
    table["valid"] = [ev.valid for ev in res.values()]
    table["time, first call (s)"] = [None if ev.diagnostics.get("time_s") is None else f"{ev.diagnostics['time_s']:.1f}"
                                     for ev in res.values()]
    return Section("", "", table).table_text()


def add_cli(subparsers):
    """Add ``genbayes evidence MODEL [--data FILE]``: every applicable method's log Z, SE and time side by side.

    MODEL is a bundled name (``CLI_MODELS``) or your own NumPyro model, ``PATH.py:FUNCTION`` or
    ``package.module:FUNCTION``, with its arguments from ``--data`` (CSV or NPZ matched to the
    model's parameters by name, or ``PATH.py:FUNCTION`` / ``:FUNCTION`` returning them; rules in
    ``genbayes._cli_models``).

    Example:
        >>> import argparse
        >>> from genbayes import evidence
        >>> parser = argparse.ArgumentParser(prog="genbayes")
        >>> _ = evidence.add_cli(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["evidence", "mymodel.py:model", "--data", "y.csv", "--methods", "laplace"])
        >>> args.model, args.data, args.methods
        ('mymodel.py:model', 'y.csv', 'laplace')
    """
    p = subparsers.add_parser(
        "evidence",
        help="compare log marginal likelihood estimators on a model",
        description="Estimate log Z of your own NumPyro model (MODEL = PATH.py:FUNCTION or package.module:FUNCTION, "
                    "data from --data FILE.csv|FILE.npz|PATH.py:FUNCTION|:FUNCTION, matched to the model's parameters "
                    "by name) or of a bundled model by every applicable method and print them side by side "
                    "(with the exact value and the error where one is known).",
    )
    p.add_argument("model", metavar="MODEL",
                   help=f"PATH.py:FUNCTION or package.module:FUNCTION (your model), or one of {', '.join(CLI_MODELS)}")
    p.add_argument("--data", default=None, metavar="FILE",
                   help="your model's arguments: FILE.csv (a column per parameter, X[0], X[1], ... for a 2-D X), "
                        "FILE.npz (an array per parameter), PATH.py:FUNCTION or :FUNCTION (a function in the model's "
                        "file returning a dict or tuple of arguments)")
    p.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--seed", type=int, default=0, help="seed of the rng_key (default 0)")
    p.add_argument("--quick", action="store_true", help="fewer particles and draws")
    p.set_defaults(func=_cli_main)
    return p
