"""β-VAE, InfoMax and β-TCVAE objectives, and honest estimates of the information terms.

With data distribution p_D(x), encoder q_ψ(z|x), aggregate posterior q_ψ(z) = E_{p_D} q_ψ(z|x)
and prior p(z),

    KL[q_ψ(z) ‖ p(z)] = E_{p_D} KL[q_ψ(z|x) ‖ p(z)] − I_q[X; Z].                         (1)

The InfoMax objective KL[q_ψ(z) ‖ p(z)] − λ I_q[X; Z] asks for marginally independent latents
that keep the most information about X. By (1) it equals E KL[q(z|x) ‖ p] − (1 + λ) I_q[X; Z],
and with I_q[X; Z] = H[X] − H[X|Z] and the variational bound H[X|Z] ≤ −E log p_θ(x|z)
(H[X] is a constant), minimising it is minimising (1 + λ)·(−E log p_θ(x|z)) + E KL[q(z|x) ‖ p],
which divided by (1 + λ) is the β-VAE loss with β = 1/(1 + λ) (Higgins et al. 2017). In this
reading 0 < β < 1 (λ > 0) is the range that rewards information.

β-TCVAE (Chen et al. 2018, eq. 2) splits the expected KL further:

    E KL[q(z|x) ‖ p(z)] = I_q[X; Z] + KL[q(z) ‖ Π_j q(z_j)] + Σ_j KL[q(z_j) ‖ p(z_j)],
                          (index-code MI)   (total correlation)   (dimension-wise KL)

This module gives

- ELBO objectives for ``numpyro.infer.SVI``: :class:`BetaELBO`, :class:`InfoMaxELBO`,
  :class:`BetaTCELBO`, :class:`CapacityELBO` (Burgess et al. 2018);
- aggregate-posterior estimators :func:`aggregate_log_density` (``"exact"``, ``"mws"``,
  ``"mss"``) and the MSS weights :func:`mss_log_weights`;
- :func:`decompose`, the decomposition above with Monte Carlo errors, exact over a finite
  data set up to Monte Carlo over z;
- metrics: :func:`rate_distortion` and :func:`mig` (mutual information gap, Chen et al. 2018);
- :func:`encode`, which reads the diagonal-Gaussian encodings of a data set off a guide.

All information quantities are in nats per data point.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import random
from jax.scipy.special import logsumexp
from numpyro import distributions as dist
from numpyro.distributions.kl import kl_divergence
from numpyro.distributions.util import scale_and_mask
from numpyro.handlers import replay, seed, substitute, trace
from numpyro.infer.elbo import ELBO
from numpyro.util import check_model_guide_match

from ._programs import data_program
from ._validation import (check_args_finite, check_nonnegative_scalar, check_positive_scalar, check_real_array,
                          guard_empty_plates, is_concrete)

__all__ = [
    "BetaELBO",
    "InfoMaxELBO",
    "BetaTCELBO",
    "CapacityELBO",
    "capacity_schedule",
    "aggregate_log_density",
    "mss_log_weights",
    "decompose",
    "Decomposition",
    "Estimate",
    "rate_distortion",
    "RateDistortion",
    "mig",
    "MIG",
    "encode",
    "train",
]

_LOG_2PI = math.log(2.0 * math.pi)
_METHODS = ("exact", "mws", "mss")


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _check_sites_arg(latent_sites) -> tuple | None:
    if latent_sites is None:
        return None
    if isinstance(latent_sites, str):
        return (latent_sites,)
    try:
        sites = tuple(latent_sites)
    except TypeError:
        raise TypeError(
            f"`latent_sites` must be None, a site name or a sequence of site names, got {latent_sites!r}."
        ) from None
    if not sites or not all(isinstance(s, str) for s in sites):
        raise TypeError(f"`latent_sites` must be a non-empty sequence of site names (str), got {latent_sites!r}.")
    return sites


def _check_latent_sites_in_trace(sites, model_trace, what="latent_sites") -> None:
    if sites is None:
        return
    latent = [n for n, s in model_trace.items() if s["type"] == "sample" and not s["is_observed"]]
    missing = [s for s in sites if s not in latent]
    if missing:
        raise ValueError(
            f"`{what}` names {missing} that are not latent sample sites of the model; "
            f"the model's latent sites are {latent}."
        )


def _check_dataset_size(dataset_size, batch_size: int, name: str = "dataset_size") -> int:
    if isinstance(dataset_size, bool) or not isinstance(dataset_size, (int, np.integer)):
        raise TypeError(f"`{name}` must be a positive int (the number of data points N), got {dataset_size!r}.")
    if dataset_size < batch_size:
        raise ValueError(
            f"`{name}`={dataset_size} is smaller than the batch size {batch_size}; pass the size N of the "
            "whole data set the minibatch was drawn from (N >= batch size)."
        )
    return int(dataset_size)


# --------------------------------------------------------------------------------------------
# traces and per-site terms
# --------------------------------------------------------------------------------------------


def _get_traces(rng_key, param_map, model, guide, args, kwargs):
    # Same key split and order as numpyro's Trace_ELBO / TraceMeanField_ELBO, so that with the
    # same rng_key our objectives see exactly the same draws (this is what the equality tests use).
    model_seed, guide_seed = random.split(rng_key)
    guide_trace = trace(substitute(seed(guide, guide_seed), data=param_map)).get_trace(*args, **kwargs)
    params = dict(param_map)
    mutable = {n: s["value"] for n, s in guide_trace.items() if s["type"] == "mutable"}
    params.update(mutable)
    model_trace = trace(substitute(replay(seed(model, model_seed), guide_trace), data=params)).get_trace(
        *args, **kwargs
    )
    mutable.update({n: s["value"] for n, s in model_trace.items() if s["type"] == "mutable"})
    check_model_guide_match(model_trace, guide_trace)
    for name, site in guide_trace.items():
        if site["type"] == "sample" and not site["is_observed"] and not site["fn"].has_rsample:
            raise ValueError(
                f"Guide site {name!r} ({type(site['fn']).__name__}) has no reparameterised sampler; "
                "these objectives need reparameterised guides (as numpyro's Trace_ELBO does)."
            )
    return model_trace, guide_trace, mutable


def _log_prob(site):
    if site["intermediates"]:
        lp = site["fn"].log_prob(site["value"], site["intermediates"])
    else:
        lp = site["fn"].log_prob(site["value"])
    return scale_and_mask(lp, site["scale"])


def _kl_site(model_site, guide_site, analytic: bool):
    """Scaled KL[q ‖ p] of one latent site: analytic where numpyro has it, else log q − log p."""
    if analytic:
        try:
            kl = kl_divergence(guide_site["fn"], model_site["fn"])
            return jnp.sum(scale_and_mask(kl, scale=guide_site["scale"]))
        except NotImplementedError:
            pass
    return jnp.sum(_log_prob(guide_site)) - jnp.sum(_log_prob(model_site))


def _aux_guide_terms(model_trace, guide_trace):
    total = jnp.array(0.0)
    for name, site in guide_trace.items():
        if site["type"] == "sample" and name not in model_trace:
            total = total - jnp.sum(_log_prob(site))
    return total


class _ParticleELBO(ELBO):
    """Shared plumbing: average a single-particle ELBO over particles, return −ELBO."""

    def _single_particle(self, rng_key, param_map, model, guide, args, kwargs):  # pragma: no cover
        raise NotImplementedError

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        kwargs = self._pop_kwargs(kwargs)

        def single(key):
            return self._single_particle(key, param_map, model, guide, args, kwargs)

        if self.num_particles == 1:
            elbo, mutable = single(rng_key)
            return {"loss": -elbo, "mutable_state": mutable}
        keys = random.split(rng_key, self.num_particles)
        elbos, mutable = self.vectorize_particles_fn(single, keys)
        if mutable is not None:
            warnings.warn("mutable state is ignored when num_particles > 1.", stacklevel=2)
        return {"loss": -jnp.mean(elbos), "mutable_state": None}

    def _pop_kwargs(self, kwargs):
        return kwargs


class BetaELBO(_ParticleELBO):
    """β-VAE objective: E_q log p(x|z) − β KL[q(z|x) ‖ p(z)] on the chosen latent sites.

    The loss (what SVI minimises) is the negative of

        ELBO_β = E_q[log p(x, w | z)] − β Σ_{s ∈ latent_sites} KL[q(s) ‖ p(s)] − Σ_{s ∉ latent_sites} KL[q(s) ‖ p(s)],

    with the KL analytic where NumPyro registers one (``analytic_kl=True``, as
    ``TraceMeanField_ELBO``) and the single-draw Monte Carlo ``log q − log p`` otherwise. β
    multiplies log p *and* log q of a latent site: scaling only the model's latent site (for
    example with ``numpyro.handlers.scale``) gives β log p − log q, which is not β·KL.

    Reference: Higgins et al. (2017), β-VAE, eq. (4). With ``beta=1`` this is numpyro's
    ``TraceMeanField_ELBO`` (``analytic_kl=True``) or ``Trace_ELBO`` (``analytic_kl=False``),
    draw for draw under the same ``rng_key``.

    Args:
        beta: weight β > 0 on the KL of the latent sites.
        latent_sites: names of the latent sites whose KL β weights (default: all latent sites).
        num_particles: number of Monte Carlo particles averaged.
        analytic_kl: use closed-form KL divergences where available.
        vectorize_particles: as in numpyro's ELBOs.

    Example:
        >>> import jax, numpyro, numpyro.distributions as dist
        >>> from genbayes.infomax import BetaELBO
        >>> def model(x):
        ...     z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        ...     numpyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     numpyro.sample("z", dist.Normal(numpyro.param("m", 0.0), 0.5))
        >>> key, p = jax.random.PRNGKey(0), {"m": 1.0}
        >>> loss = lambda b: BetaELBO(b).loss(key, p, model, guide, 2.0)  # noqa: E731
        >>> round(float(loss(3.0) - loss(1.0)) / 2, 4)  # = KL[N(1, 0.5²) ‖ N(0, 1)] = log 2 + 1.25/2 − 1/2
        0.8181
    """

    def __init__(
        self,
        beta: float = 1.0,
        latent_sites: Sequence[str] | str | None = None,
        num_particles: int = 1,
        *,
        analytic_kl: bool = True,
        vectorize_particles: bool = True,
    ):
        check_positive_scalar(beta, "beta", hint=" β weights the KL term; β = 1 is the ordinary ELBO.")
        self.beta = beta
        self.latent_sites = _check_sites_arg(latent_sites)
        self.analytic_kl = bool(analytic_kl)
        super().__init__(num_particles=num_particles, vectorize_particles=vectorize_particles)

    def _single_particle(self, rng_key, param_map, model, guide, args, kwargs):
        model_trace, guide_trace, mutable = _get_traces(rng_key, param_map, model, guide, args, kwargs)
        _check_latent_sites_in_trace(self.latent_sites, model_trace)
        elbo = jnp.array(0.0)
        for name, ms in model_trace.items():
            if ms["type"] != "sample":
                continue
            if ms["is_observed"]:
                elbo = elbo + jnp.sum(_log_prob(ms))
            else:
                w = self.beta if self.latent_sites is None or name in self.latent_sites else 1.0
                elbo = elbo - w * _kl_site(ms, guide_trace[name], self.analytic_kl)
        elbo = elbo + _aux_guide_terms(model_trace, guide_trace)
        return elbo, (mutable or None)

    def __repr__(self):
        return f"BetaELBO(beta={self.beta}, latent_sites={self.latent_sites}, num_particles={self.num_particles})"


class InfoMaxELBO(BetaELBO):
    """InfoMax objective KL[q(z) ‖ p(z)] − λ I_q[X; Z], trained as β-VAE with β = 1/(1 + λ).

    Derivation (module docstring): KL[q(z)‖p] = E KL[q(z|x)‖p] − I, so the objective is
    E KL[q(z|x)‖p] − (1 + λ) I; with I = H[X] − H[X|Z] and H[X|Z] ≤ −E log p_θ(x|z) its
    upper bound is, up to the constant H[X] and the factor (1 + λ), the β-VAE loss with
    β = 1/(1 + λ). λ > 0 (β < 1) rewards information; −1 < λ < 0 (β > 1) penalises it.

    Reference: Higgins et al. (2017); Zhao, Song & Ermon (2019, InfoVAE) for the InfoMax
    reading. The loss value is that of ``BetaELBO(1/(1+lam))`` (not multiplied back
    by 1 + λ, so losses across λ are on the β-VAE scale).

    Args:
        lam: λ > −1, the weight on the mutual information.
        latent_sites, num_particles: as :class:`BetaELBO`.
        **kw: ``analytic_kl`` and ``vectorize_particles``, as :class:`BetaELBO`.

    Example:
        >>> from genbayes.infomax import InfoMaxELBO
        >>> InfoMaxELBO(lam=1.0).beta
        0.5
    """

    def __init__(self, lam: float = 0.0, latent_sites=None, num_particles: int = 1, **kw):
        if not callable(lam) and is_concrete(lam):
            arr = np.asarray(lam, dtype=float)
            if arr.ndim != 0 or not np.isfinite(arr) or arr <= -1:
                raise ValueError(f"`lam` must be a finite number > -1 (β = 1/(1+λ) > 0), got {lam!r}.")
        self.lam = lam
        super().__init__(1.0 / (1.0 + lam), latent_sites, num_particles, **kw)

    def __repr__(self):
        return f"InfoMaxELBO(lam={self.lam}, beta={self.beta}, num_particles={self.num_particles})"


def capacity_schedule(c_max: float, num_steps: int, c_min: float = 0.0):
    """Linear capacity schedule C(step) from ``c_min`` to ``c_max`` over ``num_steps`` (Burgess et al. 2018).

        C(t) = c_min + (c_max − c_min) · min(t / num_steps, 1)

    Burgess et al. (2018, §5) raise the capacity linearly during training. An
    ``optax.linear_schedule``; any callable ``step -> C`` works with :class:`CapacityELBO`.

    Example:
        >>> from genbayes.infomax import capacity_schedule
        >>> float(capacity_schedule(10.0, 100)(50))
        5.0
    """
    import optax

    check_nonnegative_scalar(c_max, "c_max")
    check_nonnegative_scalar(c_min, "c_min")
    return optax.linear_schedule(c_min, c_max, int(num_steps))


def _num_data_points(model_trace):
    """Data points a batch stands for: leading batch size × plate scale of the first observed site."""
    for site in model_trace.values():
        if site["type"] == "sample" and site["is_observed"]:
            bs = site["fn"].batch_shape
            return (bs[0] if bs else 1) * (1.0 if site["scale"] is None else site["scale"])
    raise ValueError("CapacityELBO needs an observed site to count data points; the model has none.")


class CapacityELBO(BetaELBO):
    """Capacity-controlled β-VAE: E_q log p(x|z) − γ |KL − C| (Burgess et al. 2018, §5).

        ELBO_C = E_q[log p(x|z)] − γ n |KL̄ − C(step)| − (KL of sites not in latent_sites),

    KL̄ the KL of the latent sites per data point (the minibatch mean, as in the paper) and n
    the number of data points the batch stands for (leading batch size of the first observed
    site × its plate scale), so that with
    C = 0 and γ = β this is exactly :class:`BetaELBO`. C in nats per data point.

    ``capacity`` is a number or a callable ``step -> C`` (e.g. :func:`capacity_schedule` or
    any optax schedule). With a callable, pass the step to each update as the keyword
    ``capacity_step`` (it is removed before model and guide are called)::

        state, loss = svi.update(state, x, capacity_step=t)

    Args:
        gamma: γ > 0.
        capacity: C >= 0 or schedule.
        latent_sites, num_particles: as :class:`BetaELBO`.
        **kw: ``analytic_kl`` and ``vectorize_particles``, as :class:`BetaELBO`.

    Example:
        >>> from genbayes.infomax import CapacityELBO, capacity_schedule
        >>> CapacityELBO(gamma=100.0, capacity=capacity_schedule(25.0, 10_000)).gamma
        100.0
    """

    def __init__(self, gamma: float = 1.0, capacity=0.0, latent_sites=None, num_particles: int = 1, **kw):
        check_positive_scalar(gamma, "gamma")
        if not callable(capacity):  # a schedule step -> C is checked by use
            check_nonnegative_scalar(capacity, "capacity", hint=" Pass a number of nats >= 0 or a callable step -> C.")
        self.gamma = gamma
        self.capacity = capacity
        super().__init__(1.0, latent_sites, num_particles, **kw)

    def _pop_kwargs(self, kwargs):
        kwargs = dict(kwargs)
        step = kwargs.pop("capacity_step", None)
        if callable(self.capacity):
            if step is None:
                raise ValueError(
                    "CapacityELBO has a capacity schedule: pass the step to every update as "
                    "svi.update(state, *args, capacity_step=t)."
                )
            self._c = self.capacity(step)
        else:
            self._c = self.capacity
        return kwargs

    def _single_particle(self, rng_key, param_map, model, guide, args, kwargs):
        model_trace, guide_trace, mutable = _get_traces(rng_key, param_map, model, guide, args, kwargs)
        _check_latent_sites_in_trace(self.latent_sites, model_trace)
        elbo, kl, n = jnp.array(0.0), jnp.array(0.0), None
        for name, ms in model_trace.items():
            if ms["type"] != "sample":
                continue
            if ms["is_observed"]:
                elbo = elbo + jnp.sum(_log_prob(ms))
                continue
            kl_s = _kl_site(ms, guide_trace[name], self.analytic_kl)
            if self.latent_sites is None or name in self.latent_sites:
                kl = kl + kl_s
            else:
                elbo = elbo - kl_s
        n = _num_data_points(model_trace)
        elbo = elbo - self.gamma * n * jnp.abs(kl / n - self._c)
        elbo = elbo + _aux_guide_terms(model_trace, guide_trace)
        return elbo, (mutable or None)

    def __repr__(self):
        return f"CapacityELBO(gamma={self.gamma}, capacity={self.capacity!r}, num_particles={self.num_particles})"


# --------------------------------------------------------------------------------------------
# aggregate-posterior estimators
# --------------------------------------------------------------------------------------------


def _log_normal(z, loc, scale):
    return -0.5 * jnp.square((z - loc) / scale) - jnp.log(scale) - 0.5 * _LOG_2PI


def mss_log_weights(batch_size: int, dataset_size: int, form: str = "stratified"):
    """Log weights log W (B, B) of minibatch stratified sampling (MSS) for log q(z).

    Row i weighs the encodings of the batch when estimating q(z_i) with z_i ~ q(z|x_i):
    q(z_i) ≈ Σ_j W_ij q(z_i|x_j). Every row sums to one and W_ii = 1/N.

    - ``form="stratified"`` (default): W_ij = (N − 1)/(N (B − 1)) for j ≠ i. Unbiased for q(z)
      over minibatches that hold the point's own encoding, and exact when B = N.
    - ``form="paper"`` (Chen et al. 2018, appendix C.2): with M = B − 1, W_{i,(i+1) mod B} =
      (N − M)/(N M), the other entries 1/M. Also unbiased; at B = N off by about 1/N.

    The widely copied reference code fills W with a stride of M + 1 on a B×B matrix, which
    walks down the first column instead of the diagonal; here the diagonal is set explicitly.

    Example:
        >>> import numpy as np
        >>> from genbayes.infomax import mss_log_weights
        >>> W = np.exp(mss_log_weights(4, 10, form="paper"))
        >>> np.allclose(W.sum(1), 1.0), np.allclose(np.diag(W), 0.1)
        (True, True)
    """
    B, N = int(batch_size), int(dataset_size)
    if B < 2:
        raise ValueError(f"MSS needs a batch of at least 2 encodings, got batch_size={B}.")
    N = _check_dataset_size(N, B)
    # built in NumPy from static sizes (cheap, no tracing); float64 then cast by the caller
    eye = np.eye(B, dtype=bool)
    if form == "stratified":
        W = np.where(eye, 1.0 / N, (N - 1) / (N * (B - 1)))
    elif form == "paper":
        M = B - 1
        nxt = np.roll(eye, 1, axis=1)  # (i, i+1 mod B)
        W = np.where(eye, 1.0 / N, np.where(nxt, (N - M) / (N * M), 1.0 / M))
    else:
        raise ValueError(f"`form` must be 'stratified' or 'paper', got {form!r}.")
    return jnp.asarray(np.log(W))


def _check_encodings(loc, scale, z=None):
    """Concrete encoder means and standard deviations (and points z): real, finite, 2-D, not empty."""
    for x, name in ((loc, "loc"), (scale, "scale"), (z, "z")):
        if x is not None:
            check_real_array(x, name, ndim=2)


def _validate_density_args(z, loc, scale, method, dataset_size, chunk_size):
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}, got {method!r}.")
    _check_encodings(loc, scale, z)
    zs, ls, ss = jnp.shape(z), jnp.shape(loc), jnp.shape(scale)
    if len(ls) != 2:
        raise ValueError(f"`loc` must have shape (B, D) (one row per encoding), got {ls}.")
    if ss != ls:
        raise ValueError(f"`scale` must have the shape of `loc` {ls}, got {ss}.")
    if len(zs) != 2 or zs[1] != ls[1]:
        raise ValueError(f"`z` must have shape (M, D) with D = {ls[1]} (the latent dimension of `loc`), got {zs}.")
    if is_concrete(scale) and np.any(~(np.asarray(scale) > 0)):
        raise ValueError("`scale` must be > 0 everywhere (encoder standard deviations).")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}.")
    B = ls[0]
    if method == "exact":
        if dataset_size is not None and dataset_size != B:
            raise ValueError(
                f"method='exact' needs the encodings of the whole data set: `dataset_size`={dataset_size} "
                f"but `loc` holds {B} rows. Pass all N encodings, or use method='mss'/'mws' for a minibatch."
            )
        return B
    if dataset_size is None:
        raise ValueError(f"method={method!r} needs `dataset_size`, the size N of the data set the batch came from.")
    N = _check_dataset_size(dataset_size, B)
    if zs[0] != B:
        raise ValueError(
            f"method={method!r} needs z[i] drawn from the i-th encoding (M = B), got {zs[0]} draws for {B} encodings."
        )
    if method == "mss" and B < 2:
        raise ValueError("method='mss' needs a batch of at least 2 encodings.")
    return N


def aggregate_log_density(
    z,
    loc,
    scale,
    method: str = "exact",
    dataset_size: int | None = None,
    *,
    chunk_size: int = 256,
    marginals: bool = False,
    mss_form: str = "stratified",
):
    """log q(z) of the aggregate posterior q(z) = (1/N) Σ_n N(z; loc_n, diag scale_n²).

    - ``"exact"``: log q(z_m) = logsumexp_n log q(z_m|x_n) − log N over every encoding of a
      finite data set (``loc``, ``scale`` of shape (N, D)). When M N > chunk_size² it is
      computed in blocks of ``chunk_size`` draws × ``chunk_size`` encodings (a running
      log-sum-exp), so peak memory is O(chunk_size² D) whatever M and N.
    - ``"mws"`` (minibatch weighted sampling, Chen et al. 2018, §4.1 and appendix C.1): log q(z_i) ≈
      logsumexp_j log q(z_i|x_j) − log B over a batch of B encodings, z[i] ~ q(z|x_i).
      Normalisation: the published form subtracts log(N B), which is log q(z) − log N at
      B = N (it shifts the total correlation by (D − 1) log N); we subtract log B, so the
      estimate is on the scale of log q(z) and exact at B = N. For B < N it over-weights the
      point's own encoding (1/B instead of 1/N), which biases it upward.
    - ``"mss"`` (minibatch stratified sampling, Chen et al. 2018, appendix C.2): log q(z_i) ≈
      logsumexp_j [log W_ij + log q(z_i|x_j)] with :func:`mss_log_weights` (rows sum to one,
      W_ii = 1/N). The default ``mss_form="stratified"`` is exact at B = N.

    MWS and MSS are one jit-compiled O(B² D) computation.

    Args:
        z: (M, D) points at which to evaluate log q(z); for ``"mws"``/``"mss"`` M = B and z[i]
            a draw from the i-th encoding.
        loc, scale: (B, D) means and standard deviations of the diagonal-Gaussian encodings.
        method: ``"exact"``, ``"mws"`` or ``"mss"``.
        dataset_size: N, the size of the data set (required for ``"mws"``/``"mss"``; for
            ``"exact"`` it must be None or B).
        chunk_size: block size of the exact computation.
        marginals: if True, return the per-dimension marginal log densities log q(z_mj) as
            (M, D) (the same estimator applied to each coordinate) instead of (M,).
        mss_form: ``"stratified"`` or ``"paper"`` (see :func:`mss_log_weights`).

    Returns:
        (M,) array of log q(z_m), or (M, D) with ``marginals=True``.

    Example:
        >>> import jax.numpy as jnp
        >>> from genbayes.infomax import aggregate_log_density
        >>> loc = jnp.zeros((3, 2)); scale = jnp.ones((3, 2))
        >>> lq = aggregate_log_density(jnp.zeros((1, 2)), loc, scale)  # every encoding is N(0, I)
        >>> bool(jnp.allclose(lq, -jnp.log(2 * jnp.pi)))
        True
    """
    N = _validate_density_args(z, loc, scale, method, dataset_size, chunk_size)
    z, loc, scale = jnp.asarray(z), jnp.asarray(loc), jnp.asarray(scale)
    if method == "exact":
        return _exact_log_density(z, loc, scale, int(chunk_size), bool(marginals))
    B = loc.shape[0]
    if method == "mws":
        logw = jnp.full((B, B), -math.log(B), dtype=z.dtype)
    else:
        logw = mss_log_weights(B, N, mss_form).astype(z.dtype)
    return _batch_log_density(z, loc, scale, logw, bool(marginals))


@partial(jax.jit, static_argnames=("marginals",))
def _batch_log_density(z, loc, scale, logw, marginals):
    lp = _log_normal(z[:, None, :], loc[None, :, :], scale[None, :, :])  # (B, B, D)
    if marginals:
        return logsumexp(logw[:, :, None] + lp, axis=1)
    return logsumexp(logw + lp.sum(-1), axis=1)


def _direct_log_density(z, loc, scale, marginals):
    lp = _log_normal(z[:, None, :], loc[None, :, :], scale[None, :, :])  # (M, N, D)
    if not marginals:
        lp = lp.sum(-1)
    return logsumexp(lp, axis=1) - jnp.log(loc.shape[0])


@partial(jax.jit, static_argnames=("chunk", "marginals"))
def _exact_log_density(z, loc, scale, chunk, marginals):
    N, D = loc.shape
    M = z.shape[0]
    if M * N <= chunk * chunk:  # one block within the memory bound (chunk² × D): no loops to compile
        return _direct_log_density(z, loc, scale, marginals)
    c_enc, c_z = min(chunk, N), min(chunk, M)
    pad_n, pad_m = (-N) % c_enc, (-M) % c_z
    # padded encodings are masked out of the log-sum-exp; padded draws are sliced off
    locp = jnp.concatenate([loc, jnp.zeros((pad_n, D), loc.dtype)]).reshape(-1, c_enc, D)
    scalep = jnp.concatenate([scale, jnp.ones((pad_n, D), scale.dtype)]).reshape(-1, c_enc, D)
    validp = (jnp.arange(N + pad_n) < N).reshape(-1, c_enc)
    zp = jnp.concatenate([z, jnp.zeros((pad_m, D), z.dtype)]).reshape(-1, c_z, D)
    out_shape = (c_z, D) if marginals else (c_z,)

    def one_block_of_draws(zb):  # (c_z, D) -> running log-sum-exp over encoding blocks
        def body(acc, blk):
            l, s, v = blk
            lp = _log_normal(zb[:, None, :], l[None], s[None])  # (c_z, c_enc, D): the memory bound
            if not marginals:
                lp = lp.sum(-1)
            mask = v.reshape((1, -1) + (1,) * (lp.ndim - 2))
            return jnp.logaddexp(acc, logsumexp(jnp.where(mask, lp, -jnp.inf), axis=1)), None

        acc, _ = jax.lax.scan(body, jnp.full(out_shape, -jnp.inf, dtype=z.dtype), (locp, scalep, validp))
        return acc

    out = jax.lax.map(one_block_of_draws, zp)
    return out.reshape((-1,) + out_shape[1:])[:M] - jnp.log(N)


# --------------------------------------------------------------------------------------------
# β-TCVAE
# --------------------------------------------------------------------------------------------


def _unwrap_diag_normal(fn, name: str):
    """(loc, scale, n_event) of a diagonal Normal site, through Independent/Expanded wrappers."""
    n_event = len(fn.event_shape)
    base = fn
    while True:
        if isinstance(base, dist.Independent):
            base = base.base_dist
        elif isinstance(base, dist.ExpandedDistribution):
            base = base.base_dist
        else:
            break
    if not isinstance(base, dist.Normal):
        raise ValueError(
            f"Site {name!r} must be a (diagonal) Normal in the guide, e.g. "
            f"dist.Normal(loc, scale).to_event(1); got {type(fn).__name__} of {type(base).__name__}."
        )
    shape = fn.batch_shape + fn.event_shape
    return jnp.broadcast_to(base.loc, shape), jnp.broadcast_to(base.scale, shape), n_event


class BetaTCELBO(_ParticleELBO):
    """β-TCVAE objective (Chen et al. 2018, eq. 4): E log p(x|z) − α I − β TC − γ DWKL.

    Per data point i of a minibatch, with z_i ~ q(z|x_i):

        MI_i   = log q(z_i|x_i) − log q̂(z_i)
        TC_i   = log q̂(z_i) − Σ_j log q̂(z_ij)
        DWKL_i = Σ_j log q̂(z_ij) − log p(z_i)

    with q̂ the minibatch estimate of the aggregate posterior (:func:`aggregate_log_density`,
    ``estimator`` "mss", "mws", or "exact" when the batch is the whole data set). The three
    terms telescope to log q(z_i|x_i) − log p(z_i), so with α = β = γ = 1 the objective is
    the ordinary ELBO whatever the estimator. The prior at ``latent_site`` must factorise over
    the latent dimensions (Σ_j log p(z_ij) = log p(z_i)), the guide must be a diagonal Normal
    with batch shape (B,) and event shape (D,) (z inside the data plate, ``.to_event(1)``).
    Other latent sites enter as in the ordinary ELBO (log p − log q).

    Args:
        alpha, beta, gamma: weights on index-code MI, total correlation, dimension-wise KL (> 0).
        dataset_size: N, the size of the data set the minibatches are drawn from.
        estimator: "mss" (default), "mws" or "exact".
        latent_site: name of the encoded latent site (default "z").
        num_particles, vectorize_particles: as numpyro's ELBOs.
        mss_form: "stratified" (default) or "paper" (:func:`mss_log_weights`).

    Example:
        >>> from genbayes.infomax import BetaTCELBO
        >>> BetaTCELBO(beta=6.0, dataset_size=1797)
        BetaTCELBO(alpha=1.0, beta=6.0, gamma=1.0, dataset_size=1797, estimator='mss')
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 6.0,
        gamma: float = 1.0,
        dataset_size: int | None = None,
        estimator: str = "mss",
        latent_site: str = "z",
        num_particles: int = 1,
        *,
        mss_form: str = "stratified",
        vectorize_particles: bool = True,
    ):
        for v, n in ((alpha, "alpha"), (beta, "beta"), (gamma, "gamma")):
            check_nonnegative_scalar(v, n)
        check_positive_scalar(beta, "beta")
        if estimator not in _METHODS:
            raise ValueError(f"`estimator` must be one of {_METHODS}, got {estimator!r}.")
        if dataset_size is None:
            raise ValueError("`dataset_size` is required: the size N of the data set the minibatches come from.")
        _check_dataset_size(dataset_size, 1)
        if mss_form not in ("stratified", "paper"):
            raise ValueError(f"`mss_form` must be 'stratified' or 'paper', got {mss_form!r}.")
        if not isinstance(latent_site, str):
            raise TypeError(f"`latent_site` must be a site name (str), got {latent_site!r}.")
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.dataset_size = int(dataset_size)
        self.estimator = estimator
        self.latent_site = latent_site
        self.mss_form = mss_form
        super().__init__(num_particles=num_particles, vectorize_particles=vectorize_particles)

    def terms(self, rng_key, param_map, model, guide, *args, **kwargs):
        """Per-data-point (MI_i, TC_i, DWKL_i) arrays of shape (B,) for one draw (for monitoring)."""
        model_trace, guide_trace, _ = _get_traces(rng_key, param_map, model, guide, args, kwargs)
        return self._terms(model_trace, guide_trace)[:3]

    def _terms(self, model_trace, guide_trace):
        name = self.latent_site
        _check_latent_sites_in_trace((name,), model_trace, "latent_site")
        ms, gs = model_trace[name], guide_trace[name]
        loc, scale, n_event = _unwrap_diag_normal(gs["fn"], name)
        z = gs["value"]
        if z.ndim != 2 or n_event != 1:
            raise ValueError(
                f"BetaTCELBO needs site {name!r} with batch shape (B,) and event shape (D,) "
                f"(inside the data plate, .to_event(1)); got value shape {z.shape} with {n_event} event dim(s)."
            )
        pfn = ms["fn"]
        pbase = pfn.base_dist if isinstance(pfn, dist.Independent) else None
        if len(pfn.event_shape) != 1 or pbase is None or pbase.event_shape != ():
            raise ValueError(
                f"BetaTCELBO needs a prior at {name!r} that factorises over dimensions, e.g. "
                f"dist.Normal(0, 1).expand([D]).to_event(1); got {type(pfn).__name__}."
            )
        B = z.shape[0]
        N = _check_dataset_size(self.dataset_size, B)
        method = self.estimator
        if method == "exact" and B != N:
            raise ValueError(f"estimator='exact' needs the whole data set in each batch (B = N = {N}), got B = {B}.")
        kw = dict(method=method, dataset_size=N if method != "exact" else None)
        if method == "mss":
            kw["mss_form"] = self.mss_form
        log_qzx = gs["fn"].log_prob(z)
        log_pz = pfn.log_prob(z)
        log_qz = aggregate_log_density(z, loc, scale, **kw)
        log_qzj = aggregate_log_density(z, loc, scale, marginals=True, **kw).sum(-1)
        return log_qzx - log_qz, log_qz - log_qzj, log_qzj - log_pz, gs["scale"]

    def _single_particle(self, rng_key, param_map, model, guide, args, kwargs):
        model_trace, guide_trace, mutable = _get_traces(rng_key, param_map, model, guide, args, kwargs)
        mi, tc, dw, scale = self._terms(model_trace, guide_trace)
        penalty = self.alpha * mi + self.beta * tc + self.gamma * dw
        elbo = -jnp.sum(scale_and_mask(penalty, scale=scale))
        for name, ms in model_trace.items():
            if ms["type"] != "sample" or name == self.latent_site:
                continue
            if ms["is_observed"]:
                elbo = elbo + jnp.sum(_log_prob(ms))
            else:
                elbo = elbo + jnp.sum(_log_prob(ms)) - jnp.sum(_log_prob(guide_trace[name]))
        elbo = elbo + _aux_guide_terms(model_trace, guide_trace)
        return elbo, (mutable or None)

    def __repr__(self):
        return (
            f"BetaTCELBO(alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, "
            f"dataset_size={self.dataset_size}, estimator={self.estimator!r})"
        )


