r"""Bridge sampling of the log evidence from posterior draws (Meng & Wong 1996; Gronau et al. 2017).

Given draws :math:`\theta_1, \dots, \theta_{N_1}` from the posterior :math:`p(\theta \mid x) =
\tilde p(\theta)/Z`, :math:`\tilde p(\theta) = p(x \mid \theta)\,\pi(\theta)`, and draws
:math:`\tilde\theta_1, \dots, \tilde\theta_{N_2}` from a proposal g, the bridge identity
:math:`Z = E_g[\tilde p\,\alpha] / E_{p}[g\,\alpha]` holds for any bridge function α; the optimal α
(Meng & Wong 1996, eq. 4.1) gives the fixed-point iteration

.. math::
    \hat r^{(t+1)} = \frac{\frac{1}{N_2}\sum_j \frac{\ell_{2j}}{s_1 \ell_{2j} + s_2 \hat r^{(t)}}}
                          {\frac{1}{N_1}\sum_i \frac{1}{s_1 \ell_{1i} + s_2 \hat r^{(t)}}},\qquad
    \ell_{1i} = \frac{\tilde p(\theta_i)}{g(\theta_i)},\ \ell_{2j} = \frac{\tilde p(\tilde\theta_j)}{g(\tilde\theta_j)},
    \ s_k = \frac{N_k}{N_1 + N_2},

run here in log space (``logsumexp``) inside one ``jax.lax.while_loop``. Everything happens in the
model's flat *unconstrained* space (NumPyro's transforms, log-Jacobians included; discrete latents
enumerated with ``config_enumerate`` summed out), as in R's ``bridgesampling`` (Gronau, Singmann &
Wagenmakers 2020): the first half of every chain fits the proposal, the second half enters the
bridge. Proposals: ``"normal"`` (a multivariate normal with the first half's mean and covariance)
and ``"warp3"`` (Meng & Schilling 2002; Gronau et al. 2017, sec. 4: the posterior is standardised
and symmetrised, :math:`\tilde p_w(\eta) = \tfrac{|L|}{2}[\tilde p(\mu - L\eta) + \tilde p(\mu +
L\eta)]`, against a standard normal; it matches mean, covariance and skewness).

The standard error is the first-order relative mean-squared error of :math:`\hat Z`
(Frühwirth-Schnatter 2004, eq. 14), the posterior-draw term inflated by the integrated
autocorrelation time :math:`N_1/\mathrm{ESS}` of the autocorrelated draws.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy.special import logsumexp

from ._evidence_core import _PROGRAMS, _check_int, _FlatModel, _warn
from ._programs import split_args
from ._validation import check_key

__all__ = ["bridge_sampling", "PROPOSALS"]

PROPOSALS = ("normal", "warp3")
"""The proposal densities ``proposal=`` accepts: a multivariate normal fitted to the first half of
the draws, or that normal made symmetric about the draws' mean ("warp3", Meng & Schilling 2002)."""

# at least this many draws per chain in each half (fit and bridge)
_MIN_PER_HALF = 4


# ---------------------------------------------------------------------------------------------
# input checks (before anything is compiled)
# ---------------------------------------------------------------------------------------------


def _check_settings(proposal, maxiter, tol):
    if proposal not in PROPOSALS:
        raise ValueError(f"`proposal` must be one of {PROPOSALS}, got {proposal!r}.")
    _check_int(maxiter, "maxiter", 1)
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating, np.integer)) or not (
            np.isfinite(tol) and tol > 0):
        raise ValueError(f"`tol` must be a positive finite number (e.g. 1e-10), got {tol!r}.")


