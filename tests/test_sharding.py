"""Scaling beyond one device: folds, bootstrap replicates, temperatures and SMC shard across devices.

One script runs the four batched workloads twice, in two processes started side by side: one
that sees 4 CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=4``) and one that sees
1. Both use the defaults (shard when more than one device is visible), so this checks what a user
gets. The test asserts that the 4-device process really spread the work over 4 devices (read from
the output arrays' shardings, not from what was requested) and that the results equal the
1-device results.

Tolerances, float64 throughout. Sharding changes how many rows (or particles) one device's
program holds, so XLA may associate batched sums differently: the two processes differ by
rounding (~1e-16 relative per operation), not bit for bit.

- NUTS (cv refits, GPC bootstrap, the temperature ladder): windowed step-size and mass-matrix
  adaptation feed rounding differences back into every later transition. Measured over these
  runs: at most ~1e-9 relative in the reported scores (values printed by the test on failure).
  We allow ``rtol=1e-6``: a key, padding or fold-assignment bug gives a different chain, i.e. an
  O(posterior sd) = O(1e-1) difference, five orders of magnitude above the bound.
- SMC: systematic resampling, the adaptive-temperature bisection and HMC accept/reject are
  piecewise constant in the particles, so rounding only moves results continuously unless it
  flips a comparison (probability ~1e-16 per comparison). Allowed: ``rtol=1e-9``; a misplaced
  key gives an independent run, differing by the Monte Carlo sd (~1e-1 nats here).
- GPC coverage is a count over replicates: equal exactly.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from genbayes.cli import fast_compile_xla_flags

SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    import jax, jax.numpy as jnp, numpy as np, numpyro
    numpyro.enable_x64()   # a fresh process: the whole script runs in float64
    import genbayes as gb
    from genbayes import batched, cv, evidence
    from genbayes.calibration import calibrate
    from genbayes.models import median

    expected = int(sys.argv[1])
    assert len(jax.devices()) == expected, jax.devices()

    # every NUTS batch goes through gb.batched.run; record where its draws live
    runs, _run = [], batched.run
    def spy(*a, **k):
        res = _run(*a, **k)
        runs.append({"B": res.num_replicates, "devices": res.devices})
        return res
    batched.run = spy

    out = {}
    nuts = dict(num_warmup=60, num_samples=60)
    fam = gb.conjugate.NormalKnownVariance(0.0, 4.0, 1.0)
    y = jnp.asarray(np.random.default_rng(0).normal(1.0, 1.0, 6))
    warnings.simplefilter("ignore", RuntimeWarning)   # tiny sizes: low-ESS warnings are expected

    # (a) leave-one-out refits: 6 folds (not a multiple of 4: padding is exercised)
    r = cv.lpo(fam, y, p=1, method="refit", rng_key=jax.random.PRNGKey(1), **nuts)
    out["cv"] = {"values": np.asarray(r.diagnostics["values"]).tolist(), "value": r.value, "runs": runs[-1]}

    # (b) GPC: B = 6 bootstrap replicates per NUTS batch, two iterations, no draw reuse
    x = median.simulate(jax.random.PRNGKey(2), 20)
    cal = calibrate(median.model, x, method="gpc", rng_key=jax.random.PRNGKey(3), B=6, init=1.0, max_iter=2,
                    ess_threshold=1.0, progress=False, **nuts)
    p = cal.diagnostics["path"]
    out["gpc"] = {"learning_rate": p["learning_rate"], "coverage": p["coverage"], "source": p["source"],
                  "runs": runs[-1]}

    # (c) power posteriors: 5 temperatures x 4 replicate chains as one batch
    ev = evidence.log_evidence(fam, y, method="stepping_stone", rng_key=jax.random.PRNGKey(4),
                               options={"ladder": 4, "num_batches": 2, **nuts})
    d = ev.diagnostics
    out["ladder"] = {"ss": d["stepping_stone"], "ti": d["thermodynamic"],
                     "mean_ll": d["mean_log_likelihood"].tolist(), "devices": d["devices"], "runs": runs[-1]}

    # (d) SMC: 4 runs (as many as devices: split by runs) and prequential with 2 orderings
    #     (fewer than devices: each ordering's particles split across devices)
    sm = evidence.log_evidence(fam, y, method="smc", rng_key=jax.random.PRNGKey(5),
                               options={"num_particles": 40, "num_runs": 4, "num_mcmc_steps": 2})
    out["smc"] = {"log_z_runs": sm.diagnostics["log_z_runs"].tolist(), "shard": sm.diagnostics["shard"],
                  "devices": sm.diagnostics["devices"]}
    pq = evidence.prequential(fam, y, num_permutations=2, num_particles=40, num_mcmc_steps=2,
                              rng_key=jax.random.PRNGKey(6))
    out["prequential"] = {"terms": pq.terms.tolist(), "shard": pq.diagnostics["shard"],
                          "devices": pq.diagnostics["devices"]}
    print("RESULT" + json.dumps(out))
    """
)