# --------------------------------------------------------------------------------------------
# decomposition
# --------------------------------------------------------------------------------------------


class Estimate(NamedTuple):
    """A Monte Carlo estimate and its standard error (0 for exact values).

    ``value`` is the sample mean of the per-draw terms and ``se`` its standard error
    σ̂/√(draws) (see :func:`decompose`).

    Example:
        >>> from genbayes.infomax import Estimate
        >>> Estimate(1.25, 0.01)
        1.2500 ± 0.0100
    """

    value: float
    """The estimate."""
    se: float
    """Its standard error."""

    def __repr__(self):
        return f"{self.value:.4f} ± {self.se:.4f}"


@dataclasses.dataclass(frozen=True)
class Decomposition:
    """The information terms of an encoder on a finite data set, in nats per data point.

    expected_kl = mutual_info + aggregate_kl, aggregate_kl = total_correlation + dimensionwise_kl.

    Attributes:
        expected_kl: E_n KL[q(z|x_n) ‖ p(z)] (the rate; analytic, se 0).
        mutual_info: I_q[X; Z] (0 <= I <= log N; its estimate never exceeds log N).
        aggregate_kl: KL[q(z) ‖ p(z)].
        total_correlation: KL[q(z) ‖ Π_j q(z_j)].
        dimensionwise_kl: Σ_j KL[q(z_j) ‖ p(z_j)].
        kl_per_dim: (D,) analytic E_n KL per latent dimension (active units have large values).
        num_data: N.
        num_samples: draws of z per data point for each Monte Carlo term.

    Reference: Hoffman & Johnson (2016) for the first identity, Chen et al. (2018, eq. 2) for the
    second. Built by :func:`decompose`.

    Example:
        >>> import numpy as np
        >>> from genbayes.infomax import Decomposition, Estimate
        >>> d = Decomposition(Estimate(3.0, 0.0), Estimate(1.0, 0.1), Estimate(2.0, 0.1), Estimate(0.5, 0.05),
        ...                   Estimate(1.5, 0.05), np.array([2.0, 1.0]), num_data=10, num_samples=4)
        >>> d.identity_gap().value  # E KL − I − KL[q(z)‖p]
        0.0
    """

    expected_kl: Estimate
    mutual_info: Estimate
    aggregate_kl: Estimate
    total_correlation: Estimate
    dimensionwise_kl: Estimate
    kl_per_dim: np.ndarray
    num_data: int
    num_samples: int

    @property
    def log_num_data(self) -> float:
        """log N, the upper bound of the mutual information on N data points."""
        return math.log(self.num_data)

    def identity_gap(self) -> Estimate:
        """expected_kl − mutual_info − aggregate_kl, with its standard error (should be ≈ 0)."""
        g = self.expected_kl.value - self.mutual_info.value - self.aggregate_kl.value
        se = math.sqrt(self.expected_kl.se**2 + self.mutual_info.se**2 + self.aggregate_kl.se**2)
        return Estimate(g, se)

    def to_dataframe(self):
        """The five information terms as a pandas DataFrame (columns term, value, se)."""
        import pandas as pd

        rows = {
            k: getattr(self, k)
            for k in ("expected_kl", "mutual_info", "aggregate_kl", "total_correlation", "dimensionwise_kl")
        }
        return pd.DataFrame(
            {"term": list(rows), "value": [r.value for r in rows.values()], "se": [r.se for r in rows.values()]}
        )

    def __repr__(self):
        f = ", ".join(
            f"{k}={getattr(self, k)!r}"
            for k in ("expected_kl", "mutual_info", "aggregate_kl", "total_correlation", "dimensionwise_kl")
        )
        return f"Decomposition({f}; N={self.num_data}, log N={self.log_num_data:.4f}, samples/point={self.num_samples})"


