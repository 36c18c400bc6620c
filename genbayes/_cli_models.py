r"""Your own model and data on the command line: ``genbayes cv|evidence PATH.py:FUNCTION --data FILE``.

A MODEL argument that is not a bundled name is read as

- ``PATH.py:FUNCTION`` (or ``PATH.py``, meaning ``PATH.py:model``): the file is imported under a
  fresh module name (its folder is on ``sys.path`` while it is imported) and FUNCTION is the
  NumPyro model;
- ``package.module:FUNCTION``: imported with :func:`importlib.import_module` (the current folder
  is on ``sys.path`` while it is imported).

``--data`` gives the model's arguments, matched to the model's parameters *by name*
(:func:`inspect.signature`):

- ``FILE.csv``: one column per 1-D argument, named as the parameter (``y``); a 2-D argument
  ``X`` of shape (n, k) is the k columns ``X[0] ... X[k-1]`` (or ``X_0 ... X_{k-1}``). A column
  whose every value is written as an integer (pandas reads it as integers, e.g. ``0``, ``3``,
  not ``3.0``) is passed as int32, any other column as float64; write ``1.0`` to force float.
- ``FILE.npz``: one array per argument, named as the parameter (:func:`numpy.savez`);
  integer arrays become int32, floating arrays float64.
- ``PATH.py:FUNCTION``, or ``:FUNCTION`` for a function in the model's own file: called with no
  arguments, it returns a dict (parameter name -> value) or a tuple of positional arguments.

Every required parameter (one without a default) must be given and every column or key must be
a parameter; otherwise a one-line :class:`genbayes.cli.UsageError` names the model's parameters and
the data's columns. Parameters with defaults keep them unless the data name them. Everything read
from ``--data`` is data (arrays); settings such as a number of factors stay defaults of the model
(or are bound with :func:`functools.partial` in the file). Observation units are found as the
Python API finds them (:func:`genbayes.units.find`).

Example:
    >>> import os, tempfile
    >>> from genbayes._cli_models import load
    >>> d = tempfile.mkdtemp()
    >>> with open(os.path.join(d, "m.py"), "w") as f:
    ...     _ = f.write("import numpyro, numpyro.distributions as dist\n"
    ...                 "def model(y):\n"
    ...                 "    mu = numpyro.sample('mu', dist.Normal(0, 1))\n"
    ...                 "    with numpyro.plate('data', y.shape[0]):\n"
    ...                 "        numpyro.sample('y', dist.Normal(mu, 1), obs=y)\n")
    >>> with open(os.path.join(d, "y.csv"), "w") as f:
    ...     _ = f.write("y\n0.5\n-1.25\n2\n")
    >>> p = load(os.path.join(d, "m.py"), os.path.join(d, "y.csv"))
    >>> p.args[0].dtype, p.args[0].tolist(), p.kwargs
    (dtype('float64'), [0.5, -1.25, 2.0], {})
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import itertools
import os
import re
import sys

import numpy as np

__all__ = ["is_own_model", "load", "Problem"]

_counter = itertools.count()


def _usage(msg):
    from .cli import UsageError

    return UsageError(msg)


@dataclasses.dataclass(frozen=True)
class Problem:
    """A user's model and its data, ready for ``model(*args, **kwargs)``.

    Attributes:
        model: the NumPyro model (a callable).
        args, kwargs: its arguments, read from ``--data``.
        description: one line for the output: the model, the data file and the argument shapes.
        source_digest: SHA-256 of the model file and the data file's bytes (for resume files).
    """

    model: object
    args: tuple
    kwargs: dict
    description: str
    source_digest: str


def is_own_model(spec: str, bundled) -> bool:
    """Whether MODEL names the user's model (``PATH.py[:FUNCTION]`` or ``module:FUNCTION``), not a bundled one."""
    return spec not in bundled and (":" in spec or spec.endswith(".py"))


def check_spec(spec: str, bundled, flag: str = "MODEL") -> None:
    """One-line error for a MODEL that is neither a bundled name nor a model file/module."""
    if spec in bundled or is_own_model(spec, bundled):
        return
    raise _usage(f"{flag} {spec!r} is neither a bundled model ({', '.join(bundled)}) nor your own model: give "
                 "PATH.py:FUNCTION (e.g. mymodel.py:model) or package.module:FUNCTION, with --data FILE.")


