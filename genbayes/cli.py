"""The ``genbayes`` command: ``genbayes demo`` (the tour) and one subcommand per capability."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

class UsageError(ValueError):
    """A mistake in the command line or in the files it names: ``main`` prints it as one line and exits with 2.

    Example:
        >>> main(["evidence", "missing.py:model", "--data", "y.csv"])  # stderr: "... the file missing.py does not exist."
        2
        >>> str(UsageError("--n must be a positive integer, got 0."))
        '--n must be a positive integer, got 0.'
    """


SUBCOMMAND_MODULES: list[str] = ["genbayes.cv", "genbayes.evidence"]
"""Modules that add a subcommand to ``genbayes`` through their ``add_cli(subparsers)``."""


# rough single-process cost of each section in quick mode (s, 2-core CPU, mostly JAX compilation):
# the pool starts the longest first so two processes finish together
_QUICK_COST = {"evidence": 20, "bounds": 16, "conjugate": 13, "gibbs": 11, "infomax": 10, "vcd": 7, "cv": 3}


# XLA CPU options that trade run-time speed for compile time; each is added unless XLA_FLAGS sets it.
# The demo (and the test suite) is mostly XLA compiling small programs. CPU seconds of the six quick
# demo sections, each alone in a process on 2 cores: level 0 alone 99 (44 of them compiling); legacy
# emitters alone 87; both 65 (20 compiling). The full demo, 2 processes: XLA's defaults 190 s wall,
# legacy emitters 147 s, both 120 s.
FAST_COMPILE_FLAGS = {
    # LLVM at -O0: compiles faster, runs slower (the evidence ladder's NUTS program: 3.1 s -> 7.0 s)
    "--xla_backend_optimization_level": "0",
    # XLA's legacy elemental IR emitters instead of the MLIR fusion emitters: about half the cost of
    # compiling one small eager operation (62 -> 32 ms)
    "--xla_cpu_use_fusion_emitters": "false",
}
"""XLA CPU options the demo and the test suite add to ``XLA_FLAGS`` (each unless already set): they
trade run-time speed for compile time (see :func:`fast_compile_xla_flags`)."""


# XLA aborts the process on a flag it does not know ("Unknown flag in XLA_FLAGS"), and the emitter
# switch is recent: it is added only with the jaxlib releases (major, minor) it was checked on
_CHECKED_ON = {"--xla_cpu_use_fusion_emitters": {(0, 10)}}


def _jaxlib_release() -> tuple[int, ...]:
    import importlib.metadata
    import re

    try:
        return tuple(int(x) for x in re.findall(r"\d+", importlib.metadata.version("jaxlib"))[:2])
    except importlib.metadata.PackageNotFoundError:
        return ()


def fast_compile_xla_flags(current: str = "") -> str:
    """``current`` (an ``XLA_FLAGS`` value) with every :data:`FAST_COMPILE_FLAGS` option it does not set.

    A flag that only some jaxlib releases know is added only on those (an unknown flag would abort).

    Example:
        >>> fast_compile_xla_flags("--xla_cpu_use_fusion_emitters=true")  # a flag already set wins
        '--xla_cpu_use_fusion_emitters=true --xla_backend_optimization_level=0'
    """
    release = _jaxlib_release()
    extra = [f"{k}={v}" for k, v in FAST_COMPILE_FLAGS.items()
             if k not in current and (k not in _CHECKED_ON or release in _CHECKED_ON[k])]
    return " ".join([current.strip(), *extra]).strip()


COMPILATION_CACHE_ENV = "GENBAYES_COMPILATION_CACHE"
"""Environment variable for the ``genbayes`` command's persistent compilation cache: ``off`` (or
``0``, ``no``, ``false``) turns it off, any other value is the cache folder to use."""

COMPILATION_CACHE_MAX_BYTES = 2**30
"""Size bound of the command's compilation cache (1 GiB; JAX evicts the least recently used programs)."""


