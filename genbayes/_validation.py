"""Input checks shared by the public entry points.

Every check runs on concrete values only (NumPy arrays, Python numbers, or JAX arrays that
are not tracers), so that bad input is reported before anything is traced or compiled, and
traced values pass through untouched (their validity is the caller's business inside a
compiled program).
"""

from __future__ import annotations

import numpy as np
from jax.core import Tracer


def is_concrete(x) -> bool:
    """True when ``x`` holds no JAX tracer (so its values can be inspected)."""
    import jax

    return not any(isinstance(leaf, Tracer) for leaf in jax.tree_util.tree_leaves(x))


def check_nonnegative_finite(x, name: str, *, hint: str = "") -> None:
    """Raise ``ValueError`` if a concrete ``x`` has NaN, infinite or negative entries."""
    if not is_concrete(x):
        return
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise TypeError(f"`{name}` must be numeric, got dtype {arr.dtype}.")
    _reject_complex(arr, name)
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"`{name}` contains NaN or infinite values; every entry must be a finite number >= 0.{hint}"
        )
    if np.any(arr < 0):
        raise ValueError(
            f"`{name}` contains negative values (min {arr.min():.4g}); every entry must be >= 0.{hint}"
        )


def _reject_complex(arr, name):
    if np.iscomplexobj(arr):
        raise TypeError(f"`{name}` is complex (dtype {arr.dtype}); genbayes takes real numbers: pass its real part "
                        "(np.real) if the imaginary part is 0 by construction.")


def check_key(rng_key, name: str = "rng_key") -> None:
    """Raise ``TypeError`` unless ``rng_key`` is a JAX PRNG key (``jax.random.PRNGKey(0)`` or ``jax.random.key(0)``)."""
    import jax

    if rng_key is None:
        raise ValueError(f"`{name}` is required: pass e.g. jax.random.PRNGKey(0).")
    if not is_concrete(rng_key):
        return
    if isinstance(rng_key, jax.Array) and jax.dtypes.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
        return
    arr = np.asarray(rng_key) if isinstance(rng_key, (jax.Array, np.ndarray)) else None
    if arr is None or arr.dtype != np.uint32 or arr.shape != (2,):
        raise TypeError(f"`{name}` must be a JAX PRNG key such as jax.random.PRNGKey(0), got {rng_key!r}"
                        f"{'' if arr is None else f' (dtype {arr.dtype}, shape {arr.shape})'}.")


def check_finite_data(x, name: str) -> None:
    """Raise ``ValueError`` if a concrete floating array ``x`` has NaN or infinite entries."""
    if x is None or not is_concrete(x):
        return
    arr = np.asarray(x)
    _reject_complex(arr, name)
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if np.any(bad):
            where = np.argwhere(bad)[0].tolist()
            raise ValueError(
                f"`{name}` contains {int(bad.sum())} non-finite value(s) (first at index {where}); "
                "remove or impute them before inference."
            )


def check_args_finite(args, kwargs, *, what: str = "model argument") -> None:
    """Check every array among positional and keyword model arguments for non-finite values."""
    for i, a in enumerate(args):
        if hasattr(a, "shape") or isinstance(a, (list, float)):
            check_finite_data(a, f"{what} #{i}")
    for k, a in (kwargs or {}).items():
        if hasattr(a, "shape") or isinstance(a, (list, float)):
            check_finite_data(a, f"{what} {k!r}")


def _concrete_scalar(x, name: str):
    """``x`` as a 0-d float array, or None when it is traced; ``TypeError`` unless it is a scalar number."""
    if not is_concrete(x):
        return None
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a real number, got {x!r}.") from None
    if arr.ndim != 0:
        raise TypeError(f"`{name}` must be a scalar, got shape {arr.shape}.")
    return arr


def check_positive_scalar(x, name: str, *, hint: str = "") -> None:
    """Raise ``ValueError`` unless a concrete ``x`` is a finite number > 0 (``TypeError`` if not a scalar)."""
    arr = _concrete_scalar(x, name)
    if arr is not None and (not np.isfinite(arr) or arr <= 0):
        raise ValueError(f"`{name}` must be a finite number > 0, got {float(arr)!r}.{hint}")


def check_open_unit_interval(x, name: str, *, hint: str = "") -> None:
    """Raise ``ValueError`` unless a concrete ``x`` is a number in (0, 1) (``TypeError`` if not a scalar number)."""
    arr = _concrete_scalar(x, name)
    if arr is not None and not 0.0 < arr < 1.0:
        raise ValueError(f"`{name}` must be a number in (0, 1), got {float(arr)!r}.{hint}")


def check_nonnegative_scalar(x, name: str, *, hint: str = "") -> None:
    """Raise ``ValueError`` unless a concrete ``x`` is a finite number >= 0 (``TypeError`` if not a scalar)."""
    if _concrete_scalar(x, name) is not None:
        check_nonnegative_finite(x, name, hint=hint)


class EstimatorFailure(RuntimeError):
    """An estimator could not produce a value at all (e.g. Laplace without a positive-definite Hessian).

    Raised at run time, after the input checks; the message says why and which method to use instead.
    :func:`genbayes.evidence.compare` records it under ``failed`` and goes on with the other methods.
    A Laplace approximation needs a strict local maximum (Tierney & Kadane 1986); on a funnel whose
    scale parameter runs to 0 there is none.

    Example:
        >>> from genbayes.evidence import EstimatorFailure
        >>> issubclass(EstimatorFailure, RuntimeError)
        True
    """
