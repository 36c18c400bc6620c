"""``gb.batched.run`` on the model zoo against independent samplers and exact posteriors.

A row of ones is the ordinary posterior, so its draws must agree with NumPyro's own
``MCMC(NUTS)`` on the same model (posterior means within 4 Monte Carlo standard errors, the MCSE
of each side from ArviZ), or with the exact posterior where the zoo has one. The enumerated
mixture is compared with its ``MixtureSameFamily`` twin, also at a fractional weight 0.5.
"""

import jax
import numpy as np
import pytest
from numpyro.infer import MCMC, NUTS

import genbayes as gb
from genbayes.interop import _arviz
from tests.zoo import models as zoo

NW, NS = 300, 400


def _mcse_mean(draws):
    """ArviZ's MCSE of the mean of each component of ``draws`` (chains, draws, ...)."""
    az = _arviz()
    d = np.asarray(draws, dtype=float)
    flat = d.reshape(d.shape[0], d.shape[1], -1)
    return np.array([float(az.mcse(flat[:, :, j])) for j in range(flat.shape[2])])


def _agree(a, b, sites, label, tol=4.0):
    """Posterior means of a and b (dicts site -> (chains, draws, ...)) within ``tol`` combined MCSEs."""
    for k in sites:
        x, y = np.asarray(a[k], float), np.asarray(b[k], float)
        diff = x.mean((0, 1)).ravel() - y.mean((0, 1)).ravel()
        se = np.sqrt(_mcse_mean(x) ** 2 + _mcse_mean(y) ** 2)
        assert np.all(np.abs(diff) < tol * se), (label, k, diff, se, diff / se)


def _nuts(model, args, key, **nuts_kwargs):
    mc = MCMC(NUTS(model, **nuts_kwargs), num_warmup=NW, num_samples=NS, progress_bar=False)
    mc.run(jax.random.PRNGKey(key), *args)
    return {k: np.asarray(v)[None] for k, v in mc.get_samples().items()}


def _batched(model, args, W, key, **kw):
    res = gb.batched.run(model, W, *args, num_warmup=NW, num_samples=NS, rng_key=jax.random.PRNGKey(key),
                         progress=False, **kw)
    assert np.all(np.asarray(res.diagnostics["num_divergent"]) <= 0.01 * NS), res.diagnostics
    return res


def _row(res, b):
    return {k: np.asarray(v)[b][None] for k, v in res.samples.items()}


# models whose posterior NumPyro's NUTS is the reference for (no closed form)
NUTS_CASES = {
    "eight_schools_noncentered": ("mu", "tau", "theta"),
    "binomial_hierarchical": ("mu", "tau", "logit_p"),
    "ar1": ("alpha", "phi", "sigma"),
    "grouped": ("mu", "tau", "eta"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NUTS_CASES))
def test_batched_row_of_ones_agrees_with_numpyro_nuts(name):
    z = zoo.ALL[name]()
    U = gb.units.find(z.model, *z.args)
    res = _batched(z.model, z.args, np.ones((1, U.num_units)), 1, target_accept_prob=0.9)
    ref = _nuts(z.model, z.args, 2, target_accept_prob=0.9)
    _agree(_row(res, 0), ref, NUTS_CASES[name], name)


def test_batched_exact_posteriors_separate_binomial_two_sites_multivariate():
    """Conjugate zoo models: batched.run (unit weights 1) against the exact posterior mean."""
    cases = [(zoo.make_separate_binomial(), None), (zoo.make_two_sites(), zoo.make_two_sites().units),
             (zoo.make_multivariate(), None)]
    for z, spec in cases:
        U = gb.units.find(z.model, *z.args, units=spec)
        res = _batched(z.model, z.args, np.ones((1, U.num_units)), 3, units=U)
        for k, mean in z.exact["posterior_mean"].items():
            d = np.asarray(res.samples[k], float)
            se = _mcse_mean(d)
            assert np.all(np.abs(d[0].mean(0).ravel() - np.ravel(mean)) < 4 * se), (z.name, k)
            # the posterior sd too, to 15% (few hundred draws)
            np.testing.assert_allclose(d[0].std(0), z.exact["posterior_sd"][k], rtol=0.15, err_msg=z.name)


