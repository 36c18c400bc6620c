"""Fuzzing the public API with malformed *data* (issue 17: a clear error for every bad input).

tests/test_fuzz.py fuzzes the settings; this module feeds every public function malformed data:
NaN/±inf entries, complex dtype, strings and objects, empty and size-1 data, mismatched weights,
wrong shapes, keyword data as well as positional, a loss that returns NaN for one observation, and
the arrays that interop/infomax/evidence functions take directly. The cases live in
``tests/_fuzz_data_cases.py`` (``python -m tests._fuzz_data_cases`` prints every outcome).

Each outcome must be a ``ValueError``/``TypeError`` whose message names the argument, raised before
any program is compiled when the input is certainly invalid, or a finite result where the input is
valid (size-1 data, no data for a conjugate family) — never a NaN, a complex number, a bare exception
from inside JAX or NumPyro, or a silently ignored argument. A hypothesis test draws where and what the
bad entries are for the entry points that run a model.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import genbayes as gb
from genbayes._programs import count_compilations

from tests._fuzz_data_cases import FAM, KEY, cases, kw_model, loss_model, normal_model, run_case

CASES = {f"{entry} | {bad}": (arg, call, expect) for entry, bad, arg, call, expect in cases() if expect != "skip"}

# Refusals that need a little evaluation first, with the most compilations allowed and why. Everything
# else that is certainly invalid must be refused with no compilation at all.
EVALUATED = {
    # Bounds for a *fresh* process, the worst case: the eager operations a case compiles are cached
    # for the rest of the process, so the count depends on what ran before it (the first bounds here
    # were measured in a warm process, 8 / 20 / 80 / 2, and failed when these cases ran alone; fresh
    # processes measured 13-14, 40-45, 98 and 4, `python /tmp/coldcount.py CASE` in the session note).
    # the loss has to be computed to see the NaN (eager ops while the model is traced at the parameters)
    "gibbs log_density, loss NaN at one obs | loss nan": 16,
    "fisher.sandwich, loss NaN at one obs | loss nan": 48,
    # the loss is only evaluated in NumPyro's initialisation (abstract tracing cannot see a NaN), which
    # tries up to 100 points eagerly before giving up
    "calibrate llb, loss NaN at one obs | loss nan": 100,
    "Loss.log_prob, loss NaN | loss nan": 4,
    # a weight shape is checked against the site's batch shape while the model runs
    "reweight | weights too short": 3,
    "reweight | weights 2-D wrong": 3,
    "batched.run | weights too short": 2,
    # found while the model is traced or the family's arrays are built
    # compared once the arrays are on the device (JAX compiles one transfer program per new shape)
    "batched.run | empty": 1,
    "NormalKnownVariance.posterior weights | weights too short": 1,
    "loss_minimizer | empty": 6,
    "cv.lpo (family) | empty": 6,
    "DirichletCategorical.log_evidence | category 3": 2,
    "NormalGammaRegression.log_evidence | X rows != y": 2,
    "NormalGammaRegression.log_evidence | X wrong columns": 2,
}
# valid inputs whose answer takes a compiled inference run (2-17 s each on a shared 2-core machine)
SLOW = {"vcd.fit Adam(1e8) | 1e8", "infomax.train learning_rate=1e8 | 1e8", "cv.lpo (model, psis) | size-1",
        "evidence.prequential | size-1", "evidence laplace (keyword) | size-1", "batched.run | size-1",
        "infomax.decompose | size-1", "calibrate llb, 3 parameters > 2 observations | p > n",
        "fisher.sandwich, 3 parameters > 2 observations | p > n", "bridge_sampling | size-1",
        "loss_minimizer | size-1"}
assert SLOW <= set(CASES), SLOW - set(CASES)


@pytest.fixture(scope="module", autouse=True)
def _eager_numpyro_ops():
    # the first trace of a model in a process runs NumPyro's eager parameter checks (a few compiled scalar
    # ops, once); done here so the counts below see only the call under test
    for m in (normal_model, loss_model):
        gb.units.find(m, np.array([0.1, 0.2]))
    gb.units.find(kw_model, y=np.array([0.1, 0.2]))


@pytest.mark.parametrize("case", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW else k for k in CASES])
def test_malformed_data_gets_a_clear_error_or_a_finite_answer(case):
    arg, call, expect = CASES[case]
    verdict, detail, compiled = run_case(call, arg, expect)
    assert verdict in ("clear", "finite"), f"{case}: {verdict}: {detail}"
    if expect == "finite":  # valid data (size 1): an answer, not a refusal
        assert verdict == "finite", f"{case}: valid data refused: {detail}"
    if expect == "error":
        limit = EVALUATED.get(case, 0)
        assert compiled <= limit, f"{case}: {compiled} programs compiled before the refusal ({detail})"


# --------------------------------------------------------------------------- valid edge cases, checked
def test_edge_data_give_the_closed_form():
    """Size-1 and empty data are valid for a conjugate family: the answers are the closed forms."""
    from jax.scipy.stats import norm

    x1 = np.array([0.7])
    # N(0, 4) prior, unit noise: x ~ N(0, 4 + 1) marginally
    assert math.isclose(float(FAM.log_evidence(x1)), float(norm.logpdf(0.7, 0.0, math.sqrt(5.0))), rel_tol=1e-5)
    assert float(FAM.log_evidence(np.zeros(0))) == 0.0                       # log p(no data) = 0
    assert gb.conjugate.sequence_log_predictive(FAM, np.zeros(0)).shape == (0,)
    assert math.isclose(float(gb.conjugate.sequence_log_predictive(FAM, x1)[0]), float(FAM.log_evidence(x1)),
                        rel_tol=1e-6)
    post = FAM.posterior(np.zeros(0))                                          # the posterior of no data: the prior
    assert math.isclose(float(post.prior_mean), 0.0) and math.isclose(float(post.prior_var), 4.0)
    assert gb.evidence.log_evidence(FAM, np.zeros(0), method="exact").log_z == 0.0
    bb = gb.conjugate.BetaBernoulli(2.0, 3.0)
    assert float(bb.log_evidence(np.zeros(0))) == 0.0
    assert math.isclose(float(bb.log_evidence(np.array([1.0]))), math.log(2.0 / 5.0), rel_tol=1e-6)


# ------------------------------------------------------------------------- hypothesis: where and what
def _gibbs_ld(y=None, *args):
    from numpyro.infer.util import log_density

    m = gb.gibbs(kw_model if y is not None else normal_model, loss=gb.losses.absolute)
    return log_density(m, args, {} if y is None else {"y": y}, {"mu": 0.1})[0]


MODEL_ENTRIES = {
    "units.find": (lambda v: gb.units.find(normal_model, v), lambda v: gb.units.find(kw_model, y=v)),
    "gibbs": (lambda v: _gibbs_ld(None, v), lambda v: _gibbs_ld(v)),
    "fisher.scores": (lambda v: gb.fisher.scores(normal_model, {"mu": 0.1}, v),
                      lambda v: gb.fisher.scores(kw_model, {"mu": 0.1}, y=v)),
    "calibrate": (lambda v: gb.calibrate(loss_model, v, method="llb", rng_key=KEY),
                  lambda v: gb.calibrate(kw_model, y=v, method="llb", rng_key=KEY)),
    "log_evidence": (lambda v: gb.evidence.log_evidence(normal_model, v, method="laplace", rng_key=KEY),
                     lambda v: gb.evidence.log_evidence(kw_model, y=v, method="laplace", rng_key=KEY)),
    "bridge": (lambda v: gb.bridge.bridge_sampling(normal_model, v, samples={"mu": np.zeros(20)}, rng_key=KEY),
               lambda v: gb.bridge.bridge_sampling(kw_model, y=v, samples={"mu": np.zeros(20)}, rng_key=KEY)),
}


@st.composite
def malformed_vector(draw):
    """A data vector of 1-6 finite values with 1-3 entries spoiled, or the whole vector made complex."""
    n = draw(st.integers(1, 6))
    x = np.asarray(draw(st.lists(st.floats(-5, 5), min_size=n, max_size=n)))
    kind = draw(st.sampled_from(["nan", "inf", "-inf", "complex", "none"]))
    if kind == "complex":
        return x + 1j * draw(st.sampled_from([0.0, 1e-9, 2.0])), "complex"
    where = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3, unique=True))
    if kind == "none":  # an object array with a missing entry
        x = x.astype(object)
        x[where] = None
        return x, "non-finite"
    x[where] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[kind]
    return x, "non-finite"


@pytest.mark.parametrize("entry", list(MODEL_ENTRIES))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_model_data_positional_or_keyword(entry, data):
    value, kind = data.draw(malformed_vector(), label="data")
    keyword = data.draw(st.booleans(), label="keyword")
    call = MODEL_ENTRIES[entry][keyword]
    name = "model argument 'y'" if keyword else "model argument #0"
    with count_compilations() as c:
        with pytest.raises((ValueError, TypeError)) as e:
            call(value)
    msg = str(e.value)
    assert name in msg and kind in msg, f"{entry} ({'keyword' if keyword else 'positional'}): {msg}"
    assert c.count == 0, f"{entry}: {c.count} programs compiled before the refusal"


def test_nested_and_list_data_are_checked_too():
    """Data inside a list or dict argument, and plain Python lists, are checked like arrays."""
    def model(batch):
        import numpyro
        import numpyro.distributions as dist

        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", len(batch["y"])):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=jnp.asarray(batch["y"]))

    with pytest.raises(ValueError, match=r"model argument #0\['y'\]\[1\]` contains 1 non-finite"):
        gb.units.find(model, {"y": [0.1, float("nan"), 0.3]})
    with pytest.raises(TypeError, match=r"model argument #0\['y'\]` must be an array of real numbers"):
        gb.units.find(model, {"y": np.array(["a", "b"])})
    assert gb.units.find(model, {"y": [0.1, 0.2, 0.3]}).num_units == 3
    # traced data pass untouched (their validity is the compiled program's business)
    assert np.isfinite(jax.jit(lambda y: _gibbs_ld(None, y))(jnp.array([0.1, 0.2])))


# ------------------------------------------------------------------------------ the command line's data
MODEL_PY = '''import numpyro, numpyro.distributions as dist
def model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
'''


@pytest.mark.parametrize("command", ["evidence", "cv"])
@pytest.mark.parametrize("name, write, msg", [
    ("inf.csv", lambda p: p.write_text("y\n0.1\ninf\n0.3\n"), "contains 1 non-finite value(s) (first at index [1])"),
    ("overflow.csv", lambda p: p.write_text("y\n0.1\n1e400\n"), "contains 1 non-finite value(s) (first at index [1])"),
    ("complex.npz", lambda p: np.savez(p, y=np.array([0.1, 0.2]) + 1j), "is complex (dtype complex128)"),
    ("empty.npz", lambda p: np.savez(p, y=np.zeros(0)), "the data are empty"),
])
def test_cli_data_files_with_bad_values_are_one_line_errors(tmp_path, monkeypatch, capsys, command, name, write, msg):
    """Data from --data FILE go through the same checks: exit code 2, one error line naming the file and the
    problem, nothing compiled."""
    from genbayes.cli import main

    (tmp_path / "m.py").write_text(MODEL_PY)
    write(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    with count_compilations() as c:
        code = main([command, "m.py", "--data", name] + (["--no-progress"] if command == "cv" else []))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1, err
    assert name in err[0] and msg in err[0] and "Traceback" not in err[0], err
    assert c.count <= (1 if "empty" in name else 0), f"{c.count} programs compiled before the refusal"
