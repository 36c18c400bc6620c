"""Observation units on the model zoo: finding them, weighting them, per-unit log-likelihoods.

References are independent of genbayes: densities summed by hand from ``numpyro.distributions``,
NumPyro's own ``log_density`` / ``log_likelihood``, and the ``MixtureSameFamily`` twin of the
enumerated mixture (its discrete assignment summed out by the distribution, not by enumeration).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.util import log_density as np_log_density

import genbayes as gb
from tests.zoo import models as zoo


@pytest.fixture(autouse=True)
def _fresh_jit_cache():
    # JAX 0.10: after a float32 NumPyro MCMC run in the same process (e.g. tests/test_zoo.py first),
    # a cached executable of jnp.where (MaskedDistribution.log_prob) compiled for f32 is reused
    # inside `jax.enable_x64(True)` and fails with RuntimeProgramInputMismatch; clearing the
    # caches before each float64 check avoids the stale entry.
    jax.clear_caches()


# --------------------------------------------------------------------------------------------
# finding units
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n, mk in zoo.ALL.items() if mk().num_units is not None])
def test_find_default_units_on_every_zoo_model(name):
    z = zoo.ALL[name]()
    U = gb.units.find(z.model, *z.args, **z.kwargs)
    assert U.num_units == z.num_units
    assert U.kind == "plate" and U.plate == z.plate
    assert U.sites == z.observed
    assert U.labels.tolist() == list(range(z.num_units)) if name != "masked" else True
    # every unit holds data, and the entries of every site cover each unit
    assert np.all(U.sizes() > 0)


def test_find_enumerated_and_masked_metadata():
    mix = zoo.make_mixture()
    assert gb.units.find(mix.model, *mix.args).enumerated == ("z",)
    assert gb.units.find(mix.twin, *mix.twin_args).enumerated == ()
    m = zoo.make_masked()
    U = gb.units.find(m.model, *m.args)
    missing = m.exact["missing"]
    idx = U.index["y_observed"]
    assert np.all(idx[missing] == -1)
    assert sorted(idx[idx >= 0].tolist()) == list(range(15))
    assert U.labels.tolist() == np.flatnonzero(zoo.MASK_OBS).tolist()   # the plate positions of the units


def test_ambiguous_default_lists_sites_plates_and_shapes():
    z = zoo.make_two_sites()
    with pytest.raises(ValueError) as e:
        gb.units.find(z.model, *z.args)
    msg = str(e.value)
    for piece in ["'z'", "['a']", "(8,)", "'y'", "['b']", "(20,)", "units="]:
        assert piece in msg, (piece, msg)


def test_declared_groups_across_two_sites_of_different_sizes():
    z = zoo.make_two_sites()
    U = gb.units.find(z.model, *z.args, units=z.units)
    assert U.kind == "groups" and U.num_units == 4
    assert U.sizes().tolist() == [2 + 5] * 4
    np.testing.assert_array_equal(U.index["z"], z.units["z"])
    np.testing.assert_array_equal(U.index["y"], z.units["y"])
    # one site fixed: its entries in no unit, the other's groups kept
    U2 = gb.units.find(z.model, *z.args, units={"z": None, "y": z.units["y"]})
    assert U2.fixed == ("z",) and U2.sites == ("y",) and U2.num_units == 4
    # groups with an empty label are relabelled 0..U-1 (units with no data do not exist)
    U3 = gb.units.find(z.model, *z.args, units={"z": 2 * z.units["z"], "y": 2 * z.units["y"]})
    assert U3.num_units == 4 and U3.labels.tolist() == [0, 2, 4, 6]


def test_grouped_units_and_plate_units():
    g = zoo.make_grouped()
    U = gb.units.find(g.model, *g.args, units=g.exact["groups"])
    assert U.kind == "groups" and U.num_units == 4
    assert U.sizes().tolist() == np.bincount(g.exact["groups"]).tolist()
    Up = gb.units.find(g.model, *g.args, units="obs")
    assert Up.kind == "plate" and Up.num_units == 24
    # the latent plate "groups" holds no observed site
    with pytest.raises(ValueError, match="not in plate 'groups'"):
        gb.units.find(g.model, *g.args, units="groups")


def test_mask_argument_and_obs_mask_put_entries_in_no_unit():
    a = zoo.make_ar1()
    keep = np.ones(25, bool)
    keep[[0, 3, 4]] = False
    U = gb.units.find(a.model, *a.args, mask={"y": keep})
    assert U.num_units == 22
    assert np.all(U.index["y"][~keep] == -1)
    assert U.labels.tolist() == np.flatnonzero(keep).tolist()
    # mask= on top of obs_mask: both apply
    m = zoo.make_masked()
    extra = np.ones(20, bool)
    extra[[0, 2]] = False            # 2 is already missing
    U = gb.units.find(m.model, *m.args, mask={"y_observed": extra})
    assert U.num_units == 14
    assert np.all(U.index["y_observed"][[0, 2, 7, 11, 15, 18]] == -1)


def test_bad_units_inputs_give_clear_errors():
    z = zoo.make_two_sites()
    g = zoo.make_grouped()
    with pytest.raises(ValueError, match=r"`units`='nope' is not a plate.*\['a', 'b'\]"):
        gb.units.find(z.model, *z.args, units="nope")
    with pytest.raises(ValueError, match=r"names site\(s\) \['w'\], which the model does not sample"):
        gb.units.find(z.model, *z.args, units={"w": np.zeros(8, int), **z.units})
    with pytest.raises(ValueError, match=r"\['mu'\], which are latent"):
        gb.units.find(z.model, *z.args, units={"mu": np.zeros((), int), **z.units})
    with pytest.raises(TypeError, match=r"`units\['y'\]` must be an integer array"):
        gb.units.find(g.model, *g.args, units=np.linspace(0, 3, 24))
    with pytest.raises(ValueError, match=r"`units\['y'\]` of shape \(23,\) does not broadcast"):
        gb.units.find(g.model, *g.args, units=np.zeros(23, int))
    with pytest.raises(ValueError, match=r"gives no group ids for observed site\(s\) \['z'\]"):
        gb.units.find(z.model, *z.args, units={"y": z.units["y"]})
    with pytest.raises(ValueError, match=r"`mask\['y'\]` of shape \(3,\) does not broadcast"):
        gb.units.find(g.model, *g.args, mask={"y": np.ones(3, bool)})
    with pytest.raises(ValueError, match=r"`mask` names site\(s\) \['q'\]"):
        gb.units.find(g.model, *g.args, mask={"q": np.ones(3, bool)})
    with pytest.raises(ValueError, match="below -1"):
        gb.units.find(g.model, *g.args, units=np.full(24, -2))


def test_group_ids_on_a_subsampled_plate_are_refused_for_the_right_reason():
    s = zoo.make_subsampled()
    with pytest.raises(ValueError, match="subsampled plate"):
        gb.units.find(s.model, *s.args, units=np.arange(30) // 3)


# --------------------------------------------------------------------------------------------
# reweight(units=U): the weighted log density, summed by hand (float64)
# --------------------------------------------------------------------------------------------


def _w(key, n):
    return np.asarray(jax.random.uniform(jax.random.PRNGKey(key), (n,), minval=0.1, maxval=2.0))


def test_reweight_units_two_sites_grouped_by_hand():
    with jax.enable_x64(True):
        z = zoo.make_two_sites()
        U = gb.units.find(z.model, *z.args, units=z.units)
        w = _w(0, 4)
        mu = 0.37
        got = np_log_density(gb.reweight(z.model, weights=w, units=U), z.args, {}, {"mu": mu})[0]
        want = (dist.Normal(0.0, 1.0).log_prob(mu)
                + np.sum(w[z.units["z"]] * dist.Normal(mu, 1.0).log_prob(z.args[0]))
                + np.sum(w[z.units["y"]] * dist.Normal(mu, 2.0).log_prob(z.args[1])))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


def test_reweight_units_grouped_random_effects_by_hand():
    with jax.enable_x64(True):
        g = zoo.make_grouped()
        G = g.exact["groups"]
        U = gb.units.find(g.model, *g.args, units=G)
        w = _w(1, 4)
        p = {"mu": 0.2, "tau": 0.8, "eta": np.array([-1.0, 0.3, 0.1, 1.1])}
        got = np_log_density(gb.reweight(g.model, weights=w, units=U), g.args, {}, p)[0]
        want = (dist.Normal(0.0, 2.0).log_prob(p["mu"]) + dist.HalfNormal(1.0).log_prob(p["tau"])
                + dist.Normal(0.0, 1.0).log_prob(p["eta"]).sum()   # random effects keep their prior
                + np.sum(w[G] * dist.Normal(p["mu"] + p["tau"] * p["eta"][G], 0.6).log_prob(g.args[1])))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


def test_reweight_units_masked_by_hand():
    with jax.enable_x64(True):
        m = zoo.make_masked()
        U = gb.units.find(m.model, *m.args)
        w = _w(2, 15)
        x, obs = zoo.MASK_X, zoo.MASK_OBS
        imputed = np.linspace(-1.0, 1.0, 20)  # the latent y_unobserved (only its missing entries count)
        p = {"a": 0.9, "b": 0.7, "sigma": 0.6, "y_unobserved": imputed}
        got = np_log_density(gb.reweight(m.model, weights=w, units=U), m.args, {}, p)[0]
        lik = dist.Normal(p["a"] + p["b"] * x, p["sigma"])
        want = (dist.Normal(0.0, 2.0).log_prob(0.9) + dist.Normal(0.0, 2.0).log_prob(0.7)
                + dist.HalfNormal(1.0).log_prob(0.6)
                + np.sum(w * lik.log_prob(zoo.MASK_Y)[obs])           # observed responses, weighted
                + np.sum(lik.log_prob(imputed)[~obs]))                # imputed ones: latent, unweighted
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


def test_reweight_units_multivariate_and_inner_plate_twin_by_hand():
    with jax.enable_x64(True):
        z = zoo.make_multivariate()
        w = _w(3, 15)
        mu = np.array([0.4, -0.8])
        prior = dist.Normal(0.0, 2.0).log_prob(mu).sum()
        want = prior + np.sum(w[:, None] * dist.Normal(mu, zoo.MVN_SCALE).log_prob(zoo.MVN_X))
        for model, args in [(z.model, z.args), (z.twin, z.twin_args)]:
            U = gb.units.find(model, *args)
            assert U.num_units == 15
            got = np_log_density(gb.reweight(model, weights=w, units=U), args, {}, {"mu": mu})[0]
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


def test_reweight_units_subsampled_by_hand():
    with jax.enable_x64(True):
        s = zoo.make_subsampled()
        U = gb.units.find(s.model, *s.args)
        w = _w(4, 30)
        model = seed(gb.reweight(s.model, weights=w, units=U), 3)
        got = np_log_density(model, s.args, {}, {"mu": -0.1})[0]
        idx = np.asarray(trace(substitute(model, {"mu": -0.1})).get_trace(*s.args)["n"]["value"])
        assert idx.shape == (10,) and len(set(idx.tolist())) == 10
        want = (dist.Normal(0.0, 1.0).log_prob(-0.1)
                + 30 / 10 * np.sum(w[idx] * dist.Normal(-0.1, 1.0).log_prob(zoo.SUB_X[idx])))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------------
# the enumerated mixture: weights act on each unit's marginal likelihood (issue item (d))
# --------------------------------------------------------------------------------------------

MIX_PARAMS = {"w": np.array([0.35, 0.65]), "loc": np.array([-1.8, 2.2]), "scale": 0.9}


def _mixture_by_hand(weights):
    p = MIX_PARAMS
    prior = (dist.Dirichlet(np.ones(2)).log_prob(p["w"]) + dist.Normal(zoo.MIX_LOC_PRIOR[0], 0.7).log_prob(p["loc"]).sum()
             + dist.HalfNormal(1.5).log_prob(p["scale"]))
    marg = dist.MixtureSameFamily(dist.Categorical(p["w"]), dist.Normal(p["loc"], p["scale"])).log_prob(zoo.MIX_X)
    return prior + np.sum(weights * marg)


def test_enumerated_mixture_weights_act_on_marginal_likelihood():
    from numpyro.contrib.funsor import log_density as funsor_log_density

    with jax.enable_x64(True):
        mix = zoo.make_mixture()
        U = gb.units.find(mix.model, *mix.args)
        Ut = gb.units.find(mix.twin, *mix.twin_args)
        w = _w(5, 24)
        rw = gb.reweight(mix.model, weights=w, units=U)
        got = gb.units.log_density(rw, mix.args, {}, MIX_PARAMS)
        twin = np_log_density(gb.reweight(mix.twin, weights=w, units=Ut), mix.twin_args, {}, MIX_PARAMS)[0]
        np.testing.assert_allclose(got, _mixture_by_hand(w), rtol=0, atol=1e-10)
        np.testing.assert_allclose(twin, _mixture_by_hand(w), rtol=0, atol=1e-10)
        # tempered at 0.3
        got_t = gb.units.log_density(gb.tempered(mix.model, temperature=0.3), mix.args, {}, MIX_PARAMS)
        np.testing.assert_allclose(got_t, _mixture_by_hand(0.3 * np.ones(24)), rtol=0, atol=1e-10)
        # weights of 1: the ordinary enumerated density, equal to NumPyro's own
        got_1 = gb.units.log_density(gb.reweight(mix.model, weights=np.ones(24), units=U), mix.args, {}, MIX_PARAMS)
        np.testing.assert_allclose(got_1, _mixture_by_hand(np.ones(24)), rtol=0, atol=1e-10)
        # why genbayes.units.log_density exists: NumPyro's enumerated density of the reweighted model
        # weights each joint term p(z) p(x | z) before summing z out, which is not the weighted marginal
        from genbayes.units import _enum_model

        numpyro_rw = funsor_log_density(_enum_model(rw, mix.args, {}), mix.args, {}, MIX_PARAMS)[0]
        assert abs(float(numpyro_rw) - float(_mixture_by_hand(w))) > 1.0
        numpyro_t = funsor_log_density(_enum_model(gb.tempered(mix.model, temperature=0.3), mix.args, {}),
                                       mix.args, {}, MIX_PARAMS)[0]
        assert abs(float(numpyro_t) - float(_mixture_by_hand(0.3 * np.ones(24)))) > 1.0


# --------------------------------------------------------------------------------------------
# per-unit log-likelihood
# --------------------------------------------------------------------------------------------


def _per_unit(ll_by_site, U, S):
    """NumPyro's per-entry log-likelihoods summed into units (the independent reference)."""
    out = np.zeros((S, U.num_units))
    for site, idx in U.index.items():
        ll = np.asarray(ll_by_site[site]).reshape(S, -1)
        full = np.broadcast_to(idx, U.shapes[site]).ravel()
        for u in range(U.num_units):
            out[:, u] += ll[:, full == u].sum(axis=1)
    return out


