"""Variational contrastive divergence (VCD): variational inference improved by MCMC, as a NumPyro ELBO.

With q_θ the variational distribution, q^(t) the law of t steps of a p-invariant MCMC kernel
started at z0 ~ q_θ, and f_θ(z) = log p(x, z) − log q_θ(z), Ruiz & Titsias (2019, eq. 7–9):

    L_VCD(θ) = KL(q_θ ‖ p) − KL(q^(t) ‖ p) + KL(q^(t) ‖ q_θ) = E_{q^(t)}[f_θ(z_t)] − E_{q_θ}[f_θ(z0)] ≥ 0,

tractable because the intractable log q^(t) cancels. Its gradient (their eq. 12) is

    ∇_θ L = −∇_θ E_q[f_θ(z0)] − E[∇_θ log q_θ(z_t)] + E[(f_θ(z_t) − b) ∇_θ log q_θ(z0)],

with z_t held constant and b a control-variate baseline. :class:`VCD` builds a surrogate whose
value is the VCD estimate and whose gradient is this estimator, so it plugs into
``numpyro.infer.SVI``. Model parameters φ (for example a VAE decoder) follow ∇_φ log p_φ(x, z_t):
they learn from the MCMC-improved samples.

**Nothing needs to persist between SVI steps**, so the plain idiom
``SVI(model, guide, optim, loss=VCD())`` is the whole method:

- *Kernel*: HMC in the model's unconstrained space, preconditioned by the current guide: with
  u = m + S x, S the guide's scale in unconstrained space (AutoDiagonalNormal / AutoNormal: its
  scales; AutoMultivariateNormal / AutoLowRank: the Cholesky factor of its covariance; any other
  guide: the inverse of −∇² log q at an independent draw from q, per datapoint block, up to 64
  dimensions), HMC runs on x with identity mass, i.e. mass matrix (S Sᵀ)⁻¹ in u. The step size is
  ε = ``step_size`` · D^(−1/4) (D: dimension of one chain), jittered uniformly by ±20 % at every HMC
  step. Both are deterministic functions of the current parameters (held constant in the
  gradient, as z_t is), so no step size has to be adapted or stored.
- *Control variate*: leave-one-out baselines across the ``num_particles`` particles of the current
  step, b_k = mean_{j≠k} [f_θ(z_t^j) − c_k f_θ(z0^j)] (per datapoint in the amortised mode), with
  c_k ∈ [0, 1] the least-squares coefficient of f(z_t) on f(z0) over the other particles; the
  c_k f_θ(z0^k) part is added back exactly as c_k ∇_θ E_q[f_θ̄(z0)] by reparameterisation (θ̄ held
  fixed). Everything is independent of particle k, so the estimator stays unbiased, and it follows
  the current parameters exactly. The step size ε is also capped at 1/√λ_max, λ_max the largest
  curvature of the target in the preconditioned coordinates at an independent draw from q (power
  iteration), so a guide much wider than the posterior does not make every HMC move rejected.
- *Robustness*: the score term's advantage f_θ(z_t) − b is clipped to ``advantage_clip`` times the
  median absolute advantage of the step (a guard against one exploding particle; inactive when the
  particles agree to within that factor).

Starting from the ELBO: the score-function term is noisy far from the posterior (per-particle
signal-to-noise ratio ≈ 0.1), so :func:`fit` first runs ``num_warmup`` steps of ``Trace_ELBO`` with
the same guide and optimiser (default: a fifth of the steps, at most 500), then VCD, in chunks,
stopping with a :class:`VCDDivergence` error if a chunk's parameters or objective go non-finite or
its ELBO falls far below the warm-up's. :func:`fit` returns a :class:`VCDRun` with the per-step
acceptance, objective and ELBO traces and :meth:`VCDRun.moments` (fitted and MCMC-improved
moments). With the bare idiom, wrap the guide (:meth:`VCD.wrap_guide`) only to read the last
step's report (:func:`report`); it does not change the fit.

Amortised (local) latents: when every sample site of the model and of the guide lies in one
plate (a VAE's ``"data"`` plate, minibatches allowed), the posterior factorises over that
plate, so HMC accepts or rejects each datapoint separately and the baselines are per datapoint
(Ruiz & Titsias 2019, §4).

Reference: F. J. R. Ruiz and M. K. Titsias (2019), "A Contrastive Divergence for Combining
Variational Inference and MCMC", ICML, eqs. 7–12; authors' MATLAB code
``franrruiz/vcd_divergence``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import lax
from numpyro.distributions.transforms import biject_to
from numpyro.distributions.util import sum_rightmost
from numpyro.handlers import replay, seed, substitute, trace
from numpyro.infer.autoguide import AutoContinuous, AutoNormal
from numpyro.infer.elbo import ELBO
from numpyro.primitives import mutable as numpyro_mutable

from ._programs import data_program
from ._validation import check_args_finite, guard_empty_plates

__all__ = ["VCD", "VCDReport", "VCDRun", "VCDDivergence", "fit", "report", "STATE_SITE"]

STATE_SITE = "_vcd_state"
"""Name of the NumPyro mutable site holding VCD's last-step report in ``SVIState.mutable_state``;
:meth:`VCD.wrap_guide` declares it (diagnostics only: the fit does not depend on it).

    >>> from genbayes.vcd import STATE_SITE
    >>> STATE_SITE
    '_vcd_state'
