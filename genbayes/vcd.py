"""Variational contrastive divergence (VCD): variational inference improved by MCMC, as a NumPyro ELBO.

With q_θ the variational distribution, q^(t) the law of t steps of a p-invariant MCMC kernel
started at z0 ~ q_θ, and f_θ(z) = log p(x, z) − log q_θ(z), Ruiz & Titsias (2019, eq. 7–9):

    L_VCD(θ) = KL(q_θ ‖ p) − KL(q^(t) ‖ p) + KL(q^(t) ‖ q_θ) = E_{q^(t)}[f_θ(z_t)] − E_{q_θ}[f_θ(z0)] ≥ 0,

tractable because the intractable log q^(t) cancels. Its gradient (their eq. 12) is

    ∇_θ L = −∇_θ E_q[f_θ(z0)] − E[∇_θ log q_θ(z_t)] + E[(f_θ(z_t) − b) ∇_θ log q_θ(z0)],

with z_t held constant and b a control-variate baseline (a moving average of f_θ(z_t) from
earlier steps, so it is independent of the current draw and the estimator stays unbiased).
:class:`VCD` builds a surrogate whose value is the VCD estimate and whose gradient is this
estimator, so it plugs into ``numpyro.infer.SVI``. Model parameters φ (for example a VAE
decoder) follow ∇_φ log p_φ(x, z_t): they learn from the MCMC-improved samples.

The MCMC kernel is HMC in the model's unconstrained space (identity mass, ``num_leapfrog``
leapfrog steps), with a step size that adapts across SVI steps by the authors' rule
ε ← ε (1 + κ (acc − target)/target). The step size, the baselines and a per-step report live
in a NumPyro mutable site, which SVI carries in ``SVIState.mutable_state`` from one
``svi.update`` to the next. SVI only creates that state when the guide declares the site, so
wrap the guide once: ``SVI(model, loss.wrap_guide(guide), optim, loss=loss)`` (an unwrapped
guide works too, with a fixed step size, no baseline, and a warning).

Amortised (local) latents: when every sample site of the model and of the guide lies in one
plate (a VAE's ``"data"`` plate, minibatches allowed), the posterior factorises over that
plate, so HMC accepts or rejects each datapoint separately and the baseline is kept per
datapoint (Ruiz & Titsias 2019, §4; a datapoint not seen before uses the running global mean).

Reference: F. J. R. Ruiz and M. K. Titsias (2019), "A Contrastive Divergence for Combining
Variational Inference and MCMC", ICML, eqs. 7–12; authors' MATLAB code
``franrruiz/vcd_divergence``.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpyro.distributions.transforms import biject_to
from numpyro.distributions.util import sum_rightmost
from numpyro.handlers import replay, seed, substitute, trace
from numpyro.infer.autoguide import AutoContinuous
from numpyro.infer.elbo import ELBO
from numpyro.primitives import mutable as numpyro_mutable

__all__ = ["VCD", "VCDReport", "VCDRun", "fit", "report", "STATE_SITE"]

STATE_SITE = "_vcd_state"
"""Name of the NumPyro mutable site holding VCD's state (step size, baselines, last report) in
``SVIState.mutable_state``; :meth:`VCD.wrap_guide` declares it.

    >>> from genbayes.vcd import STATE_SITE
    >>> STATE_SITE
    '_vcd_state'
