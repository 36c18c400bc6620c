r"""Many weighted posteriors as one compiled, vmapped, shardable MCMC program.

For weight vectors :math:`w^{(1)}, \dots, w^{(B)}` this draws from each weighted posterior

.. math:: \pi_b(\theta \mid x) \propto \pi(\theta) \prod_i p(x_i \mid \theta)^{w^{(b)}_i}

with NumPyro's NUTS (Hoffman & Gelman 2014, with NumPyro's windowed adaptation), one chain per
weight vector, or (``kernel="chees"``) with BlackJAX's ChEES-adapted jittered HMC (Hoffman, Radul &
Sountsov 2021), several chains per weight vector. Because :class:`genbayes.reweight` never changes shapes, the B chains are one
``jax.vmap`` over (weights, key): one compilation, no Python loop over B. When more than one
JAX device is visible the B axis is split across devices with ``jax.shard_map``, each device
running its own chains with no communication between them.

This is the engine under cross-validation folds (0/1 weights), bootstrap calibration
(counts or Dirichlet weights) and temperature ladders (constant weights β).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.hmc import hmc
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import initialize_model

from ._programs import ProgramCache, devices_used, family_as_argument, gather, resolve_shard, shard_leading, split_args
from ._validation import check_args_finite, check_key, check_nonnegative_finite, check_open_unit_interval, is_concrete
from .handlers import _as_site_set, reweight

__all__ = ["run", "posterior_samples", "BatchedSamples"]


@dataclasses.dataclass(frozen=True)
class BatchedSamples:
    """Draws from B weighted posteriors.

    Attributes:
        samples: dict site -> array of shape ``(B, num_samples, *site_shape)`` (constrained space);
            with several chains per posterior, chain c holds draws ``[c S/C, (c+1) S/C)``.
        diagnostics: dict of per-replicate arrays of shape ``(B,)``: ``num_divergent``,
            ``mean_accept_prob``, ``mean_num_steps``, ``step_size``.
        weights: the ``(B, n)`` weights the posteriors were drawn for.
        num_chains: C, the chains per posterior (1 for NUTS); :meth:`chains` splits the draws by chain.
        held_on_devices: the number of devices the draws were computed on, recorded by :func:`run`
            from the output arrays' shardings before they were gathered (in a ``jax.distributed``
            job, every process's devices); ``None`` reads it from the arrays' shardings.

    ``devices`` is the number of devices that computed the draws (more than 1 when the B axis was
    sharded); it is read from the arrays' shardings, not from the request.

    Example:
        >>> import jax.numpy as jnp
        >>> from genbayes.batched import BatchedSamples
        >>> b = BatchedSamples({"p": jnp.zeros((4, 50))}, {}, jnp.ones((4, 6)))
        >>> b.num_replicates, b.num_samples, b["p"].shape
        (4, 50, (4, 50))
    """

    samples: dict
    diagnostics: dict
    weights: jax.Array
    num_chains: int = 1
    held_on_devices: int | None = None

    def chains(self, site) -> np.ndarray:
        """The draws of ``site`` split by chain: shape ``(B, num_chains, num_samples // num_chains, ...)``."""
        v = np.asarray(self.samples[site])
        return v.reshape((v.shape[0], self.num_chains, v.shape[1] // self.num_chains) + v.shape[2:])

    @property
    def num_replicates(self) -> int:
        """B, the number of weighted posteriors (rows of ``weights``)."""
        return int(np.shape(self.weights)[0])

    @property
    def num_samples(self) -> int:
        """Draws per replicate (0 when no site was recorded)."""
        return int(np.shape(next(iter(self.samples.values())))[1]) if self.samples else 0

    @property
    def devices(self) -> int:
        """Number of devices the draws were computed on (from their ``.sharding``): 1 unless sharded.

        In a ``jax.distributed`` job it counts the devices of every process, although each process
        then holds all the draws itself.
        """
        if self.held_on_devices is not None:
            return max(int(self.held_on_devices), 1)
        return max(devices_used(self.samples), 1)

    def __getitem__(self, site):
        return self.samples[site]

    def __repr__(self):
        d = self.diagnostics
        sites = ", ".join(f"{k}: {tuple(np.shape(v))}" for k, v in self.samples.items())
        where = f", devices={self.devices}" if self.devices > 1 else ""
        return (
            f"BatchedSamples(B={self.num_replicates}, num_samples={self.num_samples}, sites={{{sites}}}, "
            f"divergent={int(np.sum(d['num_divergent']))}, "
            f"mean_accept_prob={float(np.mean(d['mean_accept_prob'])):.3f}{where})"
        )

    def to_inference_data(self):
        """ArviZ InferenceData with a ``replicate`` dimension (one chain per replicate)."""
        from .interop import batched_to_inference_data

        return batched_to_inference_data(self)


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def run(
    model,
    weights,
    *args,
    num_warmup: int = 500,
    num_samples: int = 500,
    rng_key,
    units=None,
    sites=None,
    target_accept_prob: float | None = None,
    dense_mass: bool = False,
    max_tree_depth: int = 10,
    init_strategy=init_to_uniform,
    shard: bool | None = None,
    progress: bool = True,
    kernel: str = "nuts",
    num_chains: int | None = None,
    chunk_size: int | None = None,
    shared_warmup: int = 0,
    nuts_fallback: bool = True,
    **kwargs,
) -> BatchedSamples:
    r"""Run NUTS on ``reweight(model, weights=weights[b])`` for every row b, as one program.

    Row b targets :math:`\pi_b(\theta) \propto \pi(\theta) \prod_i p(x_i \mid \theta)^{w_{bi}}`
    (the weighted likelihood of Bissiri, Holmes & Walker 2016; Bayesian-bootstrap rows give the
    weighted likelihood bootstrap of Newton & Raftery 1994), drawn with NumPyro's NUTS
    (Hoffman & Gelman 2014) vmapped over b.

    Args:
        model: a NumPyro model; its observed sites are reweighted. Discrete latent sites marked
            for enumeration (``config_enumerate``) are summed out, and each weight acts on its
            unit's marginal likelihood (:func:`genbayes.units.log_density`).
        weights: array of shape ``(B, U)``, one weight per observation unit (finite, ``>= 0``);
            row b gives the weights of posterior b. With ``sites=`` instead, per-entry weights of
            shape ``(B, *batch_shape)`` of the named sites (the low-level form).
        *args, **kwargs: the model's arguments (as for ``MCMC.run``), shared by all B posteriors.
        num_warmup, num_samples: NUTS warm-up (adaptation) and kept iterations per posterior.
        rng_key: a JAX PRNG key; replicate b uses ``jax.random.split(rng_key, B)[b]``, so the
            same key gives the same draws, sharded or not.
        units: the observation units (:mod:`genbayes.units`): ``None`` for the default (the
            outermost plate of the observed sites), a plate name, group ids, or a
            :class:`genbayes.units.Units`.
        sites: observed sites to reweight entry by entry instead of by unit (as in
            :class:`genbayes.reweight`); not together with ``units``.
        target_accept_prob, dense_mass, max_tree_depth: NUTS settings (as in ``numpyro.infer.NUTS``;
            ``target_accept_prob=None`` means 0.8 for NUTS, 0.651 for ChEES, which has no tree
            depth and a diagonal mass matrix only).
        init_strategy: NumPyro init strategy; one initial point is found (for the first weight
            vector) and shared by all B posteriors (with ``kernel="chees"``, one per chain).
        shard: split the B axis across all visible devices (default ``None``: when more than one
            is visible; ``False`` keeps one device). B need not be a multiple of the device count.
            Each device runs its own chains with no communication (:func:`genbayes._programs.shard_leading`);
            ``.devices`` of the result says how many held them. See ``docs/scaling.md``.
        progress: print one line before compiling and one with the elapsed time.
        kernel: ``"nuts"`` (default) or ``"chees"``. NUTS under ``jax.vmap`` runs in lock-step:
            every chain of the batch waits, at each iteration, for the deepest tree of the batch
            (measured: 1.8, 2.3 and 2.9 times the leapfrog steps each chain needs at B = 8, 32,
            128). ``"chees"`` runs ``num_chains`` chains per posterior of jittered HMC
            (``blackjax.dynamic_hmc``), whose step size, trajectory length L and diagonal mass
            matrix ``blackjax.chees_adaptation`` tunes across those chains during ``num_warmup``
            iterations (ChEES criterion, Hoffman, Radul & Sountsov 2021, Algorithm 1; dual
            averaging of the harmonic-mean acceptance rate to ``target_accept_prob``, default
            0.651). Iteration t takes :math:`\lceil h_t L / \varepsilon \rceil` leapfrog steps, h_t
            the t-th Halton number, the same for all chains of a posterior, so almost no step is
            wasted while sampling; warm-up costs ``num_chains`` times ``num_warmup`` iterations.
            Measured (``benchmarks/bench_batched_ess.py``: logistic regression d = 5, idle 2-core
            machine, 2 CPU devices, bulk ESS per second as a multiple of a compiled-once NUTS
            loop's, B = 32 / 128): n = 100: NUTS 3.0 / 2.6, ChEES 4.7 / 4.4, ChEES with
            ``shared_warmup=150, num_warmup=25`` 5.1 / 5.8; n = 1000: NUTS 2.3 / 2.5, ChEES
            2.1 / 2.0, shared 6.4 / 6.1; n = 10^4 (shorter chains): NUTS 2.2 / 1.2, ChEES 0.8
            (B = 32), shared 3.7 / 3.2. While sampling, ChEES wastes little (steps run / steps needed
            1.13-1.16, NUTS 2.3-2.9) and needs ~1.7 leapfrog steps per draw here, but its own
            warm-up costs ``num_chains`` chains of ``num_warmup`` iterations, ~5 steps each before
            the mass matrix engages, in lock-step across posteriors, so where gradients are
            expensive (large n) that warm-up dominates; ``shared_warmup`` pays it once for all B
            posteriors. NUTS stays the default: it needs no assumption that the B posteriors are
            alike, and at B = 128, n = 10^4 its lock-step waste leaves it near the loop.
        num_chains: chains per posterior for ``kernel="chees"`` (default 4, at least 2: the
            adaptation uses statistics across them); ``num_samples`` must be a multiple of it,
            and each chain keeps ``num_samples // num_chains`` draws. NUTS runs one chain.
        chunk_size: ``None`` (default) runs all B posteriors (per device) as one ``jax.vmap``; an
            integer k runs them k at a time (``jax.lax.map(..., batch_size=k)``), so a chain waits
            only for the slowest chain of its chunk and a chunk's arrays stay in cache. Same draws
            up to rounding. Measured at n = 1000, B = 128, 2 devices, k = 16: ESS/s 1.16x (NUTS)
            and 1.68x (ChEES) that of one vmap.

        shared_warmup: with ``kernel="chees"``, the number of iterations of one ChEES warm-up (of
            ``num_chains`` chains) on the posterior of the mean weight vector, run once for all B
            posteriors (default 0: none, each posterior adapts on its own). Every posterior then
            starts its chains at that warm-up's final positions with its trajectory length and
            diagonal mass matrix, and adapts only its step size during its own ``num_warmup``
            iterations (dual averaging towards ``target_accept_prob``, started at the shared
            step size); the draws use a fixed kernel, so they target each posterior exactly, and
            the shared settings decide only how well they mix. Meant for posteriors of similar
            shape (bootstrap replicates, CV folds, GPC), where a short ``num_warmup`` (e.g. 25)
            then suffices, and all posteriors take the same number of leapfrog steps per
            iteration; for posteriors of very different scales (a temperature ladder) keep 0.
            Measured (``benchmarks/bench_batched_ess.py --kernels chees-shared``): see ``kernel``.
        nuts_fallback: with ``kernel="chees"`` (default ``True``), a posterior where ChEES fails (over
            1% divergent draws, or a non-finite draw) is drawn again by ``num_chains`` NUTS chains of
            ``num_samples // num_chains`` draws each, after ``num_warmup + shared_warmup`` warm-up
            iterations, at target acceptance ``max(0.8, target_accept_prob)``, in one more batched
            program (its row count padded to a power of two, so that few shapes are compiled); a
            warning says how many, and ``.diagnostics["redrawn"]`` marks them. ChEES adapts one step
            size, trajectory length and mass matrix from all chains of a posterior, so one chain started
            far out on a steep posterior can spoil them for every chain; NUTS adapts per chain and
            stops each trajectory at a U-turn. ``False`` keeps ChEES's draws (and its divergences).

    Returns:
        :class:`BatchedSamples`; divergent transitions are counted in its diagnostics and warned
        about.

    Raises:
        RuntimeError: when ``init_strategy`` finds no point with finite potential energy and
            gradient (NumPyro's initialisation runs inside the compiled program, so this is
            reported after the run, which is then discarded).

    Example:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, genbayes as gb
        >>> def model(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=x)
        >>> x = jnp.arange(5.0)
        >>> folds = 1.0 - jnp.eye(5)                      # leave-one-out weights
        >>> res = gb.batched.run(model, folds, x, num_warmup=100, num_samples=100,
        ...                      rng_key=jax.random.PRNGKey(0), progress=False)
        >>> res.samples["mu"].shape
        (5, 100)
    """
    check_key(rng_key)
    _check_fallback(nuts_fallback)
    # what a NUTS redraw of failed ChEES posteriors needs, as the caller gave it
    user = dict(model=model, args=args, kwargs=kwargs, target_accept_prob=target_accept_prob)
    _check_positive_int(num_samples, "num_samples")
    num_chains = _check_kernel(kernel, num_chains, num_warmup, num_samples, dense_mass)
    _check_shared_warmup(shared_warmup, kernel)
    if chunk_size is not None:
        _check_positive_int(chunk_size, "chunk_size")
    if target_accept_prob is None:
        target_accept_prob = _DEFAULT_ACCEPT[kernel]
    depths = max_tree_depth if isinstance(max_tree_depth, tuple) else (max_tree_depth,)
    if len(depths) not in (1, 2) or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
                                        for d in depths):
        raise ValueError(f"`max_tree_depth` must be a positive integer (or a (warm-up, sampling) pair of them, as "
                         f"in numpyro.infer.NUTS), got {max_tree_depth!r}; the default is 10.")
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, (int, np.integer)) or num_warmup < 0:
        raise ValueError(f"`num_warmup` must be a non-negative integer, got {num_warmup!r}.")
    if is_concrete(weights):
        check_nonnegative_finite(weights, "weights", hint=" Use 0 to drop an observation.")  # before jnp: dtype first
        check_args_finite(args, kwargs)  # also before jnp.asarray, which compiles a small program per new shape
        weights = jnp.asarray(weights)
    if jnp.ndim(weights) < 2:
        raise ValueError(
            f"`weights` must have shape (B, n): one row of per-observation weights per posterior, "
            f"got shape {tuple(jnp.shape(weights))}. For a single posterior use weights[None]."
        )
    check_nonnegative_finite(weights, "weights", hint=" Use 0 to drop an observation.")
    check_args_finite(args, kwargs)
    check_open_unit_interval(target_accept_prob, "target_accept_prob", hint=" NumPyro's default is 0.8.")
    weights = jnp.asarray(weights, dtype=jnp.result_type(float))
    B = weights.shape[0]
    if sites is not None and units is not None:
        raise ValueError("Pass either `units` (one weight per observation unit) or `sites` (per-entry weights), not both.")
    if sites is None:
        from .units import find

        fmodel, fargs = family_as_argument(model, args)
        units = find(fmodel, *fargs, units=units, **kwargs)
        if tuple(weights.shape[1:]) != (units.num_units,):
            raise ValueError(
                f"`weights` must have shape (B, {units.num_units}): one weight per observation unit of the model "
                f"({units!r}), got shape {tuple(weights.shape)}. Declare other units with `units=` "
                "(see genbayes.units), or weight entries of named sites with `sites=`."
            )

    key_init, key_run = jax.random.split(rng_key)
    keys = jax.random.split(key_run, B)
    devices = jax.devices()
    shard = resolve_shard(shard)
    model, args = family_as_argument(model, args)
    dyn, rebuild, arg_key = split_args(args, kwargs)
    settings = (num_warmup, num_samples, target_accept_prob, dense_mass, max_tree_depth, shard, len(devices), kernel,
                num_chains, chunk_size, shared_warmup)
    strategy = _strategy_key(init_strategy)
    program, reused = _PROGRAMS.get(
        None if arg_key is None or strategy is None else
        (model, _as_site_set(sites), None if units is None else units.key, strategy, arg_key, settings),
        lambda: _build_program(model, sites, units, init_strategy, rebuild, settings),
    )
    what = "running (compiled program reused)" if reused else "compiling and running"
    if progress:
        where = f"sharded over {len(devices)} devices" if shard else "on one device"
        chains = f", {num_chains} chains of {num_samples // num_chains} draws" if kernel == "chees" else ""
        print(f"genbayes.batched: {what} {B} {kernel.upper()} posteriors {where} "
              f"({num_warmup} warm-up + {num_samples} draws each{chains})...", flush=True)
    t0 = time.perf_counter()
    samples, diag, init_ok = jax.block_until_ready(program(weights, keys, key_init, dyn))
    # in a jax.distributed job the outputs span every process's devices: count them, then give
    # every process the whole result (a no-op with one process)
    held_on = devices_used(samples)
    samples, diag, init_ok = gather((samples, diag, init_ok))
    if progress:
        print(f"genbayes.batched: done in {time.perf_counter() - t0:.1f} s", flush=True)
    if not bool(init_ok):
        raise RuntimeError(
            "Cannot find valid initial parameters (the potential energy or its gradient is not finite at every "
            f"point `init_strategy`={init_strategy!r} tried, for the first row of `weights`). Check the model's "
            "support and data, or pass another init_strategy, e.g. numpyro.infer.init_to_median."
        )
    if kernel == "chees":
        diag = dict(diag, redrawn=_chees_failed(samples, diag, num_samples))
        if nuts_fallback and diag["redrawn"].any():
            rows = np.flatnonzero(diag["redrawn"])
            warnings.warn(f"ChEES failed on {rows.size} of {B} weighted posteriors (over "
                          f"{100 * _MAX_DIVERGENT_FRACTION:.0f}% divergent draws or a non-finite draw); they are drawn "
                          "again by NUTS (`.diagnostics['redrawn']`).", RuntimeWarning, stacklevel=2)
            tap = max(0.8, user["target_accept_prob"] or 0.8)
            samples, diag = _redraw_with_nuts(
                user, np.asarray(weights), rows, num_chains, samples, diag,
                dict(units=units, sites=sites, num_warmup=num_warmup + shared_warmup,
                     num_samples=num_samples // num_chains, rng_key=jax.random.fold_in(rng_key, 1),
                     target_accept_prob=tap, max_tree_depth=max_tree_depth, init_strategy=init_strategy,
                     shard=shard, progress=progress, chunk_size=chunk_size))
    ndiv = np.asarray(diag["num_divergent"])
    if np.any(ndiv > 0):
        warnings.warn(
            f"{int(np.sum(ndiv > 0))} of {B} weighted posteriors had divergent transitions "
            f"({int(ndiv.sum())} in all); see `.diagnostics['num_divergent']`. Consider a higher "
            "target_accept_prob or a reparameterised model.",
            RuntimeWarning,
            stacklevel=2,
        )
    return BatchedSamples(samples=samples, diagnostics=diag, weights=weights, num_chains=num_chains,
                          held_on_devices=held_on)


_MAX_DIVERGENT_FRACTION = 0.01  # above it a posterior counts as not explored (ladders, ChEES's NUTS fallback)


def _chees_failed(samples, diag, num_samples):
    """(B,) the ChEES posteriors that did not explore their target: over 1% divergent draws, or a non-finite draw.

    Chains that disagree without diverging (several modes) are not counted: NUTS's would disagree too.
    """
    bad = np.asarray(diag["num_divergent"]) / num_samples > _MAX_DIVERGENT_FRACTION
    for v in samples.values():
        bad |= ~np.all(np.isfinite(np.reshape(np.asarray(v), (bad.size, -1))), axis=1)
    return bad


def _redraw_with_nuts(user, weights, rows, num_chains, samples, diag, options):
    """Posteriors ``rows`` drawn again by ``num_chains`` NUTS chains each (one :func:`run` on their weights,
    the rows padded to a power of two by repeating the last): (samples, diagnostics) with those rows replaced.
    Row b's draws keep ChEES's layout, chain c holding draws ``[c S/C, (c+1) S/C)``."""
    m = 1 << (int(rows.size) - 1).bit_length()
    padded = np.concatenate([rows, np.full(m - rows.size, rows[-1])])
    res = run(user["model"], np.repeat(weights[padded], num_chains, axis=0), *user["args"], kernel="nuts",
              **options, **user["kwargs"])
    n = rows.size * num_chains
    samples = {k: np.array(v) for k, v in samples.items()}
    for k, v in samples.items():
        v[rows] = np.asarray(res.samples[k])[:n].reshape((rows.size, -1) + v.shape[2:])
    diag = {k: np.array(v) for k, v in diag.items()}
    for k, how in (("num_divergent", np.sum), ("mean_accept_prob", np.mean), ("mean_num_steps", np.mean),
                   ("step_size", np.mean)):
        diag[k][rows] = how(np.asarray(res.diagnostics[k])[:n].reshape(rows.size, num_chains), axis=1)
    return samples, diag


_KERNELS = ("nuts", "chees")
_DEFAULT_ACCEPT = {"nuts": 0.8, "chees": 0.651}  # NumPyro's NUTS; ChEES's harmonic-mean target (Hoffman et al. 2021)


def _check_kernel(kernel, num_chains, num_warmup, num_samples, dense_mass):
    """Validate ``kernel`` and its chain settings before anything compiles; the chains per posterior."""
    if kernel not in _KERNELS:
        raise ValueError(f"`kernel` must be one of {_KERNELS}, got {kernel!r}.")
    if kernel == "nuts":
        if num_chains not in (None, 1):
            raise ValueError(f"`num_chains` applies to kernel='chees' (NUTS runs one chain per posterior), got "
                             f"{num_chains!r}; use kernel='chees' for several chains per posterior.")
        return 1
    num_chains = 4 if num_chains is None else num_chains
    if isinstance(num_chains, bool) or not isinstance(num_chains, (int, np.integer)) or num_chains < 2:
        raise ValueError(f"`num_chains` must be an integer >= 2 for kernel='chees' (its adaptation uses statistics "
                         f"across the chains of a posterior), got {num_chains!r}; the default is 4.")
    if isinstance(num_samples, (int, np.integer)) and num_samples % num_chains:
        raise ValueError(f"`num_samples` ({num_samples}) must be a multiple of `num_chains` ({num_chains}) for "
                         f"kernel='chees': each posterior's draws are its {num_chains} chains' draws, "
                         f"num_samples // num_chains each.")
    if isinstance(num_warmup, (int, np.integer)) and not isinstance(num_warmup, bool) and num_warmup < 1:
        raise ValueError(f"`num_warmup` must be at least 1 for kernel='chees' (ChEES adapts the step size and "
                         f"trajectory length during warm-up), got {num_warmup!r}.")
    if dense_mass:
        raise ValueError("`dense_mass=True` is not available with kernel='chees' (BlackJAX's ChEES adapts a diagonal "
                         "mass matrix); use kernel='nuts' for a dense one.")
    return int(num_chains)


# compiled programs, keyed by model, sites, argument structure and sampler settings
_PROGRAMS = ProgramCache(maxsize=16)


def _weighted(model, sites, units=None):
    def weighted_model(w, *a, **kw):
        with reweight(weights=w, sites=sites, units=units):
            return model(*a, **kw)

    return weighted_model


def _strategy_key(init_strategy):
    """A hashable stand-in for an init strategy (part of the program's cache key), or None."""
    k = init_strategy
    if isinstance(k, partial):
        k = (k.func, k.args, tuple(sorted(k.keywords.items())))
    try:
        hash(k)
    except TypeError:  # e.g. init_to_value(values={...}): build the program afresh
        return None
    return k


def _nuts_state_per_chain(state, key):
    """NumPyro's HMC ``state``, unchanged in value, but batched wherever ``key`` is under ``vmap``.

    ``init_kernel`` under ``vmap`` returns several fields as constants, the same for every chain
    (``accept_prob``, ``num_steps``, ``diverging``, the shared initial point, the step size and mass
    matrix), which the first transition makes per chain. JAX's batching rule for the sampling loop
    then batches the whole NUTS transition, and every loop nested in it, a second time, until the
    batched parts stop changing. Selecting those fields by a per-chain predicate that is always
    true (``where(t, v, v)``) makes the first pass the last: the batching traces 2,968 primitives
    instead of 5,151, and the first call of :func:`run` in a fresh process takes 9.7 s instead of
    11.2 s (dense mass matrix: 11.2 s instead of 12.7 s), with bit-identical draws
    (``benchmarks/bench_first_call.py``: 8 posteriors of a 4-parameter regression, float64, 2 cores).

    The fields that stay the same for every chain are left alone: the iteration counters (``i``,
    the warm-up window index, the counts in the dual averaging state ``(x, x_avg, g_avg, t,
    prox_center)`` and the Welford state ``(mean, m2, n)``) and NUTS's unused ``trajectory_length``.
    Batched, the warm-up's branches on the counters would become selects computing both sides (and
    marking these fields too made XLA's compile slower). For a state of another layout (another
    NumPyro version) nothing is marked.
    """
    a = state.adapt_state
    ss, mm = a.ss_state, a.mm_state
    if not (isinstance(ss, tuple) and len(ss) == 5 and isinstance(mm, tuple) and len(mm) == 3):
        return state
    t = jax.random.key_data(key).ravel()[0] >= 0  # always true; per chain under vmap
    m = jax.tree_util.tree_map(lambda v: jnp.where(t, v, v), state)
    ma = m.adapt_state  # the shared fields put back as they were
    return m._replace(i=state.i, trajectory_length=state.trajectory_length, adapt_state=ma._replace(
        window_idx=a.window_idx, ss_state=ma.ss_state[:3] + (ss[3], ma.ss_state[4]), mm_state=ma.mm_state[:2] + (mm[2],)))


def _build_program(model, sites, units, init_strategy, rebuild, settings):
    """The jitted ``(weights, keys, key_init, dynamic_args) -> (samples, diagnostics, init_ok)`` program.

    NumPyro's ``initialize_model(..., dynamic_args=True)`` on the weighted model is traced into
    the program: it finds one initial point (for the first weight vector), shared by all chains,
    and gives the potential-energy and postprocessing functions (for enumerated models the
    potential is :func:`genbayes.units.potential_energy`, whose weights act on each unit's marginal
    likelihood, instead of NumPyro's). Run eagerly instead, each of its
    operations would compile on first use (several seconds per call on a CPU, and again for every
    new model); inside, it is compiled once with the sampler and skipped entirely on reuse.
    """
    (num_warmup, num_samples, target_accept_prob, dense_mass, max_tree_depth, shard, _, kernel, num_chains, chunk_size,
     shared_warmup) = settings

    def one(potential_gen, postprocess_gen, w, key, init_z, dyn):
        a, kw = rebuild(dyn)
        init_kernel, sample_kernel = hmc(potential_fn=potential_gen(w, *a, **kw), algo="NUTS")
        state = init_kernel(init_z, num_warmup, target_accept_prob=target_accept_prob, dense_mass=dense_mass,
                            max_tree_depth=max_tree_depth, rng_key=key)
        state = _nuts_state_per_chain(state, key)

        # One scan over warm-up and sampling (not two): the NUTS kernel is traced and compiled
        # once, which halves compile time. Warm-up iterations write into slot 0 of the buffers,
        # which the first kept draw overwrites; the chain is the same as with two scans.
        def record(s):
            return (s.z, s.diverging, s.accept_prob, s.num_steps)

        buf = jax.tree_util.tree_map(lambda v: jnp.zeros((num_samples,) + jnp.shape(v), jnp.result_type(v)),
                                     record(state))

        def step(carry, i):
            s, buf = carry
            s = sample_kernel(s)
            j = jnp.maximum(i - num_warmup, 0)
            buf = jax.tree_util.tree_map(lambda b, v: jax.lax.dynamic_update_index_in_dim(b, v, j, 0), buf, record(s))
            return (s, buf), None

        (state, (zs, div, acc, nsteps)), _ = jax.lax.scan(step, (state, buf), jnp.arange(num_warmup + num_samples))
        samples = jax.vmap(postprocess_gen(w, *a, **kw))(zs)
        diag = {
            "num_divergent": jnp.sum(div),
            "mean_accept_prob": jnp.mean(acc),
            "mean_num_steps": jnp.mean(nsteps.astype(jnp.result_type(float))),
            "step_size": state.adapt_state.step_size,
        }
        return samples, diag

    def program(weights, keys, key_init, dyn):
        a, kw = rebuild(dyn)
        weighted = _weighted(model, sites, units)
        key_pilot = jax.random.fold_in(key_init, 1)
        if kernel == "chees":  # one dispersed initial point per chain (shared by the B posteriors)
            key_init = jax.random.split(key_init, num_chains)
        info = initialize_model(key_init, weighted, init_strategy=init_strategy, dynamic_args=True,
                                model_args=(weights[0], *a), model_kwargs=kw)
        p = info.param_info
        potential_gen = info.potential_fn
        if units is not None and units.enumerated:
            from .units import _enum_model, potential_energy

            enum_model = _enum_model(weighted, (weights[0], *a), kw)

            def marginal_potential_gen(w, *a_, **kw_):
                return partial(potential_energy, enum_model, (w, *a_), kw_, enumerated=True)

            potential_gen = marginal_potential_gen
        init_ok = jnp.all(jnp.isfinite(p.potential_energy)) & jnp.all(
            jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(p.z_grad)]))
        start = p.z
        if shared_warmup:  # one ChEES warm-up on the mean weights; every posterior starts from its result
            start = _chees_pilot(settings, rebuild)(potential_gen, jnp.mean(weights, axis=0), key_pilot, p.z, dyn)
            one_posterior = _chees_from_pilot(settings, rebuild)
        else:
            one_posterior = _chees_posterior(settings, rebuild) if kernel == "chees" else one
        one_bound = partial(one_posterior, potential_gen, info.postprocess_fn)
        if chunk_size is None:
            batched = jax.vmap(one_bound, in_axes=(0, 0, None, None))
        else:
            def batched(ws, ks, z, dyn_):
                # vmap over chunks of chunk_size posteriors, one chunk after another: a chain waits only
                # for the slowest chain of its chunk, and a chunk's arrays stay in cache
                return jax.lax.map(lambda wk: one_bound(wk[0], wk[1], z, dyn_), (ws, ks), batch_size=chunk_size)
        if shard:
            # chains are independent: each device runs its own B/D of them, no communication
            batched = shard_leading(batched, (0, 0, None, None), axis_name="replicate")
        samples, diag = batched(weights, keys, start, dyn)
        return samples, diag, init_ok

    return jax.jit(program)