def _mc_estimate(vals):
    """Mean of vals (S, N) over draws and data points; SE from the within-point variance.

    Data points are a fixed finite set (averaged exactly), so only the variance of z given
    the point counts: Var = Σ_n Var_z / (S N²). With S = 1 the within-point variance cannot be
    separated, and the total variance (an upper bound) is used instead.
    """
    S, N = vals.shape
    mean = jnp.mean(vals)
    if S >= 2:
        var = jnp.sum(jnp.var(vals, axis=0, ddof=1)) / (S * N * N)
    else:
        var = jnp.var(vals, ddof=1) / N
    return mean, jnp.sqrt(var)


@partial(jax.jit, static_argnames=("num_samples", "chunk_size"))
def _decompose_impl(rng_key, loc, scale, prior_loc, prior_scale, num_samples, chunk_size):
    N, D = loc.shape
    k1, k2 = random.split(rng_key)
    pl = jnp.broadcast_to(prior_loc, (D,))
    ps = jnp.broadcast_to(prior_scale, (D,))
    kl_nd = jnp.log(ps / scale) + (scale**2 + (loc - pl) ** 2) / (2 * ps**2) - 0.5  # (N, D)
    ekl = jnp.mean(kl_nd.sum(-1))

    def draw(key):
        eps = random.normal(key, (num_samples, N, D), dtype=loc.dtype)
        return (loc + scale * eps).reshape(-1, D)

    # two independent sets of draws: the MI and the aggregate terms are estimated independently
    z1, z2 = draw(k1), draw(k2)
    log_qzx1 = _log_normal(z1, jnp.tile(loc, (num_samples, 1)), jnp.tile(scale, (num_samples, 1))).sum(-1)
    log_qz1 = _exact_log_density(z1, loc, scale, chunk_size, False)
    mi_vals = (log_qzx1 - log_qz1).reshape(num_samples, N)

    log_qz2 = _exact_log_density(z2, loc, scale, chunk_size, False)
    log_qzj2 = _exact_log_density(z2, loc, scale, chunk_size, True)
    log_pzj2 = _log_normal(z2, pl, ps)
    akl_vals = (log_qz2 - log_pzj2.sum(-1)).reshape(num_samples, N)
    tc_vals = (log_qz2 - log_qzj2.sum(-1)).reshape(num_samples, N)
    dw_vals = (log_qzj2 - log_pzj2).sum(-1).reshape(num_samples, N)
    return (
        ekl,
        kl_nd.mean(0),
        _mc_estimate(mi_vals),
        _mc_estimate(akl_vals),
        _mc_estimate(tc_vals),
        _mc_estimate(dw_vals),
    )


