"""Reusing compiled programs across calls: argument splitting and a small program cache.

A sampling core (NUTS for B weight vectors, an SMC sweep, ...) is compiled once per model,
settings and argument *structure*; the arrays (data, hyperparameters, weights) are inputs of
the compiled program rather than constants baked into it, so a second call with new data of
the same shapes reuses it (calibration iterations, CV batches, ladders, benchmarks).
"""

from __future__ import annotations

import jax
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

    def __init__(self, maxsize: int = 32):
        self.maxsize = maxsize
        self._programs: dict = {}

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