# ChEES settings (Hoffman, Radul & Sountsov 2021): Adam on the log trajectory length with the
# learning rate of their experiments and of BlackJAX's example; a first step size that dual
# averaging moves within a few iterations (it starts in the tails, where any step size is wrong).
_CHEES_LEARNING_RATE = 0.025
_CHEES_INITIAL_STEP_SIZE = 0.1


def _chees_warmup(logdensity, key, init_zs, num_steps, num_chains, target_accept_prob, max_sampling_steps):
    """``blackjax.chees_adaptation`` (diagonal mass matrix) of ``num_chains`` chains for ``num_steps``
    iterations: ``(final states, parameters)``."""
    import blackjax
    import optax
    from blackjax.adaptation.base import get_filter_adapt_info_fn

    warmup = blackjax.chees_adaptation(logdensity, num_chains, target_acceptance_rate=target_accept_prob,
                                       mass_matrix_estimation="diagonal",
                                       adaptation_info_fn=get_filter_adapt_info_fn())
    (states, params), _ = warmup.run(key, init_zs, _CHEES_INITIAL_STEP_SIZE, optax.adam(_CHEES_LEARNING_RATE),
                                     num_steps, max_sampling_steps=max_sampling_steps)
    return states, params


def _chees_draws(step, states, key, num_chains, per_chain, num_samples, postprocess):
    """``per_chain`` iterations of ``step(keys, states) -> (states, info)`` for the ``num_chains``
    chains: (constrained samples, diagnostics without the step size)."""
    def draw(states, k):
        states, info = step(jax.random.split(k, num_chains), states)
        return states, (states.position, info.is_divergent, info.acceptance_rate, info.num_integration_steps)

    _, (zs, div, acc, nsteps) = jax.lax.scan(draw, states, jax.random.split(key, per_chain))
    # (draw, chain, ...) -> (chain · draw, ...): chain c holds draws [c·S/C, (c+1)·S/C)
    zs = jax.tree_util.tree_map(lambda v: jnp.reshape(jnp.swapaxes(v, 0, 1), (num_samples,) + v.shape[2:]), zs)
    return jax.vmap(postprocess)(zs), {
        "num_divergent": jnp.sum(div),
        "mean_accept_prob": jnp.mean(acc),
        "mean_num_steps": jnp.mean(nsteps.astype(jnp.result_type(float))),
    }


