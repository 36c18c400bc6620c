"""Power-posterior evidence (thermodynamic integration, stepping stone) and multi-start Laplace.

Issue 15, items 3-5: standard errors that cover run-to-run variation (replicate ladders),
divergences per rung folded into validity, Laplace from several starts with a clear error where no
mode exists, and one compilation per estimator. References are exact: conjugate families'
closed forms and ``tests.evidence_models.two_sites_log_z``.
"""

import warnings

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import numpy as np
import pytest
from scipy import stats

import genbayes as gb
from genbayes import _ladder
from genbayes._laplace import LaplaceError, _laplace
from genbayes._programs import count_compilations
from genbayes.evidence import EstimatorFailure, _evidence_units, log_evidence
from tests.evidence_models import (SCHOOLS_SIGMA, SCHOOLS_Y, TWO_Y, TWO_Z, eight_schools_centered, factor_data,
                                   factor_model, two_sites, two_sites_log_z)

SMALL = {"ladder": 12, "num_warmup": 200, "num_samples": 200, "num_batches": 10}


def _quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*a, **kw)


# ----------------------------------------------------------------------------- estimates and SEs


def test_two_sites_within_4_se_of_exact(x64):
    """Both estimators of one replicated ladder against the exact Gaussian evidence of two observed sites."""
    exact = two_sites_log_z()
    ev = _quiet(log_evidence, two_sites, jnp.asarray(TWO_Z), jnp.asarray(TWO_Y), method="thermodynamic",
                rng_key=jax.random.PRNGKey(0), options=SMALL)
    d = ev.diagnostics
    R = d["num_chains"]
    assert d["thermodynamic_replicates"].shape == (R,) and d["stepping_stone_replicates"].shape == (R,)
    for m in ("thermodynamic", "stepping_stone"):
        # the SE is the larger of the between-replicate and the within-chain batch-means SE
        assert d[f"{m}_se"] == max(d[f"{m}_se_between"], d[f"{m}_se_within"]) > 0
        assert abs(d[m] - exact) <= 4 * d[f"{m}_se"], (m, d[m], d[f"{m}_se"], exact)
    assert ev.valid


def test_replicate_se_is_the_spread_of_the_replicates(x64):
    """se_between is sd/sqrt(R) of the per-replicate estimators, each recomputed from its own chains."""
    fam = gb.conjugate.NormalKnownVariance(0.0, 4.0, 1.0)
    y = jnp.asarray(np.random.default_rng(1).normal(1.0, 1.0, 15))
    units = _evidence_units(fam.model, (y,), {})
    d = _quiet(_ladder._power_posteriors, fam.model, (y,), {}, jax.random.PRNGKey(1), units=units,
               ladder=[0.0, 0.1, 0.5, 1.0], num_warmup=150, num_samples=100, num_chains=3, num_batches=5)
    reps = d["stepping_stone_replicates"]
    assert np.isclose(d["stepping_stone_se_between"], np.std(reps, ddof=1) / np.sqrt(3))
    assert np.isclose(d["thermodynamic_se_between"], np.std(d["thermodynamic_replicates"], ddof=1) / np.sqrt(3))
    # (K+1, R) per-chain means of the log-likelihood: pooled mean over chains is the rung's mean
    assert d["rung_mean_log_likelihood"].shape == (4, 3)
    assert np.allclose(d["rung_mean_log_likelihood"].mean(axis=1), d["mean_log_likelihood"])
    exact = float(fam.log_evidence(y))
    assert abs(d["stepping_stone"] - exact) <= 4 * d["stepping_stone_se"]


def _chi2_spread(est, se):
    """Σ (x_i - x̄_w)² / se_i² around the inverse-variance weighted mean: χ² with m - 1 df if the SEs are right."""
    w = 1.0 / se**2
    mean = np.sum(w * est) / np.sum(w)
    return float(np.sum((est - mean) ** 2 * w))


SCHOOLS_LADDER = {"ladder": 6, "num_warmup": 100, "num_samples": 100, "num_batches": 10}


