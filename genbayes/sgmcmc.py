r"""Minibatch Gibbs posteriors: stochastic-gradient MCMC (BlackJAX's SGLD and SGHMC) on any genbayes model.

A (generalized) posterior over n observation units (:mod:`genbayes.units`),

.. math:: \log \pi_\eta(\theta \mid x) = \log \pi(\theta) + \eta \sum_{u=1}^{n} \log p(x_u \mid \theta) + C

(with ``gb.Loss`` sites or :class:`genbayes.gibbs`, :math:`\log p(x_u \mid \theta) = -\ell(\theta, x_u)`:
the Gibbs posterior of Bissiri, Holmes & Walker 2016 at learning rate η), is sampled with a gradient
estimated from a minibatch of m units. The minibatch is a *unit weight vector*: for m unit indices
:math:`u_1, \dots, u_m` drawn uniformly with replacement,

.. math:: w_u = \eta \, \frac{n}{m} \, \#\{j : u_j = u\}, \qquad
          \widehat{\nabla} \log \pi(\theta) = \nabla_\theta \Big[ \log \pi(\theta)
          + \sum_u w_u \log p(x_u \mid \theta) \Big],

an unbiased estimate of the full gradient (:math:`\mathbb{E}\,w_u = \eta`), computed by
:class:`genbayes.reweight` with ``units=`` on the unchanged model (Welling & Teh 2011), or, with
``batch_args=``, by running the model on the m drawn rows of its data (O(m) per iteration instead of
O(n)). Control variates (Baker, Fearnhead, Fox & Nemeth 2019) remove most of the minibatch noise.
The chains run in the unconstrained space (Jacobians included, as NUTS does) as one compiled program:
burn-in and draws are ``lax.scan`` loops, chains a ``jax.vmap``; a second call with arrays of the same
shapes compiles nothing.

Kernels (BlackJAX's, not re-implemented): ``"sgld"`` (Welling & Teh 2011),
:math:`\theta_{t+1} = \theta_t + \varepsilon_t \widehat\nabla \log\pi(\theta_t) + \sqrt{2\varepsilon_t}\,\xi_t`
(BlackJAX's ε is half of Welling & Teh's); ``"sghmc"`` (Chen, Fox & Guestrin 2014, in the
parameterisation of Ma, Chen & Fox 2015): ``num_integration_steps`` steps
:math:`(\theta, p) \leftarrow (\theta + \varepsilon p,\ (1 - \alpha\varepsilon) p +
\varepsilon \widehat\nabla \log\pi(\theta) + \sqrt{2\alpha\varepsilon}\,\xi)`, both from the old θ, per
iteration (one minibatch per iteration, momentum redrawn), friction α.

Bias. With a constant step the chain's stationary law is not the posterior: its error is
:math:`O(\varepsilon)` from the discretisation plus a term proportional to ε times the variance of the
gradient estimate, which grows like :math:`\eta^2 n^2 / m` (Teh, Thiery & Vollmer 2016; Vollmer,
Zygalakis & Teh 2016). On a Gaussian target with precision λ and a gradient noise of variance V independent of θ,
SGLD's stationary variance is exactly :math:`(1 + \varepsilon V / 2) / (\lambda (1 - \varepsilon\lambda/2))`
with the mean unbiased (an AR(1) recursion; ``tests/test_sgmcmc.py`` checks this). Decreasing steps
(:math:`\varepsilon_t = \varepsilon_0 (1 + t/t_0)^{-\gamma}`, :math:`\gamma \in (0.5, 1]` in Welling &
Teh 2011) remove the bias as :math:`t \to \infty` but slow mixing; here the schedule runs during
burn-in and the kept draws use its final, constant step, so they are equally weighted and their
bias is that of the final step (``diagnostics["step_size"]``).

SGHMC's integrator in BlackJAX is explicit Euler, not leapfrog: on a Gaussian of precision λ one step
maps (θ, p) with determinant :math:`1 + \varepsilon^2\lambda`, so it gains energy between momentum
redraws and its draws are too wide even with exact gradients. Measured (logistic regression, n = 10^5,
m = 1000, control variates, 4 chains; ``benchmarks/bench_sgmcmc.py`` set-up): ε = sd/5 with 5 steps gave
near-independent draws but sds 12-17 % too wide; ε = sd/20 with 10 steps, 3-8 % too wide and a third of
the ESS per second. SGLD at ε = 0.15 × the smallest posterior variance: 1-5 % too wide. So SGLD is the
default; use SGHMC with ε well below the posterior sd over its steps and check the width
(:meth:`SGMCMCResult.compare`).

Diagnostics: the bulk ESS of every scalar (ArviZ), the kernel Stein discrepancy of a thinned subset
of the draws against the full-data posterior (Gorham & Mackey 2017, IMQ kernel; uses full-data
gradients at those draws only) and, against a full-batch reference, :meth:`SGMCMCResult.compare`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._evidence_core import _check_int
from ._programs import ProgramCache, family_as_argument, split_args
from ._validation import check_args_finite, check_key, check_nonnegative_scalar, check_positive_scalar

__all__ = ["run", "kernel_stein_discrepancy", "SGMCMCResult"]

_KERNELS = ("sgld", "sghmc")


@dataclasses.dataclass(frozen=True)
class SGMCMCResult:
    """Draws of one stochastic-gradient MCMC chain (Welling & Teh 2011; Chen, Fox & Guestrin 2014) and its diagnostics.

    Attributes:
        samples: dict site -> array ``(num_chains * num_samples, *site_shape)`` of constrained draws; chain c
            holds draws ``[c S, (c+1) S)`` (:meth:`chains` splits them).
        diagnostics: dict with ``step_size`` (the constant step of the kept draws), ``num_nonfinite``
            (iterations whose proposal was not finite; such a proposal is rejected and the chain stays),
            ``first_nonfinite`` (its first iteration, -1 if none), ``ess`` (dict site -> bulk ESS per
            scalar), ``ksd`` (kernel Stein discrepancy of ``ksd_draws`` thinned draws, NaN if not
            computed; :func:`kernel_stein_discrepancy`) and ``ksd_c`` (its kernel scale, the median
            pairwise distance of those draws), ``seconds`` (wall time of the chain, compilation included on a first call),
            ``compiled`` (whether this call built the program), ``n``, ``batch_size``, ``kernel``,
            ``gather`` (whether minibatches were gathered rows, ``batch_args=``), ``num_chains``; ``ess`` is
            ArviZ's multi-chain bulk ESS (Vehtari et al. 2021) when there are several chains.
        valid: False when the run cannot be trusted (non-finite proposals, non-finite draws);
            ``reason`` says why. Invalid results are warned about, never silently returned.
        reason: empty when valid.
        num_chains: how many independent chains ``samples`` holds, one after the other.

    Example:
        >>> import numpy as np
        >>> from genbayes.sgmcmc import SGMCMCResult
        >>> r = SGMCMCResult({"mu": np.zeros(10)}, {"step_size": 1e-3, "ess": {"mu": np.array(9.0)}})
        >>> r.num_samples, r.valid
        (10, True)
    """

    samples: dict
    diagnostics: dict
    valid: bool = True
    reason: str = ""
    num_chains: int = 1

    @property
    def num_samples(self) -> int:
        """Number of kept draws, all chains together."""
        return int(np.shape(next(iter(self.samples.values())))[0]) if self.samples else 0

    def chains(self, site) -> np.ndarray:
        """The draws of ``site`` split by chain: shape ``(num_chains, num_samples // num_chains, ...)``."""
        v = np.asarray(self.samples[site])
        return v.reshape((self.num_chains, v.shape[0] // self.num_chains) + v.shape[1:])

    def __getitem__(self, site):
        return self.samples[site]

    def summary(self) -> dict:
        """dict site -> (mean, sd, min bulk ESS) of the draws."""
        ess = self.diagnostics.get("ess", {})
        return {k: (np.mean(v, 0), np.std(v, 0), float(np.min(ess[k])) if k in ess else float("nan"))
                for k, v in self.samples.items()}

    def compare(self, reference) -> dict:
        r"""Agreement with a full-batch reference (e.g. NUTS draws): per site, per scalar.

        Returns dict site -> dict with ``z`` (:math:`(\bar\theta_{SG} - \bar\theta_{ref}) / sd_{ref}`: the
        mean's error in reference posterior sds) and ``sd_ratio`` (:math:`sd_{SG} / sd_{ref}`), for every
        site present in both (``reference``: dict site -> draws ``(S, ...)``, or a result).
        """
        ref = getattr(reference, "samples", reference)
        out = {}
        for k, v in self.samples.items():
            if k in ref:
                r = np.asarray(ref[k]).reshape((-1,) + np.shape(v)[1:])
                v = np.asarray(v)
                out[k] = {"z": (v.mean(0) - r.mean(0)) / r.std(0), "sd_ratio": v.std(0) / r.std(0)}
        return out

    def to_inference_data(self):
        """ArviZ InferenceData: the draws as ``posterior``, one ArviZ chain per chain."""
        from .interop import _arviz

        return _arviz().from_dict(posterior={k: self.chains(k) for k in self.samples})

    def __repr__(self):
        d = self.diagnostics
        sites = ", ".join(f"{k}: {tuple(np.shape(v))}" for k, v in self.samples.items())
        ess = d.get("ess", {})
        min_ess = min((float(np.min(e)) for e in ess.values()), default=float("nan"))
        state = "" if self.valid else f", INVALID: {self.reason}"
        chains = f", num_chains={self.num_chains}" if self.num_chains > 1 else ""
        return (f"SGMCMCResult({d.get('kernel', '?')}, num_samples={self.num_samples}{chains}, sites={{{sites}}}, "
                f"step_size={float(d.get('step_size', float('nan'))):.3g}, min_ess={min_ess:.0f}, "
                f"ksd={float(d.get('ksd', float('nan'))):.3g}{state})")


def _gather_spec(batch_args, args, kwargs, n):
    """Validate ``batch_args`` (positions / keyword names of per-unit arrays): the tuple of them."""
    if batch_args is None:
        return None
    spec = (batch_args,) if isinstance(batch_args, (int, str)) else tuple(batch_args)
    if not spec:
        raise ValueError("`batch_args` is empty; name the model arguments that hold one row per unit, or pass None.")
    for s in spec:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer, str)):
            raise TypeError(f"`batch_args` entries must be positions (int) or keyword names (str), got {s!r}.")
        if isinstance(s, str):
            if s not in kwargs:
                raise ValueError(f"`batch_args` names {s!r}, which is not a keyword argument of this call "
                                 f"(keywords: {sorted(kwargs)}).")
            a = kwargs[s]
        else:
            if not 0 <= s < len(args):
                raise ValueError(f"`batch_args` position {s} is out of range: the model got {len(args)} positional "
                                 "argument(s).")
            a = args[s]
        if not hasattr(a, "shape") or np.ndim(a) < 1 or np.shape(a)[0] != n:
            raise ValueError(f"`batch_args` entry {s!r} must be an array whose leading axis indexes the {n} units, got "
                             f"shape {tuple(np.shape(a))}. Name only per-unit data (X, y), or omit `batch_args`.")
    return spec


def _gather(spec, args, kwargs, idx):
    args = list(args)
    kwargs = dict(kwargs)
    for s in spec:
        if isinstance(s, str):
            kwargs[s] = jnp.take(kwargs[s], idx, axis=0)
        else:
            args[s] = jnp.take(args[s], idx, axis=0)
    return tuple(args), kwargs


def _indices(key, m, n):
    r"""m unit indices drawn uniformly from 0..n-1 with replacement: 32 random bits modulo n.

    ``jax.random.randint`` draws twice the bits and costs ~3x as much on a CPU (it dominated an
    iteration at m = 1000). The modulo makes unit u's probability (1 + δ_u)/n with
    :math:`|\delta_u| \le n / 2^{32}` (2.3e-4 at n = 10^6): a negligible bias in the gradient estimate.
    """
    if n > 2 ** 31:
        return jax.random.randint(key, (m,), 0, n)
    return (jax.random.bits(key, (m,), dtype=jnp.uint32) % jnp.uint32(n)).astype(jnp.int32)


def _step_size(t, eps0, gamma, t0, num_warmup):
    """ε_t = ε0 (1 + t/t0)^(-γ) during burn-in, then constant at its value at t = num_warmup."""
    t = jnp.minimum(t, num_warmup).astype(jnp.result_type(float))
    return eps0 * (1.0 + t / t0) ** (-gamma)


def _median_distance(x):
    """The median pairwise distance of the rows of x (the kernel-scale heuristic), at least 1e-12."""
    r = jnp.sqrt(jnp.sum((x[:, None, :] - x[None, :, :]) ** 2, -1))
    S = x.shape[0]
    return jnp.maximum(jnp.median(r[jnp.triu_indices(S, 1)]), 1e-12)


def _imq_ksd(x, s, c, beta=-0.5):
    r"""KSD with the IMQ kernel :math:`k(x,y) = (c^2 + \|x-y\|^2)^\beta` (Gorham & Mackey 2017): the U-statistic.

    The sum over pairs i != j estimates KSD^2 without the V-statistic's diagonal bias
    :math:`k_0(x, x)/S`, which dominates when c is small; a negative estimate (possible for a
    U-statistic) is reported as 0.
    """
    d = x.shape[1]
    S = x.shape[0]
    r = x[:, None, :] - x[None, :, :]
    r2 = jnp.sum(r * r, -1)
    u = c * c + r2
    k = u ** beta
    dk = 2.0 * beta * u ** (beta - 1.0)  # grad_x k = dk r, grad_y k = -dk r
    trace = -2.0 * beta * (d * u ** (beta - 1.0) + 2.0 * (beta - 1.0) * u ** (beta - 2.0) * r2)
    ss = s @ s.T
    sx_r = jnp.einsum("id,ijd->ij", s, r)  # s(x_i) . (x_i - x_j)
    sy_r = jnp.einsum("jd,ijd->ij", s, r)  # s(x_j) . (x_i - x_j)
    k0 = ss * k - dk * sx_r + dk * sy_r + trace
    off = jnp.sum(k0) - jnp.sum(jnp.diagonal(k0))
    return jnp.sqrt(jnp.maximum(off / (S * (S - 1)), 0.0))


_PROGRAMS = ProgramCache(maxsize=16)


def _flat(model, a, kw, z0, units):
    from ._evidence_core import _FlatModel

    return _FlatModel(model, a, kw, z0, units)


def _build_program(model, rebuild, z0, units, units_m, spec, settings, has_init):
    import blackjax
    from numpyro.handlers import seed
    from numpyro.infer.util import constrain_fn, unconstrain_fn

    kernel, n, m, num_warmup, num_samples, thinning, num_steps, friction, ksd_draws, control_variates, num_chains = settings
    ftype = jnp.result_type(float)

    def program(dyn, key, eps0, gamma, t0, lr, init_params):
        a, kw = rebuild(dyn)
        full = _flat(model, a, kw, z0, units)
        full_logdensity = full.log_density(lr * jnp.ones(n, ftype))
        key_init, key_chain, key_check = jax.random.split(key, 3)

        # the minibatch gradient for k = len(idx) unit indices (static): weights lr n / k on the drawn units
        if spec is None:
            def grad_estimator(x, idx):
                w = jnp.zeros(n, ftype).at[idx].add(lr * n / idx.shape[0])
                return jax.grad(full.log_density(w))(x)
        else:
            def grad_estimator(x, idx):
                k = idx.shape[0]
                a_k, kw_k = _gather(spec, a, kw, idx)
                f = _flat(model, a_k, kw_k, z0, units if k == n else units_m)
                return jax.grad(f.log_density(jnp.full(k, lr * n / k, ftype)))(x)

        eps_final = _step_size(jnp.asarray(num_warmup), eps0, gamma, t0, num_warmup)

        def one_chain(key_init, key_chain):
            # start: the user's values, else the median of 15 prior draws, else uniform in (-2, 2)
            if has_init:
                u = unconstrain_fn(seed(model, key_init), a, kw, init_params)
                x_init = ravel_pytree({k: u[k] for k in z0})[0].astype(ftype)
            else:
                x_med = jnp.median(full.sample_prior(key_init, 15), axis=0)
                x_unif = jax.random.uniform(key_init, full.flat0.shape, ftype, -2.0, 2.0)
                lp, g = jax.value_and_grad(full_logdensity)(x_med)
                ok = jnp.isfinite(lp) & jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(x_med))
                x_init = jnp.where(ok, x_med, x_unif)
            lp0, g0 = jax.value_and_grad(full_logdensity)(x_init)
            init_ok = jnp.isfinite(lp0) & jnp.all(jnp.isfinite(g0))

            def algorithm(estimator):
                if kernel == "sgld":
                    return blackjax.sgld(estimator)
                return blackjax.sghmc(estimator, num_integration_steps=num_steps, alpha=friction)

            def move(alg, x, t, eps):
                k_batch, k_move = jax.random.split(jax.random.fold_in(key_chain, t))
                idx = _indices(k_batch, m, n)
                x_new = alg.step(k_move, x, idx, eps)
                finite = jnp.all(jnp.isfinite(x_new))
                return jnp.where(finite, x_new, x), finite  # a non-finite proposal is rejected (and counted)

            def count(bad, first, finite, t):
                return bad + (~finite).astype(jnp.int32), jnp.where(~finite & (first < 0), t, first)

            # burn-in: the plain estimator, decreasing steps; the mean of its second half centres the control variates
            plain = algorithm(grad_estimator)
            half = num_warmup // 2

            def burn(carry, t):
                x, acc, bad, first = carry
                x, finite = move(plain, x, t, _step_size(t, eps0, gamma, t0, num_warmup))
                acc = acc + jnp.where(t >= half, x, 0.0)
                return (x, acc, *count(bad, first, finite, t)), None

            (x, acc, bad, first), _ = jax.lax.scan(burn, (x_init, jnp.zeros_like(x_init), jnp.int32(0), jnp.int32(-1)),
                                                   jnp.arange(num_warmup, dtype=jnp.int32))
            centre = acc / (num_warmup - half) if num_warmup else x_init
            if control_variates:
                # Baker et al. (2019): grad(centre) on all n units + minibatch (grad(x) - grad(centre)); BlackJAX's helper
                from blackjax.sgmcmc.gradients import control_variates as cv

                sampler = algorithm(cv(grad_estimator, centre, jnp.arange(n)))
            else:
                sampler = plain

            def draw(carry, i):
                def inner(c, j):
                    x, bad, first = c
                    t = num_warmup + i * thinning + j
                    x, finite = move(sampler, x, t, eps_final)
                    return (x, *count(bad, first, finite, t)), None

                c, _ = jax.lax.scan(inner, carry, jnp.arange(thinning, dtype=jnp.int32))
                return c, c[0]

            (x, bad, first), draws = jax.lax.scan(draw, (x, bad, first), jnp.arange(num_samples, dtype=jnp.int32))
            return draws, bad, first, init_ok

        # the chains are independent: one vmap (per-iteration overheads are paid once for all of them)
        draws, bad, first, init_ok = jax.vmap(one_chain)(jax.random.split(key_init, num_chains),
                                                         jax.random.split(key_chain, num_chains))
        draws = draws.reshape((num_chains * num_samples,) + draws.shape[2:])  # chain c: [c S, (c+1) S)
        bad, init_ok = jnp.sum(bad), jnp.all(init_ok)
        first = jnp.min(jnp.where(first >= 0, first, jnp.iinfo(jnp.int32).max))
        first = jnp.where(first == jnp.iinfo(jnp.int32).max, -1, first)

        # constrained draws per site (the model on the first minibatch's rows when gathering: O(m), not O(n))
        if spec is None:
            a_c, kw_c, fm = a, kw, full
        else:
            a_c, kw_c = _gather(spec, a, kw, jnp.arange(m))
            fm = _flat(model, a_c, kw_c, z0, units_m)
        samples = jax.vmap(lambda x: constrain_fn(model, a_c, kw_c, fm.unravel(x)))(draws)

        # kernel Stein discrepancy of ksd_draws evenly spaced draws, full-data scores
        if ksd_draws:
            sel = draws[jnp.linspace(0, num_chains * num_samples - 1, ksd_draws).astype(jnp.int32)]
            scores = jax.vmap(jax.grad(full_logdensity))(sel)
            ksd_c = _median_distance(sel)
            ksd = _imq_ksd(sel, scores, ksd_c)
        else:
            ksd = ksd_c = jnp.asarray(jnp.nan, ftype)

        # batch_args check: unit by unit, the log-likelihood of the model on rows permuted is the full model's
        # permuted (each unit's term is the derivative of the unit-weighted log density in its weight)
        if spec is None:
            gather_gap = jnp.asarray(0.0, ftype)
        else:
            perm = jax.random.permutation(key_check, n)
            a_p, kw_p = _gather(spec, a, kw, perm)
            fp = _flat(model, a_p, kw_p, z0, units)
            x_chk = draws[-1] + jax.random.normal(key_check, draws[-1].shape, ftype)  # a point away from any coincidence
            ones = jnp.ones(n, ftype)
            ll_full = jax.grad(lambda w: full.log_density(w)(x_chk))(ones)
            ll_perm = jax.grad(lambda w: fp.log_density(w)(x_chk))(ones)
            gather_gap = jnp.max(jnp.abs(ll_perm - ll_full[perm]) / (1.0 + jnp.abs(ll_full[perm])))
        return samples, draws, {"num_nonfinite": bad, "first_nonfinite": first, "ksd": ksd, "ksd_c": ksd_c, "init_ok": init_ok,
                                "gather_gap": gather_gap, "step_size": eps_final}

    return jax.jit(program)


