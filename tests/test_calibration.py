"""Learning-rate calibration: llb recovers known rates, gpc reaches nominal coverage, safebayes, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy.stats import norm

import genbayes as gb
from genbayes.calibration import Calibration, calibrate, loss_minimizer
from genbayes.handlers import gibbs
from genbayes import losses as L
from genbayes.losses import Loss
from genbayes.models import median


def loc_model(x):
    mu = numpyro.sample("mu", dist.Normal(0.0, 100.0))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("x", dist.Normal(mu, 1.0), obs=x)


def test_llb_squared_loss_gives_inverse_variance(x64):
    n, sigma = 4000, 2.0
    x = jnp.asarray(np.random.default_rng(0).normal(1.0, sigma, size=n))
    cal = calibrate(gibbs(loc_model, loss={"x": L.squared}), x, method="llb", rng_key=jax.random.PRNGKey(0))
    assert isinstance(cal, Calibration) and cal.method == "llb"
    # w = 1 / s^2; sd(s^2) = sigma^2 sqrt(2 / n), so sd(w) ~ sqrt(2 / n) / sigma^2
    assert abs(cal.learning_rate - 1 / sigma**2) < 4 * np.sqrt(2 / n) / sigma**2
    np.testing.assert_allclose(float(cal.diagnostics["theta_hat"]["mu"]), float(x.mean()), atol=1e-4)


@pytest.mark.parametrize("n", [2000, 20000])
def test_llb_absolute_loss_gives_twice_the_density_at_the_median(n, x64):
    x = jnp.asarray(np.random.default_rng(n).normal(size=n))
    cal = calibrate(gibbs(loc_model, loss={"x": L.absolute}), x, method="llb", rng_key=jax.random.PRNGKey(1))
    h = cal.diagnostics["bandwidths"]["x"]
    f0 = norm.pdf(0.0)
    # w = 2 f_hat(median), f_hat a uniform-kernel density estimate: sd 2 sqrt(f / (2 n h)), bias 2 f0 h^2 / 6
    tol = 4 * 2 * np.sqrt(f0 / (2 * n * h)) + 2 * f0 * h**2 / 6
    assert abs(cal.learning_rate - 2 * f0) < tol


@pytest.mark.parametrize("tau", [0.5, 0.9])
def test_llb_at_large_n_matches_the_population_rate_of_a_heteroscedastic_quantile_regression(tau, x64):
    """Issue 20's large-n calibration: LLB on all n = 10^5 units (one O(n) sandwich) against quadrature.

    Tolerance: J is a uniform-kernel average over the ~2 n h f residuals within h of zero (f the mean
    error density there), so its relative sd is about 1 / sqrt(2 n h f) (4 of them allowed), plus the
    kernel's bias |f''/f| h^2 / 6 = |z^2 - 1| h^2 / 6 for Normal errors of scale >= 1.
    """
    from genbayes.models import quantile_regression as qr

    n = 100_000
    X, y, _ = qr.simulate(jax.random.PRNGKey(7), n, d=2)
    X = X.at[:, 1].add(-1.0)
    cal = calibrate(qr.single_model, X, y, tau, method="llb", rng_key=jax.random.PRNGKey(0), progress=False)
    exact = qr.population_llb_rate(tau, centre=1.0)  # quadrature over the covariate, no data
    f_mean = norm.pdf(norm.ppf(tau)) * np.log(2.0)  # E[phi(z_tau) / (1 + u / 2)], u ~ U(0, 2)
    h = cal.diagnostics["bandwidths"]["y"]
    rel = 4 / np.sqrt(2 * n * h * f_mean) + abs(norm.ppf(tau) ** 2 - 1) * h**2 / 6
    assert abs(cal.learning_rate - exact) < rel * exact, (cal.learning_rate, exact, rel)


def test_loss_minimizer_finds_the_median(x64):
    x = jnp.asarray(np.random.default_rng(5).standard_exponential(101))
    th = loss_minimizer(median.model, x, rng_key=jax.random.PRNGKey(0))
    # the mean absolute loss is flat to first order within a gap between order statistics
    assert abs(float(th["theta"]) - float(np.median(x))) < 1e-3


def _grid_interval_coverage(ys, w, truth, alpha=0.1, prior_scale=100.0):
    """Exact (grid quadrature) equal-tailed intervals of the median's Gibbs posterior, one per replicate."""
    grid = np.linspace(0, 15, 6001)  # spacing 0.0025, far below the posterior sd (~0.5)
    cover = []
    for y in ys:
        lp = -w * np.abs(y[:, None] - grid[None, :]).sum(0) + norm.logpdf(grid, 0, prior_scale)
        p = np.exp(lp - lp.max())
        c = np.cumsum(p) / p.sum()
        lo, hi = grid[np.searchsorted(c, alpha / 2)], grid[np.searchsorted(c, 1 - alpha / 2)]
        cover.append(lo <= truth <= hi)
    return float(np.mean(cover))


