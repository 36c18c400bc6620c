"""Session-wide settings for the test suite (tests/ and the doctests in genbayes/).

Most of the suite's time is XLA compiling small sampler programs, not running them. Two settings
cut it without touching any test's sizes or tolerances:

- ``genbayes.cli.FAST_COMPILE_FLAGS`` (appended to ``XLA_FLAGS``, each unless already given):
  LLVM at -O0 and XLA's legacy CPU emitters. Measured on tests/test_batched.py +
  tests/test_cv.py on 2 cores: 173 s -> 127 s from the first alone. The programs still compute
  the same functions (rounding may differ in the last bits, as with any change of fusion), and
  every test must pass as it is. Subprocesses started by tests inherit them.
- except for tests marked ``run_bound``: the few statistical checks whose time goes to running long
  sampler programs, which -O0 makes 1.4-2.6 times slower. Each runs in a child pytest process with
  the ``XLA_FLAGS`` the suite started with (``pytest_pyfunc_call`` below), and they start first.
- pytest-xdist (``-n auto --dist loadgroup`` in pyproject.toml), because compilation is
  single-threaded: two workers on 2 cores took the same files to 93 s. Tests that share a
  module- or session-scoped fixture are put in one ``xdist_group`` so the fixture is built once
  (this needs pytest<9.2, pinned in the test extra: pytest-dev/pytest-xdist#1386).
"""

import os

from genbayes.cli import fast_compile_xla_flags  # light: genbayes imports JAX lazily

# The XLA_FLAGS the suite was started with, before the fast-compile flags, kept in the environment
# because xdist's workers (and subprocesses) start with the flags already added. Tests marked
# ``run_bound`` run with these (see pytest_pyfunc_call below), and so do the run-bound subprocesses
# that some tests start themselves (the demo, a notebook).
USER_XLA_FLAGS_ENV = "GENBAYES_SUITE_USER_XLA_FLAGS"
_USER_XLA_FLAGS = os.environ.setdefault(USER_XLA_FLAGS_ENV, os.environ.get("XLA_FLAGS", ""))
# set in the environment of the pytest process that runs one run-bound test with XLA's default flags
RUN_BOUND_CHILD_ENV = "GENBAYES_SUITE_RUN_BOUND_CHILD"
if os.environ.get(RUN_BOUND_CHILD_ENV) != "1":
    os.environ["XLA_FLAGS"] = fast_compile_xla_flags(_USER_XLA_FLAGS)

# The genbayes command keeps a persistent compilation cache in the user's home by default; not in the
# suite: tests must not write outside their temporary folders, and the tests of that cache give it a
# folder of their own. (A cache shared by the suite's workers and subprocesses for one run was tried:
# tests/test_evidence_ladder.py, test_cv.py and test_batched.py took 174 s CPU without it and 187 s
# with it, so no gain on that subset while the machine was loaded; only the demo subprocesses clearly
# repeat each other's programs, which did not seem worth a shared folder for the whole run.)
os.environ["GENBAYES_COMPILATION_CACHE"] = "off"
# The command splits the CPU into one JAX device per core by default. A test calling genbayes.cli.main
# in-process before its worker's JAX has started would switch every later test on that worker to
# sharded programs (results then depend on test order), so the suite's commands use one device;
# tests/test_cpu_devices.py checks the default with this variable removed, and test_sharding.py runs
# the sharded programs on purpose.
os.environ["GENBAYES_CPU_DEVICES"] = "1"

import pytest  # noqa: E402


def pytest_xdist_auto_num_workers(config):
    # compile-bound and ~2 GB per worker: at most 4, however many CPUs
    return max(1, min(os.cpu_count() or 1, 4))


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    # the run-bound tests are the longest single tests of the suite: start them first, so that none
    # of them starts near the end of the run and leaves one worker busy alone (xdist hands out tests
    # in this order, after the groups of tests sharing a fixture). Same order on every worker.
    items.sort(key=lambda it: it.get_closest_marker("run_bound") is None)
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        for name in info.names_closure:
            defs = info.name2fixturedefs.get(name, ())
            # our own fixtures that outlive one test (demo run, NUTS references, ...): keep their users together
            shared = [d for d in defs if d.scope in ("module", "session") and "tests" in str(d.baseid or "")]
            if shared:
                item.add_marker(pytest.mark.xdist_group(f"{shared[0].baseid}::{name}"))
                break