def run(
    model,
    *args,
    batch_size: int,
    step_size: float,
    rng_key,
    num_samples: int = 1000,
    num_warmup: int = 1000,
    thinning: int = 1,
    kernel: str = "sgld",
    learning_rate: float = 1.0,
    units=None,
    batch_args=None,
    decay: float = 0.0,
    decay_steps: float | None = None,
    num_integration_steps: int = 5,
    friction: float = 0.1,
    control_variates: bool = False,
    num_chains: int = 1,
    init_params: dict | None = None,
    ksd_draws: int = 100,
    progress: bool = True,
    **kwargs,
) -> SGMCMCResult:
    r"""Sample a (Gibbs) posterior with minibatch SGLD or SGHMC: one compiled program for all chains.

    The target is :math:`\pi(\theta) \prod_u p(x_u \mid \theta)^{\eta}` over the model's observation
    units (``gb.Loss`` sites, :class:`genbayes.gibbs`, plain likelihoods alike; η = ``learning_rate``
    multiplies every unit's weight, on top of any learning rate written in the model). Every
    iteration draws m = ``batch_size`` units uniformly with replacement and uses the unit weights
    :math:`w_u = \eta\,(n/m)\,\#\{j: u_j = u\}`: an unbiased gradient of the log posterior (Welling &
    Teh 2011). See the module docstring for the kernels and their bias.

    Two ways to evaluate a minibatch:

    - default (``batch_args=None``): :class:`genbayes.reweight` with those weights on the unchanged
      model, for any units (plates, groups, masks, enumerated latents). Shapes are static, so every
      unit is still evaluated (the zero-weight ones masked out): an iteration costs one full-data
      gradient, as much as one leapfrog step of NUTS. SG-MCMC then saves nothing per gradient; use
      it to check a model, or when n is moderate.
    - ``batch_args=("X", "y")`` (keyword names or positions of model arguments): those arguments'
      rows at the m drawn indices are gathered and the model runs on them with weight :math:`\eta n/m`
      per row: an iteration costs O(m). Valid when unit u is row u of each named argument (the
      default units: one unit per element of the outermost plate, whose size the model reads from
      the data) and the model has no latent variable per unit. Checked: the units must be a plate of
      size n equal to each named argument's leading axis; the latent shapes must not depend on the
      rows; and after the run each unit's log-likelihood on the rows permuted must be the full model's,
      permuted (else ``RuntimeError``: an argument indexed by unit was left out of ``batch_args``).

    Step sizes: :math:`\varepsilon_t = \varepsilon_0 (1 + t / t_0)^{-\gamma}` for the ``num_warmup``
    burn-in iterations (ε0 = ``step_size``, γ = ``decay``, t0 = ``decay_steps``; Welling & Teh 2011
    use :math:`a(b + t)^{-\gamma}`, the same family), then constant at its last value for the kept
    draws. For SGLD the step is on the scale of the posterior *variance* of the unconstrained
    parameters (stable for :math:`\varepsilon < 2/\lambda_{max}`, λ the largest posterior precision;
    0.05-0.2 × the smallest posterior variance mixes well with a bias of a few percent in the
    variance); for SGHMC it is on the scale of the posterior *sd* divided by ``num_integration_steps``.

    Args:
        model: a NumPyro model; ``*args, **kwargs`` its arguments (as for ``MCMC.run``).
        batch_size: m, units per minibatch, 1 <= m <= n.
        step_size: ε0 > 0 (see above).
        rng_key: a JAX PRNG key; the same key gives the same chain.
        num_samples, num_warmup, thinning: kept draws per chain, burn-in iterations (discarded), iterations
            per kept draw; each chain runs ``num_warmup + num_samples * thinning`` iterations.
        num_chains: independent chains, run as one ``jax.vmap`` (each with its own start, minibatches,
            burn-in and control-variate centre). An iteration's cost grows with m (per chain, 4 chains,
            logistic regression with control variates: ~15 µs at m = 100, ~46 µs at m = 1000), and 16 chains
            took 3.2 times as long as 4 (``benchmarks/bench_sgmcmc.py``).
        kernel: ``"sgld"`` (``blackjax.sgld``) or ``"sghmc"`` (``blackjax.sghmc`` with
            ``num_integration_steps`` gradient steps per iteration and friction α = ``friction``; the
            step is then on the scale of the posterior sd over ``num_integration_steps``, and α must exceed
            the gradient noise ε V / 2 or the draws come out too wide).
        control_variates: centre the gradient estimate (Baker, Fearnhead, Fox & Nemeth 2019;
            BlackJAX's ``gradients.control_variates``) at :math:`\hat\theta`, the mean of the second half
            of the burn-in: :math:`\nabla\log\pi(\hat\theta) + \sum_u w_u (\nabla \log p(x_u \mid \theta) -
            \nabla \log p(x_u \mid \hat\theta))`, unbiased for any :math:`\hat\theta`, with a variance that
            vanishes as :math:`\theta \to \hat\theta` instead of growing like :math:`\eta^2 n^2 / m`. Costs one
            full-data gradient per chain after burn-in and two minibatch gradients per iteration. Use it
            with a burn-in long enough to reach the posterior: at n = 10^5, m = 1000 it was what made
            SGLD's draws the right width (``benchmarks/bench_sgmcmc.py``).
        learning_rate: η >= 0, multiplies every unit weight (the Gibbs posterior's learning rate).
        units: the observation units (:mod:`genbayes.units`; default: the outermost plate).
        batch_args: see above; ``None`` evaluates minibatches by weights.
        decay, decay_steps: γ >= 0 (0: constant steps) and t0 > 0 (default ``max(num_warmup, 1) / 10``).
        init_params: dict of constrained starting values of the latent sites; default the median of 15
            prior draws (or, where that is not a valid point, a uniform draw in (-2, 2) unconstrained).
        ksd_draws: number of evenly spaced draws at which the kernel Stein discrepancy is computed
            (each costs one full-data gradient; 0 to skip).
        progress: print one line before and one after the run.

    Returns:
        :class:`SGMCMCResult`. A run with non-finite proposals or draws is marked invalid (``valid``,
        ``reason``) and warned about.

    Raises:
        ValueError: bad settings (``batch_size`` outside 1..n, ``step_size`` not > 0, ``kernel``,
            ``batch_args`` that do not index the units, ...), before anything compiles;
            ``TypeError`` for a ``rng_key`` that is not a key.
        RuntimeError: no finite starting point, or a ``batch_args`` mismatch found by the check above.

    Example:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, genbayes as gb
        >>> def model(y):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with numpyro.plate("n", y.shape[0]):
        ...         numpyro.sample("y", gb.Loss(gb.losses.squared, mu), obs=y)
        >>> y = jax.random.normal(jax.random.PRNGKey(1), (1000,)) + 3.0
        >>> res = gb.sgmcmc.run(model, y, batch_size=100, step_size=2e-4, num_samples=500, num_warmup=200,
        ...                     rng_key=jax.random.PRNGKey(0), progress=False)
        >>> bool(abs(res.samples["mu"].mean() - y.mean()) < 0.1), res.valid
        (True, True)

    References: Welling & Teh (2011), "Bayesian learning via stochastic gradient Langevin dynamics",
    ICML; Chen, Fox & Guestrin (2014), "Stochastic gradient Hamiltonian Monte Carlo", ICML; Ma, Chen &
    Fox (2015), "A complete recipe for stochastic gradient MCMC", NeurIPS; Teh, Thiery & Vollmer
    (2016), "Consistency and fluctuations for stochastic gradient Langevin dynamics", JMLR 17; Gorham &
    Mackey (2017), "Measuring sample quality with kernels", ICML; Bissiri, Holmes & Walker (2016).
    """
    from ._evidence_core import _layout
    from .units import find

    # ---- checks, before anything is traced or compiled ----
    check_key(rng_key)
    if kernel not in _KERNELS:
        raise ValueError(f"`kernel` must be one of {_KERNELS}, got {kernel!r}.")
    _check_int(num_samples, "num_samples", 1)
    _check_int(num_warmup, "num_warmup", 0)
    _check_int(thinning, "thinning", 1)
    _check_int(num_chains, "num_chains", 1)
    _check_int(num_integration_steps, "num_integration_steps", 1)
    _check_int(ksd_draws, "ksd_draws", 0, " Use 0 to skip the kernel Stein discrepancy.")
    if ksd_draws == 1:
        raise ValueError("`ksd_draws` must be 0 (skip the kernel Stein discrepancy) or at least 2 (it averages over "
                         "pairs of draws), got 1.")
    check_positive_scalar(step_size, "step_size", hint=" It is the Langevin step (BlackJAX's ε); try 0.05-0.2 times "
                          "the smallest posterior variance of the unconstrained parameters.")
    check_nonnegative_scalar(learning_rate, "learning_rate", hint=" It multiplies every unit's weight.")
    check_nonnegative_scalar(decay, "decay", hint=" Use 0 for a constant step (Welling & Teh 2011 use 0.55).")
    check_positive_scalar(friction, "friction", hint=" It is SGHMC's α (BlackJAX's default 0.01; here 0.1).")
    if decay_steps is None:
        decay_steps = max(num_warmup, 1) / 10.0
    check_positive_scalar(decay_steps, "decay_steps")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError(f"`batch_size` must be an integer (units per minibatch), got {batch_size!r}.")
    if init_params is not None and not isinstance(init_params, Mapping):
        raise TypeError(f"`init_params` must be a dict site -> constrained value, got {type(init_params).__name__}.")
    check_args_finite(args, kwargs)
    nargs = len(args)
    model, args = family_as_argument(model, args)
    if batch_args is not None and len(args) > nargs:  # a conjugate family went in front of the data: shift positions
        shift = len(args) - nargs
        batch_args = tuple(b + shift if isinstance(b, (int, np.integer)) and not isinstance(b, bool) else b
                           for b in ((batch_args,) if isinstance(batch_args, (int, str)) else batch_args))
    if batch_args is not None and units is not None and not isinstance(units, str):
        raise ValueError("`batch_args` gathers rows of the data, one per unit of a plate; it cannot follow grouped or "
                         "explicit `units`. Omit `batch_args` (minibatches by weights work for any units).")
    units = find(model, *args, units=units, **kwargs)
    n = units.num_units
    if not 1 <= batch_size <= n:
        raise ValueError(f"`batch_size` must lie in 1..n = {n} (the model's units: {units!r}), got {batch_size}. "
                         "Typical minibatches hold 0.1-1 % of the units.")
    spec = _gather_spec(batch_args, args, kwargs, n)
    z0 = _layout(model, args, kwargs, units, rng_key)
    if init_params is not None:
        missing = sorted(set(z0) - set(init_params))
        extra = sorted(set(init_params) - set(z0))
        if missing or extra:
            raise ValueError(f"`init_params` must give every latent site {sorted(z0)}: missing {missing}, unknown {extra}.")
    units_m = None
    if spec is not None:
        if units.kind != "plate":
            raise ValueError(f"`batch_args` needs units that are the elements of a plate, got {units!r}; omit "
                             "`batch_args` to weight minibatches instead.")
        idx = np.arange(batch_size)
        a_m, kw_m = _gather_np(spec, args, kwargs, idx)
        try:
            units_m = find(model, *a_m, units=None if units.plate is None else units.plate, **kw_m)
            z0_m = _layout(model, a_m, kw_m, units_m, rng_key)
        except Exception as e:  # noqa: BLE001 - any failure of the model on gathered rows means the same thing
            raise ValueError(
                f"`batch_args`={spec!r} do not index the units: the model fails on {batch_size} gathered rows "
                f"({type(e).__name__}: {e}). Name every model argument with one row per unit (e.g. both X and y), "
                "or omit `batch_args`.") from e
        same = set(z0_m) == set(z0) and all(np.shape(z0_m[k]) == np.shape(z0[k]) for k in z0)
        if units_m.num_units != batch_size or not same:
            raise ValueError(
                f"`batch_args`={spec!r}: the model on {batch_size} gathered rows has {units_m.num_units} units (needs "
                f"{batch_size}) and latent shapes {({k: np.shape(v) for k, v in z0_m.items()})} (needs "
                f"{({k: np.shape(v) for k, v in z0.items()})}). Gathering is for models whose plate size is read from "
                "the named arguments and which have no per-unit latent variables; omit `batch_args` otherwise.")

    # ---- the compiled chain ----
    ftype = jnp.result_type(float)
    dyn, rebuild, arg_key = split_args(args, kwargs)
    settings = (kernel, n, int(batch_size), int(num_warmup), int(num_samples), int(thinning), int(num_integration_steps),
                float(friction), min(int(ksd_draws), int(num_samples) * int(num_chains)), bool(control_variates),
                int(num_chains))
    has_init = init_params is not None
    key = None if arg_key is None else (model, units.key, None if units_m is None else units_m.key, spec, arg_key,
                                        settings, has_init, tuple((k, np.shape(v)) for k, v in z0.items()), str(ftype))
    program, reused = _PROGRAMS.get(key, lambda: _build_program(model, rebuild, z0, units, units_m, spec, settings,
                                                                has_init))
    if progress:
        what = "running (compiled program reused)" if reused else "compiling and running"
        print(f"genbayes.sgmcmc: {what} {kernel.upper()}: n = {n} units, minibatches of {batch_size}"
              f"{' (gathered rows)' if spec else ' (unit weights)'}, {num_warmup} burn-in + "
              f"{num_samples * thinning} iterations...", flush=True)
    init = {} if init_params is None else {k: jnp.asarray(v, ftype) for k, v in init_params.items()}
    t0 = time.perf_counter()
    samples, draws, diag = jax.block_until_ready(program(
        dyn, rng_key, jnp.asarray(step_size, ftype), jnp.asarray(decay, ftype), jnp.asarray(decay_steps, ftype),
        jnp.asarray(learning_rate, ftype), init))
    seconds = time.perf_counter() - t0
    if progress:
        print(f"genbayes.sgmcmc: done in {seconds:.1f} s", flush=True)
    if not bool(diag["init_ok"]):
        raise RuntimeError("No valid starting point: the full-data log density or its gradient is not finite at the "
                           + ("given `init_params`." if has_init else "median of 15 prior draws nor at a uniform draw "
                              "in (-2, 2) of the unconstrained space.") + " Pass `init_params` inside the support.")
    if float(diag["gather_gap"]) > 1e-3:
        raise RuntimeError(
            f"`batch_args`={spec!r} do not index the units: the units' log-likelihoods on the rows permuted are not the "
            f"full model's permuted (relative gap up to {float(diag['gather_gap']):.3g}). Name every model argument with one row per "
            "unit (e.g. both X and y), or omit `batch_args`.")

    samples = {k: np.asarray(v) for k, v in samples.items()}
    ess = {k: _ess(v, num_chains) for k, v in samples.items()}
    nbad = int(diag["num_nonfinite"])
    reasons = []
    if nbad:
        reasons.append(f"{nbad} of {num_chains * (num_warmup + num_samples * thinning)} proposals were not finite (first "
                       f"at iteration "
                       f"{int(diag['first_nonfinite'])}); the step size is too large for this posterior: lower "
                       "`step_size` (or raise `decay`)")
    nonfinite_sites = [k for k, v in samples.items() if not np.all(np.isfinite(v))]
    if nonfinite_sites:
        reasons.append(f"non-finite draws of {nonfinite_sites}")
    reason = "; ".join(reasons)
    if reason:
        warnings.warn(f"genbayes.sgmcmc: the chain is invalid: {reason}.", RuntimeWarning, stacklevel=2)
    diagnostics = {
        "step_size": float(diag["step_size"]), "num_nonfinite": nbad, "first_nonfinite": int(diag["first_nonfinite"]),
        "ess": ess, "ksd": float(diag["ksd"]), "ksd_c": float(diag["ksd_c"]), "seconds": seconds, "compiled": not reused, "n": n,
        "batch_size": int(batch_size), "kernel": kernel, "gather": spec is not None,
        "iterations": num_warmup + num_samples * thinning, "num_chains": int(num_chains),
    }
    return SGMCMCResult(samples=samples, diagnostics=diagnostics, valid=not reason, reason=reason,
                        num_chains=int(num_chains))