def test_masked_imputed_values_agree_with_numpyro_nuts():
    """Issue item (c): obs_mask. The missing responses (y_unobserved at the masked positions) agree.

    NumPyro's ``obs_mask`` makes ``y_unobserved`` a latent of the *full* shape (20,) whose entries
    at the observed positions are masked: they have no density at all (an improper flat
    direction), drift without bound under any sampler and make NUTS run to its maximum tree depth.
    Only the 5 missing entries have a posterior; those are compared here. ``max_tree_depth=6`` on
    both sides keeps the flat directions from costing 1023 leapfrog steps a draw.
    """
    m = zoo.make_masked()
    U = gb.units.find(m.model, *m.args)
    res = _batched(m.model, m.args, np.ones((1, U.num_units)), 4, max_tree_depth=6)
    ref = _nuts(m.model, m.args, 5, max_tree_depth=6)
    gbd, nd = _row(res, 0), ref
    miss = m.exact["missing"]
    gbd["y_missing"], nd["y_missing"] = gbd["y_unobserved"][..., miss], nd["y_unobserved"][..., miss]
    _agree(gbd, nd, ("a", "b", "sigma", "y_missing"), "masked")
    # and the parameters agree with the complete-case twin (same posterior of a, b, sigma)
    twin = _nuts(m.twin, m.twin_args, 6)
    _agree(gbd, twin, ("a", "b", "sigma"), "masked vs complete case")


def test_enumerated_mixture_agrees_with_mixture_same_family_twin():
    """batched.run on the enumerated mixture and on its MixtureSameFamily twin, rows of 1 and of 0.5."""
    mix = zoo.make_mixture()
    W = np.stack([np.ones(24), np.full(24, 0.5)])
    a = _batched(mix.model, mix.args, W, 7)
    b = _batched(mix.twin, mix.twin_args, W, 8)
    for r in range(2):
        _agree(_row(a, r), _row(b, r), ("w", "loc", "scale"), f"mixture row {r}")
    # the half-weight row is wider (about sqrt(2) for the locations): the rows are different posteriors
    sd = np.asarray(a.samples["loc"]).std(1)
    assert np.all(sd[1] > 1.2 * sd[0]), sd


# --------------------------------------------------------------------------------------------
# ArviZ: the pointwise log-likelihood is per unit
# --------------------------------------------------------------------------------------------


def _by_hand_idata(mcmc, U, model, args):
    """InferenceData built by hand: numpyro.infer.log_likelihood per entry, summed into units."""
    from numpyro.infer import log_likelihood as np_log_likelihood

    az = _arviz()
    samples = mcmc.get_samples(group_by_chain=True)
    ll = np_log_likelihood(model, samples, *args, batch_ndims=2)
    C, S = np.shape(next(iter(samples.values())))[:2]
    out = np.zeros((C, S, U.num_units))
    for site, idx in U.index.items():
        full = np.broadcast_to(idx, U.shapes[site]).ravel()
        v = np.asarray(ll[site]).reshape(C, S, -1)
        for u in range(U.num_units):
            out[..., u] += v[..., full == u].sum(-1)
    return az.from_dict(posterior={k: np.asarray(v) for k, v in samples.items()}, log_likelihood={"ll": out})


def test_arviz_loo_per_unit_two_sites_grouped_and_enumerated():
    from genbayes.interop import gibbs_to_inference_data, mcmc_to_inference_data

    az = _arviz()
    z, g, mix = zoo.make_two_sites(), zoo.make_grouped(), zoo.make_mixture()
    cases = [(z.model, z.args, z.units, z.model, z.args),
             (g.model, g.args, g.exact["groups"], g.model, g.args),
             # enumerated: NumPyro's per-entry log-likelihood of the twin at the same draws
             (mix.model, mix.args, None, mix.twin, mix.twin_args)]
    for model, args, spec, ref_model, ref_args in cases:
        mc = MCMC(NUTS(model), num_warmup=100, num_samples=150, num_chains=2, chain_method="sequential",
                  progress_bar=False)
        mc.run(jax.random.PRNGKey(0), *args)
        idata = mcmc_to_inference_data(mc, units=spec)
        U = gb.units.find(model, *args, units=spec)
        assert idata.log_likelihood.sizes["unit"] == U.num_units
        got = az.loo(idata, pointwise=True)
        want = az.loo(_by_hand_idata(mc, U, ref_model, ref_args), pointwise=True)
        assert got.n_data_points == want.n_data_points == U.num_units
        np.testing.assert_allclose(np.asarray(got.loo_i), np.asarray(want.loo_i), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got.elpd_loo, want.elpd_loo, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(got.pareto_k), np.asarray(want.pareto_k), rtol=1e-3, atol=1e-3)
        # the Gibbs form with an ordinary likelihood (learning rate 1) is the same per-unit group
        np.testing.assert_allclose(np.asarray(next(iter(gibbs_to_inference_data(mc, units=spec)
                                                        .log_likelihood.data_vars.values()))),
                                   np.asarray(next(iter(idata.log_likelihood.data_vars.values()))), rtol=1e-6)
    with pytest.raises(ValueError, match="either `sites`"):
        gibbs_to_inference_data(mc, sites="x", units=None, mask={"x": np.ones(24, bool)})
