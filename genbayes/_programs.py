"""Reusing compiled programs across calls: argument splitting and a small program cache.

A sampling core (NUTS for B weight vectors, an SMC sweep, ...) is compiled once per model,
settings and argument *structure*; the arrays (data, hyperparameters, weights) are inputs of
the compiled program rather than constants baked into it, so a second call with new data of
the same shapes reuses it (calibration iterations, CV batches, ladders, benchmarks).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .conjugate import ConjugateFamily, is_conjugate


def split_args(args, kwargs):
    """Split model arguments into array leaves (program inputs) and a hashable static part.

    Arrays and floats are inputs (so new data or hyperparameters reuse the program); other
    leaves (ints, strings, None) are static. Returns ``(dyn, rebuild, key)`` where
    ``rebuild(dyn) -> (args, kwargs)`` and ``key`` is hashable, or None if a static leaf is not.
    """
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
    is_dyn = tuple(isinstance(v, (np.ndarray, jax.Array, float, np.floating)) for v in leaves)
    static = tuple(None if d else v for v, d in zip(leaves, is_dyn))
    try:
        key = hash((treedef, is_dyn, static)) and (treedef, is_dyn, static)
    except TypeError:
        key = None

    def rebuild(dyn_leaves):
        it = iter(dyn_leaves)
        return jax.tree_util.tree_unflatten(treedef, [next(it) if d else v for v, d in zip(static, is_dyn)])

    return [v for v, d in zip(leaves, is_dyn) if d], rebuild, key


def _family_model(family, *data):
    # module level, so programs compiled for one family type are reused across hyperparameters
    # and data (the family is a pytree argument, not part of the cache key)
    return family.model(*data)


def family_as_argument(model, args):
    """``(model, args)`` with a conjugate family (or its bound ``model``) moved into the arguments."""
    if is_conjugate(model):
        family = model if isinstance(model, ConjugateFamily) else model.__self__
        return _family_model, (family, *args)
    return model, tuple(args)


class ProgramCache:
    """A bounded first-in-first-out cache of compiled programs."""

    _instances: list = []  # every cache, for clear_program_caches

    def __init__(self, maxsize: int = 32):
        self.maxsize = maxsize
        self._programs: dict = {}
        ProgramCache._instances.append(self)

    def get(self, key, build):
        """The program cached under ``key``, building (and caching) it when absent.

        Returns ``(program, reused)``. A ``None`` or unhashable key is never cached.
        """
        try:
            program = self._programs.get(key) if key is not None else None
        except TypeError:
            key, program = None, None
        if program is not None:
            return program, True
        program = build()
        if key is not None:
            if len(self._programs) >= self.maxsize:
                self._programs.pop(next(iter(self._programs)))
            self._programs[key] = program
        return program, False


def clear_program_caches() -> None:
    """Forget every program genbayes has cached (and JAX's own caches): the next call builds afresh.

    For tests: a result from a cached program must equal the result of a program built for that call.
    """
    for cache in ProgramCache._instances:
        cache._programs.clear()
    jax.clear_caches()


_DATA_PROGRAMS = ProgramCache(maxsize=64)


def data_program(kind, model, args, kwargs, settings, make):
    """A jitted function of the model's array arguments, compiled once per model, structure and settings.

    ``make(args, kwargs)`` returns the function ``f(*inputs)`` to compile; it is called inside the
    program with the model's arguments rebuilt from traced arrays (:func:`split_args`), so new data
    or hyperparameters of the same shapes reuse the program. Everything else ``f`` depends on must
    be either an input or in the hashable ``settings`` (part of the cache key): a value captured by
    ``make`` and not in ``settings`` would be baked into the cached program. The model function
    object is part of the key: the same function reuses the program; a new function (a fresh
    lambda or closure on each call) compiles again. Returns ``call(*inputs)``.
    """
    dyn, rebuild, static_key = split_args(args, kwargs)

    def build():
        def fn(dyn_leaves, *inputs):
            a, kw = rebuild(dyn_leaves)
            return make(a, kw)(*inputs)

        return jax.jit(fn)

    key = None if static_key is None else (kind, model, static_key, settings)
    program, _ = _DATA_PROGRAMS.get(key, build)
    return lambda *inputs: program(dyn, *inputs)


# ---------------------------------------------------------------------------------------------
# splitting work across devices
# ---------------------------------------------------------------------------------------------


def _shard_map():
    sm = getattr(jax, "shard_map", None)
    if sm is None:  # JAX < 0.7
        from jax.experimental.shard_map import shard_map as sm
    return sm


def use_cpu_devices(count: int | None = None) -> int:
    r"""Split the host CPU into ``count`` JAX devices (default: one per core), so sharded programs use every core.

    XLA runs a ``jax.vmap``-ed batch of independent chains on one CPU device mostly on one core; with
    the CPU split into k devices, :func:`shard_leading` gives each device B/k of the chains and the
    devices run in parallel. Measured on a 2-core machine (``benchmarks/bench_batched_ess.py``,
    logistic regression, n = 1000, B = 32 NUTS posteriors): 1.87 against 1.59 times the effective
    samples per second of a compiled loop, i.e. 1.18x from the second device (and more with many
    chains per posterior, ``gb.batched.run(kernel="chees")``: 1.81 against 1.26).

    genbayes never changes this at import (a library must not change global JAX settings); the
    ``genbayes`` command calls it before JAX starts (``GENBAYES_CPU_DEVICES=1`` keeps one device).
    In a script, call it right after ``import genbayes``, before any JAX computation; it is
    ``jax.config.update("jax_num_cpu_devices", count)`` (``JAX_NUM_CPU_DEVICES=k`` in the environment
    does the same). Programs that are not sharded run on the first device as before.

    Args:
        count: the number of CPU devices (a positive integer); ``None`` for ``os.cpu_count()``.

    Returns:
        int: the number of CPU devices now configured.

    Raises:
        RuntimeError: when JAX has already started its backend with another device count (the
            setting is read once, when the first computation runs): call it earlier, or set
            ``JAX_NUM_CPU_DEVICES`` in the environment before starting Python.

    Example:
        >>> import jax, genbayes as gb
        >>> have = len(jax.devices("cpu"))  # JAX has started here: asking for the same count is fine
        >>> gb.use_cpu_devices(have) == have
        True
    """
    import os

    count = (os.cpu_count() or 1) if count is None else count
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"`count` must be a positive integer (the number of CPU devices), got {count!r}.")
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        have = len(jax.devices("cpu"))
        if have == count:
            return have
        raise RuntimeError(
            f"JAX has already started with {have} CPU device(s); use_cpu_devices({count}) must run before any "
            f"JAX computation (right after the imports), or set JAX_NUM_CPU_DEVICES={count} in the environment.")
    jax.config.update("jax_num_cpu_devices", int(count))
    return int(count)


def num_devices() -> int:
    """How many devices a sharded program would use: all visible ones (``len(jax.devices())``).

    In a ``jax.distributed`` job (several processes) these are the devices of *every* process.
    """
    return len(jax.devices())


def multi_process() -> bool:
    """True inside a ``jax.distributed`` job with more than one process (``jax.process_count() > 1``)."""
    return jax.process_count() > 1


def _is_key(a) -> bool:
    return jnp.issubdtype(getattr(a, "dtype", np.float32), jax.dtypes.prng_key)


def place(a, sharding):
    r"""``a`` placed with ``sharding``; in a multi-process job each process feeds only its own rows.

    Our batched inputs (weights, keys, held-out masks) are computed identically by every process
    from the same key, so every process holds the whole array. With one process this is
    ``jax.device_put``. When ``sharding`` spans devices of other processes, the global array is
    assembled with ``jax.make_array_from_callback``: each process copies the slices its own
    devices hold, and nothing is sent between processes. Typed PRNG key arrays are placed through
    their key data. Inside a traced program it is ``jax.device_put`` (a sharding constraint).
    """
    if isinstance(a, jax.core.Tracer) or sharding.is_fully_addressable:
        return jax.device_put(a, sharding)
    if _is_key(a):
        return jax.random.wrap_key_data(place(jax.random.key_data(a), sharding), impl=jax.random.key_impl(a))
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def gather(tree):
    r"""``tree`` with every array that spans several processes replaced by a process-local copy of its full value.

    Sharded programs in a multi-process job return global arrays, of which each process can read
    only its own shards (``np.asarray`` refuses). A fully replicated array (what
    :func:`shard_leading` returns in a multi-process job: its program ends with an all-gather)
    becomes its copy on this process's first device, with no communication;
    any other is gathered with ``jax.experimental.multihost_utils.process_allgather``. Arrays
    that one process holds entirely (every array in a single-process run) are returned as they
    are, as are tracers and non-arrays. Every process must call it at the same point (the
    gather is a collective); after it, each process holds the whole result and the code that
    follows is ordinary single-process code.
    """

    def one(x):
        if not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer) or x.is_fully_addressable:
            return x
        if _is_key(x):
            return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        if x.is_fully_replicated:
            return x.addressable_data(0)
        from jax.experimental import multihost_utils

        return jnp.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree_util.tree_map(one, tree)


def resolve_shard(shard, name: str = "shard") -> bool:
    """``shard=None`` means "when more than one device is visible"; ``True`` is ignored on one device."""
    if shard is not None and not isinstance(shard, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be None (shard when several devices are visible), True or False, got {shard!r}.")
    return len(jax.devices()) > 1 and (shard is None or bool(shard))


def devices_used(tree) -> int:
    """The number of devices holding the arrays of ``tree`` (measured from their shardings)."""
    devs = set()
    for leaf in jax.tree_util.tree_leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        if sharding is not None:
            devs |= set(sharding.device_set)
    return len(devs)


def shard_leading(batched, in_axes, *, axis_name: str = "shard", check: bool = False):
    r"""Run a function mapped over a leading axis with that axis split across all visible devices.

    ``batched(*args)`` must treat the leading axis of every argument whose ``in_axes`` entry is 0 as
    a batch of *independent* problems (typically ``jax.vmap(one, in_axes)``); arguments with entry
    ``None`` are shared and replicated. The returned ``run(*args)`` pads the batch B up to a multiple
    of the device count D (repeating the last row, whose results are dropped), places the mapped
    arguments with ``NamedSharding(Mesh(devices), P(axis_name))`` and runs one ``jax.jit`` of
    ``jax.shard_map(batched)``: device d computes rows :math:`[d\,B'/D, (d+1)\,B'/D)`, B' the padded
    size, with no communication between devices. Every output has the batch as its leading axis.

    In a ``jax.distributed`` job (several processes, e.g. one per host) the mesh holds every
    process's devices; each process, which computes the same inputs, feeds only the rows of its own
    devices (:func:`place`), the program ends with one all-gather of the outputs, and ``run``
    returns process-local arrays holding the whole result on every process (:func:`gather`). When
    ``run`` is traced inside a caller's ``jax.jit``, the caller gathers its own outputs.

    Each device runs ``batched`` on B'/D rows instead of B, so XLA may associate the arithmetic
    of batched reductions differently than on one device: results agree to rounding error,
    not bit for bit (and adaptive samplers amplify rounding along the chain; see
    ``docs/scaling.md``).

    Args:
        batched: a function of ``len(in_axes)`` arguments (pytrees allowed) mapped over the leading axis.
        in_axes: a tuple of 0 (mapped, split across devices) or None (shared) per argument.
        axis_name: the mesh axis name.
        check: JAX's varying-manual-axes type check (``check_vma``); off by default because
            NumPyro's NUTS and BlackJAX mix replicated constants with per-device values inside
            ``lax.cond``, which the check rejects although every device runs independent work.

    Returns:
        ``run(*args)``, with ``run.num_devices`` the device count.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from genbayes._programs import shard_leading
        >>> run = shard_leading(jax.vmap(lambda x, c: jnp.sum(x) * c, in_axes=(0, None)), (0, None))
        >>> run(jnp.ones((5, 3)), 2.0).tolist()
        [6.0, 6.0, 6.0, 6.0, 6.0]
    """
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    devices = jax.devices()
    D = len(devices)
    mesh = Mesh(np.array(devices), (axis_name,))
    spec = P(axis_name)
    in_specs = tuple(spec if a == 0 else P() for a in in_axes)
    kw = dict(mesh=mesh, in_specs=in_specs, out_specs=spec)
    try:
        fn = jax.jit(_shard_map()(batched, check_vma=check, **kw))
    except TypeError:  # JAX < 0.7 spells it check_rep
        fn = jax.jit(_shard_map()(batched, check_rep=check, **kw))
    sharding = NamedSharding(mesh, spec)
    if multi_process():
        # In a jax.distributed job the mesh spans every process's devices: end the program with one
        # all-gather (outputs replicated), so that each process can read the whole result (gather).
        replicated = NamedSharding(mesh, P())
        sharded = fn
        fn = jax.jit(lambda *a: jax.lax.with_sharding_constraint(sharded(*a), replicated))

    def run(*args):
        B = next(jnp.shape(jax.tree_util.tree_leaves(a)[0])[0] for a, ax in zip(args, in_axes) if ax == 0)
        pad = (-B) % D

        def place_rows(a):
            if pad:  # repeat the last row so every device gets as many; dropped below
                a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)])
            return place(a, sharding)

        args = tuple(jax.tree_util.tree_map(place_rows, a) if ax == 0 else a for a, ax in zip(args, in_axes))
        out = gather(fn(*args))  # a no-op with one process, and when traced inside a caller's program
        return jax.tree_util.tree_map(lambda a: a[:B], out) if pad else out

    run.num_devices = D
    return run


def particle_constraint(axis_name: str = "particle"):
    r"""``constrain(x)``: ask XLA to split the leading (particle) axis of ``x`` across all devices.

    ``jax.lax.with_sharding_constraint`` with ``NamedSharding(Mesh(devices), P(axis_name))``. Inside
    one ``jax.jit`` program, XLA's SPMD partitioner then runs per-particle work (prior draws,
    MCMC moves, likelihoods) on the device holding the particle and inserts the collectives that
    cross-particle steps need: all-reduces for normalising weights, ESS and covariances, and
    gathers for resampling. Under ``jax.vmap`` the constraint applies to each run's particles.
    The particle count need not be a multiple of the device count (XLA pads).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from genbayes._programs import particle_constraint
        >>> c = particle_constraint()
        >>> float(jax.jit(lambda x: jnp.sum(c(x) ** 2))(jnp.arange(6.0)))
        55.0
    """
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    sharding = NamedSharding(Mesh(np.array(jax.devices()), (axis_name,)), P(axis_name))

    def constrain(x):
        return jax.lax.with_sharding_constraint(x, sharding)

    return constrain


class count_compilations:
    """Context manager counting XLA backend compilations (JAX's compile-duration monitoring event).

    Every ``jax.jit`` program compiled for the first time, and every eager operation on a new
    shape, is one backend compilation; a program already in JAX's cache costs none. Used by the
    tests ("a second call compiles nothing") and the benchmarks (compilations per estimator).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from genbayes._programs import count_compilations
        >>> f = jax.jit(lambda x: x * 3.0 + 1.0)
        >>> x, y = jnp.ones(7), jnp.zeros(7)
        >>> with count_compilations() as c:
        ...     _ = f(x); _ = f(y)  # the second call reuses the program
        >>> c.count
        1
    """

    _EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0
        self.seconds = 0.0

    def _listener(self, event, duration, **_):
        if event == self._EVENT:
            self.count += 1
            self.seconds += float(duration)

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        from jax._src import monitoring

        monitoring.unregister_event_duration_listener(self._listener)
        return False