def pytest_collection_finish(session):
    # On an xdist worker with --dist loadgroup, xdist appends "@group" to the node ids of grouped tests;
    # if a pytest/xdist combination stops doing so (pytest-dev/pytest-xdist#1386), say so loudly
    # rather than silently building every shared fixture once per worker.
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [it.nodeid for it in session.items if it.get_closest_marker("xdist_group") and "@" not in it.nodeid]
    if lost:
        import warnings

        warnings.warn(
            f"pytest-xdist did not apply xdist_group to {len(lost)} tests (e.g. {lost[0]}): shared fixtures "
            "will be built once per worker. Known with pytest>=9.2 (pytest-dev/pytest-xdist#1386); "
            "install the test extra's pinned pytest.",
            stacklevel=1,
        )


@pytest.fixture(autouse=True)
def _float64_stays_inside_its_test():
    """Fail a test that leaves float64 switched on: every later test on that worker would run in it.

    (Found this way: genbayes._config.x64 inside ``with jax.enable_x64(True)`` used to leak it, which
    made a float32 doctest's result depend on which tests its worker had run before.)
    """
    import jax

    before = jax.config.jax_enable_x64
    yield
    after = jax.config.jax_enable_x64
    if after != before:
        jax.config.update("jax_enable_x64", before)
        pytest.fail(f"this test changed jax_enable_x64 from {before} to {after} and did not restore it; enable "
                    "float64 inside the test (`with jax.enable_x64(True):` or the `x64` fixture)", pytrace=False)


def _node_id_without_group(nodeid: str) -> str:
    # xdist --dist loadgroup appends "@group" to grouped tests' ids (same rule as its _split_scope)
    return nodeid.rsplit("@", 1)[0] if nodeid.rfind("@") > nodeid.rfind("]") else nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run a test marked ``run_bound`` in a fresh pytest process with the suite's starting ``XLA_FLAGS``.

    The fast-compile flags (LLVM -O0, legacy emitters) pay off for the many tests that mostly compile
    small programs, but a few statistical checks run long sampler programs, which run 1.4-2.6 times
    slower at -O0 than at XLA's default optimisation (e.g. the Pima SMC + stepping stone check).
    JAX reads ``XLA_FLAGS`` once, when it starts, so such a test runs whole, fixtures and all, in
    a child pytest process that does not add the fast-compile flags; its outcome is this test's
    outcome. Same test body, sizes, keys and tolerances: only rounding in the last bits may differ
    (as with any change of XLA's fusion), hence Monte Carlo draws may differ from a -O0 run.
    """
    if pyfuncitem.get_closest_marker("run_bound") is None or os.environ.get(RUN_BOUND_CHILD_ENV) == "1":
        return None
    import re
    import subprocess
    import sys

    # a plain pytest process, not an xdist worker (whose PYTEST_XDIST_* variables it would inherit)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    env[RUN_BOUND_CHILD_ENV] = "1"
    if _USER_XLA_FLAGS:
        env["XLA_FLAGS"] = _USER_XLA_FLAGS
    else:
        env.pop("XLA_FLAGS", None)
    basetemp = pyfuncitem.config._tmp_path_factory.mktemp("run_bound")
    cmd = [sys.executable, "-m", "pytest", _node_id_without_group(pyfuncitem.nodeid), "-n", "0", "-q",
           "-p", "no:cacheprovider", f"--basetemp={basetemp}"]
    proc = subprocess.run(cmd, cwd=pyfuncitem.config.rootpath, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    print(out)  # shown with the test's report when it fails
    # pytest's closing line, e.g. "1 passed, 2 warnings in 140.22s" (anything printed after it is ignored)
    summary = next((ln.strip(" =") for ln in reversed(out.splitlines())
                    if re.search(r"\b\d+ (passed|failed|skipped|errors?|xfailed|xpassed|deselected)\b.* in [\d.]+s", ln)),
                   "")
    if proc.returncode == 0 and re.match(r"1 passed\b", summary) and "skipped" not in summary:
        return True
    if proc.returncode == 0 and re.match(r"1 skipped\b", summary):
        pytest.skip(f"skipped in the run-bound child process: {summary}")
    pytest.fail(f"the run-bound child pytest process (XLA_FLAGS={_USER_XLA_FLAGS!r}) exited with "
                f"{proc.returncode}:\n{out[-6000:]}", pytrace=False)
