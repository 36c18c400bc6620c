"""VCD (Ruiz & Titsias 2019) as a NumPyro SVI objective: limits, guides, state, bad input, acceptance."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.handlers import seed, substitute, trace
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO, init_to_feasible, init_to_median
from numpyro.infer.autoguide import (
    AutoDiagonalNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)

from genbayes import vcd as V
from genbayes.models import toy2d


def _gauss_model():
    numpyro.sample("z", dist.MultivariateNormal(0.0, toy2d.GAUSSIAN_COV))


def _optim(lr, steps):
    # constant, then decaying: the final iterate sits at the optimum rather than in its SGD noise cloud
    return numpyro.optim.optax_to_numpyro(
        optax.adam(optax.exponential_decay(lr, steps // 6, 0.5, transition_begin=steps // 2)))


# ---------------------------------------------------------------------------------------------
# The correlated Gaussian: ELBO under-disperses, VCD reaches the symmetrised-KL optimum
# ---------------------------------------------------------------------------------------------
_LAM = np.linalg.inv(np.asarray(toy2d.GAUSSIAN_COV))
S_ELBO = 1 / np.sqrt(np.diag(_LAM))  # ≈ 0.312
S_SYM = np.sqrt(np.sqrt(1.0 / np.diag(_LAM)))  # sqrt(sqrt(Σ_ii/Λ_ii)) with Σ_ii = 1, ≈ 0.559


def test_plain_idiom_reaches_symmetrised_kl_optimum():
    """The issue's idiom: bare AutoDiagonalNormal (NumPyro's random start), constant Adam, svi.run, defaults."""
    svi = SVI(_gauss_model, AutoDiagonalNormal(_gauss_model), numpyro.optim.Adam(0.01), loss=V.VCD())
    run = svi.run(jax.random.key(0), 3000, progress_bar=False)
    s_v = np.asarray(run.params["auto_scale"])
    print("plain idiom VCD sds", s_v, "theory", S_SYM)
    # measured (defaults: t = 3, 8 particles): 0.545, 0.565 at seed 0 and 0.557, 0.558 at seed 1.
    # Tolerance 0.03 (the issue's): SGD noise of the constant-step final iterate plus the finite-t bias.
    np.testing.assert_allclose(s_v, S_SYM, atol=0.03)
    assert np.all(np.isfinite(np.asarray(run.losses)))


def test_correlated_gaussian_elbo_and_vcd_fit_diagnostics():
    steps = 1500
    elbo = SVI(_gauss_model, AutoDiagonalNormal(_gauss_model, init_loc_fn=init_to_feasible), _optim(0.02, steps),
               Trace_ELBO())
    s_e = np.asarray(elbo.run(jax.random.key(0), steps, progress_bar=False).params["auto_scale"])
    np.testing.assert_allclose(s_e, S_ELBO, atol=0.02)
    svi = SVI(_gauss_model, AutoDiagonalNormal(_gauss_model), _optim(0.02, steps), loss=V.VCD(num_mcmc_steps=5))
    run = V.fit(svi, jax.random.key(0), steps)
    s_v = np.asarray(run.params["auto_scale"])
    np.testing.assert_allclose(s_v, S_SYM, atol=0.03)
    assert run.warmup_losses.shape == (300,) and run.report.accept.shape == (steps,)
    acc = float(np.mean(np.asarray(run.report.accept)[-300:]))
    assert 0.3 < acc < 1.0, acc
    assert float(np.mean(np.asarray(run.report.vcd)[-300:])) > 0  # L_VCD ≥ 0
    mo = run.moments(jax.random.key(5), num_samples=4000)
    # q is too narrow along the ridge and too wide across it; t HMC steps move it toward p (sd 1):
    # the improved marginal sds are larger than the fitted ones, and still below 1
    assert np.all(mo["improved_sd"].to_numpy() > mo["fitted_sd"].to_numpy() + 0.05), mo
    assert np.all(mo["improved_sd"].to_numpy() < 1.05), mo


# ---------------------------------------------------------------------------------------------
# t = 0, the control variate, no state needed
# ---------------------------------------------------------------------------------------------
def _mf_guide():
    loc = numpyro.param("loc", jnp.array([0.3, -0.2]))
    scale = numpyro.param("scale", jnp.array([0.5, 0.7]), constraint=dist.constraints.positive)
    numpyro.sample("z", dist.Normal(loc, scale).to_event(1))


def _values_and_grads(loss, params, guide, n, key):
    """Per-step (loss, gradient) at ``params`` for n keys, in one compiled program."""
    return _vg_program(loss, guide)(params, jax.random.split(key, n))


@functools.lru_cache(maxsize=None)  # keyed by the loss and guide objects: one compilation per pair
def _vg_program(loss, guide):
    def one(p, key):
        return jax.value_and_grad(lambda q: loss.loss(key, q, _gauss_model, guide))(p)

    return jax.jit(jax.vmap(one, in_axes=(None, 0)))


def test_t0_objective_is_exactly_zero_and_gradient_finite():
    loss = V.VCD(num_mcmc_steps=0)
    params = {"loc": jnp.array([0.3, -0.2]), "scale": jnp.array([0.5, 0.7])}
    vals, g = _values_and_grads(loss, params, _mf_guide, 64, jax.random.key(0))
    assert np.all(np.asarray(vals) == 0.0)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in g.values())
    # E[∇L] = 0 at t = 0 (the objective is identically zero): the mean gradient is within 4 SE of 0
    for v in g.values():
        v = np.asarray(v)
        assert np.all(np.abs(v.mean(0)) < 4 * v.std(0) / np.sqrt(v.shape[0]) + 1e-6)


def _shifted_gauss_model():
    # the same posterior with log p(x) = -50, as on a real model: f = log p(x, z) - log q(z) is far from 0
    _gauss_model()
    numpyro.factor("log_evidence", -50.0)


@pytest.mark.parametrize("t", [1, 3])
def test_control_variate_is_shift_invariant_and_reduces_gradient_variance(t):
    """Leave-one-out baselines (and regression on f(z0)) across the step's particles, against b = 0, same keys."""
    params = {"loc": jnp.array([0.3, -0.2]), "scale": jnp.array([0.5, 0.7])}
    keys = jax.random.split(jax.random.key(3), 400)
    grads = {}
    for cv in (True, False):
        loss = V.VCD(num_mcmc_steps=t, num_particles=8, control_variate=cv)
        for name, model in (("shifted", _shifted_gauss_model), ("plain", _gauss_model)):
            fn = jax.jit(jax.vmap(lambda k: jax.grad(lambda q: loss.loss(k, q, model, _mf_guide))(params)))
            grads[cv, name] = fn(keys)
    var = {cv: sum(float(np.var(np.asarray(grads[cv, "shifted"][k]), axis=0).sum()) for k in ("loc", "scale"))
           for cv in (True, False)}
    print(f"t={t}: gradient variance with control variate {var[True]:.4g}, without {var[False]:.4g}")
    # measured: about 1/40 of the variance without the control variate at both t
    assert var[True] < 0.1 * var[False]
    # with the control variate the estimator does not see log p(x) at all: same gradients, draw by draw
    for k in ("loc", "scale"):
        np.testing.assert_allclose(np.asarray(grads[True, "shifted"][k]), np.asarray(grads[True, "plain"][k]),
                                   rtol=1e-3, atol=1e-3)