def _latent_structure(model, args, kwargs):
    """(continuous latent site -> constrained shape, names of deterministic sites) from the abstract trace."""
    from .evidence import _trace
    from .units import _is_enumerated

    tr = _trace(model, args, kwargs)
    shapes, discrete = {}, []
    for name, site in tr.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if _is_enumerated(site):
            continue
        if getattr(site["fn"], "support", None) is not None and site["fn"].support.is_discrete:
            discrete.append(name)
            continue
        shapes[name] = tuple(jnp.shape(site["value"]))
    if discrete:
        raise ValueError(
            f"Bridge sampling integrates continuous latent sites in the unconstrained space, but {discrete} "
            "are discrete and not enumerated: mark them with infer={'enumerate': 'parallel'} (or "
            "numpyro.contrib.funsor.config_enumerate) so they are summed out.")
    deterministic = {name for name, site in tr.items() if site["type"] == "deterministic"}
    return shapes, deterministic


def _draws_from_mcmc(mcmc):
    from numpyro.infer import MCMC

    if not isinstance(mcmc, MCMC):
        raise TypeError(f"`mcmc` must be a numpyro.infer.MCMC that has been run, got {type(mcmc).__name__}.")
    try:
        return mcmc.get_samples(group_by_chain=True)
    except (AssertionError, AttributeError, KeyError, TypeError) as e:
        raise ValueError("`mcmc` holds no draws: call mcmc.run(rng_key, *args, **kwargs) first.") from e


