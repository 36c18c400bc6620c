"""The cases of the data fuzz (tests/test_fuzz_data.py), kept apart so a script can print the table.

Each case is ``(entry point, malformed input, argument name, call, expect)``: ``expect`` is "error"
when the input is certainly invalid (a ``ValueError``/``TypeError`` naming the argument must come
before any compilation), "finite" when it is valid (size-1 data: a finite result must come back) and
"either" when a clear error and a finite result are both acceptable. ``python -m tests._fuzz_data_cases``
prints every outcome.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import genbayes as gb
from genbayes.calibration import loss_minimizer

KEY = jax.random.PRNGKey(0)
NAN, INF = float("nan"), float("inf")
ARG, KW = "model argument #0", "model argument 'y'"  # how check_args_finite names positional / keyword data
FAM_ARG = ("`x`", ARG)  # a conjugate family names its data x
Y = np.array([0.3, -0.2, 1.1, 0.4])
FAM = gb.conjugate.NormalKnownVariance(0.0, 4.0, 1.0)


def normal_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def kw_model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("n", 4 if y is None else y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def loss_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", gb.Loss(gb.losses.squared, mu), obs=y)


def guide(y):
    numpyro.sample("mu", dist.Normal(numpyro.param("m", 0.0), 1.0))


def _nan_at_2(p, y):
    return jnp.where(jnp.arange(jnp.shape(y)[-1]) == 2, jnp.nan, (p - y) ** 2)


# ------------------------------------------------------------------------ malformed data vectors
def _bad_vectors():
    """name -> (value, expect) for the data of a model over a plate of n observations."""
    return {
        "nan entry": (np.array([0.3, NAN, 1.1, 0.4]), "error"),
        "+inf entry": (np.array([0.3, INF, 1.1, 0.4]), "error"),
        "-inf entry": (np.array([0.3, -INF, 1.1, 0.4]), "error"),
        "complex": (Y + 0j, "error"),
        "complex 1e-3j": (Y + 1e-3j, "error"),
        "strings": (np.array(["a", "b", "c", "d"]), "error"),
        "objects": (np.array([0.3, None, 1.1, 0.4], dtype=object), "error"),
        "empty": (np.zeros(0), "error"),
        "list with nan": ([0.3, NAN, 1.1, 0.4], "error"),
        "size-1": (np.array([0.7]), "finite"),
    }


def _bad_weights(n=4):
    return {
        "weights nan": (np.array([1.0, NAN, 1.0, 1.0]), "error"),
        "weights inf": (np.array([1.0, INF, 1.0, 1.0]), "error"),
        "weights complex": (np.ones(n) + 0j, "error"),
        "weights negative": (np.array([1.0, -1.0, 1.0, 1.0]), "error"),
        "weights too short": (np.ones(n - 1), "error"),
        "weights 2-D wrong": (np.ones((n, 2)), "error"),
        "weights strings": (np.array(["1"] * n), "error"),
    }


def _ld(model, *args, params=None, **kwargs):
    from numpyro.infer.util import log_density

    return log_density(model, args, kwargs, params or {"mu": 0.3})[0]


def cases():
    out = []

    def add(entry, bad, arg, call, expect):
        out.append((entry, bad, arg, call, expect))

    vecs = _bad_vectors()
    draws = {"mu": np.linspace(-0.5, 0.5, 40)[None]}  # (1, 40)
    mu_draws = draws["mu"][0]
    for bad, (v, exp) in vecs.items():
        # model-based entry points, data positional and keyword
        add("units.find", bad, ARG, lambda v=v: gb.units.find(normal_model, v), exp)
        add("units.find (keyword)", bad, KW, lambda v=v: gb.units.find(kw_model, y=v), exp)
        add("reweight log_density", bad, ARG,
            lambda v=v: _ld(gb.reweight(normal_model, weights=1.0), v), exp)
        add("gibbs log_density", bad, ARG,
            lambda v=v: _ld(gb.gibbs(normal_model, loss=gb.losses.absolute, learning_rate=0.5), v), exp)
        add("gibbs log_density (keyword)", bad, KW,
            lambda v=v: _ld(gb.gibbs(kw_model, loss=gb.losses.absolute), y=v), exp)
        add("fisher.scores", bad, ARG, lambda v=v: gb.fisher.scores(normal_model, {"mu": 0.1}, v), exp)
        add("fisher.sandwich", bad, ARG if bad != "size-1" else "at least 2 observation units",
            lambda v=v: gb.fisher.sandwich(loss_model, {"mu": 0.1}, v), "error" if exp == "error" else "either")
        add("fisher.per_observation_log_density (keyword)", bad, KW,
            lambda v=v: gb.fisher.per_observation_log_density(kw_model, {"mu": 0.1}, y=v), exp)
        add("calibrate llb", bad, ARG,
            lambda v=v: gb.calibrate(loss_model, v, method="llb", rng_key=KEY, progress=False,
                                     num_steps=20) if exp == "error" else None, exp
            if exp == "error" else "skip")
        add("calibrate llb (keyword)", bad, KW,
            lambda v=v: gb.calibrate(kw_model, y=v, method="llb", rng_key=KEY, progress=False), "error"
            if exp == "error" else "skip")
        add("loss_minimizer", bad, ARG,
            lambda v=v: loss_minimizer(loss_model, v, rng_key=KEY, num_steps=20), exp)
        add("batched.run", bad, ARG,
            lambda v=v: gb.batched.run(normal_model, np.ones((1, np.shape(v)[0] if np.ndim(v) else 1)), v,
                                       rng_key=KEY, num_warmup=5, num_samples=5), exp)
        add("cv.lpo (family)", bad, FAM_ARG, lambda v=v: gb.cv.lpo(FAM, v, p=1), exp)
        add("cv.lpo (model, psis)", bad, ARG,
            lambda v=v: gb.cv.lpo(normal_model, v, p=1, method="psis", rng_key=KEY, num_warmup=20,
                                  num_samples=40, num_chains=1), exp)
        add("cv.identity (family)", bad, FAM_ARG, lambda v=v: gb.cv.identity(FAM, v), exp)
        add("evidence exact", bad, FAM_ARG, lambda v=v: gb.evidence.log_evidence(FAM, v, method="exact"),
            "either" if bad == "empty" else exp)  # exact: log p(no data) = 0
        add("evidence laplace (keyword)", bad, KW,
            lambda v=v: gb.evidence.log_evidence(kw_model, y=v, method="laplace", rng_key=KEY), exp)
        add("evidence.prequential", bad, FAM_ARG,
            lambda v=v: gb.evidence.prequential(FAM, v, num_permutations=2, rng_key=KEY), exp)
        add("bridge_sampling", bad, ARG,
            lambda v=v: gb.bridge.bridge_sampling(normal_model, v, samples={"mu": mu_draws}, rng_key=KEY), exp)
        add("interop.unit_log_likelihood", bad, ARG,
            lambda v=v: gb.interop.unit_log_likelihood(normal_model, draws, v), exp)
        # conjugate families
        # no data is valid for a conjugate family: log p(no data) = 0, the posterior is the prior
        cexp = "either" if bad == "empty" else exp
        add("NormalKnownVariance.log_evidence", bad, "x", lambda v=v: FAM.log_evidence(v), cexp)
        add("NormalKnownVariance.posterior", bad, "x", lambda v=v: FAM.posterior(v), cexp)
        add("sequence_log_predictive", bad, "x", lambda v=v: gb.conjugate.sequence_log_predictive(FAM, v), cexp)
    for bad, (w, exp) in _bad_weights().items():
        add("reweight", bad, "weights", lambda w=w: _ld(gb.reweight(normal_model, weights=w), Y), exp)
        add("batched.run", bad, "weights",
            lambda w=w: gb.batched.run(normal_model, np.atleast_2d(w), Y, rng_key=KEY, num_warmup=5,
                                       num_samples=5), exp)
        add("NormalKnownVariance.posterior weights", bad, "weights", lambda w=w: FAM.posterior(Y, weights=w), exp)
        add("gibbs learning_rate array", bad, "learning_rate",
            lambda w=w: _ld(gb.gibbs(normal_model, loss=gb.losses.absolute, learning_rate=w), Y), exp)
    # conjugate families: out-of-support data
    bb, gp = gb.conjugate.BetaBernoulli(), gb.conjugate.GammaPoisson()
    dc = gb.conjugate.DirichletCategorical(np.ones(3))
    ng = gb.conjugate.NormalGammaRegression(np.zeros(2), np.eye(2))
    X = np.array([[1.0, 0.1], [1.0, -0.3], [1.0, 0.8], [1.0, 0.5]])
    for bad, v in {"0.5 label": [1, 0.5, 0], "label 2": [1, 2, 0], "nan": [1, NAN, 0], "negative": [1, -1, 0],
                   "empty": np.zeros(0)}.items():
        add("BetaBernoulli.log_evidence", bad, "x", lambda v=v: bb.log_evidence(np.asarray(v, float)),
            "either" if bad == "empty" else "error")
    for bad, v in {"fraction": [1, 0.5, 3], "negative": [1, -2, 3], "nan": [1, NAN, 3]}.items():
        add("GammaPoisson.log_evidence", bad, "x", lambda v=v: gp.log_evidence(np.asarray(v, float)), "error")
    for bad, v in {"category 3": [0, 3, 1], "negative": [0, -1, 1], "fraction": [0, 0.5, 1]}.items():
        add("DirichletCategorical.log_evidence", bad, "x", lambda v=v: dc.log_evidence(np.asarray(v)), "error")
    for bad, (Xv, yv) in {"X nan": (np.where(np.eye(4, 2) > 0, NAN, X), Y), "y nan": (X, vecs["nan entry"][0]),
                          "X 1-D": (X[:, 1], Y), "X rows != y": (X[:3], Y), "X complex": (X + 0j, Y),
                          "X wrong columns": (np.ones((4, 3)), Y)}.items():
        add("NormalGammaRegression.log_evidence", bad, "X" if bad.startswith("X") else "y",
            lambda Xv=Xv, yv=yv: ng.log_evidence(Xv, yv), "error")
    add("NormalGammaRegression.log_evidence", "size-1", "-", lambda: ng.log_evidence(X[:1], Y[:1]), "finite")
    for bad, order in {"duplicated": [0, 0, 1, 2], "out of range": [0, 1, 2, 4], "too short": [0, 1, 2],
                       "negative": [0, 1, 2, -1], "fractional": [0.0, 1.5, 2.0, 3.0], "nan": [0, 1, 2, NAN],
                       "2-D wrong": np.zeros((2, 3), int)}.items():
        add("sequence_log_predictive", bad, "order",
            lambda o=order: gb.conjugate.sequence_log_predictive(FAM, Y, order=np.asarray(o)), "error")
    # losses: direct calls
    for lname, loss in {"squared": gb.losses.squared, "absolute": gb.losses.absolute,
                        "huber": gb.losses.huber(), "check": gb.losses.check(0.3)}.items():
        for bad, (p, y) in {"complex prediction": (jnp.zeros(3) + 1j, jnp.ones(3)),
                            "complex observation": (jnp.zeros(3), jnp.ones(3) + 1j),
                            "string observation": (jnp.zeros(3), np.array(["a", "b", "c"]))}.items():
            arg = "prediction" if "prediction" in bad else "observation"
            add(f"losses.{lname}", bad, arg, lambda loss=loss, p=p, y=y: loss(p, y), "error")
    for lname, loss in {"hinge": gb.losses.hinge, "logistic": gb.losses.logistic}.items():
        for bad, y in {"label 0.5": [1.0, 0.5, 0.0], "label nan": [1.0, NAN, 0.0], "label 2": [1.0, 2.0, 0.0],
                       "complex label": np.array([1.0, 0.0, 1.0]) + 0j}.items():
            add(f"losses.{lname}", bad, ("label", "observation"),
                lambda loss=loss, y=y: loss(np.zeros(3), np.asarray(y)), "error")
        add(f"losses.{lname}", "nan prediction", "prediction",
            lambda loss=loss: loss(np.array([0.1, NAN, 0.2]), np.array([1.0, 0.0, 1.0])), "error")
    # a loss that returns NaN for one observation
    add("gibbs log_density, loss NaN at one obs", "loss nan", "loss",
        lambda: _ld(gb.gibbs(normal_model, loss=_nan_at_2), Y), "error")
    add("fisher.sandwich, loss NaN at one obs", "loss nan", "loss",
        lambda: gb.fisher.sandwich(gb.gibbs(normal_model, loss=_nan_at_2), {"mu": 0.1}, Y), "error")
    add("calibrate llb, loss NaN at one obs", "loss nan", "loss",
        lambda: gb.calibrate(gb.gibbs(normal_model, loss=_nan_at_2), Y, method="llb", rng_key=KEY,
                             progress=False), "error")
    add("Loss.log_prob, loss NaN", "loss nan", "loss",
        lambda: gb.Loss(_nan_at_2, np.zeros(4)).log_prob(Y), "error")
    # more parameters than observations (sandwich / LLB rate)
    def wide(y):
        b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        with numpyro.plate("n", y.shape[0]):
            numpyro.sample("y", gb.Loss(gb.losses.squared, b.sum()), obs=y)
    add("fisher.sandwich, 3 parameters > 2 observations", "p > n", "-",
        lambda: gb.fisher.sandwich(wide, {"b": np.zeros(3)}, Y[:2]), "either")
    add("calibrate llb, 3 parameters > 2 observations", "p > n", "parameters",
        lambda: gb.calibrate(wide, Y[:2], method="llb", rng_key=KEY, progress=False), "either")
    # evidence results
    e1 = gb.evidence.Evidence(-3.0, 0.1, "smc")
    for bad, e in {"nan log_z": gb.evidence.Evidence(NAN, 0.1, "smc"),
                   "complex log_z": gb.evidence.Evidence(-3.0 + 1j, 0.1, "smc"),
                   "not an Evidence": -3.0}.items():
        add("bayes_factor", bad, "evidence_2", lambda e=e: gb.evidence.bayes_factor(e1, e), "error")
    for bad, (ev, pr) in {"nan log_z": ({"a": e1, "b": gb.evidence.Evidence(NAN, 0.1, "smc")}, None),
                          "empty": ({}, None), "prior negative": ({"a": e1, "b": e1}, {"a": -1.0, "b": 2.0}),
                          "prior nan": ({"a": e1, "b": e1}, {"a": NAN, "b": 1.0}),
                          "prior keys differ": ({"a": e1, "b": e1}, {"a": 1.0, "c": 1.0})}.items():
        arg = "prior" if bad.startswith("prior") else "evidences"
        add("posterior_probabilities", bad, arg,
            lambda ev=ev, pr=pr: gb.evidence.posterior_probabilities(ev, pr), "error")
    # interop on arrays
    for bad, a in {"nan": np.array([[0.1, NAN, 0.3] * 10]), "inf": np.array([[0.1, INF, 0.3] * 10]),
                   "complex": np.ones((1, 30)) + 0j, "empty": np.zeros((1, 0)), "strings": np.array([["a"] * 30])}.items():
        add("interop.psis_log_weights", bad, "log_ratios", lambda a=a: gb.interop.psis_log_weights(a), "error")
        add("interop.effective_sample_size", bad, "draws", lambda a=a: gb.interop.effective_sample_size(a[0]),
            "error")
        add("interop.loo", bad, "log_lik", lambda a=a: gb.interop.loo(a.reshape(1, -1, 3)), "error")
    for bad, n in {"0": 0, "-1": -1, "nan": NAN, "string": "a"}.items():
        add("interop.psis_khat_threshold", bad, "num_draws", lambda n=n: gb.interop.psis_khat_threshold(n), "error")
    # infomax array functions
    loc, scale = jnp.zeros((5, 2)), jnp.ones((5, 2))
    for bad, (l_, s_) in {"loc nan": (loc.at[1, 0].set(NAN), scale), "scale 0": (loc, scale.at[1, 0].set(0.0)),
                          "scale negative": (loc, -scale), "scale nan": (loc, scale.at[0, 0].set(NAN)),
                          "loc complex": (loc + 0j, scale), "shapes differ": (loc, scale[:4]),
                          "empty": (loc[:0], scale[:0]), "loc 1-D": (loc[:, 0], scale[:, 0])}.items():
        arg = bad.split()[0] if bad.split()[0] in ("loc", "scale") else "loc"
        add("infomax.decompose", bad, arg, lambda l_=l_, s_=s_: gb.infomax.decompose(l_, s_, rng_key=KEY), "error")
        add("infomax.aggregate_log_density", bad, arg,
            lambda l_=l_, s_=s_: gb.infomax.aggregate_log_density(np.zeros((1, 2)), l_, s_), "error")
    add("infomax.decompose", "size-1", "-", lambda: gb.infomax.decompose(loc[:1], scale[:1], rng_key=KEY), "either")
    add("infomax.aggregate_log_density", "z nan", "z",
        lambda: gb.infomax.aggregate_log_density(np.full((1, 2), NAN), loc, scale), "error")
    add("infomax.aggregate_log_density", "z wrong dim", "z",
        lambda: gb.infomax.aggregate_log_density(np.zeros((1, 3)), loc, scale), "error")
    lat, fac = np.random.default_rng(0).normal(size=(20, 2)), np.repeat(np.arange(4), 5)[:, None]
    for bad, (lt, fc) in {"latents nan": (np.where(np.eye(20, 2) > 0, NAN, lat), fac),
                          "factors nan": (lat, np.where(np.arange(20)[:, None] == 3, NAN, fac)),
                          "rows differ": (lat, fac[:10]), "latents complex": (lat + 0j, fac),
                          "empty": (lat[:0], fac[:0]), "latents strings": (np.full((20, 2), "a"), fac)}.items():
        arg = "factors" if bad.startswith("factors") else "latents"
        add("infomax.mig", bad, arg, lambda lt=lt, fc=fc: gb.infomax.mig(lt, fc), "error")
    add("infomax.rate_distortion (data nan)", "nan entry", ARG,
        lambda: gb.infomax.rate_distortion(normal_model, guide, {"m": 0.0}, vecs["nan entry"][0], rng_key=KEY),
        "error")
    add("infomax.encode (data nan)", "nan entry", ARG,
        lambda: gb.infomax.encode(guide, {"m": 0.0}, vecs["nan entry"][0], site="mu"), "error")
    add("infomax.train (data nan)", "nan entry", ARG,
        lambda: gb.infomax.train(normal_model, guide, gb.infomax.BetaELBO(1.0), vecs["nan entry"][0],
                                 num_steps=5, rng_key=KEY), "error")
    add("infomax.train (keyword data complex)", "complex", KW,
        lambda: gb.infomax.train(kw_model, lambda y=None: guide(y), gb.infomax.BetaELBO(1.0), y=Y + 1j,
                                 num_steps=5, rng_key=KEY), "error")
    add("infomax.train learning_rate=1e8", "1e8", "learning_rate",
        lambda: gb.infomax.train(normal_model, guide, gb.infomax.BetaELBO(1.0), Y, num_steps=20,
                                 rng_key=KEY, learning_rate=1e8), "either")
    # vcd.fit
    from numpyro.infer import SVI
    from numpyro.infer.autoguide import AutoNormal

    def vcd_svi(lr):
        return SVI(normal_model, AutoNormal(normal_model), numpyro.optim.Adam(lr), loss=gb.vcd.VCD(num_mcmc_steps=1))

    add("vcd.fit Adam(1e8)", "1e8", "step size",
        lambda: gb.vcd.fit(vcd_svi(1e8), KEY, 20, Y), "either")
    for bad, (v, exp) in {k: vecs[k] for k in ("nan entry", "complex", "empty")}.items():
        add("vcd.fit", bad, ARG, lambda v=v: gb.vcd.fit(vcd_svi(0.05), KEY, 10, v), exp)
    return out


# ------------------------------------------------------------------------------- classification
def _leaves(x, depth=0):
    if depth > 4:
        return
    if isinstance(x, (jax.Array, np.ndarray, float, complex, np.number)):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v, depth + 1)
    elif isinstance(x, (tuple, list)):
        for v in x:
            yield from _leaves(v, depth + 1)
    elif hasattr(x, "__dataclass_fields__"):
        for k in x.__dataclass_fields__:
            yield from _leaves(getattr(x, k), depth + 1)


def nonfinite(out) -> str | None:
    """A description of the first complex or non-finite numeric leaf of ``out``, or None."""
    for leaf in _leaves(out):
        a = np.asarray(leaf)
        if np.iscomplexobj(a):
            return f"complex {a.dtype} result"
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            return f"non-finite result {a.ravel()[~np.isfinite(a.ravel())][:3]}"
    return None


def run_case(call, arg, expect):
    """(verdict, detail, compilations): verdict 'clear', 'finite', 'unclear' or 'silent'."""
    import warnings

    from genbayes._programs import count_compilations

    with count_compilations() as c, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        try:
            out = call()
        except Exception as e:  # noqa: BLE001 - the point is to see which
            msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            named = arg == "-" or any(a in str(e) for a in ((arg,) if isinstance(arg, str) else arg))
            # a run-time failure genbayes diagnoses itself (divergence, non-finite loss) is a clear answer
            # to a setting that may or may not work; certainly invalid input must be a ValueError/TypeError
            ok_type = isinstance(e, (ValueError, TypeError)) or (
                expect != "error" and type(e).__module__.startswith("genbayes") or isinstance(e, FloatingPointError))
            internal = any(s in str(e) for s in ("abstract array", "JAX array type", "holomorphic", "plate should be"))
            return ("clear" if named and ok_type and not internal else "unclear"), msg, c.count
    bad = nonfinite(out)
    warn = "; ".join(str(w.message).splitlines()[0][:120] for w in warned)
    if bad:
        return ("silent" if not warned else "warned"), f"{bad} (warnings: {warn or 'none'})", c.count
    if expect == "error":
        return "silent", f"accepted, returned {type(out).__name__}", c.count
    return "finite", f"{type(out).__name__}" + (f" (warnings: {warn})" if warn else ""), c.count


if __name__ == "__main__":
    import sys

    want = sys.argv[1] if len(sys.argv) > 1 else ""
    counts = {}
    for entry, bad, arg, call, expect in cases():
        if expect == "skip" or want not in entry:
            continue
        import time

        t0 = time.perf_counter()
        verdict, detail, ncomp = run_case(call, arg, expect)
        detail = f"{time.perf_counter() - t0:.2f}s {detail}"
        counts[verdict] = counts.get(verdict, 0) + 1
        flag = "" if verdict in ("clear", "finite") else "  <<<"
        print(f"{verdict:8s} {entry:45s} {bad:22s} [{arg}] comp={ncomp} {detail}{flag}", flush=True)
    print(counts)