def test_wrap_guide_only_adds_the_report(x64):
    """The fit does not depend on the wrapper: same keys give the same losses and parameters.

    In float64 (an identity check): the two programs are compiled separately, so they may round
    differently; in float32 that left differences of 2e-7 on losses that are differences of O(1)
    terms (2.5e-6 relative, seen once in the full suite), in float64 they are below 1e-9.
    """
    loss = V.VCD(num_mcmc_steps=2, num_leapfrog=3, num_particles=4)
    bare = SVI(_gauss_model, _mf_guide, numpyro.optim.Adam(0.01), loss=loss)
    wrapped = SVI(_gauss_model, loss.wrap_guide(_mf_guide), numpyro.optim.Adam(0.01), loss=loss)
    out = []
    for svi in (bare, wrapped):
        s = svi.init(jax.random.key(0))
        update = jax.jit(svi.update)
        vals = []
        for _ in range(5):
            s, v = update(s)
            vals.append(float(v))
        out.append((vals, svi.get_params(s), s))
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-9)
    np.testing.assert_allclose(np.asarray(out[0][1]["loc"]), np.asarray(out[1][1]["loc"]), rtol=1e-9)
    assert out[0][2].mutable_state is None
    rep = V.report(out[1][2])
    assert 0.0 <= float(rep.accept) <= 1.0 and float(rep.step_size) > 0
    with pytest.raises(ValueError, match="wrap_guide"):
        V.report(out[0][2])