def _chees_posterior(settings, rebuild):
    """``one(potential_gen, postprocess_gen, w, key, init_zs, dyn) -> (samples, diagnostics)``: C
    chains of one weighted posterior, ChEES-adapted jittered HMC (BlackJAX).

    ``blackjax.chees_adaptation`` tunes one step size, one trajectory length and one diagonal
    inverse mass matrix from all C chains together (the ChEES criterion and the harmonic-mean
    acceptance rate are cross-chain statistics), then ``blackjax.dynamic_hmc`` draws
    ``num_samples / C`` iterations per chain with those settings. The number of leapfrog steps of
    an iteration is ``ceil(h_t · L / ε)``, ``h_t`` the t-th Halton number, the same for every chain
    and, up to the adapted ``L / ε``, for every posterior: the vmapped while loop does almost no
    step that a chain discards (NUTS under ``vmap`` runs every chain to the deepest tree of the batch).
    """
    import blackjax

    num_warmup, num_samples, target_accept_prob, _, _, _, _, _, num_chains, _, _ = settings
    per_chain = num_samples // num_chains

    def one(potential_gen, postprocess_gen, w, key, init_zs, dyn):
        a, kw = rebuild(dyn)
        potential = potential_gen(w, *a, **kw)

        def logdensity(z):
            return -potential(z)

        key_warmup, key_sample = jax.random.split(key)
        states, params = _chees_warmup(logdensity, key_warmup, init_zs, num_warmup, num_chains, target_accept_prob,
                                       per_chain)
        step = jax.vmap(blackjax.dynamic_hmc(logdensity, **params).step)
        samples, diag = _chees_draws(step, states, key_sample, num_chains, per_chain, num_samples,
                                     postprocess_gen(w, *a, **kw))
        return samples, {**diag, "step_size": params["step_size"]}

    return one


