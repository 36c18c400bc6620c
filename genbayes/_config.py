"""Scoped JAX configuration (genbayes never changes global settings at import)."""

from __future__ import annotations

import contextlib

import jax


@contextlib.contextmanager
def x64():
    """Run a block in float64 and restore the previous precision setting afterwards.

    Identity checks (evidence against the chain rule, S_CV sums) need float64 to be meaningful
    at 1e-9; arrays created inside the block are float64.
    """
    # JAX's own scoped setting, not a global update restored by hand: read inside an enclosing
    # ``with jax.enable_x64(True)``, the global flag looks True, and "restoring" it leaked float64
    # into everything run afterwards
    with jax.enable_x64(True):
        yield