def decompose(
    loc,
    scale,
    *,
    rng_key,
    num_samples: int = 4,
    prior_loc=0.0,
    prior_scale=1.0,
    chunk_size: int = 256,
) -> Decomposition:
    """Expected KL, I[X; Z], KL[q(z)‖p], total correlation and dimension-wise KL of an encoder.

        E_n KL[q(z|x_n)‖p] = I[X; Z] + KL[q(z)‖p],   KL[q(z)‖p] = TC + Σ_j KL[q(z_j)‖p(z_j)]

    (Hoffman & Johnson 2016; Chen et al. 2018, eq. 2). On a finite data set of N
    encodings N(loc_n, diag scale_n²) every average over data points is exact, the aggregate
    density is the exact mixture (:func:`aggregate_log_density` ``"exact"``), the expected KL
    is analytic, and only the expectations over z are Monte Carlo: ``num_samples`` draws per
    data point, one independent set for I[X; Z] and another shared by the aggregate KL, TC
    and dimension-wise KL (so TC + DWKL = aggregate KL draw by draw, while the first identity
    is a check between independent estimates). Use x64 for identity checks.

    Args:
        loc, scale: (N, D) encodings of the whole data set (see :func:`encode`).
        rng_key: JAX PRNG key.
        num_samples: draws of z per data point (>= 2 gives within-point standard errors;
            with 1 the standard error uses the total variance, an upper bound).
        prior_loc, prior_scale: factorised Normal prior p(z) (scalars or (D,)).
        chunk_size: block size of the exact aggregate density.

    Returns:
        :class:`Decomposition`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from genbayes.infomax import decompose
        >>> loc = jnp.linspace(-2, 2, 10)[:, None] * jnp.ones((1, 2)); scale = 0.3 * jnp.ones((10, 2))
        >>> d = decompose(loc, scale, rng_key=jax.random.PRNGKey(0))
        >>> bool(0 <= d.mutual_info.value <= jnp.log(10))
        True
    """
    _check_encodings(loc, scale)
    loc, scale = jnp.asarray(loc), jnp.asarray(scale)
    if loc.ndim != 2:
        raise ValueError(f"`loc` must have shape (N, D), got {loc.shape}.")
    if scale.shape != loc.shape:
        raise ValueError(f"`scale` must have the shape of `loc` {loc.shape}, got {scale.shape}.")
    if is_concrete(scale) and np.any(~(np.asarray(scale) > 0)):
        raise ValueError("`scale` must be > 0 everywhere (encoder standard deviations).")
    if is_concrete(loc) and not np.all(np.isfinite(np.asarray(loc))):
        raise ValueError("`loc` contains non-finite values.")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"`num_samples` must be a positive int, got {num_samples!r}.")
    check_positive_scalar(jnp.min(jnp.asarray(prior_scale)), "prior_scale")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}.")
    ekl, kl_dim, mi, akl, tc, dw = _decompose_impl(
        rng_key,
        loc,
        scale,
        jnp.asarray(prior_loc, loc.dtype),
        jnp.asarray(prior_scale, loc.dtype),
        int(num_samples),
        int(chunk_size),
    )
    est = lambda t: Estimate(float(t[0]), float(t[1]))  # noqa: E731
    out = Decomposition(
        expected_kl=Estimate(float(ekl), 0.0),
        mutual_info=est(mi),
        aggregate_kl=est(akl),
        total_correlation=est(tc),
        dimensionwise_kl=est(dw),
        kl_per_dim=np.asarray(kl_dim),
        num_data=int(loc.shape[0]),
        num_samples=int(num_samples),
    )
    vals = [out.expected_kl.value, out.mutual_info.value, out.aggregate_kl.value]
    if not all(math.isfinite(v) for v in vals):
        warnings.warn(f"decompose: non-finite information terms {out!r}", RuntimeWarning, stacklevel=2)
    return out