def _split(spec: str, flag: str):
    """``(source, function)``: source a .py path or a module name; the function after the last colon."""
    src, colon, fn = spec.rpartition(":")
    if not colon or spec.endswith(".py"):  # no function named (a Windows drive's colon is no separator)
        src, fn = spec, ""
    if src.endswith(".py") and not fn:
        fn = "model" if flag == "MODEL" else ""
    if not src and flag == "MODEL":
        raise _usage(f"{flag} {spec!r} names no file or module before ':'.")
    if not fn:
        raise _usage(f"{flag} {spec!r} names no function: write {src}:FUNCTION.")
    if not fn.isidentifier():
        raise _usage(f"{flag} {spec!r}: {fn!r} is not a Python function name.")
    return src, fn


def _import_file(path: str, flag: str):
    if not os.path.exists(path):
        raise _usage(f"{flag}: the file {path} does not exist.")
    if not os.path.isfile(path):
        raise _usage(f"{flag}: {path} is not a file.")
    name = f"_genbayes_user_{next(_counter)}_{re.sub(r'[^0-9A-Za-z_]', '_', os.path.basename(path)[:-3])}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)  # so that the file can import its neighbours, as `python PATH.py` would
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        del sys.modules[name]
        raise _usage(f"{flag}: {path} line {e.lineno}: SyntaxError: {e.msg}.") from None
    except Exception as e:  # noqa: BLE001 - the user's file failed: say where, in one line
        del sys.modules[name]
        raise _usage(f"{flag}: importing {path} raised {type(e).__name__}: {e} ({_where(e, path)}).") from None
    finally:
        sys.path.remove(folder)
    return module


def _where(e, path):
    import traceback

    target = os.path.abspath(path)
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if os.path.abspath(f.filename) == target]
    return f"line {lines[-1]}" if lines else "while importing"


def _import_module(name: str, flag: str):
    sys.path.insert(0, os.getcwd())  # as `python -m` would: a module beside the user is importable
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise _usage(f"{flag}: cannot import module {name!r} ({e}); give PATH.py:FUNCTION for a file, or install "
                     "the package.") from None
    except Exception as e:  # noqa: BLE001
        raise _usage(f"{flag}: importing {name} raised {type(e).__name__}: {e}.") from None
    finally:
        sys.path.remove(os.getcwd())


def _load_source(src: str, flag: str, cache: dict):
    if src not in cache:
        is_file = src.endswith(".py") or os.sep in src or "/" in src
        cache[src] = _import_file(src, flag) if is_file else _import_module(src, flag)
    return cache[src]


def _get_function(module, src, fn, flag):
    f = getattr(module, fn, None)
    if f is None:
        names = sorted(k for k, v in vars(module).items()
                       if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == module.__name__)
        raise _usage(f"{flag}: {src} has no function {fn!r}; its functions are {names or 'none'}.")
    if not callable(f):
        raise _usage(f"{flag}: {src}:{fn} is a {type(f).__name__}, not a function.")
    return f


def _file_digest(module):
    path = getattr(module, "__file__", None)
    if path and os.path.isfile(path):
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    return getattr(module, "__name__", "")


# ---- data


def _params(model):
    """The model's parameters (name -> inspect.Parameter), or None when its signature is unknown."""
    try:
        return dict(inspect.signature(model).parameters)
    except (TypeError, ValueError):
        return None


def _as_input(a, name):
    """A data value as the model receives it: integer arrays as int32, floating arrays as float64."""
    if isinstance(a, (int, float, bool, np.number, np.ndarray, list)):
        arr = np.asarray(a)
        if arr.dtype == bool:
            return arr.astype(np.int32)
        if np.issubdtype(arr.dtype, np.integer):
            if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
                raise _usage(f"--data: {name!r} holds integers beyond int32; store it as floating point.")
            return arr.astype(np.int32)
        if np.issubdtype(arr.dtype, np.floating):
            return arr.astype(np.float64)
        if isinstance(a, list) or arr.dtype == object or arr.dtype.kind in "USV":
            raise _usage(f"--data: {name!r} is not numeric (dtype {arr.dtype}); encode it as numbers.")
        return arr
    return a  # e.g. a jax array or a pytree returned by a data function: passed unchanged


