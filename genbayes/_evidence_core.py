"""Shared plumbing of the evidence estimators: flat unconstrained densities, compiled programs, checks.

Every estimator in :mod:`genbayes.evidence` (SMC, power posteriors, Laplace, bridge sampling,
prequential SMC) works on a :class:`_FlatModel`: the model's latent values raveled into one
unconstrained vector, with the likelihood weighted per observation unit (:mod:`genbayes.units`).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._programs import ProgramCache, devices_used, gather, num_devices, particle_constraint, shard_leading, split_args
from .handlers import reweight

# Below this many effective particles (or importance draws) an estimate is flagged as unreliable.
_MIN_ESS_ABS = 20.0


def _check_int(value, name, minimum, hint=""):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.{hint}")


def _template(model, args, kwargs, units, rng_key):
    """Unconstrained latent values of the model at a valid point (fixes the flat layout).

    Tries the median of 15 prior draws first; with a vague prior (e.g. Gamma(1e-4, 1e-4)) those
    draws underflow to 0 and the model rejects them, so it falls back to a uniform draw in
    (-2, 2) of the unconstrained space (always finite), the way NumPyro's MCMC initialises.
    """
    from numpyro.infer.initialization import init_to_median, init_to_uniform
    from numpyro.infer.util import initialize_model

    def weighted_model(w, *a, **kw):
        with reweight(weights=w, units=units):
            return model(*a, **kw)

    key = jax.random.PRNGKey(0) if rng_key is None else rng_key
    errors = []
    for strategy in (init_to_median(num_samples=15), init_to_uniform(radius=2.0)):
        try:
            info = initialize_model(key, weighted_model, init_strategy=strategy,
                                    model_args=(jnp.asarray(1.0), *args), model_kwargs=kwargs)
            return info.param_info.z
        except (ValueError, RuntimeError) as e:  # invalid distribution parameters / no valid start
            errors.append(f"{type(e).__name__}: {e}")
    raise RuntimeError("Could not find a valid starting point of the model's latent values (tried the median "
                       "of 15 prior draws and uniform draws in (-2, 2) of the unconstrained space): "
                       + " | ".join(errors) + ". Check that the prior gives the likelihood valid parameters.")


def _layout(model, args, kwargs, units, rng_key):
    """Zeros in the shape of the model's unconstrained latent values: the flat layout, nothing compiled.

    Read from the abstract trace (:func:`genbayes.units._trace`) and each site's support transform
    (``inverse_shape``); SMC and prequential SMC start from prior draws, so they need only the layout,
    not a valid point. A model whose latents cannot be read that way (a discrete site that is not
    enumerated) falls back to :func:`_template`, which also gives NumPyro's error for it.
    """
    from numpyro.distributions.transforms import biject_to

    from .units import _is_enumerated, _trace

    tr = _trace(model, args, kwargs)
    z = {}
    dtype = jnp.result_type(float)
    for name, site in tr.items():
        if site["type"] != "sample" or site["is_observed"] or _is_enumerated(site):
            continue
        if site["fn"].support.is_discrete or site.get("infer", {}).get("reparam") is not None:
            return _template(model, args, kwargs, units, rng_key)
        shape = biject_to(site["fn"].support).inverse_shape(jnp.shape(site["value"]))
        z[name] = np.zeros(shape, dtype)  # numpy: no eager JAX operation (nothing compiled)
    return z


class _FlatModel:
    """Flat unconstrained-space densities of a unit-weighted model.

    ``log_density(w)`` takes one weight per unit (or a scalar β for all of them). With enumerated
    discrete latents the weights act on each unit's marginal likelihood
    (:func:`genbayes.units.potential_energy`); otherwise it is NumPyro's potential energy.
    Built inside a compiled program: ``args``/``kwargs`` may be traced.
    """

    def __init__(self, model, args, kwargs, z0, units, one_at_a_time=False):
        self.model, self.args, self.kwargs, self.units = model, args, kwargs, units
        self.z0 = z0
        self.flat0, self.unravel = ravel_pytree(z0)
        self.dim = self.flat0.shape[0]
        self._enum = None
        # evaluate log_prior / log_likelihood one particle at a time under vmap (see _one_at_a_time)
        self.one_at_a_time = one_at_a_time

    def _weighted_model(self, w, *a, **kw):
        with reweight(weights=w, units=self.units):
            return self.model(*a, **kw)

    def log_density(self, w):
        """x -> log of the w-weighted unnormalised posterior at flat unconstrained x (Jacobian included)."""
        from .units import _enum_model, potential_energy

        args = (w, *self.args)
        if self.units.enumerated:
            if self._enum is None:  # one enumeration wrapper for every weight (its plate nesting is fixed)
                self._enum = _enum_model(self._weighted_model, args, self.kwargs)
            m, enumerated = self._enum, True
        else:
            m, enumerated = self._weighted_model, False
        return lambda x: -potential_energy(m, args, self.kwargs, self.unravel(x), enumerated=enumerated)

    def _prior_and_likelihood(self, x):
        """(log prior with Jacobian, log-likelihood) at flat ``x`` from one evaluation of the model.

        The weighted log density is linear in a common weight, f(w) = log prior + w log-likelihood,
        so one forward-mode derivative at w = 1 gives f(1) and the log-likelihood f'(1) exactly (at
        w = 0 the handler masks the likelihood out and the derivative is 0: see ``reweight``). Two
        potentials, f(0) and f(1) - f(0), evaluated the model twice per gradient; SMC's
        ``log_prior`` and ``log_likelihood`` now trace the same computation, which XLA merges.
        """
        value, lik = jax.jvp(lambda w: self.log_density(w)(x), (jnp.ones((), jnp.result_type(x)),),
                             (jnp.ones((), jnp.result_type(x)),))
        # a -inf likelihood (a particle outside the data's support) leaves the prior undefined as a
        # difference; the tempered target is -inf there for every temperature > 0 either way
        return jnp.where(jnp.isneginf(lik), value, value - lik), lik

    def tempered(self, beta):
        """x -> log prior + β log-likelihood (Jacobian included), from one evaluation of the model.

        The model weighted by β (every unit): what SMC's moves target. Written as BlackJAX's
        ``log_prior(x) + β log_likelihood(x)``, each of the two is a whole evaluation of the model
        and its gradient (XLA does not merge their backward passes): SMC on radiata pine took
        twice as long that way (warm, 4 runs x 300 particles: 0.85 s against 0.42 s). A β of
        exactly 0 masks the likelihood out, so a particle with a -inf likelihood keeps its prior
        density there (not 0 · -inf = NaN).
        """
        if self.one_at_a_time:
            return lambda x: self.log_prior(x) + beta * self.log_likelihood(x)
        return self.log_density(beta)

    def log_prior(self, x):
        if self.one_at_a_time:
            return self._sequential(_FlatModel.log_prior, x)
        return self._prior_and_likelihood(x)[0]

    def log_likelihood(self, x):
        if self.one_at_a_time:
            return self._sequential(_FlatModel.log_likelihood, x)
        return self._prior_and_likelihood(x)[1]

    def _sequential(self, method, x):
        """``method(self, x)`` with the model's array arguments passed explicitly (no traced closure)."""
        leaves, tree = jax.tree_util.tree_flatten((self.args, self.kwargs))
        is_array = [isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves]

        z0 = jax.tree_util.tree_map(lambda z: np.zeros(np.shape(z), z.dtype), self.z0)  # layout only, untraced

        def f(x, arrays):
            it = iter(arrays)
            a, kw = jax.tree_util.tree_unflatten(tree, [next(it) if m else v for v, m in zip(leaves, is_array)])
            return method(_FlatModel(self.model, a, kw, z0, self.units), x)

        return _one_at_a_time(f, x, [v for v, m in zip(leaves, is_array) if m])

    def sample_prior(self, key, num):
        """(num, d) prior draws in the flat unconstrained space."""
        from numpyro.handlers import seed, trace
        from numpyro.infer.util import unconstrain_fn

        names = list(self.z0)

        def one(k):
            tr = trace(seed(self.model, k)).get_trace(*self.args, **self.kwargs)
            latent = {n: tr[n]["value"] for n in names}
            # seeded: a discrete site left for enumeration is sampled while the transforms are read
            u = unconstrain_fn(seed(self.model, k), self.args, self.kwargs, latent)
            flat = ravel_pytree({n: u[n] for n in names})[0]
            # A vague prior's draw can underflow to the edge of its support (a Gamma(1e-4, 1e-4)
            # precision to 0.0), whose unconstrained value is -inf. Move only infinite values to a
            # finite one just inside the representable range (exp(-0.9 * 709) ~ 1e-277 in float64);
            # finite draws are untouched and NaN stays NaN (caught by the estimator's checks).
            big = 0.9 * float(np.log(np.finfo(flat.dtype).max))
            return jnp.where(jnp.isinf(flat), jnp.sign(flat) * big, flat)

        return jax.vmap(one)(jax.random.split(key, num))