# --------------------------------------------------------------------------------------------
# encodings, rate and distortion
# --------------------------------------------------------------------------------------------


def encode(guide, params, *args, site: str = "z", rng_key=None, **kwargs):
    """(loc, scale) of the diagonal-Gaussian encodings q(z|x_n) that ``guide`` gives at ``site``.

        q(z | x_n) = Normal(loc_n, diag scale_n²)   (the amortised encoder of Kingma & Welling 2014)

    These are the inputs of :func:`aggregate_log_density`, :func:`decompose` and :func:`mig`.
    Runs the guide once with ``params`` substituted (``rng_key`` only seeds the draw, which is
    discarded) and reads the Normal's parameters.

    Example:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> from genbayes.infomax import encode
        >>> def guide(x):
        ...     with numpyro.plate("data", x.shape[0]):
        ...         numpyro.sample("z", dist.Normal(x, 0.5).to_event(1))
        >>> loc, scale = encode(guide, {}, jnp.ones((3, 2)))
        >>> loc.shape, float(scale[0, 0])
        ((3, 2), 0.5)
    """
    rng_key = random.PRNGKey(0) if rng_key is None else rng_key
    check_args_finite(args, kwargs)
    with guard_empty_plates(args, kwargs):
        tr = trace(substitute(seed(guide, rng_key), data=params)).get_trace(*args, **kwargs)
    if site not in tr or tr[site]["type"] != "sample":
        sites = [n for n, s in tr.items() if s["type"] == "sample"]
        raise ValueError(f"`site`={site!r} is not a sample site of the guide; its sample sites are {sites}.")
    loc, scale, _ = _unwrap_diag_normal(tr[site]["fn"], site)
    return loc, scale