def _start(num_devices):
    # the suite's compile-time flags (conftest.py), with the device count replacing any inherited one
    flags = fast_compile_xla_flags(f"--xla_force_host_platform_device_count={num_devices}")
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    env.pop("JAX_ENABLE_X64", None)
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(num_devices)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc):
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    line = next(line for line in stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


@pytest.fixture(scope="module")
def results():
    # both processes at once: each is mostly single-threaded compilation
    procs = {d: _start(d) for d in (4, 1)}
    return {d: _result(p) for d, p in procs.items()}


def test_nuts_batches_use_all_devices(results):
    """Folds, bootstrap replicates and temperatures: the draws of every batch live on 4 devices."""
    four, one = results[4], results[1]
    for name, B in (("cv", 6), ("gpc", 6), ("ladder", 5 * 4)):  # ladder: 4 replicate chains per temperature
        assert four[name]["runs"] == {"B": B, "devices": 4}, (name, four[name]["runs"])
        assert one[name]["runs"] == {"B": B, "devices": 1}, (name, one[name]["runs"])
    assert four["ladder"]["devices"] == 4 and one["ladder"]["devices"] == 1


def test_cv_folds_equal_one_device(results):
    a, b = results[4]["cv"], results[1]["cv"]
    np.testing.assert_allclose(a["values"], b["values"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-6, atol=0)


def test_gpc_bootstrap_equal_one_device(results):
    a, b = results[4]["gpc"], results[1]["gpc"]
    assert a["source"] == b["source"] == ["nuts", "nuts"]
    assert a["coverage"] == b["coverage"]
    np.testing.assert_allclose(a["learning_rate"], b["learning_rate"], rtol=1e-6, atol=0)


def test_temperature_ladder_equal_one_device(results):
    a, b = results[4]["ladder"], results[1]["ladder"]
    np.testing.assert_allclose(a["mean_ll"], b["mean_ll"], rtol=1e-6, atol=0)
    np.testing.assert_allclose([a["ss"], a["ti"]], [b["ss"], b["ti"]], rtol=1e-6, atol=0)


def test_smc_runs_and_particles_shard_and_equal_one_device(results):
    four, one = results[4], results[1]
    assert (four["smc"]["shard"], four["smc"]["devices"]) == ("runs", 4)
    assert (four["prequential"]["shard"], four["prequential"]["devices"]) == ("particles", 4)
    assert (one["smc"]["shard"], one["smc"]["devices"]) == ("none", 1)
    assert (one["prequential"]["shard"], one["prequential"]["devices"]) == ("none", 1)
    np.testing.assert_allclose(four["smc"]["log_z_runs"], one["smc"]["log_z_runs"], rtol=1e-9, atol=0)
    np.testing.assert_allclose(four["prequential"]["terms"], one["prequential"]["terms"], rtol=1e-9, atol=0)
    # the runs are independent draws, not copies (a key reused across devices would make them equal)
    assert len(set(np.round(four["smc"]["log_z_runs"], 12))) == 4