# jaxlib 0.10's CPU LAPACK kernels (Cholesky, triangular solve, eigh, ...) split a batched call into
# chunks on XLA's intra-op thread pool and block that pool thread until the chunks are done. When the
# thunk executor runs as many such calls at once as the pool has threads (2 on a 2-core machine: two
# independent triangular solves in the gradient of a MultivariateNormal), every thread waits for
# chunks no thread is left to run: the program never returns, at 0 % CPU. Seen as SMC hanging on a
# factor model; a native stack shows each pool thread in jax::ParallelBatchMap under lapack_dtrsm_ffi.
# (jaxlib 0.11.2 builds that parallel path out of open-source builds.)
_LAPACK_PRIMITIVES = frozenset({"cholesky", "triangular_solve", "eigh", "eig", "lu", "qr", "geqrf", "geqp3",
                                "householder_product", "svd", "schur", "hessenberg", "tridiagonal",
                                "tridiagonal_solve", "lu_pivots_to_permutation"})


def _batched_lapack_may_deadlock() -> bool:
    import jaxlib

    version = tuple(int(p) for p in jaxlib.__version__.split(".")[:2] if p.isdigit())
    return jax.default_backend() == "cpu" and version < (0, 11)


def _lapack_operand_size(jaxpr) -> int:
    """The largest operand (elements) of any LAPACK primitive in a (closed) jaxpr, sub-jaxprs included; 0 if none."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    size = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _LAPACK_PRIMITIVES:
            size = max([size] + [int(np.prod(getattr(v.aval, "shape", ()))) for v in eqn.invars])
        for v in eqn.params.values():
            for sub in (v if isinstance(v, (tuple, list)) else (v,)):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    size = max(size, _lapack_operand_size(sub))
    return size


# Densities whose LAPACK operands (per particle) are smaller than this stay batched: a 2 x 2 Cholesky
# factor of a regression prior (radiata pine: scale_tril depends on the precision, so the solve is batched
# over particles) ran batched in every SMC run of this suite and its benchmarks before the guard existed,
# never hanging, and evaluating it one particle at a time made radiata's warm SMC ~8x slower than the
# BlackJAX baseline. The hang was seen with 6 x 6 covariances and 100 x 6 right-hand sides.
_SEQUENTIAL_LAPACK_FROM = 16


def _one_at_a_time(f, x, consts):
    """``f(x, consts)`` (a scalar log density), computed one batch element at a time under ``vmap``.

    Value and gradient are one :func:`jax.lax.map` over the batch (a ``custom_vmap`` rule under a
    ``custom_vjp``), so a LAPACK call inside ``f`` is never batched and cannot hit the jaxlib 0.10
    thread-pool deadlock described at ``_LAPACK_PRIMITIVES``. First derivatives only (HMC moves).
    """
    from jax.custom_batching import custom_vmap

    vg = jax.value_and_grad(f)

    @custom_vmap
    def value_and_grad(x, consts):
        return vg(x, consts)

    @value_and_grad.def_vmap
    def _rule(axis_size, in_batched, x, consts):
        x_batched, c_batched = in_batched
        flags = jax.tree_util.tree_leaves(c_batched)
        batched = [c for c, b in zip(consts, flags) if b]

        def body(row):
            xi, bi = row
            it = iter(bi)
            return vg(xi, [next(it) if b else c for c, b in zip(consts, flags)])

        xs = x if x_batched else jnp.broadcast_to(x, (axis_size, *jnp.shape(x)))
        return jax.lax.map(body, (xs, batched)), (True, True)

    @jax.custom_vjp
    def value(x, consts):
        return value_and_grad(x, consts)[0]

    def fwd(x, consts):
        v, g = value_and_grad(x, consts)
        return v, (g, consts)

    def bwd(res, ct):
        g, consts = res
        zero = [jnp.zeros_like(c) if jnp.issubdtype(jnp.result_type(c), jnp.inexact)
                else np.zeros(jnp.shape(c), jax.dtypes.float0) for c in consts]
        return ct * g, zero

    value.defvjp(fwd, bwd)
    return value(x, list(consts))


_PROGRAMS = ProgramCache(maxsize=64)


def _program(kind, model, args, kwargs, units, settings, body, rng_key):
    """Compile (or reuse) ``body(flat, *extra)`` as a function of the model's array arguments.

    Returns ``call(*extra)``; ``body`` receives a :class:`_FlatModel` bound to traced arguments, whose
    ``flat0`` is the layout only (zeros, read from the abstract trace): the body finds its own starts.
    """
    z0 = _layout(model, args, kwargs, units, rng_key)
    dyn, rebuild, static_key = split_args(args, kwargs)

    def build():
        def fn(dyn_leaves, z0, *extra):
            a, kw = rebuild(dyn_leaves)
            return body(_FlatModel(model, a, kw, z0, units), *extra)

        return jax.jit(fn)

    # the body's closure is part of the program: key on its code and the settings it captures
    key = None if static_key is None else (kind, model, units.key, static_key, settings)
    compiled, _ = _PROGRAMS.get(key, build)
    call = lambda *extra: compiled(dyn, z0, *extra)  # noqa: E731
    call.z0 = z0
    return call


def _shard_mode(shard, num_runs):
    """Where a batch of independent SMC runs goes: ``"none"``, ``"runs"`` or ``"particles"``.

    ``None``/``True``: with one device ``"none"``; else ``"runs"`` when there are at least as many
    runs as devices (no communication at all), otherwise ``"particles"`` (each run's particles split
    across all devices, so every device has work even for a single run).
    """
    if not (shard is None or isinstance(shard, (bool, np.bool_)) or shard in ("runs", "particles")):
        raise ValueError(f"`shard` must be None (automatic), True, False, 'runs' or 'particles', got {shard!r}.")
    D = num_devices()
    if D == 1 or shard is False:
        return "none"
    if isinstance(shard, str):
        return shard
    return "runs" if num_runs >= D else "particles"


def _mapped_program(kind, model, args, kwargs, units, settings, one, num_rows, rng_key, mode, sequential=False):
    """Compile (or reuse) ``one(flat, *row, constrain=...)`` mapped over the leading axis of its rows.

    The rows are ``jax.vmap``-ed, or with ``sequential=True`` run one after another
    (``jax.lax.map``, per device when sharded): for rows whose work is a data-dependent loop (SMC
    runs: tempering steps, blocks of moves, retries), under ``vmap`` every row waits for the
    longest, a lock-step that ``sequential`` removes.

    ``mode`` places the work: ``"none"`` one ``jax.jit(jax.vmap(...))`` on one device; ``"runs"`` the
    rows split across devices (:func:`genbayes._programs.shard_leading`, independent, no
    communication); ``"particles"`` the same vmapped program with every particle array constrained
    to be split across devices (:func:`genbayes._programs.particle_constraint`; XLA inserts the
    collectives for weights, ESS, covariances and resampling). Returns ``call(*rows) -> (outputs, devices)``
    for ``num_rows`` row arrays: ``devices`` is the number of devices the outputs were computed on
    (every process's, in a ``jax.distributed`` job), and the outputs are whole on every process
    (:func:`genbayes._programs.gather`).
    """
    z0 = _layout(model, args, kwargs, units, rng_key)
    dyn, rebuild, static_key = split_args(args, kwargs)
    constrain = particle_constraint() if mode == "particles" else (lambda x: x)

    def build():
        def per_row(dyn_leaves, z0, *row):
            a, kw = rebuild(dyn_leaves)
            flat = _FlatModel(model, a, kw, z0, units)
            if _batched_lapack_may_deadlock():
                # log_likelihood traces the whole model, prior terms included: one check for both
                size = _lapack_operand_size(jax.make_jaxpr(flat.log_likelihood)(flat.flat0))
                flat.one_at_a_time = size >= _SEQUENTIAL_LAPACK_FROM
            return one(flat, *row, constrain=constrain)

        in_axes = (None, None) + (0,) * num_rows
        def in_sequence(dyn_leaves, z0, *rows):
            return jax.lax.map(lambda r: per_row(dyn_leaves, z0, *r), rows)

        mapped = in_sequence if sequential else jax.vmap(per_row, in_axes=in_axes)
        if mode == "runs":
            return shard_leading(mapped, in_axes, axis_name="run")
        return jax.jit(mapped)

    key = None if static_key is None else (kind, model, units.key, static_key, settings, mode, num_devices(),
                                           sequential)
    compiled, _ = _PROGRAMS.get(key, build)

    def call(*rows):
        out = compiled(dyn, z0, *rows)
        # shard_leading's run gathers its outputs itself (in a multi-process job): count its mesh
        devices = compiled.num_devices if mode == "runs" else devices_used(out)
        return gather(out), devices

    return call


def _weighted_cov(x, w):
    mean = jnp.sum(w[:, None] * x, axis=0)
    c = x - mean
    cov = (w[:, None] * c).T @ c
    # jitter relative to each coordinate's own scale keeps the Cholesky alive after a collapse
    # without distorting coordinates whose scales differ by orders of magnitude
    return cov + jnp.diag(1e-6 * jnp.diag(cov) + 1e-12)


def _ess(w):
    return 1.0 / jnp.sum(w**2)


def _warn(problems, method, diag, invalid=()):
    """Record run-time trouble in ``diag`` and warn about it.

    ``problems`` are cautions (the estimate stands); ``invalid`` are reasons the estimate must not
    be used (collapsed acceptance, degenerate ESS, a run that never reached the posterior,
    divergences): they land in ``diag["invalid"]``, which makes :attr:`Evidence.valid` False.
    """
    diag["invalid"] = tuple(diag.get("invalid", ())) + tuple(invalid)
    diag["warnings"] = tuple(diag.get("warnings", ())) + tuple(invalid) + tuple(problems)
    for p in invalid:
        warnings.warn(f"log_evidence(method={method!r}): the estimate is INVALID: {p}.", RuntimeWarning,
                      stacklevel=4)
    for p in problems:
        warnings.warn(f"log_evidence(method={method!r}): {p}.", RuntimeWarning, stacklevel=4)


def _starts_at_prior(units, what, fix):
    """SMC and Laplace start from (or normalise against) the prior: no observed site may stay fixed."""
    if units.fixed:
        raise ValueError(
            f"{what} needs every observed site in the likelihood it adds (it starts from the prior), but "
            f"{list(units.fixed)} would stay conditioned on at full weight. {fix}")

