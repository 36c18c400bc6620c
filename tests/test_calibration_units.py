"""Learning-rate calibration on observation units: cluster bootstrap, multi-site and multivariate
units (against twin models written differently), hierarchical models (LLB refuses, GPC runs)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import genbayes as gb
from genbayes import fisher
from genbayes.calibration import _bootstrap_counts, calibrate, loss_minimizer
from genbayes.losses import Loss, squared

KEY = jax.random.PRNGKey(0)


# ----------------------------------------------------------------------------- models


def loc_loss(x):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("x", Loss(squared, mu), obs=x)


def two_sites(y, z):
    """y and z of different sizes, z shifted by d; units declared per site by group ids."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    d = numpyro.sample("d", dist.Normal(0.0, 10.0))
    s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
    with numpyro.plate("ny", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, s), obs=y)
    with numpyro.plate("nz", z.shape[0]):
        numpyro.sample("z", dist.Normal(mu + d, s), obs=z)


def stacked(x, is_z):
    """The twin of two_sites: one site holding y and z stacked."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    d = numpyro.sample("d", dist.Normal(0.0, 10.0))
    s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("x", dist.Normal(mu + d * is_z, s), obs=x)


def mvn_event(y):
    """A 3-vector observation per plate element (event_dim 1)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0).expand([3]).to_event(1))
    s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, s).to_event(1), obs=y)


def mvn_plate(y):
    """The twin of mvn_event: the 3 coordinates as an inner plate (mu in that plate too)."""
    with numpyro.plate("d", 3, dim=-1):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
    with numpyro.plate("n", y.shape[0], dim=-2), numpyro.plate("d", 3, dim=-1):
        numpyro.sample("y", dist.Normal(mu, s), obs=y)


def schools(sigma, y):
    """Eight schools, non-centred."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", y.shape[0]):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        numpyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=y)


SCHOOLS = (jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]),
           jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]))


def binomial_hier(trials, k):
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("J", k.shape[0]):
        logit_p = numpyro.sample("logit_p", dist.Normal(mu, sigma))
        numpyro.sample("k", dist.Binomial(trials, logits=logit_p), obs=k)


def masked(x, y, seen):
    b = numpyro.sample("b", dist.Normal(0.0, 5.0))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("y", dist.Normal(b * x, 1.0), obs=y, obs_mask=seen)


def group_effects(g, y, G):
    """Group random effects in their own plate of size G; observations in plate n."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    with numpyro.plate("groups", G):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu + a[g], 1.0), obs=y)


def _groups(n, G, seed):
    return np.random.default_rng(seed).permutation(np.arange(n) % G).astype(np.int32)


# ----------------------------------------------------------------------------- LLB on units


def test_llb_on_groups_is_the_cluster_sandwich(x64):
    # squared loss l = (x - mu)^2 / 2: per-group score g_u = sum_{i in u} (x_i - mu), J = N / G,
    # I = sample variance of g_u (ddof 1), w = J / I (Lyddon, Holmes & Walker 2019 with group units)
    n, G = 30, 6
    x = np.random.default_rng(1).normal(0.3, 1.5, size=n)
    g = _groups(n, G, 2)
    mu = x.mean()
    gu = np.array([np.sum(x[g == u] - mu) for u in range(G)])
    w_exact = (n / G) / np.var(gu, ddof=1)
    cal = calibrate(loc_loss, jnp.asarray(x), method="llb", units=jnp.asarray(g), rng_key=KEY,
                    theta_hat={"mu": jnp.asarray(mu)})
    np.testing.assert_allclose(cal.learning_rate, w_exact, rtol=1e-10)
    assert cal.diagnostics["n"] == G and cal.diagnostics["units"].kind == "groups"
    # the minimiser over units is the overall mean (the per-unit losses add up to the total loss)
    th = loss_minimizer(loc_loss, jnp.asarray(x), units=jnp.asarray(g), rng_key=KEY)
    assert abs(float(th["mu"]) - mu) < 1e-4
    # and the per-unit scores of genbayes.fisher are the per-observation scores summed by group
    per_obs = np.asarray(fisher.scores(loc_loss, {"mu": mu}, jnp.asarray(x)))
    per_unit = np.asarray(fisher.scores(loc_loss, {"mu": mu}, jnp.asarray(x), units=jnp.asarray(g)))
    ref = np.zeros((G, 1))
    np.add.at(ref, g, per_obs)
    np.testing.assert_allclose(per_unit, ref, rtol=1e-12, atol=1e-12)


