"""The digits VAE: data loader, model/guide under SVI, and the importance-sampling log-likelihood."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import SVI, Trace_ELBO

from genbayes.models import vae


def test_load_digits_is_binary_deterministic_and_disjoint():
    a = vae.load_digits(test_fraction=0.2, seed=3)
    b = vae.load_digits(test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.x_train.shape == (1797 - 359, 64) and a.x_test.shape == (359, 64)
    assert set(np.unique(a.x_train)) == {0.0, 1.0}
    assert a.y_train.shape[0] + a.y_test.shape[0] == 1797
    assert not np.array_equal(vae.load_digits(seed=4).x_test, a.x_test)
    with pytest.raises(ValueError, match="test_fraction"):
        vae.load_digits(test_fraction=1.0)


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match="latent_dim"):
        vae.VAE(latent_dim=0, rng_key=jax.random.key(0))
    with pytest.raises(ValueError, match="rng_key"):
        vae.VAE(latent_dim=2)


def test_is_loglik_matches_quadrature(x64):
    """One latent dimension: log p(x) = log ∫ p(x|z) N(z; 0, 1) dz by a fine grid is exact to ~1e-8;
    the IS estimate must agree within 4 standard errors (delta method on the mean weight)."""
    net = vae.VAE(latent_dim=1, hidden=(8,), rng_key=jax.random.key(2))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), net.init_params())
    x = jnp.asarray(vae.load_digits().x_test[:4], dtype=jnp.float64)
    grid = jnp.linspace(-10, 10, 8001)
    logits = net.decode_logits(params, grid[:, None])  # (G, 64)
    ll = dist.Bernoulli(logits=logits[:, None, :]).to_event(1).log_prob(x[None]) + dist.Normal().log_prob(grid)[:, None]
    exact = jax.scipy.special.logsumexp(ll, axis=0) + jnp.log(grid[1] - grid[0])
    S = 4000
    est = net.test_log_likelihood(params, x, num_samples=S, rng_key=jax.random.key(5), chunk_size=300)
    # standard error from the weights themselves (same key, so the same draws)
    loc, scale = net.encode(params, x)
    z = dist.Normal(loc, scale).to_event(1).sample(jax.random.key(99), (S,))
    lw = (dist.Bernoulli(logits=jax.vmap(lambda zz: net.decode_logits(params, zz))(z)).to_event(1).log_prob(x)
          + dist.Normal(0, 1).expand([1]).to_event(1).log_prob(z) - dist.Normal(loc, scale).to_event(1).log_prob(z))
    w = jnp.exp(lw - lw.max(0))
    se = w.std(0) / w.mean(0) / np.sqrt(S)
    assert np.all(np.abs(np.asarray(est - exact)) < 4 * np.asarray(se) + 1e-6), (est, exact, se)


def test_svi_trains_with_minibatches_and_improves_is_loglik():
    data = vae.load_digits()
    net = vae.VAE(latent_dim=4, hidden=(32,), rng_key=jax.random.key(0))
    svi = SVI(net.model, net.guide, numpyro.optim.Adam(1e-2), Trace_ELBO())
    x = jnp.asarray(data.x_train)
    state = svi.init(jax.random.key(1), x, subsample_size=64)
    ll0 = net.test_log_likelihood(svi.get_params(state), data.x_test[:100], num_samples=200, rng_key=jax.random.key(3))
    res = svi.run(jax.random.key(1), 300, x, subsample_size=64, progress_bar=False, init_state=state)
    ll1 = net.test_log_likelihood(res.params, data.x_test[:100], num_samples=200, rng_key=jax.random.key(3))
    # 64 Bernoulli pixels: the untrained net is near 64·log 2 ≈ 44 nats; training must gain at least 10 nats
    assert float(ll1.mean()) > float(ll0.mean()) + 10.0, (float(ll0.mean()), float(ll1.mean()))
    assert np.all(np.isfinite(np.asarray(res.losses)))