@pytest.mark.slow
@pytest.mark.run_bound  # NUTS on a funnel, long trajectories: 133 -> 60 s CPU at XLA's default flags (conftest.py)
def test_se_covers_run_to_run_spread_on_centred_eight_schools(x64):
    """Six independent ladders (keys 0..5) on the centred eight schools (a funnel): the spread of the
    estimates matches their reported SEs.

    χ² = Σ (x_i - x̄_w)² / se_i² has m - 1 = 5 degrees of freedom when the SEs are right; the test
    fails above the 0.999 quantile (20.5). An SE underestimated 3 times inflates χ² 9 times
    (expected 45), so the check fails then. (Measured on 8 runs with 150 + 150 draws: the former
    within-chain batch-means SE alone gave χ² = 12.2, the reported SE 6.2, for 7 degrees of freedom.)
    """
    runs = [_quiet(log_evidence, eight_schools_centered, SCHOOLS_SIGMA, SCHOOLS_Y, method="stepping_stone",
                   rng_key=jax.random.PRNGKey(k), options=SCHOOLS_LADDER) for k in range(6)]
    limit = stats.chi2(5).ppf(0.999)
    for m in ("stepping_stone", "thermodynamic"):
        est = np.array([r.diagnostics[m] for r in runs])
        se = np.array([r.diagnostics[f"{m}_se"] for r in runs])
        assert _chi2_spread(est, se) < limit, (m, est, se)


# ----------------------------------------------------------------------------- validity


def _diag_with_divergences(per_rung, num_samples=250, R=4):
    K1 = len(per_rung)
    div = np.zeros((K1, R), int)
    div[:, 0] = per_rung
    return {
        "ladder": np.linspace(0.0, 1.0, K1), "num_samples": num_samples, "num_chains": R,
        "thermodynamic": -10.0, "thermodynamic_uncorrected": -10.0, "stepping_stone": -10.0,
        "thermodynamic_se": 0.05, "stepping_stone_se": 0.05,
        "thermodynamic_se_between": 0.05, "stepping_stone_se_between": 0.05,
        "thermodynamic_se_within": 0.05, "stepping_stone_se_within": 0.05,
        "rung_ess": np.full(K1 - 1, float(num_samples)),
        "num_divergent": div.reshape(-1), "divergences_per_rung": div.sum(axis=1),
    }