def _read_csv(path):
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise _usage(f"--data {path} is empty; it needs a header line naming the model's arguments.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise _usage(f"--data {path} is not a readable CSV file: {str(e).strip().splitlines()[-1]}") from None
    if df.shape[0] == 0:
        raise _usage(f"--data {path} has a header ({', '.join(map(str, df.columns))}) but no rows.")
    cols = {}
    for c in df.columns:
        s = df[c]
        if pd.api.types.is_bool_dtype(s.dtype):
            s = s.astype(np.int32)
        if not pd.api.types.is_numeric_dtype(s.dtype):
            bad = next((v for v in s if not isinstance(v, (int, float))), s.iloc[0])
            raise _usage(f"--data {path}: column {c!r} is not numeric (e.g. {bad!r}); encode it as numbers.")
        if s.isna().any():
            row = int(np.flatnonzero(s.isna().to_numpy())[0])
            raise _usage(f"--data {path}: column {c!r} has an empty or NaN cell (data row {row + 1}); every cell "
                         "must be a number.")
        cols[str(c)] = s.to_numpy()
    return cols


_INDEXED = re.compile(r"^(?P<name>.+?)(?:\[(?P<a>\d+)\]|_(?P<b>\d+))$")


def _csv_arguments(cols, params, path):
    """Columns -> {parameter: array}: a column named as a parameter, or NAME[j] / NAME_j as column j of a 2-D NAME."""
    names = set(params or ())
    out, matrices, unused = {}, {}, []
    for c, v in cols.items():
        m = _INDEXED.match(c)
        if c in names:
            out[c] = v
        elif m and m["name"] in names:
            matrices.setdefault(m["name"], {})
            j = int(m["a"] if m["a"] is not None else m["b"])
            if j in matrices[m["name"]]:
                raise _usage(f"--data {path}: two columns give column {j} of {m['name']!r}.")
            matrices[m["name"]][j] = v
        else:
            unused.append(c)
    for name, by_j in matrices.items():
        if name in out:
            raise _usage(f"--data {path}: {name!r} is given both as one column and as indexed columns "
                         f"{name}[0], ...; keep one.")
        k = max(by_j) + 1
        missing = [j for j in range(k) if j not in by_j]
        if missing:
            raise _usage(f"--data {path}: the columns of {name!r} must be numbered 0..{k - 1}; "
                         f"{name}[{missing[0]}] (or {name}_{missing[0]}) is missing.")
        block = np.column_stack([by_j[j] for j in range(k)])
        out[name] = block if all(np.issubdtype(by_j[j].dtype, np.integer) for j in by_j) else block.astype(np.float64)
    return out, unused


def _describe_params(params):
    if params is None:
        return "(signature unknown)"
    parts = []
    for p in params.values():
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
        elif p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
        else:
            parts.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return "(" + ", ".join(parts) + ")"


def _bind(model, model_name, params, args, kwargs, given, source, unused=()):
    """Check the data against the signature; ``(args, kwargs)`` in the model's parameter order."""
    if params is None:
        return tuple(args), dict(kwargs)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    keywordable = {k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    extra = list(unused) + ([] if var_kw else [k for k in kwargs if k not in keywordable])
    sig = f"{model_name}{_describe_params(params)}"
    if extra:
        raise _usage(f"{source} has {', '.join(map(repr, extra))}, which {sig} does not take; the data give "
                     f"{given or 'nothing'}. Rename the columns/keys to the model's parameters (2-D X: X[0], X[1], ...) or "
                     "remove them.")
    try:
        ba = inspect.signature(model).bind(*args, **kwargs)
    except TypeError as e:
        order = list(params)
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        missing = [k for k, p in params.items()
                   if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and k not in kwargs
                   and not (p.kind in positional and order.index(k) < len(args))]
        if missing and given is None:
            raise _usage(f"{sig} needs {', '.join(map(repr, missing))}: pass --data FILE (a CSV or NPZ naming them, "
                         "or PATH.py:FUNCTION / :FUNCTION returning them).") from None
        if missing:
            raise _usage(f"{sig} needs {', '.join(map(repr, missing))}, which {source} does not give; the data give "
                         f"{given}.") from None
        raise _usage(f"{source} does not fit {sig}: {e}; the data give {given or 'nothing'}.") from None
    return tuple(ba.args), dict(ba.kwargs)


def _data_from_function(f, spec):
    try:
        value = f()
    except TypeError as e:
        if "argument" in str(e):
            raise _usage(f"--data {spec}: the data function must take no arguments ({e}).") from None
        raise
    if isinstance(value, dict):
        return (), {str(k): v for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(value), {}
    if isinstance(value, np.ndarray) or hasattr(value, "shape"):
        return (value,), {}
    raise _usage(f"--data {spec} returned a {type(value).__name__}; return a dict (parameter name -> array) or a "
                 "tuple of the model's positional arguments.")


def _shape_summary(args, kwargs, params):
    names = list(params or ())
    parts = [f"{names[i] if i < len(names) else f'#{i}'} {tuple(np.shape(a))}" for i, a in enumerate(args)]
    parts += [f"{k} {tuple(np.shape(v))}" for k, v in kwargs.items()]
    return ", ".join(parts) or "no arguments"


def load(model_spec: str, data_spec: str | None = None) -> Problem:
    """Import the user's model and read its data (module docstring for the rules).

    Args:
        model_spec: ``PATH.py[:FUNCTION]`` or ``package.module:FUNCTION``.
        data_spec: ``FILE.csv``, ``FILE.npz``, ``PATH.py:FUNCTION``, ``:FUNCTION`` (same file as the
            model), or None when the model takes no required argument.

    Returns:
        :class:`Problem`.

    Raises:
        genbayes.cli.UsageError: a missing file, module or function, unreadable data, or data that do
            not match the model's parameters (one line naming both sides).
    """
    cache: dict = {}
    src, fn = _split(model_spec, "MODEL")
    module = _load_source(src, "MODEL", cache)
    model = _get_function(module, src, fn, "MODEL")
    params = _params(model)
    name = f"{src}:{fn}"
    digest = hashlib.sha256(f"{model_spec}\0{_file_digest(module)}".encode())
    args, kwargs = (), {}
    if data_spec is None:
        source, given, unused = "no --data", None, ()
        data_desc = "no data file"
    else:
        lower = data_spec.lower()
        if lower.endswith(".csv") or lower.endswith(".npz"):
            if not os.path.exists(data_spec):
                raise _usage(f"--data: the file {data_spec} does not exist.")
            if not os.path.isfile(data_spec):
                raise _usage(f"--data: {data_spec} is not a file.")
            with open(data_spec, "rb") as fh:
                digest.update(fh.read())
        if lower.endswith(".csv"):
            cols = _read_csv(data_spec)
            kwargs, unused = _csv_arguments(cols, params, data_spec)
            source, given = f"--data {data_spec}", f"columns {', '.join(cols)}"
        elif lower.endswith(".npz"):
            try:
                with np.load(data_spec, allow_pickle=False) as z:
                    kwargs = {k: z[k] for k in z.files}
            except (ValueError, OSError) as e:
                raise _usage(f"--data {data_spec} is not a readable .npz file (numpy.savez): {e}") from None
            unused = ()
            source, given = f"--data {data_spec}", f"keys {', '.join(kwargs) or '(none)'}"
        elif ":" in data_spec or data_spec.endswith(".py"):
            dsrc, dfn = _split(data_spec, "--data")
            dmodule = module if dsrc == "" else _load_source(dsrc, "--data", cache)
            f = _get_function(dmodule, dsrc or src, dfn, "--data")
            args, kwargs = _data_from_function(f, data_spec)
            digest.update(_file_digest(dmodule).encode())
            unused = ()
            source = f"--data {data_spec}"
            given = ", ".join([f"{len(args)} positional value(s)"] * bool(args) + [f"keys {', '.join(kwargs)}"] * bool(kwargs)) \
                or "nothing"
        else:
            raise _usage(f"--data {data_spec!r}: give FILE.csv, FILE.npz, PATH.py:FUNCTION or :FUNCTION (a function "
                         "in the model's file returning its arguments).")
        data_desc = data_spec
        args = tuple(_as_input(a, f"#{i}") for i, a in enumerate(args))
        kwargs = {k: _as_input(v, k) for k, v in kwargs.items()}
    args, kwargs = _bind(model, name, params, args, kwargs, given, source, unused)
    desc = f"{name} on {data_desc} ({_shape_summary(args, kwargs, params)})"
    return Problem(model, args, kwargs, desc, digest.hexdigest())


def check_model(problem: Problem, units=None):
    """The observation units of the user's model (:func:`genbayes.units.find`); library errors as one-line UsageErrors."""
    from .cli import UsageError
    from .units import find

    try:
        return find(problem.model, *problem.args, units=units, **problem.kwargs)
    except UsageError:
        raise
    except (ValueError, TypeError) as e:
        params = _params(problem.model) or {}
        bound = set(list(params)[:len(problem.args)]) | set(problem.kwargs)
        left = [f"{k}={p.default!r}" for k, p in params.items() if p.default is not p.empty and k not in bound]
        hint = f" (left at their defaults: {', '.join(left)}; does the data lack a column or key for one?)" if left else ""
        raise _usage(f"{problem.description}: {' '.join(str(e).split())}{hint}") from None