def _check_draws(draws, shapes, deterministic, what):
    """Validate posterior draws against the model's latent sites; return dict site -> (C, S, ...) array."""
    if not isinstance(draws, dict) or not draws:
        raise TypeError(f"`{what}` must be a non-empty dict site name -> array of posterior draws, got {type(draws).__name__}.")
    names = set(draws)
    unknown = sorted(names - set(shapes) - deterministic)
    if unknown:
        raise ValueError(f"`{what}` has site(s) {unknown} that are not latent sites of the model; its latent "
                         f"sites are {sorted(shapes)}. Pass draws of exactly those.")
    missing = sorted(set(shapes) - names)
    if missing:
        raise ValueError(f"`{what}` lacks draws of the latent site(s) {missing}; bridge sampling needs draws of "
                         f"every continuous latent site {sorted(shapes)}.")
    out, lead = {}, None
    for name in sorted(shapes):
        v = np.asarray(draws[name])
        site_shape = shapes[name]
        k = v.ndim - len(site_shape)
        if k not in (1, 2) or tuple(v.shape[k:]) != site_shape:
            raise ValueError(
                f"`{what}[{name!r}]` must have shape (num_draws, *{site_shape}) or (num_chains, num_draws, "
                f"*{site_shape}) (the site's shape is {site_shape}), got {v.shape}.")
        if lead is None:
            lead = v.shape[:k]
        elif v.shape[:k] != lead:
            raise ValueError(f"`{what}` sites disagree on the number of chains/draws: {name!r} has leading shape "
                             f"{v.shape[:k]}, others {lead}. Pass every site with the same (chains, draws) axes.")
        if not np.issubdtype(v.dtype, np.number) or not np.all(np.isfinite(v)):
            bad = int(np.sum(~np.isfinite(v.astype(float)))) if np.issubdtype(v.dtype, np.number) else v.size
            raise ValueError(f"`{what}[{name!r}]` has {bad} non-finite or non-numeric draws; drop or rerun the "
                             "chains that produced them.")
        out[name] = v if k == 2 else v[None]
    C, S = next(iter(out.values())).shape[:2]
    if S < 2 * _MIN_PER_HALF:
        raise ValueError(f"`{what}` has {S} draws per chain; bridge sampling needs at least {2 * _MIN_PER_HALF} "
                         "(half fit the proposal, half enter the bridge). Draw more posterior samples.")
    size = sum(int(np.prod(s)) for s in shapes.values())
    if C * (S // 2) <= size:
        raise ValueError(f"`{what}` has {C} chain(s) x {S} draws: the {C * (S // 2)} draws of the first halves "
                         f"cannot fit a proposal covariance in {size} dimensions. Draw more posterior samples.")
    dtype = jnp.result_type(float)
    return {n: jnp.asarray(v, dtype) for n, v in out.items()}


# ---------------------------------------------------------------------------------------------
# the compiled estimator
# ---------------------------------------------------------------------------------------------


def _std_normal_logpdf(z):
    return -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * z.shape[-1] * jnp.log(2 * jnp.pi)


def _iterate(l1, l2, maxiter, tol):
    """Meng & Wong's (1996, eq. 4.1) fixed point for log r = log Z − l*, from the Gelfand–Dey start."""
    N1, N2 = l1.shape[0], l2.shape[0]
    log_s1, log_s2 = jnp.log(N1 / (N1 + N2)), jnp.log(N2 / (N1 + N2))
    lstar = jnp.median(l1)  # centring keeps every exponent near 0 (bridgesampling does the same)
    a1, a2 = l1 - lstar, l2 - lstar

    def update(logr):
        num = logsumexp(a2 - jnp.logaddexp(log_s1 + a2, log_s2 + logr)) - jnp.log(N2)
        den = logsumexp(-jnp.logaddexp(log_s1 + a1, log_s2 + logr)) - jnp.log(N1)
        return num - den

    # reciprocal importance sampling (Gelfand & Dey 1994): 1/Z = E_post[g/p~]; no proposal draws needed
    logr0 = -(logsumexp(-a1) - jnp.log(N1))

    def cond(c):
        logr, change, i = c
        return (i < maxiter) & ((i == 0) | (change >= tol))  # a NaN change stops (reported as not finite)

    def step(c):
        logr, _, i = c
        new = update(logr)
        return new, jnp.abs(jnp.expm1(logr - new)), i + 1  # |r_old − r| / r, bridgesampling's criterion

    logr, change, it = jax.lax.while_loop(cond, step, (logr0, jnp.asarray(jnp.inf, l1.dtype), 0))
    return {
        "log_z": logr + lstar,
        "log_z_reciprocal": logr0 + lstar,
        "log_z_importance": logsumexp(l2) - jnp.log(N2),
        "iterations": it,
        "last_change": change,
    }


def _bridge_body(proposal):
    """``body(flat, draws, key, maxiter, tol)``: draws (C, S, ...) constrained -> estimate and its pieces."""

    def body(flat, draws, key, maxiter, tol):
        from numpyro.handlers import seed
        from numpyro.infer.util import unconstrain_fn

        names = sorted(flat.z0)
        C, S = next(iter(draws.values())).shape[:2]
        model = seed(flat.model, jax.random.PRNGKey(0))  # an enumerated site is drawn while transforms are read

        def to_flat(z):
            u = unconstrain_fn(model, flat.args, flat.kwargs, z)
            return ravel_pytree({n: u[n] for n in names})[0]

        rows = {n: v.reshape((C * S,) + v.shape[2:]) for n, v in draws.items()}
        x = jax.vmap(to_flat)(rows).reshape(C, S, -1)
        d = x.shape[-1]
        h = S // 2
        fit = x[:, :h].reshape(-1, d)
        post = x[:, h:].reshape(-1, d)
        N1 = post.shape[0]
        mu = jnp.mean(fit, axis=0)
        cov = jnp.atleast_2d(jnp.cov(fit, rowvar=False))
        # relative jitter only against round-off; a truly singular covariance still fails (-> invalid)
        L = jnp.linalg.cholesky(cov + jnp.diag(1e-10 * jnp.diag(cov)))
        logdet_L = jnp.sum(jnp.log(jnp.diag(L)))
        eps = jax.random.normal(key, (N1, d), x.dtype)  # N2 = N1 proposal draws
        logp = jax.vmap(flat.log_density(jnp.asarray(1.0, x.dtype)))
        eta = jax.scipy.linalg.solve_triangular(L, (post - mu).T, lower=True).T
        if proposal == "normal":
            gen = mu + eps @ L.T
            q11, q21 = logp(post), logp(gen)
            l1 = q11 - (_std_normal_logpdf(eta) - logdet_L)
            l2 = q21 - (_std_normal_logpdf(eps) - logdet_L)
        else:  # warp3: symmetrised standardised posterior against N(0, I)
            q11 = jnp.logaddexp(logp(post), logp(2 * mu - post))
            q21 = jnp.logaddexp(logp(mu - eps @ L.T), logp(mu + eps @ L.T))
            l1 = logdet_L - jnp.log(2.0) + q11 - _std_normal_logpdf(eta)
            l2 = logdet_L - jnp.log(2.0) + q21 - _std_normal_logpdf(eps)
        out = _iterate(l1, l2, maxiter, tol)
        out.update(l1=l1, l2=l2, q11=q11, q21=q21, unconstrained_finite=jnp.all(jnp.isfinite(x)),
                   cholesky_finite=jnp.all(jnp.isfinite(L)), dim=d)
        return out

    return body


def _bridge_program(model, args, kwargs, units, proposal):
    """Compile (or reuse) the estimator as a function of the model's array arguments and the draws.

    Like :func:`genbayes._evidence_core._program`, but the flat layout comes from the first draw,
    unconstrained inside the program: no eager ``initialize_model`` (on a CPU its ~140 small
    compilations cost ~10 s on a model's first call), and draws are valid points by construction.
    """
    from numpyro.handlers import seed
    from numpyro.infer.util import unconstrain_fn

    dyn, rebuild, static_key = split_args(args, kwargs)
    body = _bridge_body(proposal)

    def build():
        def fn(dyn_leaves, draws, *extra):
            a, kw = rebuild(dyn_leaves)
            first = {n: v[0, 0] for n, v in draws.items()}
            z0 = unconstrain_fn(seed(model, jax.random.PRNGKey(0)), a, kw, first)
            return body(_FlatModel(model, a, kw, {n: z0[n] for n in draws}, units), draws, *extra)

        return jax.jit(fn)

    key = None if static_key is None else ("bridge", model, units.key, static_key, proposal)
    compiled, _ = _PROGRAMS.get(key, build)
    return lambda *extra: compiled(dyn, *extra)


def _error_measures(l1, l2, log_z, num_chains):
    """Frühwirth-Schnatter's (2004, eq. 14) relative MSE of Ẑ; f2 over autocorrelated draws via its ESS."""
    from numpyro.diagnostics import effective_sample_size

    N1, N2 = l1.shape[0], l2.shape[0]
    log_s1, log_s2 = np.log(N1 / (N1 + N2)), np.log(N2 / (N1 + N2))
    # f1 = p/(s1 p + s2 g) at proposal draws, f2 = g/(s1 p + s2 g) at posterior draws (p normalised);
    # both are bounded (by 1/s1 and 1/s2), so they are safe to exponentiate
    f1 = np.exp(-np.logaddexp(log_s1, log_s2 - (l2 - log_z)))
    f2 = np.exp(-np.logaddexp(log_s1 + (l1 - log_z), log_s2))
    ess = float(effective_sample_size(f2.reshape(num_chains, -1))) if np.var(f2) > 0 else float(N1)
    ess = min(max(ess, 1.0), float(N1))
    term1 = np.var(f1, ddof=1) / np.mean(f1) ** 2 / N2
    term2 = np.var(f2, ddof=1) / np.mean(f2) ** 2 / ess
    return float(term1 + term2), ess, float(term1), float(term2)


def _bridge_core(model, args, kwargs, rng_key, draws, *, units, proposal, maxiter, tol, method="bridge"):
    """Bridge sampling on validated draws (dict site -> (C, S, ...)). Returns (log_z, se, diag)."""
    run = _bridge_program(model, args, kwargs, units, proposal)
    dtype = jnp.result_type(float)
    # a relative change below the precision's resolution is never reached: float32 stops at ~2e-6
    tol = max(float(tol), 16 * float(jnp.finfo(dtype).eps))
    out = run(draws, rng_key, jnp.asarray(maxiter, jnp.int32), jnp.asarray(tol, dtype))
    out = jax.tree_util.tree_map(np.asarray, out)
    C = next(iter(draws.values())).shape[0]
    l1, l2, q11, q21 = out["l1"], out["l2"], out["q11"], out["q21"]
    log_z = float(out["log_z"])
    it = int(out["iterations"])
    invalid, problems = [], []
    if not bool(out["unconstrained_finite"]):
        invalid.append("some posterior draws map to non-finite unconstrained values (draws outside the "
                       "support of their site, or not draws of this model)")
    if not bool(out["cholesky_finite"]):
        invalid.append("the covariance of the first half of the draws is singular (a stuck chain or a "
                       "constant coordinate), so no normal proposal could be fitted")
    if not np.all(np.isfinite(q11)):
        invalid.append(f"the log posterior density is not finite at {int(np.sum(~np.isfinite(q11)))} of the "
                       f"{q11.size} posterior draws (draws from another model or other data?)")
    nan21 = int(np.sum(np.isnan(q21) | (q21 == np.inf)))
    if nan21:
        invalid.append(f"the log posterior density is NaN or +inf at {nan21} of the {q21.size} proposal draws")
    ninf21 = int(np.sum(q21 == -np.inf))
    if ninf21:
        problems.append(f"{ninf21} of the {q21.size} proposal draws have zero posterior density")
    if not np.isfinite(log_z):
        invalid.append("the bridge iteration gave a non-finite value")
    elif not float(out["last_change"]) < tol:
        invalid.append(f"the bridge iteration did not converge in {it} iterations (relative change "
                       f"{float(out['last_change']):.3g} > tol={tol:g}); raise `maxiter`")
    re2, ess, term1, term2 = (_error_measures(l1, l2, log_z, C) if not invalid
                              else (float("nan"), float("nan"), float("nan"), float("nan")))
    if not invalid and not np.isfinite(re2):
        invalid.append("the relative mean-squared error is not finite")
    if np.isfinite(re2) and re2 > 1.0:
        problems.append(f"the relative mean-squared error of Z is {re2:.3g} (> 1): the proposal is far from "
                        "the posterior; draw more samples or try proposal='warp3'")
    diag = {
        "relative_mse": re2,
        "coefficient_of_variation": float(np.sqrt(re2)),
        "relative_mse_proposal_term": term1,
        "relative_mse_posterior_term": term2,
        "iterations": it,
        "num_draws": {"fit": int(C * (next(iter(draws.values())).shape[1] // 2)), "bridge": int(l1.size),
                      "proposal": int(l2.size)},
        "num_chains": int(C),
        "ess": ess,
        "proposal": proposal,
        "tol": tol,
        "log_z_reciprocal": float(out["log_z_reciprocal"]),
        "log_z_importance": float(out["log_z_importance"]),
        "dim": int(out["dim"]),
    }
    _warn(problems, method, diag, invalid)
    return log_z, float(np.sqrt(re2)), diag


def _refuse_fixed(units):
    if units.fixed:
        raise ValueError(
            f"Bridge sampling estimates the normalising constant of the whole posterior, i.e. the evidence of "
            f"every observed site, but {list(units.fixed)} would stay conditioned on. Drop `sites`, or use "
            "'stepping_stone'/'thermodynamic' for the evidence of some sites given the others.")


# ---------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------


def _bridge_evidence(model, args, kwargs, rng_key, *, units, num_warmup=1000, num_samples=2000, num_chains=4,
                     proposal="normal", maxiter=1000, tol=1e-10, dense_mass=True, target_accept_prob=0.8,
                     progress=False):
    """``log_evidence(method="bridge")``: NUTS draws (:func:`genbayes.batched.run`, C chains), then bridge sampling.

    ``num_chains`` independent chains (one program, weights ``ones((C, 1))``) of ``num_warmup`` +
    ``num_samples`` iterations; ``dense_mass``/``target_accept_prob`` as in NumPyro's NUTS. Returns
    ``(log_z, se, diag)``; ``diag`` adds ``num_divergent`` and ``mean_accept_prob`` per chain.
    """
    from . import batched

    _refuse_fixed(units)
    _check_settings(proposal, maxiter, tol)
    _check_int(num_chains, "num_chains", 1)
    _check_int(num_samples, "num_samples", 2 * _MIN_PER_HALF)
    check_key(rng_key)
    key_mcmc, key_bridge = jax.random.split(rng_key)
    res = batched.run(model, jnp.ones((num_chains, 1)), *args, num_warmup=num_warmup, num_samples=num_samples,
                      rng_key=key_mcmc, units=units, dense_mass=dense_mass,
                      target_accept_prob=target_accept_prob, progress=progress, **kwargs)
    names = sorted(_program_names(model, args, kwargs))
    draws = {n: res.samples[n] for n in names}
    log_z, se, diag = _bridge_core(model, args, kwargs, key_bridge, draws, units=units, proposal=proposal,
                                   maxiter=maxiter, tol=tol)
    diag["num_divergent"] = np.asarray(res.diagnostics["num_divergent"])
    diag["mean_accept_prob"] = np.asarray(res.diagnostics["mean_accept_prob"])
    diag["num_warmup"] = num_warmup
    ndiv = int(np.sum(diag["num_divergent"]))
    if ndiv:
        _warn([f"{ndiv} divergent NUTS transitions in the posterior draws"], "bridge", diag)
    return log_z, se, diag


def _program_names(model, args, kwargs):
    from .evidence import _trace
    from .units import _is_enumerated

    tr = _trace(model, args, kwargs)
    return [n for n, s in tr.items() if s["type"] == "sample" and not s["is_observed"] and not _is_enumerated(s)]


def bridge_sampling(model, *args, samples=None, mcmc=None, rng_key, proposal="normal", maxiter=1000, tol=1e-10,
                    **kwargs):
    r"""Estimate the log evidence :math:`\log p(x)` by bridge sampling from existing posterior draws.

    With posterior draws :math:`\theta_i` (the second half of every chain, :math:`N_1` of them; the
    first half fits the proposal g) and :math:`N_2 = N_1` draws :math:`\tilde\theta_j \sim g`, the
    optimal bridge estimate is the fixed point of (Meng & Wong 1996, eq. 4.1)

    .. math:: \hat Z = \frac{\frac1{N_2}\sum_j \tilde p(\tilde\theta_j)/(s_1 \tilde p(\tilde\theta_j)
              + s_2 \hat Z g(\tilde\theta_j))}{\frac1{N_1}\sum_i g(\theta_i)/(s_1 \tilde p(\theta_i)
              + s_2 \hat Z g(\theta_i))},\qquad s_k = N_k/(N_1+N_2),

    :math:`\tilde p` the unnormalised posterior in the flat unconstrained space (Jacobian included),
    iterated in log space from the reciprocal importance estimate (Gelfand & Dey 1994) until the
    relative change is below ``tol`` (Gronau et al. 2017, eq. 15; one compiled program). The
    standard error is :math:`\sqrt{\mathrm{RE}^2}`, the relative MSE of :math:`\hat Z` (Frühwirth-Schnatter
    2004, eq. 14),

    .. math:: \mathrm{RE}^2 = \frac{1}{N_2}\frac{V_g(f_1)}{E_g(f_1)^2} + \frac{1}{\mathrm{ESS}(f_2)}
              \frac{V_p(f_2)}{E_p(f_2)^2},\quad f_1 = \frac{p}{s_1 p + s_2 g},\ f_2 = \frac{g}{s_1 p + s_2 g},

    to first order the standard error of :math:`\log\hat Z`; ESS is NumPyro's (Gelman et al. 2013)
    effective sample size of :math:`f_2` over the chains (R's ``bridgesampling`` multiplies by
    ``coda::spectrum0.ar``, the unnormalised spectral density, instead of the autocorrelation time
    :math:`N_1/\mathrm{ESS}` of the formula).

    Use float64 (``numpyro.enable_x64()``): the log densities of moderately large data sets lose
    the digits that matter in float32.

    Args:
        model: a NumPyro model or a :mod:`genbayes.conjugate` family.
        *args, **kwargs: the model's arguments (data), as for ``MCMC.run``; the same data the
            draws were conditioned on.
        samples: dict latent site -> draws, shape ``(S, *site_shape)`` (one chain) or
            ``(C, S, *site_shape)`` (C chains, as ``MCMC.get_samples(group_by_chain=True)``); told
            apart by the site's shape in the model. Deterministic sites are ignored.
        mcmc: a finished ``numpyro.infer.MCMC`` instead of ``samples`` (its draws grouped by chain).
        rng_key: JAX PRNG key for the proposal draws.
        proposal: ``"normal"`` (multivariate normal fitted to the first halves) or ``"warp3"``
            (Meng & Schilling 2002; twice the density evaluations; its SE uses the same formula
            with the warped densities, which R's ``bridgesampling`` does not report).
        maxiter, tol: the iteration stops when :math:`|\hat r^{(t)} - \hat r^{(t-1)}|/\hat r^{(t)} <` ``tol``
            or after ``maxiter`` updates (then the result is invalid). A ``tol`` below 16 machine
            epsilons is raised to that (float32: 1.9e-6); ``diagnostics["tol"]`` is the one used.

    Returns:
        :class:`genbayes.evidence.Evidence` with ``method="bridge"``; ``diagnostics`` holds
        ``relative_mse``, ``coefficient_of_variation``, ``iterations``, ``num_draws``, ``ess`` (of
        :math:`f_2` over the bridge draws), ``proposal``, ``log_z_reciprocal`` (the starting value),
        ``log_z_importance`` (plain importance sampling from the proposal) and ``time_s``. Non-finite
        densities or a non-converged iteration make it invalid (``valid=False``).

    Raises:
        ValueError: both or neither of ``samples``/``mcmc``; site names that are not the model's
            latent sites; missing sites; wrong shapes; non-finite draws; too few draws.
        TypeError: settings of the wrong type (``rng_key``, ``proposal``, ``maxiter``, ``tol``).

    References:
        Meng & Wong (1996), Statistica Sinica 6, 831–860; Meng & Schilling (2002), JCGS 11, 552–586;
        Frühwirth-Schnatter (2004), Econometrics Journal 7, 143–167; Gronau et al. (2017), J. Math.
        Psych. 81, 80–97.

    Example:
        >>> import jax, numpy as np, genbayes as gb
        >>> from genbayes.bridge import bridge_sampling
        >>> fam = gb.conjugate.BetaBernoulli(1.0, 1.0)
        >>> x = np.array([1, 0, 1, 1, 0, 1, 1, 1])
        >>> p = np.random.default_rng(0).beta(7.0, 3.0, size=2000)   # exact posterior draws
        >>> ev = bridge_sampling(fam, x, samples={"p": p}, rng_key=jax.random.PRNGKey(0))
        >>> bool(abs(ev.log_z - float(fam.log_evidence(x))) < 4 * ev.se + 1e-3), ev.valid
        (True, True)
    """
    from ._programs import family_as_argument
    from ._validation import check_args_finite
    from .evidence import Evidence, _evidence_units, _observed_sites, _resolve

    t0 = time.perf_counter()
    check_key(rng_key)
    _check_settings(proposal, maxiter, tol)
    if (samples is None) == (mcmc is None):
        raise TypeError("Pass exactly one of `samples` (a dict of posterior draws) or `mcmc` (a finished "
                        "numpyro.infer.MCMC).")
    _, np_model = _resolve(model)
    check_args_finite(args, kwargs)
    _observed_sites(np_model, args, kwargs)
    shapes, deterministic = _latent_structure(np_model, args, kwargs)
    what = "samples"
    if mcmc is not None:
        samples, what = _draws_from_mcmc(mcmc), "mcmc.get_samples(group_by_chain=True)"
    draws = _check_draws(samples, shapes, deterministic, what)
    units = _evidence_units(np_model, args, kwargs)
    _refuse_fixed(units)
    pm, pargs = family_as_argument(model, args)
    log_z, se, diag = _bridge_core(pm, pargs, kwargs, rng_key, draws, units=units, proposal=proposal,
                                   maxiter=maxiter, tol=tol)
    diag["time_s"] = time.perf_counter() - t0
    return Evidence(float(log_z), float(se), "bridge", diag, valid=not diag.get("invalid"))