class RateDistortion(NamedTuple):
    """Rate (E KL[q(z|x)‖p]) and distortion (−E log p(x|z)) per data point, with standard errors.

    The standard errors are over data points (the data set as a sample from p_D) and include
    the Monte Carlo error of the reconstruction term:

        R = (1/N) Σ_n KL[q(z|x_n) ‖ p(z)],   D = −(1/N) Σ_n E_q log p(x_n|z),   se = sd_n / √N

    (Alemi et al. 2018). Built by :func:`rate_distortion`.

    Example:
        >>> from genbayes.infomax import RateDistortion
        >>> RateDistortion(rate=2.0, rate_se=0.1, distortion=30.0, distortion_se=0.5, num_data=100)
        RateDistortion(rate=2.0000 ± 0.1000, distortion=30.0000 ± 0.5000, N=100)
    """

    rate: float
    """R, nats per data point."""
    rate_se: float
    """Standard error of R."""
    distortion: float
    """D, nats per data point."""
    distortion_se: float
    """Standard error of D."""
    num_data: int
    """N, the number of data points averaged over."""

    def __repr__(self):
        return (
            f"RateDistortion(rate={self.rate:.4f} ± {self.rate_se:.4f}, "
            f"distortion={self.distortion:.4f} ± {self.distortion_se:.4f}, N={self.num_data})"
        )


def _per_datum(x, n):
    x = jnp.asarray(x)
    if x.ndim == 0 or x.shape[0] != n:
        raise ValueError(
            f"rate_distortion needs every latent and observed site inside the data plate (leading dimension "
            f"{n}); got a site term of shape {x.shape}."
        )
    return x.reshape(n, -1).sum(-1)


def _rd_particle(key, params, args, kwargs, model, guide, sites):
    """Per-datum (rate, distortion) of one draw."""
    model_trace, guide_trace, _ = _get_traces(key, params, model, guide, args, kwargs)
    _check_latent_sites_in_trace(sites, model_trace)
    obs = [n for n, s in model_trace.items() if s["type"] == "sample" and s["is_observed"]]
    lat = [
        n
        for n, s in model_trace.items()
        if s["type"] == "sample" and not s["is_observed"] and (sites is None or n in sites)
    ]
    if not obs or not lat:
        raise ValueError("rate_distortion needs at least one observed and one latent site.")
    n = jnp.shape(model_trace[obs[0]]["value"])[0]
    for s in obs + lat:
        if model_trace[s]["scale"] is not None:
            raise ValueError(f"Site {s!r} is scaled (subsampled plate?); pass the whole data set.")
    dist_n = -sum(_per_datum(model_trace[s]["fn"].log_prob(model_trace[s]["value"]), n) for s in obs)
    rate_n = 0.0
    for s in lat:
        ms, gs = model_trace[s], guide_trace[s]
        try:
            kl = kl_divergence(gs["fn"], ms["fn"])
        except NotImplementedError:
            kl = gs["fn"].log_prob(gs["value"]) - ms["fn"].log_prob(ms["value"])
        rate_n = rate_n + _per_datum(jnp.broadcast_to(kl, ms["fn"].batch_shape), n)
    return rate_n, dist_n


@partial(jax.jit, static_argnames=("model", "guide", "sites", "kw"))
def _rd_cached(keys, params, args, *, model, guide, sites, kw):
    return jax.vmap(lambda k: _rd_particle(k, params, args, dict(kw), model, guide, sites))(keys)