def _chees_pilot(settings, rebuild):
    """``pilot(potential_gen, w, key, init_zs, dyn) -> (positions, step size, trajectory length,
    inverse mass matrix)``: ``shared_warmup`` iterations of ChEES adaptation of C chains on the
    posterior with weights ``w`` (the mean weight vector)."""
    _, num_samples, target_accept_prob, _, _, _, _, _, num_chains, _, shared_warmup = settings

    def pilot(potential_gen, w, key, init_zs, dyn):
        a, kw = rebuild(dyn)
        potential = potential_gen(w, *a, **kw)
        states, params = _chees_warmup(lambda z: -potential(z), key, init_zs, shared_warmup, num_chains,
                                       target_accept_prob, num_samples)
        (num_steps,) = params["integration_steps_params"]
        return states.position, params["step_size"], num_steps * params["step_size"], params["inverse_mass_matrix"]

    return pilot


def _chees_from_pilot(settings, rebuild):
    """``one(potential_gen, postprocess_gen, w, key, pilot, dyn) -> (samples, diagnostics)``: C
    chains of one weighted posterior by jittered HMC with the pilot's (:func:`_chees_pilot`)
    trajectory length L and diagonal mass matrix, started at the pilot's final positions.

    During ``num_warmup`` iterations only the step size ε adapts, by BlackJAX's dual averaging
    (Hoffman & Gelman 2014) of the chains' mean acceptance rate towards ``target_accept_prob``,
    shrunk towards the pilot's step size (its μ, which BlackJAX sets to log 10ε); the draws then use
    the final averaged ε, with ``ceil(h_t · L / ε)`` leapfrog steps at iteration t (``h_t`` the t-th
    Halton number, as in ChEES). The kernel is fixed while drawing, so each posterior's chains target
    it exactly, whatever the pilot was; the pilot only decides how fast they mix.
    """
    import blackjax
    from blackjax.adaptation.step_size import dual_averaging_adaptation
    from blackjax.mcmc.dynamic_hmc import halton_sequence

    num_warmup, num_samples, target_accept_prob, _, _, _, _, _, num_chains, _, _ = settings
    per_chain = num_samples // num_chains
    max_bits = max(1, int(np.ceil(np.log2(num_warmup + per_chain + 1))))

    def num_integration_steps(i, num_steps):
        return jnp.asarray(jnp.ceil(halton_sequence(i, max_bits) * num_steps), dtype=int)

    kernel = blackjax.dynamic_hmc.build_kernel(next_random_arg_fn=lambda i: i + 1,
                                               integration_steps_fn=num_integration_steps)
    da_init, da_update, da_final = dual_averaging_adaptation(target_accept_prob)

    def one(potential_gen, postprocess_gen, w, key, pilot, dyn):
        positions, step_size, length, inverse_mass_matrix = pilot
        a, kw = rebuild(dyn)
        potential = potential_gen(w, *a, **kw)

        def logdensity(z):
            return -potential(z)

        def step_with(eps):
            def step(keys, states):
                return jax.vmap(lambda k, s: kernel(k, s, logdensity, eps, inverse_mass_matrix, (length / eps,)))(
                    keys, states)
            return step

        def warm(carry, k):
            states, da = carry
            states, info = step_with(jnp.exp(da.log_step_size))(jax.random.split(k, num_chains), states)
            return (states, da_update(da, jnp.mean(info.acceptance_rate))), None

        key_warmup, key_sample = jax.random.split(key)
        states = jax.vmap(lambda z: blackjax.dynamic_hmc.init(z, logdensity, jnp.asarray(0)))(positions)
        da = da_init(step_size)._replace(mu=jnp.log(step_size))
        (states, da), _ = jax.lax.scan(warm, (states, da), jax.random.split(key_warmup, num_warmup))
        eps = da_final(da) if num_warmup else step_size
        samples, diag = _chees_draws(step_with(eps), states, key_sample, num_chains, per_chain, num_samples,
                                     postprocess_gen(w, *a, **kw))
        return samples, {**diag, "step_size": eps}

    return one


