"""Several processes (a ``jax.distributed`` job): the batched tools run unchanged, and equal one process.

One script runs batched NUTS, an exhaustive conjugate leave-p-out and the identity's enumeration,
refit leave-one-out, a stepping-stone ladder, GPC calibration and SMC (by runs, and prequential by
particles) in a job of 2 processes on this machine, each with 2 forced
CPU devices (a global mesh of 4), talking over loopback with gloo CPU collectives. The same
script runs once more as a single process with 1 device. Every process writes what it holds
to a file; the test checks that the job spread the work over all 4 devices, that both processes
hold the whole result, and that it equals the single-process one:

- the exhaustive leave-p-out on a conjugate family is exact (no sampling, no cross-set sums on
  device): every held-out set's value and the mean are equal **bit for bit**; the identity's
  enumeration of all 2^n - 1 sets adds per-size sums on each device, then across devices, so it
  equals to the association of those sums (1e-13 relative);
- NUTS (batched, refits, ladder, GPC) and SMC: equal to rounding, with the tolerances of tests/test_sharding.py
  (1e-6 relative for NUTS, whose adaptation feeds rounding back along the chain; 1e-9 for SMC),
  for the same reasons; GPC coverage counts exactly. A wrong key or a misplaced row gives
  differences of the size of the Monte Carlo error, orders of magnitude above these.

The processes are bounded in time and killed in all cases (``genbayes._multihost.launch_local``).
Without gloo collectives in jaxlib the test is skipped, saying so.
"""

import json
import os
import sys
import textwrap

import numpy as np
import pytest

from genbayes._multihost import launch_local

