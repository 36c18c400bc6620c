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
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", prev)
