"""β-VAE / InfoMax / β-TCVAE / capacity objectives, rate-distortion, MIG, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.handlers import scale, seed, substitute, trace
from numpyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from sklearn.metrics import mutual_info_score

from genbayes.infomax import (
    BetaELBO,
    BetaTCELBO,
    CapacityELBO,
    InfoMaxELBO,
    aggregate_log_density,
    capacity_schedule,
    decompose,
    encode,
    mig,
    rate_distortion,
)

D, P = 2, 5


def model(x, N=None):
    """A tiny amortised Bernoulli 'VAE': global latent w, z in a (sub)sampled data plate."""
    B = x.shape[0]
    W = numpyro.param("W", 0.3 * jnp.ones((D, P)))
    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", N or B, subsample_size=B):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        numpyro.sample("x", dist.Bernoulli(logits=z @ W + w).to_event(1), obs=x)


def guide(x, N=None):
    B = x.shape[0]
    A = numpyro.param("A", 0.2 * jnp.ones((P, D)))
    log_s = numpyro.param("log_s", -0.5 * jnp.ones(D))
    m = numpyro.param("m", 0.1)
    numpyro.sample("w", dist.Normal(m, 0.7))
    with numpyro.plate("data", N or B, subsample_size=B):
        numpyro.sample("z", dist.Normal(x @ A - 0.3, jnp.exp(log_s)).to_event(1))


def _data(n=6, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 2, (n, P)).astype(float))


def _params(x):
    tr = trace(seed(guide, 0)).get_trace(x)
    tr_m = trace(seed(substitute(model, {"w": 0.0, "z": jnp.zeros((x.shape[0], D))}), 0)).get_trace(x)
    p = {k: jnp.asarray(v["value"]) for k, v in {**tr, **tr_m}.items() if v["type"] == "param"}
    return {k: v + 0.05 * jnp.arange(v.size).reshape(v.shape) for k, v in p.items()}  # not the init values


def _manual_terms(key, params, x, N=None):
    """log p(x|z), KL_z, KL_w and the MC log q − log p of each site, by hand from the same draws."""
    model_seed, guide_seed = jax.random.split(key)  # the split numpyro's ELBOs use
    gtr = trace(substitute(seed(guide, guide_seed), params)).get_trace(x, N)
    s = (N or x.shape[0]) / x.shape[0]
    z, w = gtr["z"]["value"], gtr["w"]["value"]
    qz, qw = gtr["z"]["fn"], gtr["w"]["fn"]
    logits = z @ params["W"] + w
    log_px = s * jnp.sum(dist.Bernoulli(logits=logits).log_prob(x))
    pz = dist.Normal(0.0, 1.0).expand([D]).to_event(1)
    kl_z = s * jnp.sum(0.5 * (qz.base_dist.scale**2 + qz.base_dist.loc**2 - 1) - jnp.log(qz.base_dist.scale))
    kl_w = 0.5 * (qw.scale**2 + qw.loc**2 - 1) - jnp.log(qw.scale)
    mc_z = s * jnp.sum(qz.log_prob(z) - pz.log_prob(z))
    mc_w = qw.log_prob(w) - dist.Normal(0.0, 1.0).log_prob(w)
    return dict(log_px=log_px, kl_z=kl_z, kl_w=kl_w, mc_z=mc_z, mc_w=mc_w, log_pz=s * jnp.sum(pz.log_prob(z)),
                log_qz=s * jnp.sum(qz.log_prob(z)))


@pytest.mark.parametrize("N", [None, 40])
def test_beta_one_equals_numpyro_elbos_value_and_gradient(x64, N):
    x = _data()
    params = _params(x)
    key = jax.random.PRNGKey(3)
    for ours, ref in ((BetaELBO(1.0), TraceMeanField_ELBO()), (BetaELBO(1.0, analytic_kl=False), Trace_ELBO())):
        # jit: one compilation per objective instead of op-by-op dispatch
        vg = lambda e: jax.jit(jax.value_and_grad(lambda p: e.loss(key, p, model, guide, x, N)))(params)  # noqa: E731
        (l_ours, g_ours), (l_ref, g_ref) = vg(ours), vg(ref)
        assert float(l_ours) == pytest.approx(float(l_ref), rel=1e-12)
        for k in params:
            np.testing.assert_allclose(g_ours[k], g_ref[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("beta", [0.25, 3.0])
def test_beta_elbo_is_beta_times_kl_not_scaled_latent_site(x64, beta):
    x, N = _data(), 30
    params = _params(x)
    key = jax.random.PRNGKey(1)
    t = _manual_terms(key, params, x, N)
    # analytic: −loss = log p(x|z) − β (KL_z + KL_w)
    ours = -BetaELBO(beta).loss(key, params, model, guide, x, N)
    assert float(ours) == pytest.approx(float(t["log_px"] - beta * (t["kl_z"] + t["kl_w"])), rel=1e-12)
    # Monte Carlo: −loss = log p(x|z) − β (log q − log p) on both latent sites
    ours_mc = -BetaELBO(beta, analytic_kl=False).loss(key, params, model, guide, x, N)
    assert float(ours_mc) == pytest.approx(float(t["log_px"] - beta * (t["mc_z"] + t["mc_w"])), rel=1e-12)
    # only z weighted
    ours_z = -BetaELBO(beta, latent_sites=["z"]).loss(key, params, model, guide, x, N)
    assert float(ours_z) == pytest.approx(float(t["log_px"] - beta * t["kl_z"] - t["kl_w"]), rel=1e-12)
    # the common mistake: scaling only the model's latent site gives β log p(z) − log q(z)
    wrong_model = _scaled_latent(beta)
    wrong = -Trace_ELBO().loss(key, params, wrong_model, guide, x, N)
    expect_wrong = t["log_px"] + beta * t["log_pz"] - t["log_qz"] - t["mc_w"]
    assert float(wrong) == pytest.approx(float(expect_wrong), rel=1e-12)
    assert abs(float(wrong) - float(ours_mc)) > 1e-3  # ours is not that


def _scaled_latent(beta):
    """The model with numpyro.handlers.scale on the latent site z only (the mistake)."""

    def m(x, N=None):
        B = x.shape[0]
        W = numpyro.param("W", 0.3 * jnp.ones((D, P)))
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", N or B, subsample_size=B):
            with scale(scale=beta):
                z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
            numpyro.sample("x", dist.Bernoulli(logits=z @ W + w).to_event(1), obs=x)

    return m


@pytest.mark.parametrize("lam", [-0.5, 0.0, 1.0, 7.0])
def test_infomax_equals_beta_elbo(x64, lam):
    x = _data()
    params = _params(x)
    key = jax.random.PRNGKey(0)
    a = InfoMaxELBO(lam).loss(key, params, model, guide, x)
    b = BetaELBO(1.0 / (1.0 + lam)).loss(key, params, model, guide, x)
    assert float(a) == pytest.approx(float(b), rel=1e-12)


@pytest.mark.parametrize("estimator", ["mss", "mws", "exact"])
def test_beta_tc_with_unit_weights_is_the_elbo(x64, estimator):
    x = _data(6)
    N = 6 if estimator == "exact" else 50
    params = _params(x)
    key = jax.random.PRNGKey(2)
    ours = BetaTCELBO(1.0, 1.0, 1.0, dataset_size=N, estimator=estimator).loss(key, params, model, guide, x, N)
    ref = Trace_ELBO().loss(key, params, model, guide, x, N)
    assert float(ours) == pytest.approx(float(ref), rel=1e-12)


def test_beta_tc_weights_multiply_the_right_terms(x64):
    x, N = _data(8), 100
    params = _params(x)
    key = jax.random.PRNGKey(4)
    base = BetaTCELBO(1.0, 1.0, 1.0, dataset_size=N)
    mi, tc, dw = base.terms(key, params, model, guide, x, N)
    # independent check of the MSS log q(z) used inside: the terms telescope to log q(z|x) − log p(z)
    t = _manual_terms(key, params, x, N)
    assert float((N / 8) * jnp.sum(mi + tc + dw)) == pytest.approx(float(t["mc_z"]), rel=1e-10)
    l1 = base.loss(key, params, model, guide, x, N)
    for a, b, g in ((2.0, 1.0, 1.0), (1.0, 6.0, 1.0), (1.0, 1.0, 0.3)):
        lab = BetaTCELBO(a, b, g, dataset_size=N).loss(key, params, model, guide, x, N)
        extra = (N / 8) * jnp.sum((a - 1) * mi + (b - 1) * tc + (g - 1) * dw)
        assert float(lab - l1) == pytest.approx(float(extra), rel=1e-9, abs=1e-9)


def test_capacity_elbo(x64):
    x, N = _data(), 24
    params = _params(x)
    key = jax.random.PRNGKey(5)
    gamma = 2.5
    l_beta = BetaELBO(gamma).loss(key, params, model, guide, x, N)
    assert float(CapacityELBO(gamma, 0.0).loss(key, params, model, guide, x, N)) == pytest.approx(float(l_beta))
    # total KL of the batch (n = N data points) from two BetaELBO losses: L(β2) − L(β1) = (β2 − β1) KL
    kl = float(BetaELBO(2.0).loss(key, params, model, guide, x, N) - BetaELBO(1.0).loss(key, params, model, guide, x, N))
    for c in (0.1, 1.0, 50.0):
        lc = CapacityELBO(gamma, c).loss(key, params, model, guide, x, N)
        expect = float(l_beta) + gamma * (abs(kl - N * c) - kl)
        assert float(lc) == pytest.approx(expect, rel=1e-10)
    sched = capacity_schedule(2.0, 10)
    lsched = CapacityELBO(gamma, sched).loss(key, params, model, guide, x, N, capacity_step=5)
    assert float(lsched) == pytest.approx(float(CapacityELBO(gamma, 1.0).loss(key, params, model, guide, x, N)))
    with pytest.raises(ValueError, match="capacity_step"):
        CapacityELBO(gamma, sched).loss(key, params, model, guide, x, N)


def test_objectives_train_under_svi_jit():
    """The capacity objective with a schedule drives jit-compiled SVI to a lower loss than at the start.

    (BetaELBO and InfoMaxELBO are checked equal, value and gradient, to numpyro's ELBOs above;
    BetaTCELBO training is exercised by the slow factorial-discs acceptance test.)
    """
    x = _data(32, seed=1)
    for loss, kw in ((CapacityELBO(5.0, capacity_schedule(3.0, 100)), {"capacity_step": 100}),):
        svi = SVI(model, guide, numpyro.optim.Adam(0.05), loss=loss)
        state = svi.init(jax.random.PRNGKey(0), x)
        upd = jax.jit(lambda s, kw: svi.update(s, x, **kw))
        keys = jax.random.split(jax.random.PRNGKey(9), 32)
        eval_ = jax.jit(lambda s: jnp.mean(jax.vmap(lambda k: loss.loss(k, svi.get_params(s), model, guide, x, **kw))(keys)))
        before = float(eval_(state))
        for t in range(100):
            state, _ = upd(state, {"capacity_step": t} if kw else {})
        assert float(eval_(state)) < before, loss


def test_rate_distortion_matches_manual(x64):
    def m(x):
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            numpyro.sample("x", dist.Normal(z.sum(-1), 1.0), obs=x)

    def g(x):
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("z", dist.Normal(jnp.stack([x, -x], -1) / 3, 0.5).to_event(1))

    x = jnp.linspace(-2, 2, 9)
    rd = rate_distortion(m, g, {}, x, rng_key=jax.random.PRNGKey(0), num_particles=2000)
    loc = jnp.stack([x, -x], -1) / 3
    rate = jnp.mean(jnp.sum(0.5 * (0.25 + loc**2 - 1) - jnp.log(0.5), -1))
    assert rd.rate == pytest.approx(float(rate), rel=1e-12)
    # z1 + z2 ~ N(0, 0.5) given x: E[-log N(x; s, 1)] = 0.5 log 2π + (x² + 0.5)/2
    dist_exact = float(jnp.mean(0.5 * jnp.log(2 * jnp.pi) + (x**2 + 0.5) / 2))
    # SE of the mean over particles of each datum's −log p: Var = (x² · 0.5 + 0.5²/2)/P per datum
    se = float(jnp.sqrt(jnp.sum(x**2 * 0.5 + 0.125) / 2000) / 9)
    assert abs(rd.distortion - dist_exact) <= 4 * se
    assert rd.num_data == 9


def test_encode_and_decompose_on_a_guide(x64):
    x = _data(10)
    params = _params(x)
    loc, sc = encode(guide, params, x)
    np.testing.assert_allclose(loc, x @ params["A"] - 0.3)
    np.testing.assert_allclose(sc, jnp.broadcast_to(jnp.exp(params["log_s"]), (10, D)))
    d = decompose(loc, sc, rng_key=jax.random.PRNGKey(0))
    rd = rate_distortion(model, guide, params, x, rng_key=jax.random.PRNGKey(1), latent_sites="z")
    assert d.expected_kl.value == pytest.approx(rd.rate, rel=1e-10)  # two routes to the rate
    df = d.to_dataframe()
    assert list(df["term"])[:2] == ["expected_kl", "mutual_info"] and "log N" in repr(d)


# ---------------------------------------------------------------------------------------------
# MIG
# ---------------------------------------------------------------------------------------------


def _grid(*sizes):
    return np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1).reshape(-1, len(sizes))


def test_mig_identity_constant_and_duplicate():
    v = _grid(6, 5, 4)
    assert mig(v.astype(float), v).score >= 0.9
    rng = np.random.default_rng(0)
    v_iid = rng.integers(0, 5, size=(3000, 3))  # independent, not a grid: MI estimates have bias
    assert mig(v_iid + 0.1 * rng.uniform(size=v_iid.shape), v_iid).score >= 0.9
    assert mig(np.ones((v.shape[0], 3)), v).score == 0.0
    dup = np.stack([v_iid[:, 0], v_iid[:, 0]], -1).astype(float)  # one latent duplicated for two factors
    assert abs(mig(dup, v_iid[:, :2]).score) < 0.05


def test_mig_mutual_information_matches_sklearn_and_is_invariant():
    rng = np.random.default_rng(1)
    v = rng.integers(0, 4, size=(500, 2))
    z = np.stack([v[:, 0] + rng.normal(size=500), rng.normal(size=500), v[:, 1] * 2.0 - v[:, 0]], -1)
    res = mig(z, v, num_bins=10)
    from genbayes.infomax import _discretize

    zc = _discretize(z, 10)
    ref = np.array([[mutual_info_score(zc[:, j], v[:, k]) for k in range(2)] for j in range(3)])
    np.testing.assert_allclose(res.mutual_info, ref, rtol=1e-5, atol=1e-6)
    perm = mig(-3.0 * z[:, [2, 0, 1]] + 7.0, v, num_bins=10)  # permuted, affinely rescaled latents
    assert perm.score == pytest.approx(res.score, abs=1e-6)
    assert 0.0 <= res.score <= 1.0


def test_mig_encoder_estimator_identity_constant_duplicate():
    """The encoder (Chen et al. 2018) estimator on the three reference representations."""
    v = _grid(6, 5, 4)
    key = jax.random.key(0)
    sharp = 1e-3 * np.ones((len(v), 3))
    assert mig(v.astype(float), v, scale=sharp, rng_key=key).score >= 0.9
    # identical encodings carry no information: log q(z_j|v) = log q(z_j) up to float32 rounding
    const = mig(np.zeros((len(v), 3)), v, scale=np.ones((len(v), 3)), rng_key=key)
    assert const.score < 1e-6 and np.all(const.mutual_info < 1e-6)
    dup = np.stack([v[:, 0], v[:, 0]], -1).astype(float)
    assert abs(mig(dup, v[:, :2], scale=1e-3 * np.ones_like(dup), rng_key=key).score) < 1e-6


def test_mig_encoder_mutual_information_matches_quadrature():
    """I(z; v) for v ∈ {0, 1} equiprobable and z | v ~ N(±a, 1) (one data point per value, unit
    encoder scale) against numerical integration; tolerance 4 SE over independent replicates."""
    a = 0.8
    loc, fac, scale = np.array([[-a], [a]]), np.array([[0], [1]]), np.ones((2, 1))
    t = np.linspace(-12, 12, 200001)
    phi = lambda m: np.exp(-0.5 * (t - m) ** 2) / np.sqrt(2 * np.pi)  # noqa: E731
    mix = 0.5 * (phi(-a) + phi(a))
    exact = 0.5 * sum(np.trapezoid(phi(m) * np.log(phi(m) / mix), t) for m in (-a, a))
    reps = np.array([mig(loc, fac, scale=scale, rng_key=jax.random.key(r), num_samples=2000).mutual_info[0, 0]
                     for r in range(6)])
    se = reps.std(ddof=1) / np.sqrt(len(reps))
    assert abs(reps.mean() - exact) <= 4 * se, (reps, exact)
    # the histogram estimator on the means sees a deterministic code: I = H(v) = log 2
    assert mig(loc, fac).mutual_info[0, 0] == pytest.approx(np.log(2))


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, -1.0, float("nan")])
def test_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        BetaELBO(beta)
    with pytest.raises(ValueError, match="beta"):
        BetaTCELBO(beta=beta, dataset_size=10)


@pytest.mark.parametrize("lam", [-1.0, -2.0, float("inf")])
def test_bad_lambda(lam):
    with pytest.raises(ValueError, match="lam"):
        InfoMaxELBO(lam)


def test_dataset_smaller_than_batch():
    x = _data(8)
    params = _params(x)
    with pytest.raises(ValueError, match="dataset_size"):
        BetaTCELBO(dataset_size=4).loss(jax.random.PRNGKey(0), params, model, guide, x)
    z = jnp.zeros((8, 2))
    with pytest.raises(ValueError, match="dataset_size"):
        aggregate_log_density(z, z, jnp.ones_like(z), "mss", dataset_size=4)
    with pytest.raises(ValueError, match="dataset_size"):
        aggregate_log_density(z, z, jnp.ones_like(z), "mws")
    with pytest.raises(ValueError, match="whole data set"):
        aggregate_log_density(z, z, jnp.ones_like(z), "exact", dataset_size=100)
    with pytest.raises(ValueError, match="dataset_size"):
        BetaTCELBO(beta=2.0)


def test_unknown_latent_sites():
    x = _data()
    params = _params(x)
    with pytest.raises(ValueError, match=r"not latent sample sites.*\['w', 'z'\]|not latent sample sites"):
        BetaELBO(2.0, latent_sites=["zz"]).loss(jax.random.PRNGKey(0), params, model, guide, x)
    with pytest.raises(ValueError, match="not latent sample sites"):
        BetaELBO(2.0, latent_sites=["x"]).loss(jax.random.PRNGKey(0), params, model, guide, x)  # observed
    with pytest.raises(ValueError, match="latent_site"):
        BetaTCELBO(dataset_size=6, latent_site="q").loss(jax.random.PRNGKey(0), params, model, guide, x)
    with pytest.raises(TypeError, match="latent_sites"):
        BetaELBO(2.0, latent_sites=[1])


def test_bad_density_and_metric_inputs():
    z = jnp.zeros((5, 2))
    with pytest.raises(ValueError, match="method"):
        aggregate_log_density(z, z, jnp.ones_like(z), "iwae")
    with pytest.raises(ValueError, match="scale"):
        aggregate_log_density(z, z, jnp.zeros_like(z))
    with pytest.raises(ValueError, match="`z`"):
        aggregate_log_density(jnp.zeros((5, 3)), z, jnp.ones_like(z))
    with pytest.raises(ValueError, match="M = B"):
        aggregate_log_density(jnp.zeros((4, 2)), z, jnp.ones_like(z), "mss", dataset_size=10)
    with pytest.raises(ValueError, match="scale"):
        decompose(z, -jnp.ones_like(z), rng_key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="rows"):
        mig(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="constant"):
        mig(np.random.default_rng(0).normal(size=(5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="rng_key"):
        mig(np.zeros((4, 2)), np.arange(4)[:, None], scale=np.ones((4, 2)))
    with pytest.raises(ValueError, match="scale"):
        mig(np.zeros((4, 2)), np.arange(4)[:, None], scale=np.zeros((4, 2)), rng_key=jax.random.key(0))
    with pytest.raises(TypeError, match="beta"):
        BetaELBO(np.ones(2))
    with pytest.raises(ValueError, match="gamma"):
        CapacityELBO(gamma=0.0)
    with pytest.raises(ValueError, match="capacity"):
        CapacityELBO(gamma=1.0, capacity=-1.0)
    with pytest.raises(ValueError, match="estimator"):
        BetaTCELBO(dataset_size=10, estimator="iwae")


# ---------------------------------------------------------------------------------------------
# data and acceptance
# ---------------------------------------------------------------------------------------------


def test_factorial_images_encode_their_factors():
    from genbayes.models.factorial import load_factorial

    f = load_factorial()
    n_pos = len(f.factor_values[0])
    assert f.images.shape == (n_pos * n_pos * 3, 144) and set(np.unique(f.images)) == {0.0, 1.0}
    assert len({tuple(r) for r in f.factors}) == len(f.factors)  # a full grid, each combination once
    assert len(np.unique(f.images, axis=0)) == len(f.images)  # every image distinct
    img = f.images.reshape(-1, 12, 12)
    r = np.arange(12.0)
    cy = (img.sum(2) * r).sum(1) / img.sum((1, 2))
    cx = (img.sum(1) * r).sum(1) / img.sum((1, 2))
    # centres of mass recover the position factors (discs are symmetric up to pixelation)
    np.testing.assert_allclose(cx, f.factor_values[0][f.factors[:, 0]], atol=0.5)
    np.testing.assert_allclose(cy, f.factor_values[1][f.factors[:, 1]], atol=0.5)
    area = img.sum((1, 2))
    for k in range(2):  # larger radius, larger disc at every position
        assert np.all(area[f.factors[:, 2] == k + 1].mean() > area[f.factors[:, 2] == k].mean())
    assert load_factorial(radii=(2.0,)).factors.shape[1] == 2
    with pytest.raises(ValueError, match="radii"):
        load_factorial(radii=(0.0,))


@pytest.mark.slow
def test_digits_rate_distortion_sweep_is_monotone_and_mi_bounded():
    """Acceptance (reduced size: 600 steps, hidden 32): over β ∈ {0.25, …, 8} on held-out digits the
    rate falls and the distortion rises, each step within 2 SE of the difference (SE over test
    images); the overall change is far beyond error; the MI estimate never exceeds log N."""
    from genbayes.demos.infomax import BETAS, monotone_within_error, sweep

    rows, n_test, _ = sweep(BETAS, num_steps=600, hidden=32, latent_dim=8)
    b, r, rse, d, dse, mi, mise = map(np.asarray, zip(*rows))
    assert monotone_within_error(r, rse, decreasing=True), rows
    assert monotone_within_error(d, dse, decreasing=False), rows
    assert r[0] - r[-1] > 4 * np.hypot(rse[0], rse[-1]) and d[-1] - d[0] > 4 * np.hypot(dse[0], dse[-1])
    assert np.all(mi <= np.log(n_test) + 1e-9)


@pytest.mark.slow
@pytest.mark.run_bound  # 16 x 1,500 SVI steps: 110 -> 79 s CPU at XLA's default flags (conftest.py)
def test_beta_tcvae_beats_vae_on_mig_and_total_correlation_on_factorial_discs():
    """Acceptance, reduced size (8 paired seeds × 1,500 steps, hidden 64, batch 64, 10 latents, 432 discs).

    Equal budget: same network, Adam step size, steps, batch and, per seed, the same initial weights
    and SVI key; β-TCVAE differs only by β = 6 on the total correlation (MSS). Checked:
    (1) seed by seed, β-TCVAE leaves less total correlation in q(z) (4 SE of the difference);
    (2) its mean MIG (encoder estimator of Chen et al. 2018) over seeds exceeds the VAE's by more
    than 2 SE of the paired difference (SE from the seed-to-seed spread of the differences).
    Full-size numbers (3,000 steps, hidden 128, batch 128, 12 fresh seeds): MIG 0.154 ± 0.024 against
    0.059 ± 0.008, paired difference 0.095 ± 0.019."""
    from genbayes.demos.infomax import mig_comparison

    res = mig_comparison(num_seeds=8, num_steps=1500, hidden=64, batch_size=64, seed=3, histogram=False)
    vae, btc = res.values()
    tc_se = np.hypot(vae["total_correlation_se"], btc["total_correlation_se"])
    assert np.all(vae["total_correlation"] - btc["total_correlation"] > 4 * tc_se), res
    d = btc["mig_encoder"] - vae["mig_encoder"]
    se = d.std(ddof=1) / np.sqrt(len(d))
    assert d.mean() > 2 * se, (d.mean(), se, res)
