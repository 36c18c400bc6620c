"""The "model x tool" matrix: every public tool on every zoo model runs, or refuses with a clear reason.

Agreement with references is checked model by model elsewhere (test_units, test_zoo, test_cv_units,
test_evidence_units, test_calibration_units). This matrix checks the other half of the issue's
"done when": no crash and no unclear error anywhere. Each cell declares its expected outcome, so a
tool that starts failing, or starts accepting a model it used to refuse, changes a cell on purpose:

- ``"ok"``: the tool returns a finite result (warnings about small runs are allowed);
- a string: the tool raises ``ValueError`` or ``NotImplementedError`` whose message matches it
  (the reason, naming the site or plate) before any sampling;
- ``("no answer", reason)``: the tool runs but the model has no such answer (Laplace on a funnel
  without a mode, or on NumPyro's ``obs_mask`` imputation site, whose masked-out entries have no
  density at all): it raises :class:`genbayes.evidence.EstimatorFailure` saying why (it used to
  return NaN with a warning). For LLB calibration the run-time refusal is a ``FloatingPointError``
  naming the cause (e.g. a loss that sees the parameters only through fewer combinations than
  there are parameters, so the score covariance I is singular; it used to return a meaningless rate).

Never an ``AssertionError``, a ``FloatingPointError`` without its cause, a ``TypeError`` from inside
NumPyro, or NaN.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

import genbayes as gb
from tests.zoo import models as zoo

pytestmark = pytest.mark.slow

KEY = jax.random.PRNGKey(0)
NUTS = dict(num_warmup=100, num_samples=100)

LOCAL = r"local to the units|local latent"
NO_MODE = ("no answer", "not positive definite")
NO_RATE = ("no answer", r"score covariance I is singular \(rank 4 of 6\)")
# expected outcome per (model, tool); tools: lpo (PSIS leave-one-out), laplace (evidence), llb (calibration)
EXPECTED = {
    "eight_schools_centered": {"lpo": "ok", "laplace": NO_MODE, "llb": LOCAL},
    "eight_schools_noncentered": {"lpo": "ok", "laplace": "ok", "llb": LOCAL},
    "binomial_hierarchical": {"lpo": "ok", "laplace": "ok", "llb": LOCAL},
    "separate_binomial": {"lpo": "ok", "laplace": "ok", "llb": LOCAL},
    "linear_regression": {"lpo": "ok", "laplace": "ok", "llb": "ok"},
    "two_sites": {"lpo": "ok", "laplace": "ok", "llb": "ok"},
    "mixture": {"lpo": "ok", "laplace": "ok", "llb": r"discrete.*\['z'\]"},
    "masked": {"lpo": "ok", "laplace": NO_MODE, "llb": LOCAL},
    "multivariate": {"lpo": "ok", "laplace": "ok", "llb": "ok"},
    "subsampled": {"lpo": "subsampled", "laplace": "subsampled", "llb": "subsampling factor"},
    "ar1": {"lpo": "ok", "laplace": "ok", "llb": "ok"},
    # default units are the 24 observations: the 4 group effects are global to them (each enters 5-7 units);
    # the loss sees (mu, tau, eta) only through the 4 group means mu + tau * eta[g]: I has rank 4 of 6
    "grouped": {"lpo": "ok", "laplace": "ok", "llb": NO_RATE},
}


def _lpo(z):
    return gb.cv.lpo(z.model, *z.args, p=1, units=z.units, method="psis", rng_key=KEY, num_chains=2, **NUTS,
                     **z.kwargs).value


def _laplace(z):
    ev = gb.evidence.log_evidence(z.model, *z.args, method="laplace", rng_key=KEY, **z.kwargs)
    return ev.log_z, ev.diagnostics.get("warnings", ())


def _llb(z):
    return gb.calibrate(z.model, *z.args, method="llb", rng_key=KEY, progress=False, units=z.units,
                        **z.kwargs).learning_rate


TOOLS = {"lpo": _lpo, "laplace": _laplace, "llb": _llb}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_tool_runs_or_refuses_clearly(name, x64):
    z = zoo.ALL[name]()
    for tool, expected in EXPECTED[name].items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small runs: k-hat, ESS and divergence warnings are expected
            if expected == "ok":
                value = TOOLS[tool](z)
                value = value[0] if isinstance(value, tuple) else value
                assert np.all(np.isfinite(np.asarray(value))), (name, tool, value)
            elif isinstance(expected, tuple):
                failure = FloatingPointError if tool == "llb" else gb.evidence.EstimatorFailure
                with pytest.raises(failure, match=expected[1]):
                    TOOLS[tool](z)
            else:
                with pytest.raises((ValueError, NotImplementedError), match=expected):
                    TOOLS[tool](z)