def _ess(v, num_chains):
    """ArviZ's bulk ESS of every scalar of a site's draws ``(C * S, ...)`` (C chains, chain-major); NaN if constant."""
    from .interop import _arviz

    az = _arviz()
    flat = v.reshape((num_chains, v.shape[0] // num_chains, -1))
    out = [float(az.ess(flat[:, :, i])) if flat.shape[1] >= 4 and np.all(np.isfinite(flat[:, :, i]))
           and np.ptp(flat[:, :, i]) > 0 else np.nan for i in range(flat.shape[2])]
    return np.array(out).reshape(v.shape[1:])


def _gather_np(spec, args, kwargs, idx):
    args, kwargs = list(args), dict(kwargs)
    for s in spec:
        if isinstance(s, str):
            kwargs[s] = np.asarray(kwargs[s])[idx]
        else:
            args[s] = np.asarray(args[s])[idx]
    return tuple(args), kwargs


def kernel_stein_discrepancy(model, samples, *args, units=None, learning_rate: float = 1.0, c: float | None = None,
                             **kwargs) -> float:
    r"""Kernel Stein discrepancy of draws against the model's full-data (Gibbs) posterior.

    .. math:: \mathrm{KSD}^2 = \frac{1}{S(S-1)} \sum_{i \ne j} k_0(x_i, x_j), \quad
              k_0(x, y) = s(x)^\top s(y) k + s(x)^\top \nabla_y k + s(y)^\top \nabla_x k + \operatorname{tr} \nabla_x \nabla_y k,

    with :math:`s = \nabla \log \pi_\eta` in the unconstrained space (Jacobian included) and the
    inverse multiquadric kernel :math:`k(x, y) = (c^2 + \|x - y\|^2)^{-1/2}` (Gorham & Mackey 2017,
    Theorem 8: for any c > 0 it detects non-convergence). It needs no normalising constant, only
    full-data gradients at the S draws (S full gradients, :math:`O(S^2 d)` kernel terms). The
    U-statistic (pairs i != j) is unbiased for KSD^2 (a negative estimate is reported as 0); the
    V-statistic's diagonal term :math:`k_0(x,x)/S` would dominate at small c. Its scale depends on the
    problem and on c: compare draws of the same size from two samplers *at the same c* (default: the
    median pairwise distance of the draws given, the usual heuristic). Autocorrelated draws make it
    noisy: thin them.

    Args:
        model, *args, **kwargs: the model and its arguments.
        samples: dict latent site -> constrained draws ``(S, ...)`` (every latent site).
        units, learning_rate: as in :func:`run`.
        c: the IMQ kernel's scale (default: the median pairwise distance of the unconstrained draws;
            pass a result's ``diagnostics["ksd_c"]`` to compare with its ``ksd``).

    Returns:
        float, the KSD (square root of the U-statistic, clipped at 0).

    Example:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, genbayes as gb
        >>> def model(y):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("n", y.shape[0]):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> y = jnp.zeros(3)                                     # posterior N(0, 1/4)
        >>> good = {"mu": 0.5 * jax.random.normal(jax.random.PRNGKey(0), (300,))}
        >>> bad = {"mu": good["mu"] + 1.0}
        >>> k_good = gb.sgmcmc.kernel_stein_discrepancy(model, good, y)
        >>> k_bad = gb.sgmcmc.kernel_stein_discrepancy(model, bad, y)
        >>> bool(k_good < k_bad)
        True
    """
    from numpyro.handlers import seed
    from numpyro.infer.util import unconstrain_fn

    from ._evidence_core import _layout
    from .units import find

    check_nonnegative_scalar(learning_rate, "learning_rate")
    if c is not None:
        check_positive_scalar(c, "c")
    model, args = family_as_argument(model, args)
    units = find(model, *args, units=units, **kwargs)
    z0 = _layout(model, args, kwargs, units, None)
    missing = sorted(set(z0) - set(samples))
    if missing:
        raise ValueError(f"`samples` must hold every latent site {sorted(z0)}; missing {missing}.")
    draws = {k: jnp.asarray(samples[k]) for k in z0}
    S = int(np.shape(next(iter(draws.values())))[0])
    if S < 2:
        raise ValueError(f"`samples` must hold at least 2 draws, got {S}.")
    n = units.num_units
    dyn, rebuild, _ = split_args(args, kwargs)

    @jax.jit
    def ksd(dyn, draws, lr, c):
        a, kw = rebuild(dyn)
        full = _flat(model, a, kw, z0, units)
        ld = full.log_density(lr * jnp.ones(n, jnp.result_type(float)))

        def to_flat(p):
            u = unconstrain_fn(seed(model, 0), a, kw, p)
            return ravel_pytree({k: u[k] for k in z0})[0]

        x = jax.vmap(to_flat)(draws)
        return _imq_ksd(x, jax.vmap(jax.grad(ld))(x), _median_distance(x) if c is None else c)

    return float(ksd(dyn, draws, jnp.asarray(learning_rate, jnp.result_type(float)), c))
