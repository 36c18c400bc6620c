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
    """Raise if a concrete data array ``x`` is not real numbers or has NaN or infinite entries.

    ``TypeError`` for complex, string or non-numeric object arrays (the message names ``name``);
    ``ValueError`` for NaN or ±inf entries (with the index of the first). Object arrays of numbers
    (``np.array([0.3, None])``) are read as floats, so ``None`` counts as a missing (NaN) value.
    """
    if x is None or not is_concrete(x):
        return
    arr = np.asarray(x)
    _reject_complex(arr, name)
    if arr.dtype.kind in "USO":
        try:
            arr = np.asarray(arr, dtype=float)
        except (TypeError, ValueError):
            raise TypeError(f"`{name}` must be an array of real numbers, got dtype {arr.dtype} "
                            f"(e.g. {arr.ravel()[:1].tolist()}); convert it to numbers first.") from None
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if np.any(bad):
            where = np.argwhere(bad)[0].tolist()
            raise ValueError(
                f"`{name}` contains {int(bad.sum())} non-finite value(s) (first at index {where}); "
                "remove or impute them before inference. For missing entries that a mask hides from the "
                "likelihood (`obs_mask=`, `numpyro.handlers.mask`), put any finite placeholder (e.g. 0.0) there."
            )


def check_real_array(x, name: str, *, ndim=None, nonempty: bool = True, neg_inf_ok: bool = False):
    """``x`` as a NumPy float array after :func:`check_finite_data` (``-inf`` allowed with ``neg_inf_ok``,
    e.g. a log weight of 0); ``ValueError`` for a wrong ``ndim`` (an int or a tuple of allowed ones) or,
    with ``nonempty``, no entries at all."""
    if not is_concrete(x):
        return x
    arr = np.asarray(x)
    if neg_inf_ok and arr.dtype.kind == "f":
        check_finite_data(np.where(arr == -np.inf, 0.0, arr), name)
    else:
        check_finite_data(arr, name)
    arr = np.asarray(arr, dtype=float)
    if ndim is not None and arr.ndim not in np.atleast_1d(ndim):
        raise ValueError(f"`{name}` must have {' or '.join(map(str, np.atleast_1d(ndim)))} dimension(s), "
                         f"got shape {arr.shape}.")
    if nonempty and arr.size == 0:
        raise ValueError(f"`{name}` is empty (shape {arr.shape}); pass at least one value.")
    return arr


def _arg_name(what, path) -> str:
    import jax

    head, rest = path[0], path[1:]
    head = f"{what} #{head.idx}" if isinstance(head, jax.tree_util.SequenceKey) else f"{what} {head.key!r}"
    return head + "".join(str(k) for k in rest)


def check_args_finite(args, kwargs, *, what: str = "model argument") -> None:
    """Check the data among a model's positional and keyword arguments before anything is traced.

    Every array or number in ``args``/``kwargs`` (also inside lists, tuples and dicts) must be real
    and finite (:func:`check_finite_data`); the message names the argument (``model argument #0``,
    ``model argument 'y'``, ``model argument #1[2]`` for an entry of a list). Strings, callables and
    other non-array objects pass through: they are the model's settings, not data.
    """
    import jax

    leaves = jax.tree_util.tree_flatten_with_path((tuple(args), dict(kwargs or {})))[0]
    for path, leaf in leaves:
        if isinstance(leaf, bool) or not (hasattr(leaf, "shape") or isinstance(leaf, (int, float, complex))):
            continue
        check_finite_data(leaf, _arg_name(what, path[1:]))


def empty_plate_error(args, kwargs) -> ValueError:
    """The error for NumPyro's ``AssertionError: size of plate should be positive``: the data are empty."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path((tuple(args), dict(kwargs or {})))[0]
    empty = [f"{_arg_name('model argument', p[1:])} (shape {tuple(np.shape(a))})" for p, a in leaves
             if hasattr(a, "shape") and np.size(a) == 0]
    return ValueError("The model opened a plate of size 0: the data are empty"
                      f"{' — ' + ', '.join(empty) if empty else ''}. Pass at least one observation.")


class guard_empty_plates:
    """Context manager turning NumPyro's bare ``AssertionError`` for a plate of size 0 into
    :func:`empty_plate_error` (a ``ValueError`` naming the empty arguments)."""

    def __init__(self, args, kwargs):
        self.args, self.kwargs = args, kwargs

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is AssertionError and "size of plate should be positive" in str(exc):
            raise empty_plate_error(self.args, self.kwargs) from None
        return False


def _concrete_scalar(x, name: str):
    """``x`` as a 0-d float array, or None when it is traced; ``TypeError`` unless it is a scalar number."""
    if not is_concrete(x):
        return None
    if np.iscomplexobj(x):
        raise TypeError(f"`{name}` must be a real number, got the complex {x!r}.")
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


class NonFiniteLoss(ValueError, FloatingPointError):
    """A loss (or log density) that is NaN or infinite for some observations at concrete parameters.

    A ``ValueError`` (the data or the loss are wrong, not the numerics) that is also a
    ``FloatingPointError``, the class these checks raised before.

    Example:
        >>> from genbayes._validation import NonFiniteLoss
        >>> issubclass(NonFiniteLoss, ValueError) and issubclass(NonFiniteLoss, FloatingPointError)
        True
    """


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