def compilation_cache_dir(environ=None) -> str | None:
    """The folder of the ``genbayes`` command's persistent JAX compilation cache, or None when it is off.

    Most of a short ``genbayes`` run is XLA compiling its samplers. JAX can keep every compiled program
    on disk, keyed by the program, the JAX/jaxlib versions, the device and ``XLA_FLAGS``, so a later
    run with the same shapes loads it instead of compiling again. In order of precedence:

    * ``GENBAYES_COMPILATION_CACHE=off`` (or ``0``/``no``/``false``), or the subcommands' option
      ``--no-compilation-cache``: no persistent cache (not even one JAX's own settings name);
    * ``GENBAYES_COMPILATION_CACHE=DIR``: that folder;
    * ``JAX_COMPILATION_CACHE_DIR`` (JAX's own setting): that folder;
    * otherwise ``$XDG_CACHE_HOME/genbayes/jax-compilation-cache`` (``~/.cache/...`` when
      ``XDG_CACHE_HOME`` is unset).

    The cache holds at most :data:`COMPILATION_CACHE_MAX_BYTES`; deleting the folder is always safe.
    Library users turn the same cache on with JAX's settings::

        jax.config.update("jax_compilation_cache_dir", "/path/to/cache")
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

    Args:
        environ: the environment to read (default: ``os.environ``).

    Returns:
        str | None: the folder, or None.

    Example:
        >>> compilation_cache_dir({"GENBAYES_COMPILATION_CACHE": "off"}) is None
        True
        >>> compilation_cache_dir({"XDG_CACHE_HOME": "/tmp/c"})
        '/tmp/c/genbayes/jax-compilation-cache'
    """
    env = os.environ if environ is None else environ
    setting = env.get(COMPILATION_CACHE_ENV, "").strip()
    if setting.lower() in {"0", "off", "no", "false"}:
        return None
    if setting:
        return setting
    if env.get("JAX_COMPILATION_CACHE_DIR", "").strip():
        return env["JAX_COMPILATION_CACHE_DIR"].strip()
    base = env.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "genbayes", "jax-compilation-cache")


# JAX's names for the cache settings; each is read from the environment when JAX is imported, so
# the demo's worker processes inherit them, and set through jax.config where JAX is already loaded
_CACHE_SETTINGS = {
    "jax_compilation_cache_dir": None,  # the folder
    # every program, not only those that took over a second to compile (the default): a genbayes
    # run compiles hundreds of small ones
    "jax_persistent_cache_min_compile_time_secs": 0,
    "jax_compilation_cache_max_size": COMPILATION_CACHE_MAX_BYTES,
}


