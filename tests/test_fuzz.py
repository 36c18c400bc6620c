"""Fuzzing the public API with malformed settings (issue: nothing silent).

For each public entry point and each of its numeric or key settings, hypothesis draws a value that is
certainly invalid for it (NaN, ±inf, 0 or negative where a positive count is needed, a fraction for an
integer, a bool, a complex number, a string, a list, None where required) and checks that the call
raises a ``ValueError`` or ``TypeError`` whose message names the argument, before any program is
compiled. A bare exception from inside JAX or NumPyro, a compilation, or a returned result fails.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import genbayes as gb
from genbayes._programs import count_compilations

KEY = jax.random.PRNGKey(0)
FAM = gb.conjugate.NormalKnownVariance(0.0, 4.0, 1.0)
Y = jnp.array([0.3, -0.2, 1.1, 0.4])
W = jnp.ones((2, 4))
DRAWS = {"mu": jnp.zeros((2, 50))}


def loss_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", gb.Loss(gb.losses.squared, mu), obs=y)


NAN, INF = float("nan"), float("inf")
NOT_A_NUMBER = ["a", [1, 2], None, 1j, {"x": 1}]
BAD_COUNT = [0, -1, -5, 1.5, NAN, INF, True, "3", 2 + 0j, None]          # positive integers
BAD_COUNT0 = [-1, -5, 1.5, NAN, INF, True, "3", None]                     # non-negative integers
BAD_POSITIVE = [0.0, -1.0, NAN, INF, -INF, "a", 1j, None, [1.0]]         # finite reals > 0
BAD_PROB = [0.0, 1.0, -0.1, 1.5, NAN, INF, "a", 1j, None]                # in (0, 1)
BAD_KEY = [42, 0.5, "key", None, np.zeros(3, np.uint32), [0, 1]]

# entry point -> (call(value), argument name as it must appear in the message, bad values)
CASES = {
    "batched.run num_samples": (lambda v: gb.batched.run(FAM.model, W, Y, rng_key=KEY, num_samples=v),
                                "num_samples", BAD_COUNT),
    "batched.run num_warmup": (lambda v: gb.batched.run(FAM.model, W, Y, rng_key=KEY, num_warmup=v),
                               "num_warmup", BAD_COUNT0),
    "batched.run target_accept_prob": (
        lambda v: gb.batched.run(FAM.model, W, Y, rng_key=KEY, target_accept_prob=v),
        "target_accept_prob", [v for v in BAD_PROB if v is not None]),  # None: the kernel's default
    "batched.run max_tree_depth": (
        lambda v: gb.batched.run(FAM.model, W, Y, rng_key=KEY, max_tree_depth=v),
        "max_tree_depth", BAD_COUNT),
    "batched.run rng_key": (lambda v: gb.batched.run(FAM.model, W, Y, rng_key=v), "rng_key", BAD_KEY),
    "log_evidence rng_key": (lambda v: gb.evidence.log_evidence(FAM, Y, method="smc", rng_key=v), "rng_key",
                             BAD_KEY),
    "log_evidence method": (lambda v: gb.evidence.log_evidence(FAM, Y, method=v, rng_key=KEY), "method",
                            ["SMC", "bridges", "", 1, None]),
    "smc num_particles": (lambda v: gb.evidence.log_evidence(FAM, Y, method="smc", rng_key=KEY,
                                                             options={"num_particles": v}), "num_particles", BAD_COUNT),
    "smc num_runs": (lambda v: gb.evidence.log_evidence(FAM, Y, method="smc", rng_key=KEY, options={"num_runs": v}),
                     "num_runs", BAD_COUNT),
    "smc target_ess": (lambda v: gb.evidence.log_evidence(FAM, Y, method="smc", rng_key=KEY,
                                                          options={"target_ess": v}), "target_ess", BAD_PROB),
    "stepping_stone num_samples": (
        lambda v: gb.evidence.log_evidence(FAM, Y, method="stepping_stone", rng_key=KEY, options={"num_samples": v}),
        "num_samples", BAD_COUNT),
    "stepping_stone ladder": (
        lambda v: gb.evidence.log_evidence(FAM, Y, method="stepping_stone", rng_key=KEY, options={"ladder": v}),
        "ladder", [0, -3, [0.5, 1.0], [0.0, 0.5], [0.0, 1.0, 0.5], [0.0, NAN, 1.0], "a"]),
    "laplace max_iter": (lambda v: gb.evidence.log_evidence(FAM, Y, method="laplace", rng_key=KEY,
                                                            options={"max_iter": v}), "max_iter", BAD_COUNT),
    "default_ladder K": (lambda v: gb.evidence.default_ladder(v), "K", BAD_COUNT),
    "default_ladder power": (lambda v: gb.evidence.default_ladder(8, power=v), "power", BAD_POSITIVE),
    "bridge rng_key": (lambda v: gb.bridge.bridge_sampling(FAM.model, Y, samples=DRAWS,
                                                          rng_key=v), "rng_key", BAD_KEY),
    "bridge proposal": (lambda v: gb.bridge.bridge_sampling(FAM.model, Y, samples=DRAWS,
                                                           rng_key=KEY, proposal=v), "proposal", ["warp", 3, None]),
    "lpo p": (lambda v: gb.cv.lpo(FAM, Y, p=v, rng_key=KEY), "p", [0, -1, 5, 1.5, NAN, "a", None, True]),
    "lpo num_subsets": (lambda v: gb.cv.lpo(FAM, Y, p=2, num_subsets=v, rng_key=KEY), "num_subsets",
                        [0, -1, 1.5, NAN, "a", True]),
    "calibrate method": (lambda v: gb.calibrate(loss_model, Y, method=v, rng_key=KEY), "method",
                         ["LLB", "", 1, None]),
    "calibrate rng_key": (lambda v: gb.calibrate(loss_model, Y, method="llb", rng_key=v), "rng_key", BAD_KEY),
    "huber delta": (lambda v: gb.losses.huber(v), "delta", BAD_POSITIVE),
    "pseudo_huber delta": (lambda v: gb.losses.pseudo_huber(v), "delta", BAD_POSITIVE),
    "tukey_biweight c": (lambda v: gb.losses.tukey_biweight(v), "c", BAD_POSITIVE),
    "check tau": (lambda v: gb.losses.check(v), "tau", BAD_PROB),
    "infomax.train num_steps": (
        lambda v: gb.infomax.train(loss_model, lambda y: None, gb.infomax.BetaELBO(1.0), Y, num_steps=v, rng_key=KEY),
        "num_steps", BAD_COUNT),
    "infomax.train learning_rate": (
        lambda v: gb.infomax.train(loss_model, lambda y: None, gb.infomax.BetaELBO(1.0), Y, num_steps=5, rng_key=KEY,
                                   learning_rate=v), "learning_rate", BAD_POSITIVE),
}


@pytest.fixture(scope="module", autouse=True)
def _eager_numpyro_ops():
    # Tracing a model the first time in a process runs NumPyro's eager parameter checks, which compile
    # a few scalar ops (==, !=, &, all) once; done here so that the count below sees only the programs
    # built for the call under test.
    gb.units.find(FAM.model, Y)
    gb.units.find(loss_model, Y)


@pytest.mark.parametrize("case", list(CASES))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_setting_is_refused_clearly_before_compiling(case, data):
    call, name, bad = CASES[case]
    value = data.draw(st.sampled_from(bad), label=name)
    with count_compilations() as c:
        try:
            out = call(value)
        except (ValueError, TypeError) as e:
            msg = str(e)
            assert name in msg, f"{case}={value!r}: the message does not name `{name}`: {msg}"
            assert "Traceback" not in msg
        else:
            raise AssertionError(f"{case}={value!r} was accepted and returned {out!r}")
    assert c.count == 0, f"{case}={value!r}: {c.count} programs compiled before the refusal"


# ------------------------------------------------------------------------------ the command line

# option -> (argv before the value, argv after it, name the error must give, certainly invalid values)
CLI_CASES = {
    "cv --p": (["cv", "beta_bernoulli", "--p"], [], "--p", ["0", "-1", "41", "a", "1.5"]),
    "cv --n": (["cv", "beta_bernoulli", "--n"], [], "--n", ["0", "-3", "x", "2.5"]),
    "cv --num-subsets": (["cv", "beta_bernoulli", "--num-subsets"], [], "--num-subsets", ["0", "-1", "x"]),
    "cv --batch-size": (["cv", "beta_bernoulli", "--batch-size"], [], "--batch-size", ["0", "-1", "x"]),
    "cv --num-warmup": (["cv", "beta_bernoulli", "--method", "psis", "--num-warmup"], [], "--num-warmup",
                        ["-1", "x", "1.5"]),
    "cv --num-samples": (["cv", "beta_bernoulli", "--method", "psis", "--num-samples"], [], "--num-samples",
                         ["0", "-1", "x"]),
    "cv --num-chains": (["cv", "beta_bernoulli", "--method", "psis", "--num-chains"], [], "--num-chains",
                        ["0", "-1", "x"]),
    "cv --max-batches": (["cv", "beta_bernoulli", "--max-batches"], [], "--max-batches", ["-1", "x"]),
    "cv --memory-budget": (["cv", "beta_bernoulli", "--memory-budget"], [], "--memory-budget",
                           ["abc", "-1G", "0", "1Q", "nan"]),
    "cv --method": (["cv", "beta_bernoulli", "--method"], [], "--method", ["bogus", ""]),
    "cv --units": (["cv", "beta_bernoulli", "--units"], [], "--units", ["no_such_plate"]),
    "cv --seed": (["cv", "beta_bernoulli", "--seed"], [], "--seed", ["x", "1.5"]),
    "cv MODEL": (["cv"], [], "MODEL", ["no_such_model", "missing.py:model", "os:path"]),
    "evidence --methods": (["evidence", "beta_bernoulli", "--methods"], [], "--methods",
                           ["bogus", ",", "smc,bogus", ""]),
    "evidence --seed": (["evidence", "beta_bernoulli", "--seed"], [], "--seed", ["x", "1.5"]),
    "evidence MODEL": (["evidence"], [], "MODEL", ["no_such_model", "missing.py:model"]),
    "demo --jobs": (["demo", "--jobs"], [], "--jobs", ["0", "-2", "x"]),
    "demo --seed": (["demo", "--seed"], [], "--seed", ["x", "1.5"]),
    "demo --sections": (["demo", "--sections"], [], "section", ["nope", "cv nope"]),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_cli_option_is_a_clear_usage_error_before_compiling(case, data, capsys, tmp_path_factory):
    """Exit code 2 and a last stderr line that names the option (argparse's own errors print the usage
    above it), no traceback, nothing compiled, nothing written."""
    from genbayes.cli import main

    before, after, name, bad = CLI_CASES[case]
    value = data.draw(st.sampled_from(bad), label=name)
    out = tmp_path_factory.mktemp("cli")
    argv = before + value.split(" ") + after
    argv += ["--out", str(out / "report")] if argv[0] == "demo" else ["--no-progress"] if argv[0] == "cv" else []
    capsys.readouterr()
    with count_compilations() as c:
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own type/choice errors
            code = e.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, f"{argv}: exit code {code}\n{err}"
    assert lines and name.lower() in lines[-1].lower(), f"{argv}: the error does not name {name}:\n{err}"
    assert "Traceback" not in err, err
    # --units is checked against the model's plates, known only once the model is traced on its data,
    # which the bundled model simulates with JAX: a few eager operations (measured 2-6), no program
    limit = 6 if case == "cv --units" else 0
    assert c.count <= limit, f"{argv}: {c.count} programs compiled before the refusal"
    assert not (out / "report").exists(), f"{argv}: the demo wrote a report before refusing"