"""


# ----------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------
class VCDReport(NamedTuple):
    """What one SVI step of VCD saw (arrays, scalars or with a leading step axis).

    ``vcd`` is the single-draw estimate of L_VCD = E_{q^(t)}[f_θ(z_t)] − E_{q_θ}[f_θ(z0)] and
    ``elbo`` that of E_q[f_θ(z0)], f_θ = log p(x, z) − log q_θ(z) (Ruiz & Titsias 2019, eq. 9).

    Example:
        >>> import jax, numpy as np
        >>> r = VCDReport(vcd=jax.numpy.array(0.5), elbo=jax.numpy.array(-3.0),
        ...               accept=jax.numpy.array(0.7), step_size=jax.numpy.array(0.1))
        >>> float(r.vcd), float(r.accept)
        (0.5, 0.699999988079071)

    Attributes:
        vcd: the VCD estimate Σ f(z_t) − Σ f(z0) (≥ 0 in expectation; the value SVI minimises).
        elbo: single-sample ELBO estimate Σ f(z0) at the same draw.
        accept: mean HMC acceptance probability (NaN for a user kernel).
        step_size: HMC step size used in the step (NaN for a user kernel).
    """

    vcd: jax.Array
    elbo: jax.Array
    accept: jax.Array
    step_size: jax.Array

    def __repr__(self) -> str:
        f = lambda a: np.array2string(np.asarray(a), precision=4, threshold=6)  # noqa: E731
        return f"VCDReport(vcd={f(self.vcd)}, elbo={f(self.elbo)}, accept={f(self.accept)}, step_size={f(self.step_size)})"


class VCDRun(NamedTuple):
    """Result of :func:`fit`: final parameters and state, and the per-step report (arrays of length num_steps).

    ``losses`` are the values SVI minimised, i.e. the VCD estimates
    Σ f_θ(z_t) − Σ f_θ(z0) (Ruiz & Titsias 2019, eq. 9); ``report`` holds them with the ELBO,
    acceptance rate and step size of every step.

    Example:
        >>> import jax, numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import SVI
        >>> from numpyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     numpyro.sample("z", dist.Normal(0.0, 1.0))
        >>> loss = VCD(num_mcmc_steps=1, num_leapfrog=2)
        >>> svi = SVI(model, loss.wrap_guide(AutoNormal(model)), numpyro.optim.Adam(0.05), loss=loss)
        >>> run = fit(svi, jax.random.key(0), 20)
        >>> list(run.to_dataframe().columns)
        ['loss', 'vcd', 'elbo', 'accept', 'step_size']
    """

    params: dict
    state: object
    losses: jax.Array
    report: VCDReport

    def __repr__(self) -> str:
        r = self.report
        n = int(np.shape(self.losses)[0])
        tail = lambda a: float(np.nanmean(np.asarray(a)[-max(1, n // 10):]))  # noqa: E731
        return (
            f"VCDRun(num_steps={n}, last-10% means: vcd={tail(r.vcd):.4g}, elbo={tail(r.elbo):.4g}, "
            f"accept={tail(r.accept):.3g}, step_size={tail(r.step_size):.3g})"
        )

    def to_dataframe(self):
        """Per-step table: loss, vcd, elbo, accept, step_size (a pandas DataFrame; see the class example)."""
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
            "This SVI state carries no VCD state: build SVI with `loss.wrap_guide(guide)` as the guide."
        )
    s = ms[STATE_SITE]
    return VCDReport(s["vcd"], s["elbo"], s["accept"], s["last_step_size"])


def fit(svi, rng_key, num_steps: int, *args, init_state=None, **kwargs) -> VCDRun:
    """Run ``num_steps`` SVI steps in one compiled ``lax.scan`` and keep VCD's per-step report.

    Like ``svi.run`` (same arguments), but also returns the VCD estimate, ELBO, acceptance rate
    and step size of every step. The guide must be wrapped with :meth:`VCD.wrap_guide`. Each step
    follows the estimator of Ruiz & Titsias (2019, eq. 12),
    ∇_θ L = −∇_θ E_q[f_θ(z0)] − E[∇_θ log q_θ(z_t)] + E[(f_θ(z_t) − b) ∇_θ log q_θ(z0)].

    Example:
        >>> import jax, numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import SVI
        >>> from numpyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     numpyro.sample("z", dist.Normal(1.0, 0.5))
        >>> loss = VCD(num_mcmc_steps=2, num_leapfrog=3, step_size=0.3)
        >>> svi = SVI(model, loss.wrap_guide(AutoNormal(model)), numpyro.optim.Adam(0.05), loss=loss)
        >>> run = fit(svi, jax.random.key(0), 300)
        >>> abs(float(run.params["z_auto_loc"]) - 1.0) < 0.3
        True

    Returns:
        :class:`VCDRun` with ``params`` (constrained), ``state`` (the final SVIState), ``losses``
        and ``report`` (a :class:`VCDReport` of arrays of length ``num_steps``).
    """
    num_steps = int(num_steps)
    if num_steps < 1:
        raise ValueError(f"`num_steps` must be >= 1, got {num_steps}.")
    state = init_state if init_state is not None else svi.init(rng_key, *args, **kwargs)
    if not (state.mutable_state and STATE_SITE in state.mutable_state):
        raise ValueError("`fit` needs the VCD state: build SVI with `loss.wrap_guide(guide)` as the guide.")

    def body(s, _):
        s, loss = svi.update(s, *args, **kwargs)
        return s, (loss, report(s))

    state, (losses, rep) = jax.jit(lambda s: lax.scan(body, s, None, length=num_steps))(state)
    return VCDRun(svi.get_params(state), state, losses, rep)


# ----------------------------------------------------------------------------------------
# the stateful guide wrapper
# ----------------------------------------------------------------------------------------
class _StatefulGuide:
    """A guide that also declares VCD's mutable state site (so SVI keeps it between steps)."""

    def __init__(self, guide, loss):
        self.guide = guide
        self._loss = loss

    def __call__(self, *args, **kwargs):
        with trace() as tr:
            out = self.guide(*args, **kwargs)
        n = _local_plate_size(tr)
        numpyro_mutable(STATE_SITE, self._loss._init_state(n))
        return out

    def __getattr__(self, name):
        # AutoGuide methods (median, quantiles, sample_posterior, ...) keep working on the wrapper
        return getattr(self.guide, name)

    def __repr__(self) -> str:
        return f"VCD-stateful({self.guide!r})"