@pytest.mark.slow
@pytest.mark.parametrize("sampler", [
    {"num_warmup": 150},
    # one ChEES warm-up on the mean bootstrap weights, then 25 step-size iterations per replicate
    {"kernel": "chees", "shared_warmup": 150, "num_warmup": 25},
], ids=["nuts", "chees_shared"])
def test_gpc_gives_nominal_coverage_on_fresh_replicates(x64, sampler):
    n, R = 200, 400
    y = median.simulate(jax.random.PRNGKey(0), n)
    cal = calibrate(median.model, y, method="gpc", rng_key=jax.random.PRNGKey(1), B=100, init=1.0,
                    num_samples=200, max_iter=10, progress=False, **sampler)
    path = cal.diagnostics["path"]
    assert path["learning_rate"][0] == 1.0 and len(path["coverage"]) == len(path["source"])
    reps = np.asarray(median.simulate(jax.random.PRNGKey(2), n * R)).reshape(R, n)
    truth = median.true_median()
    cov_cal = _grid_interval_coverage(reps, cal.learning_rate, truth)
    cov_one = _grid_interval_coverage(reps, 1.0, truth)
    tol = 4 * np.sqrt(0.9 * 0.1 / R)  # 4 binomial standard errors over R replicates
    assert abs(cov_cal - 0.9) < tol, (cal, cov_cal)
    assert abs(cov_one - 0.9) > tol  # w = 1 is visibly off for data on this scale


def test_safebayes_expected_losses_match_closed_form(x64):
    # squared loss, N(mu0, tau0^2) prior: the posterior on x_1..t is N(m_t, v_t) in closed form, so
    # E[w l(theta, x_{t+1})] + log Z(w) = w/2 ((x_{t+1} - m_t)^2 + v_t) + 1/2 log(2 pi / w)
    n, start = 16, 8
    x = np.random.default_rng(7).normal(0.5, 2.0, size=n)
    grid = np.array([0.25, 1.0])
    cal = calibrate(gibbs(loc_model, loss={"x": L.squared}), jnp.asarray(x), method="safebayes", grid=grid, start=start,
                    num_warmup=200, num_samples=1000, rng_key=jax.random.PRNGKey(3), progress=False)
    e = cal.diagnostics["expected_loss"]
    assert cal.diagnostics["score"] == "log_loss" and e.shape == (2, n - start)
    for k, w in enumerate(grid):
        for j, t in enumerate(range(start, n)):
            v = 1 / (w * t + 1 / 100.0**2)
            m = v * w * x[:t].sum()
            exact = w / 2 * ((x[t] - m) ** 2 + v) + 0.5 * np.log(2 * np.pi / w)
            # MC error of w/2 (x - theta)^2 over S = 1000 draws (ESS >= S/3 assumed for NUTS on a Gaussian)
            sd = w / 2 * np.sqrt(4 * (x[t] - m) ** 2 * v + 2 * v**2)
            assert abs(e[k, j] - exact) < 4 * sd / np.sqrt(1000 / 3), (w, t)
    assert cal.learning_rate == grid[np.argmin(cal.diagnostics["cumulative_loss"])]