TIMEOUT_S = 240

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, warnings
    from genbayes._multihost import initialize_from_env
    pid, nproc = initialize_from_env()
    import jax, jax.numpy as jnp, numpy as np, numpyro
    numpyro.enable_x64()   # a fresh process: the whole script runs in float64
    import genbayes as gb
    from genbayes import batched, cv, evidence
    from genbayes.calibration import calibrate
    from genbayes.models import median

    out_dir = sys.argv[1]
    import time
    t0 = time.perf_counter()
    out = {"process": pid, "processes": jax.process_count(), "devices": len(jax.devices()),
           "local_devices": jax.local_device_count()}
    warnings.simplefilter("ignore", RuntimeWarning)   # tiny sizes: low-ESS warnings are expected
    fam = gb.conjugate.NormalKnownVariance(0.0, 4.0, 1.0)
    y = jnp.asarray(np.random.default_rng(0).normal(1.0, 1.0, 8))
    nuts = dict(num_warmup=60, num_samples=60)

    # (a) batched NUTS: B = 6 Bayesian-bootstrap posteriors (not a multiple of 4: padding is exercised)
    w = jax.random.dirichlet(jax.random.PRNGKey(1), jnp.ones(8), (6,)) * 8
    res = batched.run(fam, w, y, rng_key=jax.random.PRNGKey(2), progress=False, **nuts)
    out["nuts"] = {"mu": np.asarray(res.samples["mu"]).tolist(), "devices": res.devices,
                   "step_size": np.asarray(res.diagnostics["step_size"]).tolist()}

    out.setdefault("laps", {})["nuts"] = time.perf_counter() - t0
    # (b) exhaustive leave-3-out on a conjugate family: C(8, 3) = 56 held-out sets, exact
    r = cv.lpo(fam, y, p=3, method="exact")
    out["lpo"] = {"values": np.asarray(r.diagnostics["values"]).tolist(), "value": r.value,
                  "num_subsets": r.num_subsets, "method": r.method}

    #     and the identity's exhaustive enumeration: all 2^8 - 1 held-out sets, per-size sums split by device
    rep = cv.identity(fam, y)
    out["identity"] = {"s_cv": np.asarray(rep.s_cv).tolist(), "method": rep.method}
    out.setdefault("laps", {})["lpo"] = time.perf_counter() - t0

    # (b') refit leave-one-out: 8 folds, one NUTS chain per training set (gb.batched.run underneath)
    r = cv.lpo(fam, y, p=1, method="refit", rng_key=jax.random.PRNGKey(7), **nuts)
    out["refit"] = {"values": np.asarray(r.diagnostics["values"]).tolist(), "value": r.value}
    # (b'') a power-posterior ladder: 5 temperatures x 2 replicate chains as one batch
    ev = evidence.log_evidence(fam, y, method="stepping_stone", rng_key=jax.random.PRNGKey(8),
                               options={"ladder": 4, "num_batches": 2, **nuts})
    out["ladder"] = {"ss": ev.diagnostics["stepping_stone"], "ti": ev.diagnostics["thermodynamic"],
                     "devices": ev.diagnostics["devices"]}
    out.setdefault("laps", {})["refit_ladder"] = time.perf_counter() - t0
    # (c) GPC: B = 6 bootstrap replicates per NUTS batch, two iterations, no draw reuse
    x = median.simulate(jax.random.PRNGKey(3), 20)
    cal = calibrate(median.model, x, method="gpc", rng_key=jax.random.PRNGKey(4), B=6, init=1.0, max_iter=2,
                    ess_threshold=1.0, progress=False, **nuts)
    p = cal.diagnostics["path"]
    out["gpc"] = {"learning_rate": p["learning_rate"], "coverage": p["coverage"], "source": p["source"]}

    out.setdefault("laps", {})["gpc"] = time.perf_counter() - t0
    # (d) SMC: 4 runs (as many as devices: split by runs, no communication) and prequential with 2
    #     orderings (fewer than devices: each ordering's particles split across both processes' devices,
    #     with the all-reduces and gathers of resampling going over gloo)
    sm = evidence.log_evidence(fam, y, method="smc", rng_key=jax.random.PRNGKey(5),
                               options={"num_particles": 40, "num_runs": 4, "num_mcmc_steps": 2})
    out["smc"] = {"log_z_runs": np.asarray(sm.diagnostics["log_z_runs"]).tolist(), "log_z": sm.log_z,
                  "shard": sm.diagnostics["shard"], "devices": sm.diagnostics["devices"]}
    out.setdefault("laps", {})["smc"] = time.perf_counter() - t0
    pq = evidence.prequential(fam, y, num_permutations=2, num_particles=40, num_mcmc_steps=2,
                              rng_key=jax.random.PRNGKey(6))
    out["prequential"] = {"terms": np.asarray(pq.terms).tolist(), "shard": pq.diagnostics["shard"],
                          "devices": pq.diagnostics["devices"]}
    out.setdefault("laps", {})["prequential"] = time.perf_counter() - t0
    out["seconds"] = time.perf_counter() - t0
    with open(os.path.join(out_dir, f"result{pid}.json"), "w") as f:
        json.dump(out, f)
    """
)


def _gloo_available():
    try:
        from jax._src.lib import _jax

        return hasattr(_jax, "make_gloo_tcp_collectives")
    except Exception:  # pragma: no cover - a jaxlib without that module layout
        return False


pytestmark = [
    pytest.mark.skipif(not _gloo_available(), reason="this jaxlib has no gloo CPU collectives "
                       "(jax._src.lib._jax.make_gloo_tcp_collectives): a multi-process job on CPU devices cannot "
                       "run its collectives"),
    pytest.mark.xdist_group("multihost"),  # one worker builds the module's fixture (three processes) once
]


def _job(tmp_path, name, num_processes, devices):
    out = tmp_path / name
    out.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    env.pop("JAX_ENABLE_X64", None)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                         env.get("PYTHONPATH", "")])
    launch_local([str(script), str(out)], num_processes, devices, timeout_s=TIMEOUT_S, env=env, log_dir=out)
    return [json.loads((out / f"result{i}.json").read_text()) for i in range(num_processes)]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from concurrent.futures import ThreadPoolExecutor

    tmp = tmp_path_factory.mktemp("multihost")
    # the job and the single-process reference side by side (each process is mostly compiling)
    with ThreadPoolExecutor(2) as pool:
        job = pool.submit(_job, tmp, "job", 2, 2)
        one = pool.submit(_job, tmp, "one", 1, 1)
        return {"job": job.result(), "one": one.result()[0]}


def test_job_spans_both_processes_and_every_process_holds_the_result(results):
    p0, p1 = results["job"]
    assert (p0["processes"], p0["devices"], p0["local_devices"]) == (2, 4, 2)
    assert (p1["process"], p1["processes"]) == (1, 2)
    assert p0["nuts"]["devices"] == 4 and results["one"]["nuts"]["devices"] == 1
    assert (p0["smc"]["shard"], p0["smc"]["devices"]) == ("runs", 4)
    assert (p0["prequential"]["shard"], p0["prequential"]["devices"]) == ("particles", 4)
    # both processes hold the whole result: the same numbers, bit for bit
    assert p0["ladder"]["devices"] == 4 and results["one"]["ladder"]["devices"] == 1
    for key in ("nuts", "lpo", "identity", "refit", "ladder", "gpc", "smc", "prequential"):
        assert p0[key] == p1[key], key


def test_exhaustive_lpo_bitwise_equal_one_process(results):
    job, one = results["job"][0]["lpo"], results["one"]["lpo"]
    assert job["num_subsets"] == one["num_subsets"] == 56 and job["method"] == one["method"] == "enumerate"
    assert job["values"] == one["values"]  # exact: bit for bit
    assert job["value"] == one["value"]


def test_exhaustive_identity_equal_one_process(results):
    """All 2^n - 1 held-out sets: each device sums its own range, so equal up to the sums' association."""
    job, one = results["job"][0]["identity"], results["one"]["identity"]
    assert job["method"] == one["method"] == "enumerate"
    np.testing.assert_allclose(job["s_cv"], one["s_cv"], rtol=1e-13, atol=0)