def test_divergence_check_stops_a_runaway_fit():
    # a huge optimiser step makes the fit run away; fit must stop with a clear message
    svi = SVI(_gauss_model, AutoDiagonalNormal(_gauss_model), numpyro.optim.SGD(50.0), loss=V.VCD(num_mcmc_steps=1))
    with pytest.raises(V.VCDDivergence, match="diverged in steps"):
        V.fit(svi, jax.random.key(0), 200, num_warmup=20)


# ---------------------------------------------------------------------------------------------
# Guides: AutoNormal, AutoDiagonalNormal, AutoMultivariateNormal, AutoLowRank, custom
# ---------------------------------------------------------------------------------------------
_Y = jnp.array([1.2, 0.4, 2.1, 1.7, 0.9, 1.5, 1.1, 2.4, 0.2, 1.3])


def _nn_model(y=_Y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.LogNormal(0.0, 0.5))  # positive: exercises the transforms
    with numpyro.plate("obs", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def _nn_custom_guide(y=_Y):
    m = numpyro.param("m", jnp.zeros(2))
    s = numpyro.param("s", 0.3 * jnp.ones(2), constraint=dist.constraints.positive)
    numpyro.sample("mu", dist.Normal(m[0], s[0]))
    numpyro.sample("sigma", dist.LogNormal(m[1], s[1]))


# Start at the prior median: from NumPyro's default random start (uniform in (-2, 2) unconstrained, so
# sigma in (0.14, 7.4)) VCD's noisy score-function gradient needs well over 1500 steps to converge.
_INIT = init_to_median(num_samples=15)
GUIDES = {
    "AutoNormal": lambda: AutoNormal(_nn_model, init_loc_fn=_INIT),
    "AutoDiagonalNormal": lambda: AutoDiagonalNormal(_nn_model, init_loc_fn=_INIT),
    "AutoMultivariateNormal": lambda: AutoMultivariateNormal(_nn_model, init_loc_fn=_INIT),
    "AutoLowRankMultivariateNormal": lambda: AutoLowRankMultivariateNormal(_nn_model, rank=1, init_loc_fn=_INIT),
    "custom": lambda: _nn_custom_guide,
}


@pytest.fixture(scope="module")
def nn_reference():
    # 1000 draws: SE of the reference means ≈ 0.24/sqrt(1000) ≈ 0.008, small against the 0.05-0.1 bounds
    mc = MCMC(NUTS(_nn_model), num_warmup=500, num_samples=1000, progress_bar=False)
    mc.run(jax.random.key(0))
    s = mc.get_samples()
    return {k: (float(np.mean(s[k])), float(np.std(s[k]))) for k in ("mu", "sigma")}


@pytest.mark.parametrize("name", list(GUIDES))
def test_guides_log_q_at_z_t_and_fit(name, nn_reference):
    guide = GUIDES[name]()
    loss = V.VCD(num_mcmc_steps=3, num_particles=4)
    wrapped = loss.wrap_guide(guide)
    svi = SVI(_nn_model, wrapped, _optim(0.02, 1000), loss=loss)
    state = svi.init(jax.random.key(1))
    params = svi.get_params(state)
    # log q evaluated at substituted z (how VCD scores z_t) equals log q recorded when the guide drew z
    tr = trace(seed(substitute(guide, data=params), jax.random.key(7))).get_trace()
    lq = sum(jnp.sum(s["fn"].log_prob(s["value"], s["intermediates"]) if s["intermediates"]
                     else s["fn"].log_prob(s["value"])) for s in tr.values() if s["type"] == "sample")
    z = {k: tr[k]["value"] for k in ("mu", "sigma")}
    u = {"mu": z["mu"], "sigma": jnp.log(z["sigma"])}
    tr2 = trace(seed(substitute(guide, data={**params, **V._guide_values(guide, z, u, ["mu", "sigma"])}),
                     jax.random.key(8))).get_trace()
    lq2 = sum(jnp.sum(V._site_log_prob(s)) for s in tr2.values() if s["type"] == "sample")
    np.testing.assert_allclose(float(lq2), float(lq), rtol=1e-5, atol=1e-5)
    run = V.fit(svi, None, 1000, init_state=state, check=False)
    assert np.all(np.isfinite(np.asarray(run.losses)))
    # VCD's optimum is not the posterior: it is mass-covering (between KL(q||p) and KL(p||q)), so on the
    # right-skewed sigma posterior it is wider and shifted right. Measured over seeds 0-2 (4 particles,
    # AutoDiagonalNormal): mu mean 1.22-1.26 (NUTS 1.20), mu sd 0.24-0.30 (NUTS 0.24), sigma mean
    # 0.81-0.92 (NUTS 0.79), sigma sd 0.18-0.22 (NUTS 0.19); across the five guides at seed 1 the sigma sd
    # ranged 0.16-0.22, i.e. the final iterate's SGD spread is about ±0.03 (1500 steps). At 750 steps
    # (seed 1; AutoDiagonalNormal, AutoLowRank) mu mean 1.16-1.17, mu sd 0.25-0.28, sigma mean 0.81-0.87,
    # sigma sd 0.17-0.19: still inside the bounds below, so the test runs 1000 steps. The checks (mean of mu right,
    # both sds within [0.75, 1.5] × NUTS) catch a broken guide adapter or a runaway fit, not small biases.
    pred = numpyro.infer.Predictive(wrapped, params=run.params, num_samples=2000)(jax.random.key(2))
    mu, sigma = np.asarray(pred["mu"]), np.asarray(pred["sigma"])
    ref = nn_reference
    assert abs(mu.mean() - ref["mu"][0]) < 0.1, (mu.mean(), ref)
    assert 0.75 * ref["mu"][1] < mu.std() < 1.5 * ref["mu"][1], (mu.std(), ref)
    assert ref["sigma"][0] - 0.05 < sigma.mean() < ref["sigma"][0] + 0.2, (sigma.mean(), ref)
    assert 0.75 * ref["sigma"][1] < sigma.std() < 1.5 * ref["sigma"][1], (sigma.std(), ref)


# ---------------------------------------------------------------------------------------------
# HMC kernel correctness (per-row accept/reject) and the amortised per-datapoint mode
# ---------------------------------------------------------------------------------------------
def test_hmc_rows_leave_their_targets_invariant(x64):
    """Rows of Z are independent targets N(m_b, s_b² I); start exactly at them, run HMC, compare moments."""
    B, D, S = 3, 2, 4000
    m = jnp.array([[0.0, 1.0], [2.0, -1.0], [-3.0, 0.5]])
    s = jnp.array([1.0, 0.5, 2.0])
    pot = lambda Z: 0.5 * jnp.sum(((Z - m) / s[:, None]) ** 2, axis=1)  # noqa: E731
    Z0 = m + s[:, None] * jax.random.normal(jax.random.key(0), (S, B, D))
    Zt, acc = jax.vmap(lambda k, z: V._hmc(k, z, pot, 0.6, 4, 5))(jax.random.split(jax.random.key(1), S), Z0)
    Zt = np.asarray(Zt)
    assert 0.2 < float(np.mean(acc)) < 1.0
    se_mean = np.asarray(s)[:, None] / np.sqrt(S)
    assert np.all(np.abs(Zt.mean(0) - np.asarray(m)) < 4 * se_mean)
    se_var = np.sqrt(2.0) * np.asarray(s)[:, None] ** 2 / np.sqrt(S)  # sd of a sample variance, Gaussian
    assert np.all(np.abs(Zt.var(0) - np.asarray(s)[:, None] ** 2) < 4 * se_var)


def test_amortised_vae_uses_per_datapoint_mode_and_trains():
    from genbayes.models import vae

    data = vae.load_digits()
    net = vae.VAE(latent_dim=2, hidden=(16,), rng_key=jax.random.key(0))
    x = jnp.asarray(data.x_train[:200])
    loss = V.VCD(num_mcmc_steps=2, num_leapfrog=3, num_particles=4)
    svi = SVI(net.model, net.guide, numpyro.optim.Adam(1e-2), loss=loss)
    state = svi.init(jax.random.key(1), x, subsample_size=50)
    ll0 = net.test_log_likelihood(svi.get_params(state), x[:50], num_samples=100, rng_key=jax.random.key(2))
    run = V.fit(svi, jax.random.key(3), 200, x, subsample_size=50, init_state=state)
    assert loss._last_local  # one HMC chain and one baseline per datapoint
    assert np.all(np.isfinite(np.asarray(run.report.vcd)))
    ll1 = net.test_log_likelihood(run.params, x[:50], num_samples=100, rng_key=jax.random.key(2))
    assert float(ll1.mean()) > float(ll0.mean()) + 5.0


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, match",
    [
        ({"num_mcmc_steps": -1}, "num_mcmc_steps"),
        ({"num_mcmc_steps": 1.5}, "num_mcmc_steps"),
        ({"step_size": 0.0}, "step_size"),
        ({"step_size": -0.1}, "step_size"),
        ({"step_size": float("nan")}, "step_size"),
        ({"num_leapfrog": 0}, "num_leapfrog"),
        ({"kernel": "nuts"}, "kernel"),
        ({"num_particles": 0}, "num_particles"),
        ({"mass": "dense"}, "mass"),
        ({"advantage_clip": 0.5}, "advantage_clip"),
        ({"curvature_limit": 2.5}, "curvature_limit"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        V.VCD(**kw)


def test_non_reparameterisable_guide_is_refused():
    def model():
        numpyro.sample("a", dist.Normal(0.0, 1.0))

    def guide():
        numpyro.sample("a", dist.VonMises(numpyro.param("l", 0.0), 2.0))

    loss = V.VCD(num_mcmc_steps=1)
    with pytest.raises(ValueError, match="not reparameterisable"):
        loss.loss(jax.random.key(0), {"l": jnp.array(0.0)}, model, guide)
    with pytest.raises(TypeError, match="guide"):
        loss.wrap_guide(3)


# ---------------------------------------------------------------------------------------------
# Acceptance: breast-cancer logistic regression against NUTS
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lr_comparison():
    from genbayes.demos.vcd import logistic_regression_comparison

    # full-covariance guide for both ELBO and VCD; see the mean-field note in the function's docstring
    return logistic_regression_comparison(num_steps=2000, vcd_steps=1000, seed=0, guide="multivariate")


@pytest.mark.slow
def test_logistic_regression_vcd_sds_closer_to_nuts(lr_comparison):
    r = lr_comparison
    print(r)
    # measured (AutoMultivariateNormal, VCD defaults but 4 particles): mean |SD - SD_NUTS| 0.018 (VCD) against
    # 0.046 (ELBO) at seed 0; SD ratio 0.985 against 0.937 (before the stateless rewrite: 0.019 / 0.045)
    assert r["sd_err_vcd"] < r["sd_err_elbo"]


@pytest.mark.slow
def test_logistic_regression_vcd_lpd_at_least_elbo(lr_comparison):
    """The issue's direction, with the same (full-covariance) guide for ELBO and VCD.

    Measured at seed 0 with the stateless VCD (nats summed over 114 test points; SE from 20000 q draws,
    8000 dense-mass NUTS draws, self-normalised IS with 20000 draws from the widened VCD q):
    VCD −7.144 ± 0.010, ELBO −7.272 ± 0.010, NUTS −7.182 ± 0.015, IS −7.209 ± 0.023.
    lpd_vcd − lpd_elbo = 0.13 (≈ 9 SE); |V − N| = 0.038 against |E − N| = 0.090.
    Against the IS reference the two are tied (0.065 against 0.064, difference ≪ its SE 0.023): the
    earlier assertion "VCD closer to IS than the ELBO" had no power at this precision (margin ≈ 1.5 SE
    before the rewrite), so what is asserted against IS is consistency: VCD within 4 combined SE.

    With a mean-field guide the direction does not hold, and should not be expected to: see
    ``logistic_regression_comparison``'s docstring (VCD −8.54 against ELBO −7.71 at seed 0, because
    mean-field marginal SDs closer to the posterior's over-disperse the test logits).
    """
    r = lr_comparison
    print(r)
    assert r["lpd_vcd"] >= r["lpd_elbo"]
    assert abs(r["lpd_vcd"] - r["lpd_nuts"]) < abs(r["lpd_elbo"] - r["lpd_nuts"])
    # the importance-sampling reference estimates the same exact-posterior lpd as NUTS (agree within 4 SE) ...
    assert abs(r["lpd_is"] - r["lpd_nuts"]) < 4 * np.hypot(r["lpd_se_is"], r["lpd_se_nuts"])
    # ... and VCD agrees with it within 4 combined SE
    assert abs(r["lpd_vcd"] - r["lpd_is"]) < 4 * np.hypot(r["lpd_se_vcd"], r["lpd_se_is"])


def test_surrogate_gradient_is_the_derivative_of_the_vcd_objective(x64):
    """Unbiasedness of the gradient (Ruiz & Titsias 2019, eq. 12): the mean of the surrogate's gradient
    equals the derivative of the VCD objective, here its central finite difference with common random
    numbers (same keys, so the MCMC accept/reject boundaries move with the parameters). Fixed step size;
    the leave-one-out control variate only changes the variance."""
    # fixed kernel: unit mass and no curvature limit, so the kernel does not move with θ (eq. 12 treats it as fixed)
    loss = V.VCD(num_mcmc_steps=3, num_leapfrog=5, step_size=0.3 * 2 ** 0.25, num_particles=2000, mass="identity",
                 curvature_limit=None)
    g = loss.wrap_guide(_mf_guide)
    state = SVI(_gauss_model, g, numpyro.optim.Adam(0.0), loss=loss).init(jax.random.key(0)).mutable_state[V.STATE_SITE]
    params = {"loc": jnp.array([0.3, -0.2]), "scale": jnp.array([0.5, 0.7])}

    def objective(p, key):
        out = loss.loss_with_mutable_state(key, {**p, V.STATE_SITE: state}, _gauss_model, g)
        return out["mutable_state"][V.STATE_SITE]["vcd"]

    def per_key(key):
        grad = jax.grad(lambda p: loss.loss_with_mutable_state(key, {**p, V.STATE_SITE: state}, _gauss_model, g)["loss"])(params)
        h = 0.02
        fd = {}
        for name, i in (("loc", 0), ("scale", 1)):
            e = jnp.zeros(2).at[i].set(h)
            up, down = {**params, name: params[name] + e}, {**params, name: params[name] - e}
            fd[name] = (objective(up, key) - objective(down, key)) / (2 * h)
        return jnp.stack([grad["loc"][0], grad["scale"][1]]), jnp.stack([fd["loc"], fd["scale"]])

    grads, fds = jax.jit(jax.vmap(per_key))(jax.random.split(jax.random.key(1), 16))
    grads, fds = np.asarray(grads), np.asarray(fds)
    diff = grads - fds
    se = diff.std(0, ddof=1) / np.sqrt(len(diff))
    print("mean surrogate gradient", grads.mean(0), "mean finite difference", fds.mean(0), "SE of the difference", se)
    assert np.all(np.abs(diff.mean(0)) < 4 * se)
    # and the check has power: an error of a quarter of the gradient would be seen
    assert np.all(4 * se < 0.25 * np.abs(grads.mean(0)))


_XLOC = jnp.asarray(np.random.default_rng(4).normal(scale=2.0, size=20))


def _local_model(x=_XLOC):
    with numpyro.plate("data", x.shape[0], subsample_size=5) as idx:
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        numpyro.sample("x", dist.Normal(z, 1.0), obs=x[idx])


def _local_guide(x=_XLOC):
    loc = numpyro.param("loc", jnp.zeros(x.shape[0]))
    scale = numpyro.param("scale", jnp.ones(x.shape[0]), constraint=dist.constraints.positive)
    with numpyro.plate("data", x.shape[0], subsample_size=5) as idx:
        numpyro.sample("z", dist.Normal(loc[idx], scale[idx]))


def test_subsampled_local_latents_reach_the_exact_posterior():
    """z_i | x_i ~ N(x_i / 2, 1/2) exactly, and the guide family holds it, so VCD's optimum is the posterior.

    Minibatches of 5 from 20: every particle must see the same minibatch as the model (a particle that drew
    its own indices would fit loc_i to another point's x)."""
    svi = SVI(_local_model, _local_guide, numpyro.optim.Adam(0.05), loss=V.VCD(num_mcmc_steps=2, num_particles=4))
    run = V.fit(svi, jax.random.key(0), 800, num_warmup=0)
    print("max |loc - x/2|", float(np.max(np.abs(np.asarray(run.params["loc"]) - np.asarray(_XLOC) / 2))),
          "max |scale - sqrt(1/2)|", float(np.max(np.abs(np.asarray(run.params["scale"]) - np.sqrt(0.5)))))
    # measured: max |loc - x/2| 0.088, max |scale - 0.707| 0.117 (SGD noise: each point is in ~200 of the
    # minibatches); with per-particle minibatches (the bug this guards against) 1.86 and 0.41
    np.testing.assert_allclose(np.asarray(run.params["loc"]), np.asarray(_XLOC) / 2, atol=0.2)
    np.testing.assert_allclose(np.asarray(run.params["scale"]), np.sqrt(0.5), atol=0.15)