def _check_sampler_options(options, num_warmup, num_samples):
    """Check sampler options that a caller passes on to :func:`run` as a dict (GPC, CV refits), as ``run`` does.

    Called by those callers before they compile anything of their own; returns the chains per posterior.
    """
    kernel = options.get("kernel", "nuts")
    num_chains = _check_kernel(kernel, options.get("num_chains"), num_warmup, num_samples, options.get("dense_mass", False))
    _check_shared_warmup(options.get("shared_warmup", 0), kernel)
    _check_fallback(options.get("nuts_fallback", True))
    return num_chains


def _check_fallback(nuts_fallback):
    if not isinstance(nuts_fallback, (bool, np.bool_)):
        raise ValueError(f"`nuts_fallback` must be True or False, got {nuts_fallback!r}.")


def _check_shared_warmup(shared_warmup, kernel):
    if isinstance(shared_warmup, bool) or not isinstance(shared_warmup, (int, np.integer)) or shared_warmup < 0:
        raise ValueError(f"`shared_warmup` must be a non-negative integer (0: no shared warm-up), got "
                         f"{shared_warmup!r}.")
    if shared_warmup and kernel != "chees":
        raise ValueError(f"`shared_warmup` ({shared_warmup}) applies to kernel='chees' (a shared ChEES warm-up); "
                         f"pass kernel='chees' or shared_warmup=0.")