def test_batched_nuts_equal_one_process(results):
    job, one = results["job"][0]["nuts"], results["one"]["nuts"]
    np.testing.assert_allclose(job["mu"], one["mu"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(job["step_size"], one["step_size"], rtol=1e-6, atol=0)
    # six different posteriors, not one row copied
    assert len({round(float(np.mean(m)), 8) for m in job["mu"]}) == 6


def test_refit_cv_and_ladder_equal_one_process(results):
    job, one = results["job"][0], results["one"]
    np.testing.assert_allclose(job["refit"]["values"], one["refit"]["values"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(job["refit"]["value"], one["refit"]["value"], rtol=1e-6, atol=0)
    np.testing.assert_allclose([job["ladder"]["ss"], job["ladder"]["ti"]], [one["ladder"]["ss"], one["ladder"]["ti"]],
                               rtol=1e-6, atol=0)


def test_gpc_equal_one_process(results):
    job, one = results["job"][0]["gpc"], results["one"]["gpc"]
    assert job["source"] == one["source"] == ["nuts", "nuts"]
    assert job["coverage"] == one["coverage"]
    np.testing.assert_allclose(job["learning_rate"], one["learning_rate"], rtol=1e-6, atol=0)


def test_smc_equal_one_process(results):
    job, one = results["job"][0], results["one"]
    np.testing.assert_allclose(job["smc"]["log_z_runs"], one["smc"]["log_z_runs"], rtol=1e-9, atol=0)
    np.testing.assert_allclose(job["prequential"]["terms"], one["prequential"]["terms"], rtol=1e-9, atol=0)
    assert len(set(np.round(job["smc"]["log_z_runs"], 12))) == 4  # independent runs, not copies


def test_launcher_kills_the_job_when_a_process_fails(tmp_path):
    """A process that fails ends the job at once (its peer would otherwise wait in a collective)."""
    script = tmp_path / "fail.py"
    script.write_text("import os, sys, time\n"
                      "if os.environ['GENBAYES_MH_PROCESS_ID'] == '1':\n    sys.exit(3)\n"
                      "time.sleep(600)\n")
    import time

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"a process failed; exit codes \[-9, 3\]"):
        launch_local([str(script)], 2, 1, timeout_s=60, log_dir=tmp_path)
    assert time.monotonic() - t0 < 30


def test_launcher_times_out_and_kills(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text("import time\ntime.sleep(600)\n")
    with pytest.raises(RuntimeError, match="timed out after 2 s"):
        launch_local([str(script)], 2, 1, timeout_s=2, log_dir=tmp_path)


if __name__ == "__main__":  # pragma: no cover - python tests/test_multihost.py DIR: run the job by hand
    print(_job(__import__("pathlib").Path(sys.argv[1]), "job", 2, 2))