"""

_MAX_HESSIAN_DIM = 64


class VCDDivergence(RuntimeError):
    """Raised by :func:`fit` when a VCD run diverges (non-finite values, or an ELBO collapse).

    The check compares the ELBO E_q[log p(x, z) − log q(z)] of each chunk of VCD steps (Ruiz & Titsias
    2019, eq. 9 measures VCD against the same f) with that of the warm-up; the message names the steps.

    Example:
        >>> issubclass(VCDDivergence, RuntimeError)
        True
    """


# ----------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------
class VCDReport(NamedTuple):
    """What one SVI step of VCD saw (arrays, scalars or with a leading step axis).

    ``vcd`` is the estimate of L_VCD = E_{q^(t)}[f_θ(z_t)] − E_{q_θ}[f_θ(z0)] and ``elbo`` that of
    E_q[f_θ(z0)], f_θ = log p(x, z) − log q_θ(z) (Ruiz & Titsias 2019, eq. 9), both averaged over
    the step's particles.

    Example:
        >>> import jax, numpy as np
        >>> r = VCDReport(vcd=jax.numpy.array(0.5), elbo=jax.numpy.array(-3.0),
        ...               accept=jax.numpy.array(0.7), step_size=jax.numpy.array(0.1))
        >>> float(r.vcd), float(r.accept)
        (0.5, 0.699999988079071)

    Attributes:
        vcd: the VCD estimate Σ f(z_t) − Σ f(z0) (≥ 0 in expectation; the value SVI minimises).
        elbo: ELBO estimate Σ f(z0) at the same draws.
        accept: mean HMC acceptance probability (NaN for a user kernel).
        step_size: HMC step size ε used in the step, in the guide-preconditioned coordinates
            (NaN for a user kernel).
    """

    vcd: jax.Array
    elbo: jax.Array
    accept: jax.Array
    step_size: jax.Array

    def __repr__(self) -> str:
        f = lambda a: np.array2string(np.asarray(a), precision=4, threshold=6)  # noqa: E731
        return f"VCDReport(vcd={f(self.vcd)}, elbo={f(self.elbo)}, accept={f(self.accept)}, step_size={f(self.step_size)})"


class VCDRun(NamedTuple):
    """Result of :func:`fit`: final parameters and state, per-step diagnostics, and the moments.

    ``losses`` are the values SVI minimised in the VCD phase, i.e. the VCD estimates
    Σ f_θ(z_t) − Σ f_θ(z0) (Ruiz & Titsias 2019, eq. 9); ``report`` holds them with the ELBO,
    acceptance rate and step size of every VCD step; ``warmup_losses`` are the negative ELBOs of the
    warm-up steps. :meth:`moments` compares the fitted q with its MCMC-improved q^(t).

    Example:
        >>> import jax, numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import SVI
        >>> from numpyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     numpyro.sample("z", dist.Normal(0.0, 1.0))
        >>> svi = SVI(model, AutoNormal(model), numpyro.optim.Adam(0.05), loss=VCD(num_mcmc_steps=1))
        >>> run = fit(svi, jax.random.key(0), 40)
        >>> list(run.to_dataframe().columns)
        ['loss', 'vcd', 'elbo', 'accept', 'step_size']
    """

    params: dict
    """The fitted guide parameters (constrained), averaged over the last iterates."""
    state: object
    """The final ``SVIState`` (to continue training)."""
    losses: jax.Array
    """(steps,) the VCD-phase losses SVI minimised."""
    report: VCDReport
    """Per-step VCD, ELBO, HMC acceptance rate and step size."""
    warmup_losses: jax.Array
    """(warm-up steps,) the negative ELBOs of the ELBO warm-up."""
    svi: object
    """The ``SVI`` object that was run."""
    args: tuple
    """The model's positional arguments."""
    kwargs: dict
    """The model's keyword arguments."""

    def __repr__(self) -> str:
        r = self.report
        n = int(np.shape(self.losses)[0])
        tail = lambda a: float(np.nanmean(np.asarray(a)[-max(1, n // 10):]))  # noqa: E731
        return (
            f"VCDRun(num_warmup={int(np.shape(self.warmup_losses)[0])}, num_steps={n}, last-10% means: "
            f"vcd={tail(r.vcd):.4g}, elbo={tail(r.elbo):.4g}, accept={tail(r.accept):.3g}, "
            f"step_size={tail(r.step_size):.3g})"
        )

    def to_dataframe(self):
        """Per-step table of the VCD phase: loss, vcd, elbo, accept, step_size (a pandas DataFrame)."""
        import pandas as pd

        r = self.report
        return pd.DataFrame(
            {
                "loss": np.asarray(self.losses),
                "vcd": np.asarray(r.vcd),
                "elbo": np.asarray(r.elbo),
                "accept": np.asarray(r.accept),
                "step_size": np.asarray(r.step_size),
            }
        ).rename_axis("step")

    def moments(self, rng_key=None, num_samples: int = 1000):
        """Mean and sd of every latent (constrained) under the fitted q and the improved q^(t).

        Draws ``num_samples`` z0 ~ q_θ at the final parameters and runs the same t MCMC steps
        (Ruiz & Titsias 2019: z_t ~ q^(t), closer to the posterior than q). A user can see
        whether the fit converged: far apart fitted and improved moments mean q is still far
        from p (or t too small to tell).

        Returns:
            pandas DataFrame indexed by ``site[index]`` with columns ``fitted_mean``, ``fitted_sd``,
            ``improved_mean``, ``improved_sd``.
        """
        import pandas as pd

        key = jax.random.key(0) if rng_key is None else rng_key
        z0, zt, _ = self.svi.loss.draw(key, self.params, self.svi.model, self.svi.guide, num_samples,
                                       *self.args, **self.kwargs)
        rows = {}
        for name in z0:
            a0 = np.asarray(z0[name]).reshape(num_samples, -1)
            at = np.asarray(zt[name]).reshape(num_samples, -1)
            for i in range(a0.shape[1]):
                label = name if a0.shape[1] == 1 else f"{name}[{i}]"
                rows[label] = (a0[:, i].mean(), a0[:, i].std(), at[:, i].mean(), at[:, i].std())
        return pd.DataFrame.from_dict(rows, orient="index",
                                      columns=["fitted_mean", "fitted_sd", "improved_mean", "improved_sd"])


def report(svi_state) -> VCDReport:
    """The :class:`VCDReport` of the last ``svi.update`` (needs a guide wrapped by :meth:`VCD.wrap_guide`).

    Reads the VCD estimate E_{q^(t)}[f_θ(z_t)] − E_{q_θ}[f_θ(z0)] (Ruiz & Titsias 2019, eq. 9), the
    ELBO, the HMC acceptance rate and step size that VCD stored in ``svi_state.mutable_state``.

    Example:
        >>> import jax, numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import SVI
        >>> from numpyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     numpyro.sample("z", dist.Normal(0.0, 1.0))
        >>> loss = VCD(num_mcmc_steps=1, num_leapfrog=2)
        >>> svi = SVI(model, loss.wrap_guide(AutoNormal(model)), numpyro.optim.Adam(0.05), loss=loss)
        >>> state, _ = jax.jit(svi.update)(svi.init(jax.random.key(0)))
        >>> 0.0 <= float(report(state).accept) <= 1.0
        True
    """
    ms = getattr(svi_state, "mutable_state", None) or {}
    if STATE_SITE not in ms:
        raise ValueError(
            "This SVI state carries no VCD report: build SVI with `loss.wrap_guide(guide)` as the guide "
            "(or use genbayes.vcd.fit, which does it for you)."
        )
    s = ms[STATE_SITE]
    return VCDReport(s["vcd"], s["elbo"], s["accept"], s["step_size"])


def fit(svi, rng_key, num_steps: int, *args, num_warmup: int | None = None, num_chunks: int = 10,
        average: float = 0.5, init_state=None, check: bool = True, **kwargs) -> VCDRun:
    """Fit with VCD from an ELBO start: ``num_warmup`` Trace_ELBO steps, then ``num_steps`` VCD steps.

    ``svi`` is ``SVI(model, guide, optim, loss=VCD(...))`` (guide wrapped or not). The warm-up
    runs ``Trace_ELBO`` with the same guide and optimiser (the optimiser state carries over), since
    the score-function term of the VCD gradient (Ruiz & Titsias 2019, eq. 12)
    ∇_θ L = −∇_θ E_q[f_θ(z0)] − E[∇_θ log q_θ(z_t)] + E[(f_θ(z_t) − b) ∇_θ log q_θ(z0)] is noisy far from
    the posterior. The VCD phase runs in ``num_chunks`` compiled chunks (one compilation); after each,
    a divergence check stops the run with :class:`VCDDivergence` if parameters or objective are
    non-finite or the chunk's mean ELBO fell below the warm-up's by more than
    max(50, 10 sd, |ELBO|/2) nats. The returned parameters are the average of the unconstrained
    parameters over the last ``average`` fraction of the VCD steps (Polyak & Juditsky 1992), which
    removes most of the final iterate's SGD noise; ``state`` is the last iterate.

    Example:
        >>> import jax, numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import SVI
        >>> from numpyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     numpyro.sample("z", dist.Normal(1.0, 0.5))
        >>> svi = SVI(model, AutoNormal(model), numpyro.optim.Adam(0.05), loss=VCD(num_mcmc_steps=2))
        >>> run = fit(svi, jax.random.key(0), 300)
        >>> abs(float(run.params["z_auto_loc"]) - 1.0) < 0.2
        True

    Args:
        svi: a ``numpyro.infer.SVI`` whose loss is a :class:`VCD`.
        rng_key: JAX random key.
        num_steps: number of VCD steps (≥ 1).
        *args, **kwargs: model arguments, as for ``svi.run``.
        num_warmup: ELBO steps first (default ``min(500, num_steps // 5)``; 0 for none; ignored
            with ``init_state``).
        num_chunks: the VCD steps run in this many compiled chunks, checked in between.
        average: fraction of the VCD steps (whole chunks, from the end) whose parameters are
            averaged into ``params`` (0: the last iterate).
        init_state: an ``SVIState`` to continue from (no warm-up then).
        check: run the divergence check.

    Returns:
        :class:`VCDRun` with ``params`` (constrained), ``state`` (the final SVIState), ``losses``,
        ``report`` (a :class:`VCDReport` of arrays of length ``num_steps``), ``warmup_losses``.

    Raises:
        VCDDivergence: the run diverged (the message says in which step range and how).
    """
    from numpyro.infer import SVI, Trace_ELBO

    if not isinstance(svi.loss, VCD):
        raise TypeError(f"`fit` needs SVI(..., loss=VCD(...)); this SVI's loss is {type(svi.loss).__name__}.")
    num_steps = int(num_steps)
    if num_steps < 1:
        raise ValueError(f"`num_steps` must be >= 1, got {num_steps}.")
    num_chunks = max(1, min(int(num_chunks), num_steps))
    from .units import _trace

    # the data, before anything is compiled: non-finite, complex or empty data surface here (abstract
    # trace). A VCD target may have an improper prior (ImproperUniform), which NumPyro cannot sample:
    # then only the values are checked, and empty data surface at the first init below.
    check_args_finite(args, kwargs)
    try:
        _trace(svi.model, args, kwargs)
    except NotImplementedError:
        pass
    loss = svi.loss
    guide = svi.guide if isinstance(svi.guide, _StatefulGuide) else loss.wrap_guide(svi.guide)
    inner = guide.guide
    vsvi = SVI(svi.model, guide, svi.optim, loss=loss, **svi.static_kwargs)
    if init_state is not None:
        num_warmup = 0
    elif num_warmup is None:
        num_warmup = min(500, num_steps // 5)
    if int(num_warmup) < 0:
        raise ValueError(f"`num_warmup` must be >= 0, got {num_warmup}.")
    num_warmup = int(num_warmup)
    # compiled programs are reused by calls with the same model, guide, optimiser and loss objects
    # (the same ``svi``) and arguments of the same shapes: the data and states are their inputs
    settings = (inner, svi.optim, loss, tuple(sorted(svi.static_kwargs.items())), loss.num_particles)
    key_w, key_v = jax.random.split(rng_key if rng_key is not None else jax.random.key(0))
    elbo_ref = None
    if num_warmup > 0:
        esvi = SVI(svi.model, inner, svi.optim, loss=Trace_ELBO(num_particles=loss.num_particles), **svi.static_kwargs)
        with guard_empty_plates(args, kwargs):
            e_state = esvi.init(key_w, *args, **kwargs)

        def make_warmup(args, kwargs):
            def warm(state):  # what esvi.run(..., progress_bar=False) runs, as a cached program
                return lax.scan(lambda st, _: esvi.update(st, *args, **kwargs), state, None, length=num_warmup)

            return warm

        e_final, warm_losses = data_program("vcd_warmup", svi.model, args, kwargs, settings + (num_warmup,),
                                            make_warmup)(e_state)
        tail = -np.asarray(warm_losses)[-max(10, num_warmup // 5):]
        elbo_ref = (float(np.mean(tail)), float(np.std(tail)))
        s0 = vsvi.init(key_v, *args, **kwargs)
        state = s0._replace(optim_state=e_final.optim_state)
    else:
        warm_losses = jnp.zeros((0,))
        with guard_empty_plates(args, kwargs):
            s0 = vsvi.init(key_v, *args, **kwargs)  # also sets vsvi.constrain_fn
        state = init_state if init_state is not None else s0
        if not (state.mutable_state and STATE_SITE in state.mutable_state):
            state = state._replace(mutable_state=s0.mutable_state)

    sizes = [num_steps // num_chunks + (i < num_steps % num_chunks) for i in range(num_chunks)]
    first_avg = num_chunks - max(1, int(round(average * num_chunks))) if average > 0 else num_chunks
    zero = jax.tree.map(jnp.zeros_like, vsvi.optim.get_params(state.optim_state))
    total, count = zero, 0
    losses, reps, done = [], [], 0
    for i, n in enumerate(sizes):
        def make_chunk(args, kwargs, n=n):
            def chunk(s, t):
                def body(carry, _):
                    s, total = carry
                    s, val = vsvi.update(s, *args, **kwargs)
                    total = jax.tree.map(jnp.add, total, vsvi.optim.get_params(s.optim_state))
                    return (s, total), (val, report(s))

                return lax.scan(body, (s, t), None, length=n)

            return chunk

        program = data_program("vcd_chunk", svi.model, args, kwargs, settings + (n,), make_chunk)
        (state, chunk_total), (ls, rp) = program(state, zero)
        if i >= first_avg:
            total, count = jax.tree.map(jnp.add, total, chunk_total), count + n
        losses.append(ls)
        reps.append(rp)
        if check:
            why = _diverged(vsvi.get_params(state), ls, rp, elbo_ref)
            if why:
                raise VCDDivergence(
                    f"VCD diverged in steps {done}-{done + n} (after {num_warmup} ELBO warm-up steps): {why}. "
                    "Try more warm-up steps (num_warmup), a smaller optimiser step size, more particles "
                    "(VCD(num_particles=...)) or a smaller HMC step size (VCD(step_size=...)); "
                    "fit(..., check=False) returns the run anyway."
                )
        done += n
    if count:
        params = vsvi.constrain_fn(jax.tree.map(lambda a: a / count, total))
    else:
        params = vsvi.get_params(state)
    losses = jnp.concatenate(losses)
    rep = VCDReport(*[jnp.concatenate([getattr(r, f) for r in reps]) for f in VCDReport._fields])
    return VCDRun(params, state, losses, rep, warm_losses, vsvi, args, kwargs)


def _diverged(params, losses, rep, elbo_ref):
    """Why a chunk counts as diverged ('' if it does not).

    Non-finite parameters or objective; or the chunk's mean ELBO below the warm-up ELBO by more
    than max(50, 10 × warm-up ELBO sd, 0.5 |warm-up ELBO|) nats (VCD widens q, so its ELBO sits
    somewhat below the ELBO optimum by design; a collapse by this much means a runaway fit).
    """
    leaves = jax.tree.leaves(params)
    if not all(bool(np.all(np.isfinite(np.asarray(v)))) for v in leaves):
        return "parameters became non-finite"
    if not bool(np.all(np.isfinite(np.asarray(losses)))):
        return "the objective became non-finite"
    if elbo_ref is not None:
        m, s = elbo_ref
        e = float(np.mean(np.asarray(rep.elbo)))
        drop = max(50.0, 10.0 * s, 0.5 * abs(m))
        if e < m - drop:
            return f"its mean ELBO {e:.4g} fell below the warm-up ELBO {m:.4g} by more than {drop:.3g}"
    return ""


# ----------------------------------------------------------------------------------------
# the guide wrapper (diagnostics only)
# ----------------------------------------------------------------------------------------
class _StatefulGuide:
    """A guide that also declares VCD's mutable report site (so SVI keeps the last step's report)."""

    def __init__(self, guide, loss):
        self.guide = guide
        self._loss = loss

    def __call__(self, *args, **kwargs):
        out = self.guide(*args, **kwargs)
        numpyro_mutable(STATE_SITE, self._loss._init_state(1))
        return out

    def __getattr__(self, name):
        # AutoGuide methods (median, quantiles, sample_posterior, ...) keep working on the wrapper
        return getattr(self.guide, name)

    def __repr__(self) -> str:
        return f"VCD-reporting({self.guide!r})"


# ----------------------------------------------------------------------------------------
# the objective
# ----------------------------------------------------------------------------------------
class VCD(ELBO):
    """Variational contrastive divergence as a ``numpyro.infer.ELBO`` (minimised by ``SVI``).

        L_VCD(θ) = E_{q^(t)}[f_θ(z_t)] − E_{q_θ}[f_θ(z0)],  f_θ(z) = log p(x, z) − log q_θ(z)

    (Ruiz & Titsias 2019, eq. 9; gradient estimator eq. 12 with leave-one-out baselines across
    particles). Works with the plain idiom ``SVI(model, guide, optim, loss=VCD())``: the HMC mass
    and step size come from the current guide and the baseline from the current particles (see
    the module docstring), so no state has to survive between steps. :func:`fit` adds the ELBO
    warm-up, the divergence check and per-step diagnostics.

    Args:
        num_mcmc_steps: t ≥ 0 MCMC steps from z0 ~ q (t = 0 gives the zero objective).
        kernel: ``"hmc"`` (built in), or a function ``(rng_key, z, potential_fn) -> z`` acting on
            the flat unconstrained latent vector z (D,) that leaves exp(−potential_fn) invariant.
        num_leapfrog: leapfrog steps per HMC step (the authors use 5).
        step_size: HMC step size in the guide-preconditioned coordinates; ε = step_size · D^(−1/4)
            (default 0.5; when q matches p there, the target is close to N(0, I)).
        num_particles: independent (z0, z_t) pairs per step (≥ 2 for the leave-one-out control
            variate; default 8).
        mass: ``"guide"`` (precondition HMC by the guide's scale, see the module docstring) or
            ``"identity"`` (unit mass; ``step_size`` then is ε · D^(1/4) in the model's
            unconstrained coordinates).
        control_variate: use leave-one-out baselines (else b = 0).
        advantage_clip: clip f(z_t) − b to this many median absolute advantages (``None``: no clip).
        curvature_limit: cap ε at curvature_limit / √λ_max, λ_max the largest curvature of the target in
            the preconditioned coordinates at an independent draw from q (10 power iterations);
            leapfrog is unstable beyond 2. ``None``: no cap.
        regression: also regress f(z_t) on f(z0) across the other particles (leave-one-out
            coefficient c ∈ [0, 1]) and give c ∇E_q[f(z0)] back by reparameterisation; this cuts the
            score-term noise when z_t is still correlated with z0 (few or short HMC moves).
        per_datapoint: ``None`` (auto: per-datapoint HMC and baselines when every site lies in
            one plate), ``True`` (require it) or ``False`` (one joint chain).

    Example:
        >>> import jax, numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import SVI
        >>> from numpyro.infer.autoguide import AutoDiagonalNormal
        >>> from genbayes.vcd import VCD
        >>> def model():
        ...     numpyro.sample("z", dist.MultivariateNormal(0., jnp.array([[1., .9], [.9, 1.]])))
        >>> svi = SVI(model, AutoDiagonalNormal(model), numpyro.optim.Adam(0.02), loss=VCD(num_mcmc_steps=2))
        >>> svi.run(jax.random.key(0), 20, progress_bar=False).losses.shape
        (20,)
    """

    can_infer_discrete = False

    def __init__(
        self,
        num_mcmc_steps: int = 3,
        kernel: str | Callable = "hmc",
        num_leapfrog: int = 5,
        step_size: float = 0.5,
        num_particles: int = 8,
        mass: str = "guide",
        control_variate: bool = True,
        advantage_clip: float | None = 10.0,
        curvature_limit: float | None = 1.0,
        regression: bool = True,
        per_datapoint: bool | None = None,
    ):
        if isinstance(num_mcmc_steps, bool) or not isinstance(num_mcmc_steps, (int, np.integer)):
            raise TypeError(f"`num_mcmc_steps` must be an int >= 0, got {num_mcmc_steps!r}.")
        if num_mcmc_steps < 0:
            raise ValueError(f"`num_mcmc_steps` must be >= 0 (t = 0 is the zero objective), got {num_mcmc_steps}.")
        if not (kernel == "hmc" or callable(kernel)):
            raise ValueError(
                f"`kernel` must be 'hmc' or a function (rng_key, z, potential_fn) -> z, got {kernel!r}."
            )
        if isinstance(num_leapfrog, bool) or not isinstance(num_leapfrog, (int, np.integer)) or num_leapfrog < 1:
            raise ValueError(f"`num_leapfrog` must be a positive integer, got {num_leapfrog!r}.")
        if not (isinstance(step_size, (int, float, np.floating)) and math.isfinite(step_size) and step_size > 0):
            raise ValueError(f"`step_size` must be a finite number > 0, got {step_size!r}.")
        if isinstance(num_particles, bool) or not isinstance(num_particles, (int, np.integer)) or num_particles < 1:
            raise ValueError(f"`num_particles` must be a positive integer, got {num_particles!r}.")
        if mass not in ("guide", "identity"):
            raise ValueError(f"`mass` must be 'guide' or 'identity', got {mass!r}.")
        if advantage_clip is not None and not (float(advantage_clip) > 1.0):
            raise ValueError(f"`advantage_clip` must be None or a number > 1, got {advantage_clip!r}.")
        super().__init__(num_particles=int(num_particles))
        self.num_mcmc_steps = int(num_mcmc_steps)
        self.kernel = kernel
        self.num_leapfrog = int(num_leapfrog)
        self.step_size = float(step_size)
        self.mass = mass
        self.control_variate = bool(control_variate)
        self.advantage_clip = None if advantage_clip is None else float(advantage_clip)
        if curvature_limit is not None and not (0.0 < float(curvature_limit) < 2.0):
            raise ValueError(f"`curvature_limit` must be None or in (0, 2) (leapfrog stability), got {curvature_limit!r}.")
        self.curvature_limit = None if curvature_limit is None else float(curvature_limit)
        self.regression = bool(regression)
        self.per_datapoint = per_datapoint

    def __repr__(self) -> str:
        k = "hmc" if self.kernel == "hmc" else getattr(self.kernel, "__name__", "user kernel")
        return (
            f"VCD(num_mcmc_steps={self.num_mcmc_steps}, kernel={k}, num_leapfrog={self.num_leapfrog}, "
            f"step_size={self.step_size}, mass={self.mass!r}, num_particles={self.num_particles}, "
            f"control_variate={self.control_variate}, advantage_clip={self.advantage_clip})"
        )

    # -- diagnostics site ---------------------------------------------------------------
    def wrap_guide(self, guide) -> _StatefulGuide:
        """Return ``guide`` with a mutable site that keeps the last step's :class:`VCDReport`.

        Diagnostics only: the fit is the same with and without the wrapper (the VCD gradient of
        Ruiz & Titsias 2019, eq. 12, needs no state here). AutoGuide methods (``median``,
        ``sample_posterior``, ...) remain available on the wrapper.

        Example:
            >>> import jax, numpyro, numpyro.distributions as dist
            >>> from numpyro.infer import SVI
            >>> from numpyro.infer.autoguide import AutoNormal
            >>> def model():
            ...     numpyro.sample("z", dist.Normal(0.0, 1.0))
            >>> loss = VCD(num_mcmc_steps=1)
            >>> svi = SVI(model, loss.wrap_guide(AutoNormal(model)), numpyro.optim.Adam(0.05), loss=loss)
            >>> STATE_SITE in svi.init(jax.random.key(0)).mutable_state
            True
        """
        if not callable(guide):
            raise TypeError(f"`guide` must be a callable NumPyro guide, got {type(guide).__name__}.")
        if isinstance(guide, _StatefulGuide):
            return guide
        return _StatefulGuide(guide, self)

    def _init_state(self, n: int = 1) -> dict:
        f = jnp.result_type(float)
        nan = jnp.array(jnp.nan, f)
        return {"vcd": nan, "elbo": nan, "accept": nan, "step_size": nan}

    # -- the loss -----------------------------------------------------------------------
    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        param_map = dict(param_map)
        state = param_map.pop(STATE_SITE, None)
        inner_guide = guide.guide if isinstance(guide, _StatefulGuide) else guide
        out = self._estimate(rng_key, param_map, model, inner_guide, args, kwargs, self.num_particles)
        if state is None:
            return {"loss": out["surrogate"], "mutable_state": None}
        new = dict(jax.lax.stop_gradient(state))
        new.update(vcd=out["vcd"], elbo=out["elbo"], accept=out["accept"], step_size=out["step_size"])
        return {"loss": out["surrogate"], "mutable_state": {STATE_SITE: new}}

    def loss(self, rng_key, param_map, model, guide, *args, **kwargs):
        return self.loss_with_mutable_state(rng_key, param_map, model, guide, *args, **kwargs)["loss"]

    def draw(self, rng_key, params, model, guide, num_samples: int, *args, **kwargs):
        """``num_samples`` pairs (z0 ~ q_θ, z_t after the t MCMC steps), constrained, per latent site.

        z_t ~ q^(t), the MCMC-improved distribution of Ruiz & Titsias (2019, eq. 7).

        Example:
            >>> import jax, numpyro, numpyro.distributions as dist
            >>> from numpyro.infer.autoguide import AutoNormal
            >>> def model():
            ...     numpyro.sample("z", dist.Normal(0.0, 1.0))
            >>> g = AutoNormal(model)
            >>> p = {"z_auto_loc": jax.numpy.array(0.0), "z_auto_scale": jax.numpy.array(0.3)}
            >>> z0, zt, acc = VCD(num_mcmc_steps=5).draw(jax.random.key(0), p, model, g, 2000)
            >>> bool(zt["z"].std() > z0["z"].std() + 0.3)   # HMC widens the too-narrow q toward p
            True

        Returns:
            ``(z0, zt, accept)``: dicts site → array with leading axis ``num_samples``, and the mean
            acceptance rate.
        """
        inner = guide.guide if isinstance(guide, _StatefulGuide) else guide
        params = {k: v for k, v in params.items() if k != STATE_SITE}
        # unconstrained parameters are what the loss sees inside SVI; `params` here are constrained
        # (svi.get_params), which substitute accepts as they are
        out = self._estimate(rng_key, params, model, inner, args, kwargs, int(num_samples), keep=True)
        return out["z0"], out["zt"], out["accept"]

    # -- the estimator ------------------------------------------------------------------
    def _estimate(self, rng_key, param_map, model, guide, args, kwargs, K, keep=False):
        sg = jax.lax.stop_gradient
        params_sg = sg(param_map)
        k_ref, k_model, k_particles = jax.random.split(rng_key, 3)

        # structure from one reference trace (an independent draw from q)
        tr_g = trace(seed(substitute(guide, data=params_sg), k_ref)).get_trace(*args, **kwargs)
        for name, s in tr_g.items():
            if s["type"] == "sample" and not s["is_observed"]:
                if s["fn"].support.is_discrete:
                    raise ValueError(f"VCD needs continuous latents; guide site {name!r} is discrete.")
                if not s["fn"].has_rsample:
                    raise ValueError(
                        f"Guide site {name!r} ({type(s['fn']).__name__}) is not reparameterisable; VCD's first term "
                        "needs reparameterised samples. Use a distribution with rsample (e.g. Normal) in the guide."
                    )
        tr_m = trace(replay(seed(substitute(model, data=params_sg), k_model), tr_g)).get_trace(*args, **kwargs)
        latents = [n for n, s in tr_m.items() if s["type"] == "sample" and not s["is_observed"]]
        if not latents:
            raise ValueError("The model has no latent sample sites; there is nothing for VCD to fit.")
        for n in latents:
            if tr_m[n]["fn"].support.is_discrete:
                raise ValueError(f"VCD needs continuous latents; model site {n!r} is discrete.")
            if n not in tr_g:
                raise ValueError(f"Model latent site {n!r} is missing from the guide.")
        plates = {n: s["value"] for n, s in tr_m.items() if s["type"] == "plate"}
        transforms = {n: biject_to(tr_m[n]["fn"].support) for n in latents}
        u_ref = {n: transforms[n].inv(tr_m[n]["value"]) for n in latents}

        plate = self._local_plate(tr_m, tr_g)
        self._last_local = plate is not None
        if plate is not None:
            B = int(np.shape(plates[plate])[0]) if plate in plates else int(tr_m[plate]["args"][0])
            frame_dim = {n: next(f.dim for f in tr_m[n]["cond_indep_stack"] if f.name == plate) for n in latents}
        else:
            B, frame_dim = 1, {}
        shapes = {n: jnp.shape(u_ref[n]) for n in latents}

        def axis_of(n):
            return len(shapes[n]) - transforms[n].domain.event_dim + frame_dim[n]

        def flatten(u):
            if plate is None:
                return jnp.concatenate([jnp.reshape(u[n], (1, -1)) for n in latents], axis=1)
            return jnp.concatenate([jnp.reshape(jnp.moveaxis(u[n], axis_of(n), 0), (B, -1)) for n in latents], axis=1)

        def unflatten(Z):
            out, pos = {}, 0
            for n in latents:
                size = int(np.prod(shapes[n])) // B
                piece = Z[:, pos : pos + size]
                pos += size
                if plate is None:
                    out[n] = jnp.reshape(piece, shapes[n])
                else:
                    a = axis_of(n)
                    moved = (shapes[n][a],) + tuple(s for i, s in enumerate(shapes[n]) if i != a)
                    out[n] = jnp.moveaxis(jnp.reshape(piece, moved), 0, a)
            return out

        D = int(flatten(u_ref).shape[1])
        reduce = lambda lp, site: _index_sum(lp, site, plate, B)  # noqa: E731
        ftype = jnp.result_type(float)

        def model_logp(z, params, scaled, with_jac_u=None):
            tr = trace(substitute(seed(model, k_model), data={**params, **plates, **z})).get_trace(*args, **kwargs)
            total = jnp.zeros((B,), ftype)
            for n, s in tr.items():
                if s["type"] != "sample":
                    continue
                lp = _site_log_prob(s)
                if s["scale"] is not None and (scaled or plate is None):
                    lp = lp * s["scale"]
                if not scaled and plate is not None and s["scale"] is not None:
                    # per-datapoint HMC targets p(x_i, z_i): remove only the subsampling factor n/B
                    lp = lp * (s["scale"] / _subsample_scale(tr_m, plate))
                total = total + reduce(lp, s)
            if with_jac_u is not None:
                total = total + log_jac(with_jac_u, z, scaled=plate is None)
            return total

        def log_jac(u, z, scaled):
            total = jnp.zeros((B,), ftype)
            for n in latents:
                ldj = transforms[n].log_abs_det_jacobian(u[n], z[n])
                ldj = sum_rightmost(ldj, jnp.ndim(ldj) - jnp.ndim(z[n]) + tr_m[n]["fn"].event_dim)
                if scaled and tr_m[n]["scale"] is not None:
                    ldj = ldj * tr_m[n]["scale"]
                total = total + reduce(ldj, tr_m[n])
            return total

        def guide_logq(z, u, params, key):
            data = {**params, **plates, **_guide_values(guide, z, u, latents)}
            tr = trace(substitute(seed(guide, key), data=data)).get_trace(*args, **kwargs)
            scaled = jnp.zeros((B,), ftype)
            unscaled = jnp.zeros((B,), ftype)
            for n, s in tr.items():
                if s["type"] != "sample" or s["is_observed"]:
                    continue
                lp = _site_log_prob(s)
                unscaled = unscaled + reduce(lp, s)
                scaled = scaled + reduce(lp * s["scale"] if s["scale"] is not None else lp, s)
            return scaled, unscaled

        def potential(Z):
            u = unflatten(Z)
            z = {n: transforms[n](u[n]) for n in latents}
            return -model_logp(z, params_sg, scaled=False, with_jac_u=u)

        # -- the preconditioner: u = S x per row (held constant in the gradient) --
        if self.kernel == "hmc" and self.mass == "guide" and self.num_mcmc_steps > 0:
            def logq_u(Z):  # log density of the guide in the model's unconstrained coordinates, (B,)
                u = unflatten(Z)
                z = {n: transforms[n](u[n]) for n in latents}
                return guide_logq(z, u, params_sg, k_ref)[1] + log_jac(u, z, scaled=False)

            kind, S = _guide_preconditioner(guide, params_sg, latents, shapes, B, D, flatten, logq_u,
                                            sg(flatten(u_ref)), plate)
        else:
            kind, S = "diag", jnp.ones((B, D), ftype)
        if kind == "diag":
            to_z = lambda X: X * S  # noqa: E731
            to_x = lambda Z: Z / S  # noqa: E731
        else:
            S_inv = jnp.linalg.inv(S)
            to_z = lambda X: jnp.einsum("bij,bj->bi", S, X)  # noqa: E731
            to_x = lambda Z: jnp.einsum("bij,bj->bi", S_inv, Z)  # noqa: E731
        eps = jnp.full((B, 1), self.step_size * D ** -0.25, ftype)
        if self.kernel == "hmc" and self.num_mcmc_steps > 0 and self.curvature_limit is not None:
            # leapfrog is unstable for ε √λ_max > 2 (λ_max: largest curvature of the target in x);
            # estimate λ_max per row by power iteration at the independent reference draw
            lam = _max_curvature(lambda X: jnp.sum(potential(to_z(X))), sg(to_x(flatten(u_ref))), k_ref)
            eps = jnp.minimum(eps, (self.curvature_limit / jnp.sqrt(lam))[:, None])
            eps = sg(jnp.where(jnp.isfinite(eps), eps, self.step_size * D ** -0.25))

        def particle(key):
            k_guide, k_mcmc = jax.random.split(key)
            # the reference trace's plate values (minibatch indices) are shared by every particle, so the
            # particles see the same datapoints (and the per-datapoint baselines compare like with like)
            tr_gk = trace(seed(substitute(guide, data={**param_map, **plates}), k_guide)).get_trace(*args, **kwargs)
            z0 = {n: tr_gk[n]["value"] for n in latents}  # live in θ (reparameterised)
            u0 = {n: transforms[n].inv(sg(z0[n])) for n in latents}
            Z0 = sg(flatten(u0))
            t = self.num_mcmc_steps
            if t == 0:
                Zt, accept = Z0, jnp.array(jnp.nan, Z0.dtype)
            elif self.kernel == "hmc":
                Xt, accept = _hmc(k_mcmc, to_x(Z0), lambda X: potential(to_z(X)), eps, t, self.num_leapfrog)
                Zt = to_z(Xt)
            else:
                if plate is not None and self.per_datapoint:
                    raise ValueError("per_datapoint=True needs the built-in 'hmc' kernel; user kernels act on the joint z.")
                pot1 = lambda z: potential(z[None])[0]  # noqa: E731
                Zt, accept = _user_chain(self.kernel, k_mcmc, Z0[0], pot1, t)[None], jnp.array(jnp.nan, Z0.dtype)
            Zt = sg(Zt)
            ut, u0s = unflatten(Zt), unflatten(Z0)
            zt = {n: transforms[n](ut[n]) for n in latents}
            z0s = {n: transforms[n](u0s[n]) for n in latents}
            logp_t = model_logp(zt, param_map, scaled=True)  # live in φ
            logq_t, _ = guide_logq(zt, ut, param_map, k_guide)  # live in θ
            logp_0v = model_logp(z0s, params_sg, scaled=True)
            logq_0v, logq_0_unscaled = guide_logq(z0s, u0s, param_map, k_guide)  # live in θ (score term)
            # f(z0) with the reparameterised path: model at the live z0 with φ frozen, guide from its own trace
            logp_0 = model_logp(z0, params_sg, scaled=True)
            logq_0 = jnp.zeros((B,), ftype)
            for n, s in tr_gk.items():
                if s["type"] == "sample" and not s["is_observed"]:
                    lp = _site_log_prob(s)
                    logq_0 = logq_0 + reduce(lp * s["scale"] if s["scale"] is not None else lp, s)
            # g(z0) = f(z0) with θ frozen in log q, along the reparameterised path (for the c f(z0) control variate)
            u0_live = {n: transforms[n].inv(z0[n]) for n in latents}
            g_0 = logp_0 - guide_logq(z0, u0_live, params_sg, k_guide)[0]
            res = {
                "g_0": g_0,
                "f_t": sg(logp_t - logq_t), "f_0v": sg(logp_0v - logq_0v), "score": logq_0_unscaled,
                "f_0": logp_0 - logq_0, "logq_t": logq_t, "logp_t": logp_t, "accept": accept,
            }
            if keep:
                res["z0"], res["zt"] = z0s, zt
            return res

        keys = jax.random.split(k_particles, K)
        out = jax.vmap(particle)(keys) if K > 1 else jax.tree.map(lambda a: a[None], particle(keys[0]))
        f_t, f_0v = out["f_t"], out["f_0v"]  # (K, B)
        c = jnp.zeros_like(f_t)
        if self.control_variate and K > 1:
            # leave-one-out, per datapoint: baseline b_k and a regression coefficient c_k of f(z_t) on
            # f(z0), both from the other particles (independent of particle k); the c_k f(z0) part of the
            # score term is given back exactly by its reparameterised expectation c_k ∇E_q[g(z0)]
            n = K - 1
            xt = f_t - jnp.mean(f_t, 0, keepdims=True)  # a common shift does not change LOO moments
            x0 = f_0v - jnp.mean(f_0v, 0, keepdims=True)
            mt = (jnp.sum(xt, 0, keepdims=True) - xt) / n
            m0 = (jnp.sum(x0, 0, keepdims=True) - x0) / n
            if K > 2 and self.regression:
                sxy = jnp.sum(xt * x0, 0, keepdims=True) - xt * x0 - n * mt * m0
                sxx = jnp.sum(x0 * x0, 0, keepdims=True) - x0 * x0 - n * m0 * m0
                c = jnp.where(sxx > 0, jnp.clip(sxy / jnp.where(sxx > 0, sxx, 1.0), 0.0, 1.0), 0.0)
            adv = (xt - mt) - c * (x0 - m0)
        else:
            adv = f_t
        if self.advantage_clip is not None and K > 2:
            scale = jnp.median(jnp.abs(adv), axis=0, keepdims=True)
            lim = self.advantage_clip * scale
            adv = jnp.where(scale > 0, jnp.clip(adv, -lim, lim), adv)
        c = sg(c)
        per = (-jnp.sum(out["f_0"], 1) - jnp.sum(out["logq_t"], 1) - jnp.sum(out["logp_t"], 1)
               + jnp.sum(sg(adv) * out["score"], 1) + jnp.sum(c * out["g_0"], 1))
        surrogate = jnp.mean(per)
        vcd = jnp.mean(jnp.sum(f_t, 1) - jnp.sum(out["f_0v"], 1))
        surrogate = sg(vcd) + surrogate - sg(surrogate)
        is_hmc = self.kernel == "hmc" and self.num_mcmc_steps > 0
        res = {
            "surrogate": surrogate,
            "vcd": vcd,
            "elbo": jnp.mean(jnp.sum(out["f_0v"], 1)),
            "accept": jnp.mean(out["accept"]) if is_hmc else jnp.array(jnp.nan, ftype),
            "step_size": jnp.mean(eps) if is_hmc else jnp.array(jnp.nan, ftype),
        }
        if keep:
            res["z0"], res["zt"] = out["z0"], out["zt"]
        return res

    def _local_plate(self, tr_m, tr_g):
        if self.per_datapoint is False or self.kernel != "hmc":
            if self.per_datapoint and self.kernel != "hmc":
                raise ValueError("per_datapoint=True needs the built-in 'hmc' kernel.")
            return None
        sites = [s for s in tr_m.values() if s["type"] == "sample"]
        sites += [s for s in tr_g.values() if s["type"] == "sample" and not s["is_observed"]]
        common = None
        for s in sites:
            names = [f.name for f in s["cond_indep_stack"]]
            common = names if common is None else [c for c in common if c in names]
        plate = common[0] if common else None
        if self.per_datapoint and plate is None:
            raise ValueError(
                "per_datapoint=True needs every model and guide sample site inside one plate (local latents only)."
            )
        return plate


def _guide_preconditioner(guide, params, latents, shapes, B, D, flatten, logq_u, Z_ref, plate):
    """The guide's scale in the model's unconstrained coordinates, per row: ("diag", (B, D)) or ("dense", (B, D, D)).

    AutoDiagonalNormal / AutoNormal: their scales; other AutoContinuous guides: the Cholesky factor
    of their covariance; any other guide with D ≤ 64 per row: the Cholesky factor of the inverse of
    −∇² log q(u) at an independent draw Z_ref (exact for a Gaussian q in u); else the identity.
    Non-finite or non-positive results fall back to the identity.
    """
    ftype = Z_ref.dtype
    if isinstance(guide, AutoContinuous) and plate is None:
        try:
            post = guide.get_posterior(params)
        except (NotImplementedError, AttributeError):
            post = None
        offsets, pos = {}, 0
        for n, v in guide._init_locs.items():
            offsets[n] = pos
            pos += int(np.size(v))
        if post is not None and set(latents) <= set(offsets) and pos == D:
            perm = np.concatenate([offsets[n] + np.arange(int(np.size(guide._init_locs[n]))) for n in latents])
            if isinstance(post, dist.Normal):
                return "diag", _safe_diag(jnp.broadcast_to(post.scale, (D,))[perm][None])
            if hasattr(post, "covariance_matrix"):
                cov = post.covariance_matrix[perm][:, perm]
                return "dense", _safe_dense(jnp.linalg.cholesky(cov)[None], D)
    if isinstance(guide, AutoNormal):
        try:
            s = {n: jnp.asarray(params[f"{n}_{guide.prefix}_scale"]) for n in latents}
            if all(s[n].shape == tuple(shapes[n]) for n in latents):
                return "diag", _safe_diag(flatten(s))
        except KeyError:
            pass
    if D <= _MAX_HESSIAN_DIM:
        grad = jax.grad(lambda Z: jnp.sum(logq_u(Z)))

        def column(e):
            return jax.jvp(grad, (Z_ref,), (jnp.broadcast_to(e, Z_ref.shape),))[1]

        H = jax.vmap(column)(jnp.eye(D, dtype=ftype))  # (D, B, D): H[j, b, i] = ∂²/∂u_i∂u_j of row b
        P = -jnp.transpose(H, (1, 2, 0))
        P = 0.5 * (P + jnp.swapaxes(P, 1, 2))
        cov = jnp.linalg.inv(P)
        return "dense", _safe_dense(jnp.linalg.cholesky(cov), D)
    return "diag", jnp.ones((B, D), ftype)


def _max_curvature(fn, X, key, num_iter=10):
    """Largest |eigenvalue| of the Hessian of ``fn`` (a sum over independent rows) per row of X (B, D), by power iteration."""
    grad = jax.grad(fn)

    def hvp(v):
        return jax.jvp(grad, (X,), (v,))[1]

    def body(_, v):
        w = hvp(v)
        return w / (jnp.linalg.norm(w, axis=1, keepdims=True) + 1e-30)

    v0 = jax.random.normal(key, X.shape, X.dtype)
    v = lax.fori_loop(0, num_iter, body, v0 / jnp.linalg.norm(v0, axis=1, keepdims=True))
    return jnp.abs(jnp.sum(v * hvp(v), axis=1))


def _safe_diag(s):
    ok = jnp.all(jnp.isfinite(s) & (s > 0), axis=-1, keepdims=True)
    return jax.lax.stop_gradient(jnp.where(ok, s, 1.0))


def _safe_dense(L, D):
    ok = jnp.all(jnp.isfinite(L), axis=(-2, -1), keepdims=True) & jnp.all(
        jnp.diagonal(L, axis1=-2, axis2=-1) > 0, axis=-1)[..., None, None]
    return jax.lax.stop_gradient(jnp.where(ok, L, jnp.eye(D, dtype=L.dtype)))


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------
def _site_log_prob(site):
    if site.get("intermediates"):
        return site["fn"].log_prob(site["value"], site["intermediates"])
    return site["fn"].log_prob(site["value"])


def _subsample_scale(tr_m, plate):
    size, sub = tr_m[plate]["args"][0], tr_m[plate]["args"][1]
    return 1.0 if sub is None else size / sub


def _index_sum(lp, site, plate, B):
    """Sum a site's log density over everything but the plate dimension: shape (B,)."""
    lp = jnp.asarray(lp)
    if plate is None:
        return jnp.sum(lp)[None]
    dim = next((f.dim for f in site["cond_indep_stack"] if f.name == plate), None)
    if dim is None:
        raise ValueError(f"Site {site['name']!r} is outside plate {plate!r}; use VCD(per_datapoint=False).")
    if lp.ndim < -dim:
        lp = jnp.reshape(lp, (1,) * (-dim - lp.ndim) + lp.shape)
    lp = jnp.moveaxis(lp, lp.ndim + dim, 0)
    lp = jnp.broadcast_to(lp, (B,) + lp.shape[1:])
    return jnp.sum(jnp.reshape(lp, (B, -1)), axis=1)


def _guide_values(guide, z, u, latents):
    """Values to substitute into ``guide`` so that its model-latent sites take the values z."""
    if isinstance(guide, AutoContinuous):
        flat = jnp.concatenate([jnp.reshape(u[n], (-1,)) for n in guide._init_locs])
        return {f"_{guide.prefix}_latent": flat}
    return dict(z)


def _hmc(key, Z0, potential, eps, num_steps, num_leapfrog, jitter=0.2):
    """``num_steps`` HMC transitions (identity mass) on rows of Z (B, D), each row accepted separately.

    The step size of each transition is eps · U(1 − jitter, 1 + jitter), drawn independently of
    the state (so every transition leaves the target invariant). Returns the final Z and the mean
    Metropolis acceptance probability over rows and steps.
    """

    def u_and_grad(Z):
        u, vjp = jax.vjp(potential, Z)
        return u, vjp(jnp.ones_like(u))[0]

    def leapfrog(Z, p, g, e):
        def body(_, c):
            Z, p, g, _u = c
            p = p - 0.5 * e * g
            Z = Z + e * p
            u, g = u_and_grad(Z)
            p = p - 0.5 * e * g
            return Z, p, g, u

        return lax.fori_loop(0, num_leapfrog, body, (Z, p, g, jnp.zeros(Z.shape[0], Z.dtype)))

    def step(carry, k):
        Z, U, G = carry
        k_p, k_a, k_e = jax.random.split(k, 3)
        e = eps * (1.0 + jitter * (2.0 * jax.random.uniform(k_e, (), Z.dtype) - 1.0))
        p0 = jax.random.normal(k_p, Z.shape, Z.dtype)
        Z1, p1, G1, U1 = leapfrog(Z, p0, G, e)
        dH = (U + 0.5 * jnp.sum(p0**2, 1)) - (U1 + 0.5 * jnp.sum(p1**2, 1))
        ok = jnp.isfinite(dH) & jnp.all(jnp.isfinite(Z1), 1) & jnp.all(jnp.isfinite(G1), 1)
        acc = jnp.where(ok, jnp.exp(jnp.minimum(jnp.where(ok, dH, 0.0), 0.0)), 0.0)
        take = jax.random.uniform(k_a, acc.shape) < acc
        Z = jnp.where(take[:, None], Z1, Z)
        U = jnp.where(take, U1, U)
        G = jnp.where(take[:, None], G1, G)
        return (Z, U, G), jnp.mean(acc)

    U0, G0 = u_and_grad(Z0)
    (Z, _, _), accs = lax.scan(step, (Z0, U0, G0), jax.random.split(key, num_steps))
    return Z, jnp.mean(accs)


def _user_chain(kernel, key, z0, potential_fn, num_steps):
    def step(z, k):
        z_new = kernel(k, z, potential_fn)
        if jnp.shape(z_new) != jnp.shape(z):
            raise ValueError(f"The user kernel returned shape {jnp.shape(z_new)}; it must return z's shape {jnp.shape(z)}.")
        return z_new, None

    z, _ = lax.scan(step, z0, jax.random.split(key, num_steps))
    return z