def posterior_samples(model, weights, *args, num_warmup=500, num_samples=500, rng_key, **kwargs):
    r"""Draws from the B weighted posteriors: dict site -> array ``(B, num_samples, ...)``.

    A shortcut for ``run(...).samples``; all options of :func:`run` are accepted. Each row of
    ``weights`` gives the weighted posterior :math:`\pi_w(\theta) \propto \pi(\theta) \prod_i
    p(x_i \mid \theta)^{w_i}` (Bissiri, Holmes & Walker 2016), drawn by NUTS (Hoffman & Gelman 2014).

    Example:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, genbayes as gb
        >>> def model(x):
        ...     p = numpyro.sample("p", dist.Beta(1.0, 1.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("y", dist.Bernoulli(p), obs=x)
        >>> w = jax.random.dirichlet(jax.random.PRNGKey(1), jnp.ones(6), (4,)) * 6  # Bayesian bootstrap
        >>> s = gb.batched.posterior_samples(model, w, jnp.array([1, 0, 1, 1, 0, 1]), num_warmup=50,
        ...                                  num_samples=50, rng_key=jax.random.PRNGKey(0), progress=False)
        >>> s["p"].shape
        (4, 50)
    """
    return run(model, weights, *args, num_warmup=num_warmup, num_samples=num_samples, rng_key=rng_key, **kwargs).samples