def test_log_likelihood_per_unit_equals_numpyro_summed():
    from numpyro.infer import log_likelihood as np_log_likelihood

    with jax.enable_x64(True):
        key = jax.random.PRNGKey(0)
        S = 4
        cases = []
        z = zoo.make_two_sites()
        cases.append((z, z.units, {"mu": jax.random.normal(key, (S,))}))
        g = zoo.make_grouped()
        cases.append((g, g.exact["groups"], {"mu": jnp.linspace(-1, 1, S), "tau": jnp.linspace(0.2, 1.0, S),
                                             "eta": jax.random.normal(key, (S, 4))}))
        m = zoo.make_masked()
        cases.append((m, None, {"a": jnp.linspace(0, 1, S), "b": jnp.ones(S), "sigma": jnp.linspace(0.3, 1, S),
                                "y_unobserved": jax.random.normal(key, (S, 20))}))
        mv = zoo.make_multivariate()
        cases.append((mv, None, {"mu": jax.random.normal(key, (S, 2))}))
        for z, spec, samples in cases:
            U = gb.units.find(z.model, *z.args, units=spec)
            got = gb.units.log_likelihood(z.model, samples, *z.args, units=U)
            ref = np_log_likelihood(z.model, samples, *z.args)
            np.testing.assert_allclose(got, _per_unit(ref, U, S), rtol=0, atol=1e-10, err_msg=z.name)


def test_log_likelihood_enumerated_mixture_equals_twin():
    from numpyro.infer import log_likelihood as np_log_likelihood

    with jax.enable_x64(True):
        mix = zoo.make_mixture()
        S = 3
        samples = {"w": jnp.array([[0.3, 0.7], [0.5, 0.5], [0.6, 0.4]]),
                   "loc": jnp.array([[-2.0, 2.0], [-1.5, 2.5], [-2.5, 1.5]]), "scale": jnp.array([0.8, 1.0, 1.3])}
        U = gb.units.find(mix.model, *mix.args)
        got = gb.units.log_likelihood(mix.model, samples, *mix.args, units=U)
        ref = np_log_likelihood(mix.twin, samples, *mix.twin_args)["x"]
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)
        # grouped units: sums of the twin's per-observation marginals
        G = np.arange(24) // 6
        Ug = gb.units.find(mix.model, *mix.args, units=G)
        got_g = gb.units.log_likelihood(mix.model, samples, *mix.args, units=Ug)
        np.testing.assert_allclose(got_g, np.asarray(ref).reshape(S, 4, 6).sum(-1), rtol=0, atol=1e-10)