def _local_plate_size(guide_trace) -> int:
    latents = [s for s in guide_trace.values() if s["type"] == "sample" and not s["is_observed"]]
    if not latents:
        return 1
    common = None
    for s in latents:
        names = {f.name: f.size for f in s["cond_indep_stack"]}
        common = names if common is None else {k: v for k, v in common.items() if k in names}
    if common:
        name = next(iter(common))
        # a frame's size is the subsample size; the plate site's first argument is the full size
        site = guide_trace.get(name)
        return int(site["args"][0]) if site is not None and site["type"] == "plate" else int(common[name])
    return 1


# ----------------------------------------------------------------------------------------
# the objective
# ----------------------------------------------------------------------------------------
class VCD(ELBO):
    """Variational contrastive divergence as a ``numpyro.infer.ELBO`` (minimised by ``SVI``).

        L_VCD(θ) = E_{q^(t)}[f_θ(z_t)] − E_{q_θ}[f_θ(z0)],  f_θ(z) = log p(x, z) − log q_θ(z)

    (Ruiz & Titsias 2019, eq. 9; gradient estimator eq. 12 with a control-variate baseline).

    Args:
        num_mcmc_steps: t ≥ 0 MCMC steps from z0 ~ q (t = 0 gives the zero objective).
        kernel: ``"hmc"`` (built in), or a function ``(rng_key, z, potential_fn) -> z`` acting on
            the flat unconstrained latent vector z (D,) that leaves exp(−potential_fn) invariant.
        num_leapfrog: leapfrog steps per HMC step (the authors use 5).
        step_size: initial HMC step size ε > 0.
        target_accept: target acceptance rate in (0, 1) (authors: 0.7 toy, 0.9 VAE).
        adapt_step_size: adapt ε across SVI steps; ``False`` is the fixed-step mode.
        adapt_rate: κ in ε ← ε (1 + κ (acc − target)/target) (authors: 0.01), in (0, 1).
        control_variate: use the moving-average baseline b (else b = 0).
        baseline_decay: decay of the baseline's exponential moving average, in [0, 1) (authors 0.9).
        num_particles: independent (z0, z_t) pairs averaged per step.
        per_datapoint: ``None`` (auto: per-datapoint HMC and baselines when every site lies in
            one plate), ``True`` (require it) or ``False`` (one joint chain).

    Use ``SVI(model, loss.wrap_guide(guide), optim, loss=loss)`` so the step size and baseline
    survive between ``svi.update`` calls; :func:`report` reads the last step's numbers and
    :func:`fit` runs a whole optimisation and keeps them per step.

    Example:
        >>> import jax, numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import SVI
        >>> from numpyro.infer.autoguide import AutoDiagonalNormal
        >>> from genbayes.vcd import VCD, fit
        >>> def model():
        ...     numpyro.sample("z", dist.MultivariateNormal(0., jnp.array([[1., .9], [.9, 1.]])))
        >>> loss = VCD(num_mcmc_steps=1, num_leapfrog=2, step_size=0.3)
        >>> svi = SVI(model, loss.wrap_guide(AutoDiagonalNormal(model)), numpyro.optim.Adam(0.02), loss=loss)
        >>> run = fit(svi, jax.random.key(0), 20)
        >>> run.report.vcd.shape
        (20,)
    """

    can_infer_discrete = False

    def __init__(
        self,
        num_mcmc_steps: int = 3,
        kernel: str | Callable = "hmc",
        num_leapfrog: int = 5,
        step_size: float = 0.1,
        target_accept: float = 0.7,
        adapt_step_size: bool = True,
        adapt_rate: float = 0.01,
        control_variate: bool = True,
        baseline_decay: float = 0.9,
        num_particles: int = 1,
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
        if not (0.0 < float(target_accept) < 1.0):
            raise ValueError(f"`target_accept` must lie in (0, 1), got {target_accept!r}.")
        if not (0.0 < float(adapt_rate) < 1.0):
            raise ValueError(f"`adapt_rate` must lie in (0, 1), got {adapt_rate!r}.")
        if not (0.0 <= float(baseline_decay) < 1.0):
            raise ValueError(f"`baseline_decay` must lie in [0, 1), got {baseline_decay!r}.")
        if isinstance(num_particles, bool) or not isinstance(num_particles, (int, np.integer)) or num_particles < 1:
            raise ValueError(f"`num_particles` must be a positive integer, got {num_particles!r}.")
        super().__init__(num_particles=int(num_particles))
        self.num_mcmc_steps = int(num_mcmc_steps)
        self.kernel = kernel
        self.num_leapfrog = int(num_leapfrog)
        self.step_size = float(step_size)
        self.target_accept = float(target_accept)
        self.adapt_step_size = bool(adapt_step_size)
        self.adapt_rate = float(adapt_rate)
        self.control_variate = bool(control_variate)
        self.baseline_decay = float(baseline_decay)
        self.per_datapoint = per_datapoint

    def __repr__(self) -> str:
        k = "hmc" if self.kernel == "hmc" else getattr(self.kernel, "__name__", "user kernel")
        return (
            f"VCD(num_mcmc_steps={self.num_mcmc_steps}, kernel={k}, num_leapfrog={self.num_leapfrog}, "
            f"step_size={self.step_size}, target_accept={self.target_accept}, adapt={self.adapt_step_size}, "
            f"control_variate={self.control_variate}, num_particles={self.num_particles})"
        )

    # -- state --------------------------------------------------------------------------
    def wrap_guide(self, guide) -> _StatefulGuide:
        """Return ``guide`` with VCD's mutable state site added (step size, baselines, report).

        The state holds the HMC step size ε (adapted by ε ← ε (1 + κ (acc − target)/target)) and
        the moving-average baselines b of eq. 12 (Ruiz & Titsias 2019). AutoGuide methods
        (``median``, ``sample_posterior``, ...) remain available on the wrapper.

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
        return _StatefulGuide(guide, self)

    def _init_state(self, n: int) -> dict:
        f = jnp.result_type(float)
        nan = jnp.array(jnp.nan, f)
        return {
            "step_size": jnp.array(self.step_size, f),
            "last_step_size": nan,
            "baseline": jnp.zeros((n,), f),
            "seen": jnp.zeros((n,), bool),
            "baseline_global": jnp.zeros((), f),
            "count": jnp.zeros((), jnp.int32),
            "vcd": nan,
            "elbo": nan,
            "accept": nan,
        }

    # -- the loss -----------------------------------------------------------------------
    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        param_map = dict(param_map)
        state = param_map.pop(STATE_SITE, None)
        inner_guide = guide.guide if isinstance(guide, _StatefulGuide) else guide
        if state is None:
            if self.adapt_step_size or self.control_variate:
                warnings.warn(
                    "VCD: the guide carries no VCD state, so the HMC step size stays fixed and the control "
                    "variate is off. Build SVI with `loss.wrap_guide(guide)` as the guide to keep them.",
                    stacklevel=2,
                )
            state = self._init_state(1)
            stateful = False
        else:
            state = jax.lax.stop_gradient(state)
            stateful = True
        state = dict(state)
        state["baseline"] = jnp.asarray(state["baseline"])
        eps = state["step_size"]

        keys = jax.random.split(rng_key, self.num_particles)
        particle = lambda k: self._particle(k, param_map, state, stateful, eps, model, inner_guide, args, kwargs)  # noqa: E731
        if self.num_particles == 1:
            out = jax.tree.map(lambda a: a[None], particle(keys[0]))
        else:
            out = jax.vmap(particle)(keys)
        surrogate = jnp.mean(out["surrogate"])
        if not stateful:
            return {"loss": surrogate, "mutable_state": None}

        accept = jnp.mean(out["accept"])
        new = dict(state)
        new["last_step_size"] = eps if self.kernel == "hmc" else jnp.array(jnp.nan, eps.dtype)
        if self.kernel == "hmc" and self.adapt_step_size and self.num_mcmc_steps > 0:
            factor = 1.0 + self.adapt_rate * (accept - self.target_accept) / self.target_accept
            new["step_size"] = jnp.where(jnp.isfinite(factor), eps * factor, eps * (1.0 - self.adapt_rate))
        f_t = jnp.mean(out["f_t"], axis=0)  # (B,) mean over particles
        idx = out["index"][0]
        d = self.baseline_decay
        count = state["count"] + 1
        g = d * state["baseline_global"] + (1 - d) * jnp.mean(f_t)
        new["baseline_global"] = g
        if self._last_local:
            b_old = state["baseline"][idx]
            seen = state["seen"][idx]
            b_old = jnp.where(seen, b_old, f_t)
            new["baseline"] = state["baseline"].at[idx].set(d * b_old + (1 - d) * f_t)
            new["seen"] = state["seen"].at[idx].set(True)
        else:
            b_old = jnp.where(state["seen"][0], state["baseline"][0], f_t[0])
            new["baseline"] = state["baseline"].at[0].set(d * b_old + (1 - d) * f_t[0])
            new["seen"] = state["seen"].at[0].set(True)
        new["count"] = count
        new["vcd"] = jnp.mean(out["vcd"])
        new["elbo"] = jnp.mean(out["elbo"])
        new["accept"] = accept if self.kernel == "hmc" else jnp.array(jnp.nan, accept.dtype)
        return {"loss": surrogate, "mutable_state": {STATE_SITE: new}}

    def loss(self, rng_key, param_map, model, guide, *args, **kwargs):
        return self.loss_with_mutable_state(rng_key, param_map, model, guide, *args, **kwargs)["loss"]

    # -- one (z0, z_t) pair -------------------------------------------------------------
    def _particle(self, key, param_map, state, stateful, eps, model, guide, args, kwargs):
        k_guide, k_model, k_mcmc = jax.random.split(key, 3)
        sg = jax.lax.stop_gradient
        params_sg = sg(param_map)

        tr_g = trace(seed(substitute(guide, data=param_map), k_guide)).get_trace(*args, **kwargs)
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
        z0 = {n: tr_m[n]["value"] for n in latents}
        u0 = {n: transforms[n].inv(z0[n]) for n in latents}

        plate = self._local_plate(tr_m, tr_g)
        self._last_local = plate is not None
        if plate is not None:
            B = int(np.shape(plates[plate])[0]) if plate in plates else int(tr_m[plate]["args"][0])
            index = plates[plate] if plate in plates else jnp.arange(B)
            if stateful and state["baseline"].shape[0] != int(tr_m[plate]["args"][0]):
                raise ValueError(
                    f"VCD state holds {state['baseline'].shape[0]} baselines but plate {plate!r} has "
                    f"{tr_m[plate]['args'][0]} datapoints; wrap the guide with this loss's wrap_guide."
                )
        else:
            B = 1
            index = jnp.zeros((1,), jnp.int32)
        frame_dim = {}
        if plate is not None:
            for n in latents:
                frame_dim[n] = next(f.dim for f in tr_m[n]["cond_indep_stack"] if f.name == plate)

        # -- flat (B, D) representation of the unconstrained latents --
        shapes = {n: jnp.shape(u0[n]) for n in latents}

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

        reduce = lambda lp, site: _index_sum(lp, site, plate, B)  # noqa: E731

        def model_logp(z, params, scaled, with_jac_u=None):
            tr = trace(substitute(seed(model, k_model), data={**params, **plates, **z})).get_trace(*args, **kwargs)
            total = jnp.zeros((B,), jnp.result_type(float))
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
                for n in latents:
                    t = transforms[n]
                    ldj = t.log_abs_det_jacobian(with_jac_u[n], z[n])
                    ldj = sum_rightmost(ldj, jnp.ndim(ldj) - jnp.ndim(z[n]) + tr_m[n]["fn"].event_dim)
                    if plate is None and tr_m[n]["scale"] is not None:
                        ldj = ldj * tr_m[n]["scale"]
                    total = total + reduce(ldj, tr_m[n])
            return total

        def guide_logq(z, u, params):
            data = {**params, **plates, **_guide_values(guide, z, u, latents)}
            tr = trace(substitute(seed(guide, k_guide), data=data)).get_trace(*args, **kwargs)
            scaled = jnp.zeros((B,), jnp.result_type(float))
            unscaled = jnp.zeros((B,), jnp.result_type(float))
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

        # -- MCMC from stop_gradient(z0) --
        Z0 = sg(flatten(u0))
        t = self.num_mcmc_steps
        if t == 0:
            Zt, accept = Z0, jnp.array(jnp.nan, Z0.dtype)
        elif self.kernel == "hmc":
            Zt, accept = _hmc(k_mcmc, Z0, potential, eps, t, self.num_leapfrog)
        else:
            if plate is not None and self.per_datapoint:
                raise ValueError("per_datapoint=True needs the built-in 'hmc' kernel; user kernels act on the joint z.")
            pot1 = lambda z: potential(z[None])[0]  # noqa: E731
            zt = _user_chain(self.kernel, k_mcmc, Z0[0], pot1, t)
            Zt, accept = zt[None], jnp.array(jnp.nan, Z0.dtype)
        Zt = sg(Zt)
        ut, u0s = unflatten(Zt), unflatten(Z0)
        zt = {n: transforms[n](ut[n]) for n in latents}
        z0s = {n: transforms[n](u0s[n]) for n in latents}

        # -- the terms of the estimator (per index) --
        logp_t = model_logp(zt, param_map, scaled=True)  # live in φ
        logq_t, _ = guide_logq(zt, ut, param_map)  # live in θ
        logp_0v = model_logp(z0s, params_sg, scaled=True)
        logq_0v, logq_0_unscaled = guide_logq(z0s, u0s, param_map)  # live in θ (score term)
        f_t = sg(logp_t - logq_t)
        f_0v = sg(logp_0v - logq_0v)
        # f(z0) with the reparameterised path: model at the live z0 with φ frozen, guide from its own trace
        logp_0 = model_logp(z0, params_sg, scaled=True)
        logq_0 = jnp.zeros((B,), jnp.result_type(float))
        for n, s in tr_g.items():
            if s["type"] == "sample" and not s["is_observed"]:
                lp = _site_log_prob(s)
                logq_0 = logq_0 + reduce(lp * s["scale"] if s["scale"] is not None else lp, s)
        f_0 = logp_0 - logq_0

        if self.control_variate and stateful:
            if plate is not None:
                b_idx = state["baseline"][index]
                seen = state["seen"][index]
                b = jnp.where(seen, b_idx, state["baseline_global"])
                b = jnp.where(state["count"] > 0, b, 0.0)
            else:
                b = jnp.where(state["seen"][0], state["baseline"][0], 0.0) * jnp.ones((B,))
        else:
            b = jnp.zeros((B,))
        vcd = jnp.sum(f_t) - jnp.sum(f_0v)
        surrogate = -jnp.sum(f_0) - jnp.sum(logq_t) - jnp.sum(logp_t) + jnp.sum(sg(f_t - b) * logq_0_unscaled)
        surrogate = sg(vcd) + surrogate - sg(surrogate)
        return {
            "surrogate": surrogate,
            "vcd": vcd,
            "elbo": jnp.sum(f_0v),
            "accept": accept,
            "f_t": f_t,
            "index": index,
        }

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


def _hmc(key, Z0, potential, eps, num_steps, num_leapfrog):
    """``num_steps`` HMC transitions (identity mass) on rows of Z (B, D), each row accepted separately.

    Returns the final Z and the mean Metropolis acceptance probability over rows and steps.
    """

    def u_and_grad(Z):
        u, vjp = jax.vjp(potential, Z)
        return u, vjp(jnp.ones_like(u))[0]

    def leapfrog(Z, p, g):
        def body(_, c):
            Z, p, g, _u = c
            p = p - 0.5 * eps * g
            Z = Z + eps * p
            u, g = u_and_grad(Z)
            p = p - 0.5 * eps * g
            return Z, p, g, u

        return lax.fori_loop(0, num_leapfrog, body, (Z, p, g, jnp.zeros(Z.shape[0], Z.dtype)))

    def step(carry, k):
        Z, U, G = carry
        k_p, k_a = jax.random.split(k)
        p0 = jax.random.normal(k_p, Z.shape, Z.dtype)
        Z1, p1, G1, U1 = leapfrog(Z, p0, G)
        dH = (U + 0.5 * jnp.sum(p0**2, 1)) - (U1 + 0.5 * jnp.sum(p1**2, 1))
        acc = jnp.where(jnp.isfinite(dH), jnp.exp(jnp.minimum(dH, 0.0)), 0.0)
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