def rate_distortion(
    model,
    guide,
    params,
    *args,
    rng_key,
    num_particles: int = 1,
    latent_sites: Sequence[str] | str | None = None,
    **kwargs,
) -> RateDistortion:
    """Rate R = E_n KL[q(z|x_n)‖p(z)] and distortion D = −E_n E_q log p(x_n|z) per data point.

    (Alemi et al. 2018, "Fixing a broken ELBO".) KL is analytic where NumPyro registers one, otherwise
    Monte Carlo; the reconstruction term averages ``num_particles`` draws. Every latent site
    in ``latent_sites`` (default all) and every observed site must lie in the data plate with
    the data points on the leading axis, and the model must not subsample (pass all data).

    Returns:
        :class:`RateDistortion`.

    Example:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> from genbayes.infomax import rate_distortion
        >>> def model(x):
        ...     with numpyro.plate("data", x.shape[0]):
        ...         z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        ...         numpyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     with numpyro.plate("data", x.shape[0]):
        ...         numpyro.sample("z", dist.Normal(x / 2, jnp.sqrt(0.5)))
        >>> rd = rate_distortion(model, guide, {}, jnp.zeros(4), rng_key=jax.random.PRNGKey(0))
        >>> round(rd.rate, 4)  # KL[N(0, 1/2) ‖ N(0, 1)] = (log 2 - 1/2) / 2
        0.0966
    """
    sites = _check_sites_arg(latent_sites)
    if isinstance(num_particles, bool) or not isinstance(num_particles, (int, np.integer)) or num_particles < 1:
        raise ValueError(f"`num_particles` must be a positive int, got {num_particles!r}.")
    check_args_finite(args, kwargs)

    keys = random.split(rng_key, num_particles)
    kw = tuple(sorted(kwargs.items()))
    try:
        hash((model, guide, kw))
        hashable = True
    except TypeError:
        hashable = False
    if hashable:  # cache the compiled program across calls (e.g. over a sweep of β)
        rates, dists = _rd_cached(keys, params, args, model=model, guide=guide, sites=sites, kw=kw)
    else:
        rates, dists = jax.jit(jax.vmap(lambda k: _rd_particle(k, params, args, kwargs, model, guide, sites)))(keys)
    r, d = rates.mean(0), dists.mean(0)
    n = r.shape[0]
    se = lambda v: float(jnp.std(v, ddof=1) / jnp.sqrt(n)) if n > 1 else float("nan")  # noqa: E731
    out = RateDistortion(float(r.mean()), se(r), float(d.mean()), se(d), int(n))
    if not (math.isfinite(out.rate) and math.isfinite(out.distortion)):
        warnings.warn(f"rate_distortion: non-finite values {out!r}", RuntimeWarning, stacklevel=2)
    return out


def train(
    model, guide, loss, *args, num_steps: int, rng_key, learning_rate: float = 1e-3, optim=None, init_params=None, **kwargs
):
    """Run ``numpyro.infer.SVI`` for ``num_steps`` updates as one compiled ``lax.scan``.

        θ_{t+1} = Adam(θ_t, ∇_θ loss(θ_t; ξ_t)),   t = 0, …, num_steps − 1

    (stochastic variational inference, Hoffman et al. 2013; Adam, Kingma & Ba 2015), with
    ``loss`` any NumPyro ELBO, e.g. :class:`BetaELBO` or :class:`BetaTCELBO`.

    Pure in its array inputs, so it can be vmapped, e.g. over β to train a whole
    rate–distortion sweep as one program. With a :class:`CapacityELBO` whose capacity is a
    schedule, the step index is passed as ``capacity_step``. Optimiser: ``optim`` or Adam.
    ``init_params`` (a dict of param-site values, as ``SVI.init``) overrides the initial values,
    e.g. to vmap over independently initialised networks (``VAE.init_params`` of each seed).

    The program is compiled once per ``model`` and ``guide`` function objects, loss settings
    (its type and attribute values), optimiser (the same ``optim`` object, or the same
    ``learning_rate``), ``num_steps`` and argument shapes; the data, ``rng_key`` and
    ``init_params`` are its inputs, so a second call with new data of the same shapes compiles
    nothing. A new function object (a lambda or an autoguide built afresh on every call) is a
    new program and compiles again.

    Returns:
        ``(params, losses)``: the final parameters (``svi.get_params``) and the (num_steps,) losses.

    Example:
        >>> import jax, numpyro, numpyro.distributions as dist
        >>> from genbayes.infomax import BetaELBO, train
        >>> def model(x):
        ...     z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        ...     numpyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     numpyro.sample("z", dist.Normal(numpyro.param("m", 0.0), 0.5))
        >>> params, losses = train(model, guide, BetaELBO(1.0), 2.0, num_steps=50, rng_key=jax.random.PRNGKey(0))
        >>> losses.shape
        (50,)
    """
    import numpyro
    from numpyro.infer import SVI

    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"`num_steps` must be a positive int, got {num_steps!r}.")
    if optim is None:
        check_positive_scalar(learning_rate, "learning_rate", hint=" It is Adam's step size (default 1e-3).")
    check_args_finite(args, kwargs)
    scheduled = isinstance(loss, CapacityELBO) and callable(loss.capacity)
    opt = optim if optim is not None else numpyro.optim.Adam(learning_rate)
    opt_key = optim if optim is not None else ("adam", learning_rate if isinstance(learning_rate, jax.core.Tracer)
                                               else float(learning_rate))

    def make(args, kwargs):
        svi = SVI(model, guide, opt, loss=loss)

        def run(rng_key, init_params):
            state = svi.init(rng_key, *args, init_params=init_params, **kwargs)

            def body(state, t):
                kw = dict(kwargs, capacity_step=t) if scheduled else kwargs
                return svi.update(state, *args, **kw)

            state, losses = jax.lax.scan(body, state, jnp.arange(int(num_steps)))
            return svi.get_params(state), losses

        return run

    # one program per (model, guide, loss settings, optimiser, num_steps, argument structure): the
    # data, key and initial parameters are its inputs (a traced learning rate or β is not
    # hashable, so under vmap the program is built afresh, inside the caller's trace)
    settings = (guide, _value_key(loss), opt_key, int(num_steps))
    with guard_empty_plates(args, kwargs):
        params, losses = data_program("infomax_train", model, args, kwargs, settings, make)(rng_key, init_params)
    if not isinstance(losses, jax.core.Tracer):  # under vmap/jit the caller checks (rate_distortion warns)
        bad = ~np.isfinite(np.asarray(losses))
        if bad.any():
            raise FloatingPointError(
                f"infomax.train: the loss became non-finite at step {int(np.argmax(bad))} of {int(num_steps)} "
                f"({int(bad.sum())} non-finite losses), so the parameters are not a fit. Lower the learning rate "
                f"(now {'a custom optim' if optim is not None else learning_rate}), or check the data and the "
                f"initial parameters.")
    return params, losses


def _value_key(obj):
    """A hashable key for an object equal to another of its type with equal attributes, else the object itself."""
    try:
        items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in vars(obj).items()))
        hash(items)
    except TypeError:
        return obj
    return (type(obj), items)


# --------------------------------------------------------------------------------------------
# MIG
# --------------------------------------------------------------------------------------------


class MIG(NamedTuple):
    """Mutual information gap and its parts (Chen et al. 2018, §5), as returned by :func:`mig`.

        score = (1/K) Σ_k gaps_k,   gaps_k = [I(z_(1); v_k) − I(z_(2); v_k)] / H(v_k)

    Attributes:
        score: mean over factors of the normalised gap (0 = none, 1 = perfectly axis-aligned).
        gaps: (K,) [I(z_(1); v_k) − I(z_(2); v_k)] / H(v_k) per factor.
        mutual_info: (D, K) discretised I(z_j; v_k) in nats.
        entropy: (K,) H(v_k) in nats.

    Example:
        >>> import numpy as np
        >>> from genbayes.infomax import MIG
        >>> MIG(0.5, np.array([0.75, 0.25]), np.zeros((3, 2)), np.log([4.0, 2.0]))
        MIG(score=0.5000, gaps=[0.75, 0.25])
    """

    score: float
    gaps: np.ndarray
    mutual_info: np.ndarray
    entropy: np.ndarray

    def __repr__(self):
        return f"MIG(score={self.score:.4f}, gaps={np.round(self.gaps, 4).tolist()})"


def _codes(x):
    """Integer codes of the distinct values of each column of x (N, K)."""
    return np.stack([np.unique(col, return_inverse=True)[1] for col in np.asarray(x).T], axis=1)


def _discretize(z, num_bins):
    """Equal-width histogram bins per column (Locatello et al. 2019); constant columns -> one bin."""
    z = np.asarray(z, dtype=float)
    lo, hi = z.min(0), z.max(0)
    width = np.where(hi > lo, (hi - lo) / num_bins, 1.0)
    return np.clip(np.floor((z - lo) / width), 0, num_bins - 1).astype(np.int64)