def _use_compilation_cache(off: bool) -> str | None:
    """Set up the persistent compilation cache for this process and its children; return its folder.

    Off (``off`` or :data:`COMPILATION_CACHE_ENV` ``=off``) means no persistent cache at all, JAX's
    own ``JAX_COMPILATION_CACHE_DIR`` included (JAX's switch ``jax_enable_compilation_cache``).
    """
    folder = None if off else compilation_cache_dir()
    settings = {"jax_enable_compilation_cache": False} if folder is None else \
        {name: folder if value is None else value for name, value in _CACHE_SETTINGS.items()}
    for name, value in settings.items():
        os.environ[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        if "jax" in sys.modules:
            sys.modules["jax"].config.update(name, value)
    return folder


CPU_DEVICES_ENV = "GENBAYES_CPU_DEVICES"
"""Environment variable for the number of JAX CPU devices the ``genbayes`` command creates (default:
one per core; ``1`` keeps one device)."""


def _use_cpu_devices(command: str, jobs: int | None) -> None:
    """Before JAX starts: split the CPU into one JAX device per core (see :func:`genbayes.use_cpu_devices`).

    Sharded programs (``gb.batched``, and through it CV refits, calibration, temperature ladders)
    then run on every core: measured 1.18x the effective samples per second of one device for B = 32
    NUTS posteriors on a 2-core machine (``benchmarks/bench_batched_ess.py``). Not for ``demo`` with
    several jobs, whose worker processes already keep every core busy. ``GENBAYES_CPU_DEVICES=k``
    chooses k (``1``: one device); a count the user gave JAX itself (``JAX_NUM_CPU_DEVICES``, or
    ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``) is left alone, as is an accelerator.
    """
    setting = os.environ.get(CPU_DEVICES_ENV, "").strip()
    if os.environ.get("JAX_NUM_CPU_DEVICES") or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            raise UsageError(f"{CPU_DEVICES_ENV} must be a positive integer (the number of CPU devices), got {setting!r}.")
        count = int(setting)
    elif command == "demo" and (jobs is None or jobs > 1) or not _cpu_only():
        return
    else:
        count = os.cpu_count() or 1
    if "jax" in sys.modules:  # main() called from Python: this process only, if JAX has not started
        from ._programs import use_cpu_devices

        try:
            use_cpu_devices(count)
        except RuntimeError:  # JAX already runs: keep its devices
            pass
        return
    # run as the command, JAX is not imported yet; it reads this when it starts (so do demo workers)
    os.environ["JAX_NUM_CPU_DEVICES"] = str(count)


def _cpu_only() -> bool:
    """Whether JAX will run on the CPU: ``JAX_PLATFORMS=cpu``, or no GPU/TPU plugin installed.

    Where an accelerator may run the demo, its programs are left at XLA's default optimisation.
    """
    import importlib.metadata

    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return True
    names = ((d.metadata["Name"] or "").lower().replace("_", "-") for d in importlib.metadata.distributions())
    return not any(n.startswith(("jax-cuda", "jax-rocm", "libtpu")) for n in names)


# Sections whose sampler programs run long enough that XLA's optimised code pays for its compile
# time even on a first run, and by far on a second run with the compilation cache: they keep XLA's
# defaults; the others compile fast (FAST_COMPILE_FLAGS). Quick demo, 2 cores, seconds of the
# evidence section (first run with an empty cache / second run): defaults 35.0 / 16.3, fast
# compile 42.1 / 33.9; every other section was faster with the fast-compile flags on a first run
# (e.g. gibbs 26.6 vs 13.7) and within 1.5 s on a second (benchmarks/bench_demo.py --cache).
_RUN_BOUND_SECTIONS = frozenset({"evidence"})


def _section_xla_flags(name: str, user_flags: str) -> str:
    """``XLA_FLAGS`` for one demo section's worker: the user's flags, plus the fast-compile ones unless the section is run-bound."""
    return user_flags.strip() if name in _RUN_BOUND_SECTIONS else fast_compile_xla_flags(user_flags)


def _run_section(name: str, out: str, quick: bool, seed: int, xla_flags: str | None = None):
    """Run one demo section (in a worker process); a failure becomes a failed Section, not a crash.

    ``xla_flags``: set as ``XLA_FLAGS`` first, in a fresh worker that has not started JAX yet.
    """
    import traceback

    if xla_flags is not None:
        os.environ["XLA_FLAGS"] = xla_flags

    from .demos import Section

    t0 = time.perf_counter()
    try:
        sec = importlib.import_module(f"genbayes.demos.{name}").section(Path(out), quick=quick, seed=seed)
    except Exception as e:  # noqa: BLE001 - reported in the table and the exit code, never hidden
        tb = traceback.format_exc(limit=4)
        sec = Section(f"{name}: failed", f"The section raised {type(e).__name__}: {e}",
                      {"error": [type(e).__name__], "traceback": [tb.strip().splitlines()[-1]]}, (), False)
        print(tb, file=sys.stderr, flush=True)
    return sec, time.perf_counter() - t0


_REPORT_SUFFIXES = (".md", ".html", ".png")


def _check_demo_out(out: Path, force: bool) -> None:
    """Refuse (UsageError) a ``demo --out`` folder that already holds report files or links, unless ``force``.

    The demo writes ``report.md``, ``index.html`` and one PNG per section into the folder; an
    existing file of those kinds would be overwritten and a symbolic link followed out of the
    folder. ``--out`` itself may be a link to a folder (the user named it).
    """
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} exists and is not a folder; choose a folder name.")
    if not os.path.isdir(out) or force:
        return
    links = sorted(e.name for e in os.scandir(out) if e.is_symlink())
    old = sorted(e.name for e in os.scandir(out) if not e.is_symlink() and e.name.endswith(_REPORT_SUFFIXES))
    if links:
        raise UsageError(f"--out {out} holds symbolic link(s) {links[:5]}, which the demo would write through; pass "
                         "--force to replace the links themselves (their targets are never written), or use a new "
                         "folder.")
    if old:
        raise UsageError(f"--out {out} already holds report files {old[:5]}{' ...' if len(old) > 5 else ''}; pass "
                         "--force to overwrite them, or use a new folder.")