@pytest.mark.parametrize("count,valid", [(0, True), (5, True), (10, True), (11, False), (400, False)])
def test_divergences_over_one_percent_of_a_rung_invalidate(monkeypatch, count, valid):
    """A rung of 4 x 250 = 1000 draws: up to 10 divergent (1%) is a caution, more makes the estimate invalid."""
    monkeypatch.setattr(_ladder, "_power_posteriors", lambda *a, **k: _diag_with_divergences([0, count, 0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        _, _, diag = _ladder._power_evidence("stepping_stone", None, (), {}, None)
    assert (len(diag["invalid"]) == 0) == valid
    # divergences concern the draws, so both estimators of the run share the verdict
    assert diag["thermodynamic_invalid"] == diag["stepping_stone_invalid"] == diag["invalid"]
    if count:
        assert any("divergent" in str(w.message) for w in caught)
        assert "divergent" in " ".join(diag["warnings"])
        assert f"{count} of 1000 draws" in " ".join(diag["warnings"])
    else:
        assert not diag["warnings"]


def test_divergences_are_counted_per_rung_on_the_funnel(x64):
    """Centred eight schools: divergences counted per temperature (summing each rung's chains); over 1%
    of a rung's draws makes the Evidence invalid."""
    opts = {"ladder": 4, "num_warmup": 100, "num_samples": 100, "num_batches": 5}
    ev = _quiet(log_evidence, eight_schools_centered, SCHOOLS_SIGMA, SCHOOLS_Y, method="stepping_stone",
                rng_key=jax.random.PRNGKey(0), options=opts)
    d = ev.diagnostics
    per_chain = d["num_divergent"].reshape(5, d["num_chains"])
    assert np.array_equal(d["divergences_per_rung"], per_chain.sum(axis=1))
    frac = d["divergences_per_rung"] / (d["num_chains"] * d["num_samples"])
    assert frac.max() > 0.01  # the funnel diverges at the posterior end of the ladder
    assert not ev.valid and any("divergent" in r for r in d["invalid"])


def test_collapsed_rung_is_invalid(x64):
    """One step from prior to a sharp posterior: the importance ESS collapses, the estimate is invalid."""
    fam = gb.conjugate.NormalKnownVariance(0.0, 100.0, 1.0)
    y = jnp.asarray(np.random.default_rng(0).normal(3.0, 1.0, 200))
    with pytest.warns(RuntimeWarning, match="INVALID: the ladder is too coarse"):
        ev = log_evidence(fam, y, method="stepping_stone", rng_key=jax.random.PRNGKey(0),
                          options={"ladder": [0.0, 1.0], "num_warmup": 100, "num_samples": 200, "num_batches": 4})
    assert ev.diagnostics["rung_ess"][0] < 20
    assert not ev.valid


def test_ladder_bad_input_before_compiling():
    fam = gb.conjugate.NormalKnownVariance(0.0, 1.0, 1.0)
    y = jnp.zeros(3)
    units, key = _evidence_units(fam.model, (y,), {}), jax.random.PRNGKey(0)
    with count_compilations() as c:
        with pytest.raises(ValueError, match="num_chains"):
            _ladder._power_posteriors(fam.model, (y,), {}, key, units=units, num_chains=1)
        with pytest.raises(ValueError, match="multiple of `num_batches`"):
            _ladder._power_posteriors(fam.model, (y,), {}, key, units=units, num_samples=101)
    assert c.count == 0


# ----------------------------------------------------------------------------- Laplace


def test_laplace_eight_schools_centred_raises_naming_the_funnel(x64):
    """No mode: tau -> 0 makes the centred log joint unbounded; the error says so and what to use."""
    for k in range(2):
        with pytest.raises(LaplaceError, match=r"(?s)'tau'.*funnel.*'smc'.*'stepping_stone'"):
            log_evidence(eight_schools_centered, SCHOOLS_SIGMA, SCHOOLS_Y, method="laplace",
                         rng_key=jax.random.PRNGKey(k))
    assert issubclass(LaplaceError, EstimatorFailure)


@pytest.mark.slow
def test_laplace_factor_model_same_answer_for_every_key(x64):
    """One-factor model on two-factor data has a local mode ~40 nats below the best: a single start
    returns either; eight starts return the best for every key, and report the local one."""
    Y = jnp.asarray(factor_data(n=100))
    vals = []
    for k in range(3):
        with pytest.warns(RuntimeWarning, match="other optima"):
            ev = log_evidence(factor_model, Y, 1, method="laplace", rng_key=jax.random.PRNGKey(k))
        lj = ev.diagnostics["start_log_joint"]
        assert lj.shape == (8,) and lj[ev.diagnostics["best_start"]] == lj.max()
        assert np.ptp(lj) > 1.0  # distinct optima among the starts
        vals.append(ev.log_z)
    assert np.ptp(vals) < 1e-6, vals


def test_laplace_multistart_exact_on_gaussian_and_records_starts(x64):
    """Normal mean, known variance: one mode, every start reaches it, Laplace equals the exact evidence."""
    fam = gb.conjugate.NormalKnownVariance(1.0, 2.0, 1.0)
    y = jnp.asarray(np.random.default_rng(3).normal(0.0, 1.5, 12))
    ev = log_evidence(fam, y, method="laplace", rng_key=jax.random.PRNGKey(0))
    d = ev.diagnostics
    assert abs(ev.log_z - float(fam.log_evidence(y))) < 1e-6
    assert d["start_log_joint"].shape == (8,) and np.ptp(d["start_log_joint"]) < 1e-8
    assert d["num_distinct_starts"] == 0 and ev.valid


def test_laplace_bad_input_before_compiling():
    fam = gb.conjugate.NormalKnownVariance(0.0, 1.0, 1.0)
    y = jnp.zeros(3)
    units, key = _evidence_units(fam.model, (y,), {}), jax.random.PRNGKey(0)
    with count_compilations() as c:
        with pytest.raises(ValueError, match="num_starts"):
            _laplace(fam.model, (y,), {}, key, units=units, num_starts=0)
        with pytest.raises(ValueError, match="tol"):
            _laplace(fam.model, (y,), {}, key, units=units, tol=-1.0)
    assert c.count == 0


# ----------------------------------------------------------------------------- compilations


@pytest.mark.parametrize("method", ["laplace", "thermodynamic", "stepping_stone"])
def test_second_call_with_new_data_compiles_nothing(x64, method):
    """Data are program inputs: new data of the same shapes reuse every compiled program.

    The first call compiles the estimator's program(s): Laplace exactly one (its starts, the median
    of prior draws included, are found inside it; nothing runs eagerly before it), a ladder its NUTS
    program, its estimates program and a few first-use eager operations of the input checks and key
    splitting (10-12 measured, bounded at 12). The model is a plain NumPyro function, as a user
    writes it (a conjugate family object adds the eager checks of its own constants).
    """

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
        with numpyro.plate("n", y.shape[0]):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    rng = np.random.default_rng(0)
    y1, y2 = jnp.asarray(rng.normal(1.0, 1.0, 9)), jnp.asarray(rng.normal(-1.0, 1.0, 9))
    key = jax.random.PRNGKey(0)
    opts, limit = (None, 1) if method == "laplace" else (
        {"ladder": 4, "num_warmup": 50, "num_samples": 50, "num_batches": 5}, 12)
    counts, evs = [], []
    for y in (y1, y2):
        with count_compilations() as c:
            evs.append(_quiet(log_evidence, model, y, method=method, rng_key=key, options=opts))
        counts.append(c.count)
    assert counts[1] == 0, counts
    assert 1 <= counts[0] <= limit, counts
    assert evs[0].log_z != evs[1].log_z  # the new data were used