def test_llb_two_sites_sharing_units_equals_the_stacked_twin(x64):
    rng = np.random.default_rng(3)
    ny, nz, G = 20, 10, 8
    y, z = rng.normal(0.5, 1.0, ny), rng.normal(1.5, 2.0, nz)
    gy, gz = _groups(ny, G, 4), _groups(nz, G, 5)
    a = calibrate(two_sites, jnp.asarray(y), jnp.asarray(z), method="llb", rng_key=KEY,
                  units={"y": jnp.asarray(gy), "z": jnp.asarray(gz)})
    th = a.diagnostics["theta_hat"]
    xs, is_z = jnp.asarray(np.concatenate([y, z])), jnp.asarray(np.r_[np.zeros(ny), np.ones(nz)])
    gs = jnp.asarray(np.concatenate([gy, gz]))
    b = calibrate(stacked, xs, is_z, method="llb", rng_key=KEY, units=gs, theta_hat=th)
    # round-off only: atol for entries that vanish at the minimiser (|J| ~ 1, round-off ~ 1e-16)
    np.testing.assert_allclose(b.diagnostics["I"], a.diagnostics["I"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.diagnostics["J"], a.diagnostics["J"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.learning_rate, a.learning_rate, rtol=1e-10)
    assert a.diagnostics["n"] == b.diagnostics["n"] == G
    # the twin's own minimiser agrees too
    tb = loss_minimizer(stacked, xs, is_z, units=gs, rng_key=KEY)
    for k in th:
        assert abs(float(tb[k]) - float(th[k])) < 1e-4, k


def test_llb_multivariate_observation_equals_the_inner_plate_twin(x64):
    y = jnp.asarray(np.random.default_rng(6).standard_t(5, size=(25, 3)) + np.array([0.0, 1.0, -1.0]))
    a = calibrate(mvn_event, y, method="llb", rng_key=KEY)
    b = calibrate(mvn_plate, y, method="llb", rng_key=KEY, theta_hat=a.diagnostics["theta_hat"])
    assert a.diagnostics["n"] == b.diagnostics["n"] == 25  # the unit is the plate element, not the entry
    # round-off only: atol for entries that vanish at the minimiser (|J| ~ 1, round-off ~ 1e-16)
    np.testing.assert_allclose(b.diagnostics["I"], a.diagnostics["I"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.diagnostics["J"], a.diagnostics["J"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.learning_rate, a.learning_rate, rtol=1e-10)


# ----------------------------------------------------------------------------- hierarchical models


@pytest.mark.parametrize(
    "model, args, kw, local",
    [
        (schools, SCHOOLS, {}, "eta"),
        (binomial_hier, (jnp.full(6, 20), jnp.array([3, 7, 12, 5, 9, 15])), {}, "logit_p"),
        (masked, (jnp.linspace(-1, 1, 12), jnp.linspace(-2, 2, 12), jnp.arange(12) % 4 != 0), {}, "y_unobserved"),
        (group_effects, (jnp.asarray(_groups(20, 5, 0)), jnp.linspace(-1, 1, 20), 5),
         {"units": jnp.asarray(_groups(20, 5, 0))}, "'a'"),
    ],
    ids=["eight-schools", "binomial", "obs_mask", "group-plate"],
)
def test_llb_refuses_local_latents_and_points_to_gpc(model, args, kw, local):
    with pytest.raises(ValueError, match="local to the observation units") as e:
        calibrate(model, *args, method="llb", rng_key=KEY, **kw)
    assert local in str(e.value) and "method='gpc'" in str(e.value)


def test_cluster_bootstrap_counts_are_per_group():
    n, G, B = 24, 6, 50
    g = _groups(n, G, 7)
    U = gb.units.find(loc_loss, jnp.zeros(n), units=jnp.asarray(g))
    c = np.asarray(_bootstrap_counts(jax.random.PRNGKey(1), B, U.num_units))
    assert c.shape == (B, G) and np.all(c.sum(1) == G) and np.all(c == np.round(c))
    # the weights the model sees under these counts (read off the traced site's scale) are
    # constant within each group and equal to that group's count
    for b in range(3):
        tr = numpyro.handlers.trace(numpyro.handlers.seed(gb.reweight(loc_loss, weights=jnp.asarray(c[b]), units=U), 0)
                                    ).get_trace(jnp.zeros(n))
        scale = np.broadcast_to(np.asarray(tr["x"]["scale"]), (n,))
        for u in range(G):
            assert np.all(scale[g == U.labels[u]] == c[b, u])
    # bootstrap draws are not per-observation: some group is dropped or repeated as a whole
    assert np.any(c != 1)


def test_gpc_runs_on_eight_schools_from_the_fallback_rate():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # non-convergence in 2 iterations, divergences
        cal = calibrate(schools, *SCHOOLS, method="gpc", rng_key=KEY, B=8, num_warmup=100, num_samples=100,
                        max_iter=2, progress=False)
    d = cal.diagnostics
    assert np.isfinite(cal.learning_rate) and cal.learning_rate > 0
    assert d["init"] == 1.0 and d["init_source"].startswith("fallback") and d["path"]["learning_rate"][0] == 1.0
    assert d["params"] == ["mu", "tau"] and d["local"] == ["eta"]
    assert d["counts"].shape == (8, 8) and np.all(d["counts"].sum(1) == 8)
    assert all(np.all(np.isfinite(np.asarray(d["theta_hat"][k]))) for k in ("mu", "tau"))
    assert all(0 <= c <= 1 for c in d["path"]["coverage"])


def group_effects_no_plate(g, y, G):
    """The same random effects written as one vector site, without a plate."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    a = numpyro.sample("a", dist.Normal(0.0, 1.0).expand([G]).to_event(1))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu + a[g], 1.0), obs=y)


def hinge_regression(X, y):
    """Global coefficients in a plate of the same size as the number of groups (not local)."""
    with numpyro.plate("features", X.shape[1]):
        beta = numpyro.sample("beta", dist.Normal(0.0, 10.0))
    with numpyro.plate("n", X.shape[0]):
        numpyro.sample("y", Loss(gb.losses.hinge, X @ beta), obs=y)


def test_local_latents_are_found_by_dependence_not_by_name():
    g = jnp.asarray(_groups(20, 5, 0))
    with pytest.raises(ValueError, match="'a'"):
        calibrate(group_effects_no_plate, g, jnp.linspace(-1, 1, 20), 5, units=g, method="llb", rng_key=KEY)
    # a global coefficient vector whose plate has the size of the number of groups, under a
    # hinge loss that is flat for most observations at the traced point, is not local
    from genbayes.calibration import _model_info

    from genbayes.fisher import _trace

    X = jnp.asarray(np.random.default_rng(0).normal(size=(20, 5)) * 5.0)
    beta = _trace(hinge_regression, (X, jnp.ones(20)), {}, {}, rng_key=KEY)["beta"]["value"]  # the traced point
    y = jnp.sign(X @ beta)  # every margin y f = |f| > 1 there: the hinge loss is flat for every unit
    assert float(jnp.min(jnp.abs(X @ beta))) > 1
    _, U, latent, local, _ = _model_info(hinge_regression, (X, y), {}, KEY, g)
    assert U.num_units == 5 and latent == ["beta"] and local == []


def test_safebayes_on_groups_matches_the_closed_form(x64):
    # squared loss, N(0, 10^2) prior: the posterior on the groups before unit t at rate w is N(m, v) in
    # closed form; unit t's R-log-loss is sum_{i in t} [w/2 ((x_i - m)^2 + v) + 1/2 log(2 pi / w)]
    n, G, start = 24, 8, 4
    x = np.random.default_rng(8).normal(0.5, 2.0, size=n)
    g = _groups(n, G, 9)
    grid = np.array([0.25, 1.0])
    cal = calibrate(loc_loss, jnp.asarray(x), method="safebayes", units=jnp.asarray(g), grid=grid, start=start,
                    num_warmup=200, num_samples=1000, rng_key=jax.random.PRNGKey(3), progress=False)
    e = cal.diagnostics["expected_loss"]
    assert e.shape == (2, G - start) and cal.diagnostics["score"] == "log_loss"
    for k, w in enumerate(grid):
        for j, t in enumerate(range(start, G)):
            before, unit = x[g < t], x[g == t]
            v = 1 / (w * before.size + 1 / 10.0**2)
            m = v * w * before.sum()
            exact = np.sum(w / 2 * ((unit - m) ** 2 + v) + 0.5 * np.log(2 * np.pi / w))
            # MC sd of w/2 sum_i (x_i - theta)^2 over S = 1000 draws (ESS >= S/3 for NUTS on a Gaussian)
            sd = w / 2 * np.sqrt(4 * v * np.sum(unit - m) ** 2 + 2 * unit.size**2 * v**2)
            assert abs(e[k, j] - exact) < 4 * sd / np.sqrt(1000 / 3), (w, t)


def test_discrete_latents_are_refused_by_name():
    from numpyro.contrib.funsor import config_enumerate

    @config_enumerate
    def mixture(x):
        p = numpyro.sample("p", dist.Beta(1.0, 1.0))
        loc = numpyro.sample("loc", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
        with numpyro.plate("n", x.shape[0]):
            z = numpyro.sample("z", dist.Bernoulli(p))
            numpyro.sample("x", dist.Normal(loc[z], 1.0), obs=x)

    for method in ("llb", "gpc"):
        with pytest.raises(ValueError, match=r"discrete latent site\(s\) \['z'\]"):
            calibrate(mixture, jnp.linspace(-2, 2, 10), method=method, rng_key=KEY)