@partial(jax.jit, static_argnames=("nz", "nv"))
def _mi_matrix(zc, vc, nz, nv):
    # joint histogram of every (latent j, factor k) pair as one einsum over one-hot codes
    N = zc.shape[0]
    oz = jax.nn.one_hot(zc, nz)  # (N, D, nz)
    ov = jax.nn.one_hot(vc, nv)  # (N, K, nv)
    pj = jnp.einsum("nda,nkb->dkab", oz, ov) / N  # (D, K, nz, nv)
    pz = oz.mean(0)[:, None, :, None]
    pv = ov.mean(0)[None, :, None, :]
    ratio = jnp.where(pj > 0, pj / jnp.where(pz * pv > 0, pz * pv, 1.0), 1.0)
    mi = jnp.sum(jnp.where(pj > 0, pj * jnp.log(ratio), 0.0), axis=(2, 3))
    pvk = ov.mean(0)
    h = -jnp.sum(jnp.where(pvk > 0, pvk * jnp.log(jnp.where(pvk > 0, pvk, 1.0)), 0.0), axis=1)
    return mi, h


@partial(jax.jit, static_argnames=("num_samples", "chunk"))
def _encoder_mi(rng_key, loc, scale, vc, num_samples, chunk):
    """I(z_j; v_k) (D, K) with the stochastic encoder: exact mixtures over the data set, MC over z."""
    N, D = loc.shape
    pad = (-N) % chunk
    rows = jnp.arange(N + pad).reshape(-1, chunk)

    def one_draw(key):
        eps = random.normal(key, (N + pad, D), dtype=loc.dtype)

        def block(r):  # draws for the data points in rows r (clipped: padded rows are dropped below)
            rc = jnp.minimum(r, N - 1)
            z = loc[rc] + scale[rc] * eps[r]
            lp = _log_normal(z[:, None, :], loc[None], scale[None])  # (chunk, N, D): the memory bound
            log_qzj = logsumexp(lp, axis=1) - jnp.log(N)  # (chunk, D)

            def cond(c):  # log q(z_j | v_k = v_k(n)) = log mean over the data points sharing n's value
                same = c[rc][:, None] == c[None, :]
                return logsumexp(jnp.where(same[:, :, None], lp, -jnp.inf), axis=1) - jnp.log(
                    jnp.sum(same, axis=1)
                )[:, None]

            log_qzj_v = jax.vmap(cond)(vc.T)  # (K, chunk, D)
            valid = (r < N)[None, :, None]
            return jnp.sum(jnp.where(valid, log_qzj_v - log_qzj[None], 0.0), axis=1)  # (K, D)

        return jnp.sum(jax.lax.map(block, rows), axis=0) / N

    return jnp.mean(jax.lax.map(one_draw, random.split(rng_key, num_samples)), axis=0).T  # (D, K)


def mig(
    latents,
    factors,
    *,
    num_bins: int = 20,
    scale=None,
    rng_key=None,
    num_samples: int = 4,
    chunk_size: int = 256,
) -> MIG:
    """Mutual information gap (Chen et al. 2018, §5) of a representation against known factors.

        MIG = (1/K) Σ_k [I(z_(1); v_k) − I(z_(2); v_k)] / H(v_k),

    z_(1), z_(2) the two latent coordinates with the largest mutual information with factor
    v_k; H(v_k) is the empirical entropy of the discrete factor. Two estimators of I(z_j; v_k):

    - ``scale=None`` (histogram, Locatello et al. 2019): ``latents`` is a deterministic
      representation (e.g. the encoder means), discretised into ``num_bins`` equal-width bins per
      coordinate; I is the plug-in mutual information of the empirical joint histogram. The
      plug-in estimate is biased upward by about (bins − 1)(values − 1)/(2N) nats per pair,
      which lifts the runner-up term and lowers MIG on small data sets.
    - ``scale`` given (encoder, Chen et al. 2018, §5 and their reference code): ``latents`` and
      ``scale`` are the means and standard deviations of diagonal-Gaussian encodings
      q(z|x_n) of the whole data set, and with z ~ q(z|x_n) drawn for every data point,

          I(z_j; v_k) = H(z_j) − H(z_j | v_k)
                      = E_{n, z} [log q(z_j | v_k = v_k(n)) − log q(z_j)],
          q(z_j) = (1/N) Σ_m q(z_j | x_m),   q(z_j | v) = (1/N_v) Σ_{m: v_k(m) = v} q(z_j | x_m),

      exact mixtures over the data set (as :func:`aggregate_log_density` ``"exact"``) and
      ``num_samples`` draws of z per data point (p(n | v) is uniform over the data points with
      that factor value, as on a full factor grid). Memory O(chunk_size · N · D).

    Factors with a single value are ignored. With one latent coordinate, the runner-up
    information is taken as 0. Negative Monte Carlo estimates of I are clipped to 0.

    Args:
        latents: (N, D) representation (encoder means).
        factors: (N, K) ground-truth discrete factors.
        num_bins: bins per latent coordinate (histogram estimator).
        scale: (N, D) encoder standard deviations; selects the encoder estimator.
        rng_key: JAX key for the draws of z (encoder estimator; required there).
        num_samples: draws of z per data point (encoder estimator).
        chunk_size: data points per block in the encoder estimator.

    Returns:
        :class:`MIG`.

    Example:
        >>> import jax, numpy as np
        >>> from genbayes.infomax import mig
        >>> v = np.stack(np.meshgrid(np.arange(5), np.arange(5)), -1).reshape(-1, 2)
        >>> round(mig(v.astype(float), v).score, 3)  # the factors themselves
        1.0
        >>> sharp = mig(v.astype(float), v, scale=0.01 * np.ones((25, 2)), rng_key=jax.random.key(0))
        >>> round(sharp.score, 3)  # nearly noiseless encodings of the factors
        1.0
    """
    z = check_real_array(latents, "latents", ndim=2)
    check_real_array(factors, "factors", ndim=2)
    v = np.asarray(factors)
    if z.ndim != 2 or v.ndim != 2:
        raise ValueError(f"`latents` and `factors` must be 2-D (N, D) and (N, K); got {z.shape} and {v.shape}.")
    if z.shape[0] != v.shape[0]:
        raise ValueError(f"`latents` has {z.shape[0]} rows but `factors` has {v.shape[0]}; they must match.")
    if not np.all(np.isfinite(z)):
        raise ValueError("`latents` contains non-finite values.")
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 2:
        raise ValueError(f"`num_bins` must be an int >= 2, got {num_bins!r}.")
    if scale is not None:
        sc = np.asarray(scale, dtype=float)
        if sc.shape != z.shape:
            raise ValueError(f"`scale` must have the shape of `latents` {z.shape}, got {sc.shape}.")
        if not np.all(sc > 0) or not np.all(np.isfinite(sc)):
            raise ValueError("`scale` must be finite and > 0 everywhere (encoder standard deviations).")
        if rng_key is None:
            raise ValueError("the encoder estimator (scale given) draws z: pass rng_key=jax.random.key(seed).")
        for val, nm in ((num_samples, "num_samples"), (chunk_size, "chunk_size")):
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
                raise ValueError(f"`{nm}` must be a positive int, got {val!r}.")
    vc = _codes(v)
    keep = vc.max(0) > 0
    if not np.any(keep):
        raise ValueError("every factor is constant; MIG needs at least one factor with two or more values.")
    vc = vc[:, keep]
    probs = [np.bincount(c) / len(c) for c in vc.T]
    h = np.array([-np.sum(p * np.log(p)) for p in probs])  # every code occurs, so p > 0
    if scale is None:
        zc = _discretize(z, num_bins)
        mi, _ = _mi_matrix(jnp.asarray(zc), jnp.asarray(vc), int(num_bins), int(vc.max() + 1))
    else:
        dt = jnp.asarray(latents).dtype if jnp.issubdtype(jnp.asarray(latents).dtype, jnp.floating) else float
        mi = _encoder_mi(
            rng_key,
            jnp.asarray(z, dt),
            jnp.asarray(sc, dt),
            jnp.asarray(vc),
            int(num_samples),
            int(min(chunk_size, z.shape[0])),
        )
    mi = np.maximum(np.asarray(mi, dtype=float), 0.0)
    top = -np.sort(-mi, axis=0)
    second = top[1] if mi.shape[0] > 1 else np.zeros(mi.shape[1])
    gaps = (top[0] - second) / h
    return MIG(float(np.mean(gaps)), gaps, mi, h)
