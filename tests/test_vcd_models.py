"""VCD with default settings on ordinary NumPyro models, against the ELBO fit of the same guide and NUTS.

The rule (issue 16, item 2): on every model where the ELBO fit (AutoNormal, Adam(0.05)) is within
2 posterior sd of NUTS in every parameter, the VCD fit with default settings must be too, and no
further from NUTS than the ELBO's on average over the model's parameters. The distance of a
parameter is |E_q[θ_i] − E_NUTS[θ_i]| / sd_NUTS(θ_i), in the constrained space, with E_q from 4000
draws of the fitted guide; NUTS runs on a well-behaved parameterisation of the same posterior
(non-centred eight schools for the centred model: centred NUTS diverges and misses the funnel's
neck). Both fits use the plain idiom ``SVI(model, AutoNormal(model), Adam(0.05), loss=...)``:
``svi.run`` for the bare-idiom VCD test, :func:`genbayes.vcd.fit` (ELBO warm-up, divergence check)
for the other.

Measured (seed 1, 3000 steps, defaults t = 3, 8 particles; distance in posterior sd, max / mean over
parameters), ELBO against VCD via ``fit`` (bare ``svi.run``: masked 0.54 / 0.200, two-site
0.42 / 0.184, binomial 0.48 / 0.100): masked 0.42 / 0.209 against 0.35 / 0.147; two-site
regression 0.78 / 0.239 against 0.10 / 0.032; binomial hierarchical 0.52 / 0.211 against 0.73 / 0.166;
centred eight schools 0.62 / 0.153 against 1.59 / 0.384 (re-measured: 0.63 / 0.139 against 1.65 / 0.392).

The last does not hold and is marked xfail. With a mean-field guide the centred model's theta-tau
dependence cannot be represented; VCD's mass-covering widens the theta marginals, and independent
wider thetas ask for a larger tau (fitted log tau ~ N(2.15, 0.36²) against the exact KL(q‖p) optimum N(1.77, 0.24²)).
Measured causes (``benchmarks/bench_vcd_funnel.py``; one
``fit`` per line, seed 1, distances max / mean, fitted E_q[tau] against NUTS 3.7):

- not the HMC kernel's acceptance: 0.96 at the default step size (0.28 in guide-preconditioned
  units, the curvature cap inactive); step_size 1.0 / 1.5 reach acceptance 0.79 / 0.67 (the cap then
  binds, ε 0.48 / 0.56) and give 1.55 / 0.358 and 1.63 / 0.369;
- not the control variate or the clip: advantage_clip=None 1.65 / 0.392, regression=False
  1.62 / 0.382, 32 particles 1.57 / 0.374 (no control variate: 1.48 / 0.538);
- not a blend with the ELBO: 0.5 VCD + 0.5 Trace_ELBO (same particles) 1.37 / 0.328;
- not q^(t) in place of q: the MCMC-improved moments of the default fit are 1.16 / 0.342 (q^(10) of
  the same fit 0.63 / 0.173; on the other three models q^(3) is closer than q: 0.08 / 0.032,
  0.05 / 0.025, 0.30 / 0.107);
- it is the chain length t, i.e. how far VCD's objective is from its t → ∞ limit on a funnel that a
  short HMC chain crosses slowly: t = 5 (step_size 1.0) 1.29 / 0.293, t = 10 1.11 / 0.207 (tau 7.4),
  t = 20 0.87 / 0.145 (tau 6.6), t = 40 0.82 / 0.124 (tau 6.4, passes); L = 10 leapfrog steps at
  t = 3 1.46 / 0.307.

The t → ∞ limit of L_VCD is KL(q‖p) + KL(p‖q); its exact optimum over the mean-field family (brute
force, L-BFGS in (mu, log tau, theta)) has E_q[tau] 7.0 and distance 0.99 / 0.127, the exact
KL(q‖p) optimum 0.71 / 0.152 (the SGD ELBO fit's 0.139 is partly noise). So the rule holds at the
limit only narrowly on the mean, and at finite t it needs t between 20 and 40 (t = 20 misses the mean
by 0.006; t = 40 takes 1 + t·L = 201 gradients per particle against 16: within bench_vcd's budget 1.5 (1 + t·L), but
for every model, a VAE included, to fix one). No default change passes without making every model
many times slower.

Re-examined (``bench_vcd_funnel.py --rules --gradient --models``): no t passes all four models, and VCD
cannot find the t it needs from its own particles.

- t = 40 for every model fails the masked one (5.75 / 1.265; two-site 0.10 / 0.040, binomial
  0.50 / 0.063, the rho = 0.95 Gaussian of test_vcd.py 0.542, 0.547): ``obs_mask`` leaves the 15 observed
  entries of ``y_unobserved`` with a flat density, along which 40 HMC steps diffuse; the guide's scales
  there reach about 60 and the noise reaches a, b, sigma (sigma 5.75 posterior sd off). t = 10 already
  fails it (1.19 / 0.340 against the ELBO's 0.41 / 0.198), and the centred model needs t of about 40.
- An adaptive t (a stopping rule on the step's 8 particles) does not reach 40 here: the chains forget
  their start within about 3 steps (per-coordinate |corr(x0, x_t)| <= 0.06, corr(f(z0), f(z_t)) 0.12 at
  t = 3), while q^(t) is still drifting down the funnel at t = 64 (E f(z_t) -30.4 at t = 3, -25.2 at
  32, -23.9 at 64); forgetting criteria say t = 3, and criteria on the drift of f are ruled by the noise of
  8 particles (realised t from 6 to 48 for the same parameters).
- Not a gradient defect: at the default fit the surrogate gradient in loc(log tau) is +0.110 (se 0.073)
  against the finite difference of the t = 3 objective +0.107 (se 0.062): the fit is that objective's
  stationary point.
"""