def test_calibration_repr_and_dataframe(x64):
    x = jnp.asarray(np.random.default_rng(0).normal(size=200))
    cal = calibrate(gibbs(loc_model, loss={"x": L.squared}), x, method="llb", rng_key=jax.random.PRNGKey(0))
    assert "llb" in repr(cal) and f"{cal.learning_rate:.4g}" in repr(cal)
    assert float(cal.to_dataframe()["learning_rate"][0]) == cal.learning_rate


def test_bad_input_is_rejected_before_compiling():
    x = jnp.asarray(np.random.default_rng(0).normal(size=30))
    m = gibbs(loc_model, loss={"x": L.absolute})
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="method"):
        calibrate(m, x, method="bayes", rng_key=key)
    with pytest.raises(ValueError, match="rng_key"):
        calibrate(m, x, method="llb", rng_key=None)
    with pytest.raises(ValueError, match="non-finite"):
        calibrate(m, x.at[3].set(jnp.nan), method="llb", rng_key=key)
    with pytest.raises(ValueError, match="learning rate 1"):
        calibrate(gibbs(loc_model, loss={"x": L.absolute}, learning_rate=2.0), x, method="llb", rng_key=key)
    with pytest.raises(ValueError, match="alpha"):
        calibrate(m, x, method="gpc", alpha=1.5, rng_key=key)
    with pytest.raises(ValueError, match="region"):
        calibrate(m, x, method="gpc", region="box", rng_key=key)
    from genbayes._programs import count_compilations

    with count_compilations() as c:  # gpc's sampler settings, checked before the loss minimiser compiles
        for kw, match in [({"kernel": "hmc"}, "`kernel` must be one of"), ({"num_chains": 4}, "applies to kernel='chees'"),
                          ({"kernel": "chees", "num_chains": 1}, "integer >= 2"),
                          ({"kernel": "chees", "num_samples": 302}, "multiple of `num_chains`"),
                          ({"shared_warmup": 100}, "shared_warmup"),
                          ({"kernel": "chees", "nuts_fallback": 1}, "`nuts_fallback` must be True or False")]:
            with pytest.raises(ValueError, match=match):
                calibrate(m, x, method="gpc", rng_key=key, **kw)
    assert c.count == 0
    with pytest.raises(ValueError, match="grid"):
        calibrate(m, x, method="safebayes", grid=[0.5, 2.0], rng_key=key)
    with pytest.raises(ValueError, match="start"):
        calibrate(m, x, method="safebayes", start=30, rng_key=key)

    def scalar_site(x):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("x", Loss(lambda p, y: jnp.sum(jnp.abs(y - p), keepdims=False) * jnp.ones(()), mu), obs=x.mean())

    with pytest.raises(ValueError, match="plate"):
        calibrate(scalar_site, x, method="llb", rng_key=key)


def _sq_model_with(extra):
    import numpyro.distributions as dist

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        pred = mu
        if extra == "ignored":
            numpyro.sample("nuisance", dist.Normal(0.0, 1.0))
        else:  # "sum": only mu + b is identified by the loss
            pred = mu + numpyro.sample("b", dist.Normal(0.0, 10.0))
        with numpyro.plate("n", y.shape[0]):
            numpyro.sample("y", gb.Loss(gb.losses.squared, pred), obs=y)

    return model


def test_llb_names_the_real_cause(x64):
    """A latent the loss ignores, and a loss that identifies only a sum of two latents, are named as such
    (they used to give a non-smooth-loss hint, or a finite but meaningless rate from a singular I)."""
    y = jnp.asarray(np.random.default_rng(0).normal(size=30))
    with pytest.raises(ValueError, match=r"does not depend on latent site\(s\) \['nuisance'\]"):
        gb.calibrate(_sq_model_with("ignored"), y, method="llb", rng_key=jax.random.PRNGKey(0))
    with pytest.raises(FloatingPointError, match=r"score covariance I is singular \(rank 1 of 2\)"):
        gb.calibrate(_sq_model_with("sum"), y, method="llb", rng_key=jax.random.PRNGKey(0))