def _unlink_report_links(out: Path) -> None:
    """With ``--force``: remove symbolic links among the report's file names, so that files are written in the folder, never through a link."""
    for e in os.scandir(out):
        if e.is_symlink() and e.name.endswith(_REPORT_SUFFIXES):
            os.unlink(e.path)


def _demo(args) -> int:
    import concurrent.futures as cf
    import multiprocessing as mp

    from .demos import SECTIONS
    from .report import write_report

    out = Path(args.out)
    try:
        _check_demo_out(out, args.force)
    except UsageError as e:
        print(f"genbayes demo: error: {e}", file=sys.stderr)
        return 2
    names = args.sections or SECTIONS
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        print(f"genbayes demo: unknown section(s) {unknown}; choose from {SECTIONS}", file=sys.stderr)
        return 2
    if args.jobs is not None and args.jobs < 1:
        print(f"genbayes demo: --jobs must be a positive integer, got {args.jobs}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    if args.force:
        _unlink_report_links(out)
    jobs = min(args.jobs or os.cpu_count() or 1, len(names))
    user_flags = os.environ.get("XLA_FLAGS", "")
    if _cpu_only() and jobs == 1:
        # the sections run in this process, where (run as the `genbayes` command) JAX has not
        # started its backend yet: one setting for all of them
        os.environ["XLA_FLAGS"] = fast_compile_xla_flags(user_flags)
    print(f"genbayes demo ({'quick' if args.quick else 'full'}, seed {args.seed}, {len(names)} sections, "
          f"{jobs} process{'es' if jobs > 1 else ''}) -> {out.resolve()}")
    print("Most of the time goes to JAX compiling each section's sampler; results print as sections finish.")
    cache = getattr(args, "compilation_cache", None)
    print(f"Compiled programs are kept in {cache} for the next run (--no-compilation-cache: off)." if cache else
          "No compilation cache: every program is compiled afresh.", flush=True)
    t_all = time.perf_counter()
    done: dict[str, object] = {}
    secs_of: dict[str, float] = {}

    def show(name, sec, secs):
        done[name] = sec
        secs_of[name] = secs
        print(f"\n## [{len(done)}/{len(names)}] {sec.title}  ({secs:.1f} s, {'ok' if sec.ok else 'CHECK FAILED'})")
        print(sec.table_text())
        print(sec.text + "\n", flush=True)

    if jobs == 1:
        for name in names:
            print(f"... {name}", flush=True)
            show(name, *_run_section(name, str(out), args.quick, args.seed))
    else:
        # separate processes, because JAX compilation (most of a quick run) is single-threaded
        order = sorted(names, key=lambda n: -_QUICK_COST.get(n, 10))
        # a fresh worker per section, so that each starts JAX with its own XLA flags
        flags = {n: _section_xla_flags(n, user_flags) if _cpu_only() else None for n in order}
        with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as pool:
            futures = {pool.submit(_run_section, n, str(out), args.quick, args.seed, flags[n]): n for n in order}
            print("running: " + ", ".join(order[:jobs]) + (" (then " + ", ".join(order[jobs:]) + ")" if len(order) > jobs else ""),
                  flush=True)
            for fut in cf.as_completed(futures):
                show(futures[fut], *fut.result())
    sections = [done[n] for n in names]
    paths = write_report(out, sections, quick=args.quick, seed=args.seed, run_seconds=time.perf_counter() - t_all,
                         section_seconds=[secs_of[n] for n in names], jobs=jobs)
    print(f"Report written in {time.perf_counter() - t_all:.0f} s: " + ", ".join(str(p) for p in paths))
    failed = [s.title for s in sections if not s.ok]
    if failed:
        print(f"Checks failed in: {failed}", file=sys.stderr)
        return 1
    return 0


def build_parser(subcommands: bool = True) -> argparse.ArgumentParser:
    """The ``genbayes`` argument parser: ``demo`` plus the subcommands of ``SUBCOMMAND_MODULES``.

    Each module in ``SUBCOMMAND_MODULES`` contributes its subcommand through ``add_cli(subparsers)``.

    Args:
        subcommands: also add those modules' subcommands. Importing them imports JAX (~3 s); ``main``
            skips them for ``genbayes demo``, whose parent process only waits for its workers.

    Returns:
        argparse.ArgumentParser.
    """
    parser = argparse.ArgumentParser(
        prog="genbayes",
        description="Generalized Bayesian inference for NumPyro: Gibbs posteriors, cross-validation "
        "and the marginal likelihood, VCD, beta-VAE/InfoMax.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="run the tour on embedded data and write a report",
        description="Run every capability on embedded or simulated data (no network), print each "
        "section's table, and write PNG plots and report.md (and index.html) into --out.",
    )
    demo.add_argument("--out", default="genbayes-report", help="report folder (default: ./genbayes-report)")
    demo.add_argument("--force", action="store_true",
                      help="overwrite report files already in --out (links there are replaced, never followed)")
    demo.add_argument("--quick", action="store_true", help="smaller sizes, for a fast look")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    from .demos import SECTIONS  # light: numpy only

    demo.add_argument("--sections", nargs="+", metavar="NAME",
                      help=f"run only these sections, of: {', '.join(SECTIONS)}")
    demo.add_argument("--jobs", type=int, default=None, metavar="N",
                      help="sections run in N processes at once (default: the number of CPUs)")
    demo.set_defaults(func=_demo)
    for modname in SUBCOMMAND_MODULES if subcommands else ():
        importlib.import_module(modname).add_cli(sub)
    for command in sub.choices.values():
        command.add_argument("--no-compilation-cache", action="store_true",
                             help="do not keep compiled programs on disk for the next run (see "
                             f"genbayes.cli.compilation_cache_dir; or set {COMPILATION_CACHE_ENV}=off)")
    return parser


def main(argv=None) -> int:
    """Entry point of the ``genbayes`` command; prints the help when no subcommand is given.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        int: the exit code (0 on success; 1 when a demo check failed or a result is invalid; 2 for a
        usage error, printed as one line; 130 after Ctrl-C, with a line saying what was saved;
        3 when ``cv --max-batches`` stopped early).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(subcommands=argv[:1] != ["demo"])
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    args.compilation_cache = _use_compilation_cache(args.no_compilation_cache)
    try:
        _use_cpu_devices(args.command, getattr(args, "jobs", None))
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"genbayes {args.command}: error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt as e:
        print(str(e) if str(e) else f"genbayes {args.command}: interrupted.", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":  # pragma: no cover
    # `python -m genbayes.cli`: run the imported module's main, so that the UsageError the library
    # raises (genbayes.cli.UsageError) is the class main catches, not a copy made for __main__
    from genbayes.cli import main as _main

    sys.exit(_main())