import functools

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

from genbayes import vcd as V
from tests.zoo import models as zoo

_rng = np.random.default_rng(2)
X1 = _rng.normal(size=(30, 2))
Y1 = 0.5 + X1 @ np.array([1.0, -0.7]) + 0.3 * _rng.normal(size=30)
X2 = _rng.normal(size=(8, 2))
Y2 = 0.5 + X2 @ np.array([1.0, -0.7]) + 1.0 * _rng.normal(size=8)


def two_site_regression(X1, Y1, X2, Y2):
    """A regression observed by two instruments of different sizes and noise levels (30 and 8 points)."""
    a = numpyro.sample("a", dist.Normal(0.0, 2.0))
    b = numpyro.sample("b", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
    s1 = numpyro.sample("s1", dist.HalfNormal(1.0))
    s2 = numpyro.sample("s2", dist.HalfNormal(1.0))
    with numpyro.plate("n1", X1.shape[0]):
        numpyro.sample("y1", dist.Normal(a + X1 @ b, s1), obs=Y1)
    with numpyro.plate("n2", X2.shape[0]):
        numpyro.sample("y2", dist.Normal(a + X2 @ b, s2), obs=Y2)


_MISSING = ~zoo.MASK_OBS
# name: (model, args, NUTS model, its args, sites compared, selection of entries per site)
MODELS = {
    "masked": (zoo.masked_regression, (zoo.MASK_X, zoo.MASK_Y_FILLED, zoo.MASK_OBS), None, None,
               ("a", "b", "sigma", "y_unobserved"), {"y_unobserved": _MISSING}),
    "two_site_regression": (two_site_regression, (X1, Y1, X2, Y2), None, None, ("a", "b", "s1", "s2"), {}),
    "binomial_hierarchical": (zoo.binomial_hierarchical, (zoo.RATS_N, zoo.RATS_Y), None, None,
                              ("mu", "tau", "eta"), {}),
    "eight_schools_centered": (zoo.eight_schools_centered, (zoo.SCHOOLS_SIGMA, zoo.SCHOOLS_Y),
                               zoo.eight_schools_noncentered, (zoo.SCHOOLS_SIGMA, zoo.SCHOOLS_Y),
                               ("mu", "tau", "theta"), {}),
}
NUM_STEPS = 3000


def _flat(samples, sites, select):
    cols = []
    for k in sites:
        a = np.asarray(samples[k])
        a = a.reshape(a.shape[0], -1)
        if k in select:
            a = a[:, np.asarray(select[k])]
        cols.append(a)
    return np.concatenate(cols, 1)


@functools.lru_cache(maxsize=None)
def _reference_and_elbo(name):
    """NUTS mean and sd, and the ELBO fit's distance to them (computed once per model)."""
    model, args, ref_model, ref_args, sites, select = MODELS[name]
    mc = MCMC(NUTS(ref_model or model, target_accept_prob=0.9), num_warmup=500, num_samples=1000, progress_bar=False)
    mc.run(jax.random.key(0), *(ref_args or args))
    ref = _flat(mc.get_samples(), sites, select)
    m, s = ref.mean(0), ref.std(0)
    g = AutoNormal(model)
    svi = SVI(model, g, numpyro.optim.Adam(0.05), Trace_ELBO())
    params = svi.run(jax.random.key(1), NUM_STEPS, *args, progress_bar=False).params
    q = Predictive(g, params=params, num_samples=4000)(jax.random.key(2), *args)
    return m, s, np.abs(_flat(q, sites, select).mean(0) - m) / s


def _distances(name, vcd_runner):
    model, args, _, _, sites, select = MODELS[name]
    m, s, d_elbo = _reference_and_elbo(name)
    g = AutoNormal(model)
    params = vcd_runner(SVI(model, g, numpyro.optim.Adam(0.05), loss=V.VCD()), args)
    q = Predictive(g, params=params, num_samples=4000)(jax.random.key(2), *args)
    out = {"elbo": d_elbo, "vcd": np.abs(_flat(q, sites, select).mean(0) - m) / s}
    print(f"{name}: distance to NUTS in posterior sd, ELBO max {out['elbo'].max():.2f} mean {out['elbo'].mean():.3f}; "
          f"VCD max {out['vcd'].max():.2f} mean {out['vcd'].mean():.3f}")
    return out


def _assert_rule(d):
    if d["elbo"].max() <= 2.0:
        assert d["vcd"].max() <= 2.0, d
        assert d["vcd"].mean() <= d["elbo"].mean(), d


def _fit(svi, args):
    return V.fit(svi, jax.random.key(1), NUM_STEPS, *args).params


def _bare(svi, args):
    return svi.run(jax.random.key(1), NUM_STEPS, *args, progress_bar=False).params


_FUNNEL = pytest.mark.xfail(strict=True, reason=(
    "centred eight schools, mean-field guide, default t = 3: VCD's fitted tau mean 9.2 against NUTS 3.7 (1.65 posterior "
    "sd; mean distance 0.392 against the ELBO's 0.139). Acceptance 0.96, control variate, clip, particles, step size, "
    "an ELBO blend and q^(t) moments do not fix it; t = 20 gives 0.87 / 0.145, t = 40 0.82 / 0.124, the t -> inf optimum "
    "(KL(q||p) + KL(p||q), brute force) 0.99 / 0.127; t = 40 fails the masked model and a stopping rule on 8 particles "
    "cannot find t; see the module docstring and benchmarks/bench_vcd_funnel.py"))
CASES = [pytest.param(n, marks=_FUNNEL) if n == "eight_schools_centered" else n for n in MODELS]


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_vcd_fit_default_no_further_from_nuts_than_elbo(name):
    _assert_rule(_distances(name, _fit))


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in MODELS if n != "eight_schools_centered"])
def test_vcd_plain_idiom_no_further_from_nuts_than_elbo(name):
    _assert_rule(_distances(name, _bare))
