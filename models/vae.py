"""A Bernoulli variational autoencoder on scikit-learn's bundled 8×8 digits.

    z_i ~ Normal(0, I_K),  x_i | z_i ~ Bernoulli(logits = decoder_φ(z_i)),  i in plate "data";
    guide: z_i | x_i ~ Normal(μ_ψ(x_i), diag σ_ψ(x_i)²)   (an amortised encoder).

Encoder and decoder are Equinox MLPs with ReLU hidden layers, registered as NumPyro
parameters through :func:`numpyro.contrib.module.eqx_module` (sites ``"encoder$params"`` and
``"decoder$params"``), so any NumPyro SVI objective (``Trace_ELBO``, VCD, β-ELBO, ...) trains
them. The default architecture, 10 latents and 200-200 hidden units, is the one of Ruiz &
Titsias (2019, §5.2); smaller ``hidden`` sizes keep tests fast.

The data are ``sklearn.datasets.load_digits`` (1,797 images of 8×8 pixels with values
0..16, bundled with scikit-learn, no network), scaled to [0, 1] and binarised
deterministically at 0.5.

Example:
    >>> import jax
    >>> from genbayes.models import vae
    >>> data = vae.load_digits(test_fraction=0.2, seed=0)
    >>> data.x_train.shape, data.x_test.shape
    ((1438, 64), (359, 64))
    >>> net = vae.VAE(latent_dim=2, hidden=(16,), rng_key=jax.random.key(0))
    >>> params = net.init_params()
    >>> ll = net.test_log_likelihood(params, data.x_test[:3], num_samples=50, rng_key=jax.random.key(1))
    >>> ll.shape
    (3,)
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.module import eqx_module

__all__ = ["Digits", "VAE", "load_digits"]


class Digits(NamedTuple):
    """Binarised digits, split into training and test images (float32, shape (n, 64)) and labels.

    The UCI optical-recognition digits (Alpaydin & Kaynak 1998) as bundled with scikit-learn.

    Attributes:
        x_train: ``(n_train, 64)`` float32 0/1 images.
        x_test: ``(n_test, 64)`` float32 0/1 images.
        y_train: ``(n_train,)`` int32 digit labels.
        y_test: ``(n_test,)`` int32 digit labels.

    Example:
        >>> import numpy as np
        >>> from genbayes.models.vae import Digits
        >>> Digits(np.zeros((3, 64)), np.zeros((1, 64)), np.zeros(3), np.zeros(1))
        Digits(train=(3, 64), test=(1, 64))
    """

    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray

    def __repr__(self) -> str:
        return f"Digits(train={self.x_train.shape}, test={self.x_test.shape})"


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Digits:
    """scikit-learn's 8×8 digits, pixels/16 binarised at 0.5, split at random (``seed``) into train/test.

    Args:
        test_fraction: fraction of the 1,797 images held out for testing, in [0, 1).
        seed: NumPy seed of the permutation that defines the split (same seed, same split).

    Returns:
        :class:`Digits` with ``x_train``, ``x_test`` (float32 0/1 arrays of shape (n, 64)) and
        the digit labels ``y_train``, ``y_test`` (int32), useful for disentanglement metrics.

    Reference: Alpaydin & Kaynak (1998), the UCI optical recognition of handwritten digits data.

    Example:
        >>> from genbayes.models.vae import load_digits
        >>> d = load_digits(test_fraction=0.5, seed=1)
        >>> d.x_train.shape, sorted(set(d.x_train.ravel().tolist()))
        ((899, 64), [0.0, 1.0])
    """
    if not (0.0 <= float(test_fraction) < 1.0):
        raise ValueError(f"`test_fraction` must lie in [0, 1), got {test_fraction!r}.")
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError("The digits data come from scikit-learn: pip install scikit-learn") from e
    d = _load()
    x = (d.data / 16.0 > 0.5).astype(np.float32)
    y = d.target.astype(np.int32)
    idx = np.random.default_rng(seed).permutation(x.shape[0])
    n_test = int(round(test_fraction * x.shape[0]))
    te, tr = idx[:n_test], idx[n_test:]
    return Digits(x[tr], x[te], y[tr], y[te])


def _mlp(sizes, key) -> eqx.nn.Sequential:
    """ReLU MLP with the given layer sizes (input, hidden..., output); no activation on the output."""
    keys = jax.random.split(key, len(sizes) - 1)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(eqx.nn.Linear(a, b, key=keys[i]))
        if i < len(sizes) - 2:
            layers.append(eqx.nn.Lambda(jax.nn.relu))
    return eqx.nn.Sequential(layers)


class VAE:
    r"""Bernoulli VAE with a diagonal-Gaussian amortised encoder (model/guide pair for NumPyro SVI).

    Args:
        latent_dim: number of latent dimensions K (default 10, as in Ruiz & Titsias 2019).
        hidden: hidden-layer widths of both MLPs (default (200, 200); the decoder mirrors them).
        data_dim: pixels per image (64 for the 8×8 digits).
        rng_key: JAX key for the initial network weights.
        min_scale: floor added to the encoder's softplus scale, so σ never collapses to 0.

    Attributes:
        encoder, decoder: the initial Equinox modules (their weights are the starting values
            of the ``"encoder$params"`` / ``"decoder$params"`` sites).

    The model and amortised guide of Kingma & Welling (2014, "Auto-encoding variational
    Bayes", §3): :math:`p(z)p_\phi(x \mid z)` and :math:`q_\psi(z \mid x)`.

    Example:
        >>> import jax
        >>> from genbayes.models import vae
        >>> net = vae.VAE(latent_dim=2, hidden=(8,), rng_key=jax.random.key(0))
        >>> x = vae.load_digits().x_train[:16]
        >>> loc, scale = net.encode(net.init_params(), x)     # SVI trains net.model / net.guide
        >>> loc.shape, bool((scale > 0).all())
        ((16, 2), True)
    """

    def __init__(
        self,
        latent_dim: int = 10,
        hidden: tuple = (200, 200),
        data_dim: int = 64,
        *,
        rng_key=None,
        min_scale: float = 1e-4,
    ):
        if int(latent_dim) < 1:
            raise ValueError(f"`latent_dim` must be a positive integer, got {latent_dim!r}.")
        hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in hidden):
            raise ValueError(f"`hidden` must hold positive layer widths, got {hidden!r}.")
        if rng_key is None:
            raise ValueError("`rng_key` is required (randomness is always explicit): pass jax.random.key(seed).")
        self.latent_dim = int(latent_dim)
        self.hidden = hidden
        self.data_dim = int(data_dim)
        self.min_scale = float(min_scale)
        k_enc, k_dec = jax.random.split(rng_key)
        self.encoder = _mlp((self.data_dim, *hidden, 2 * self.latent_dim), k_enc)
        self.decoder = _mlp((self.latent_dim, *hidden[::-1], self.data_dim), k_dec)

    def __repr__(self) -> str:
        return f"VAE(latent_dim={self.latent_dim}, hidden={self.hidden}, data_dim={self.data_dim})"

    # -- networks ---------------------------------------------------------------------------
    def _enc_out(self, encoder, x):
        out = jax.vmap(encoder)(x)
        loc, raw = out[..., : self.latent_dim], out[..., self.latent_dim :]
        return loc, jax.nn.softplus(raw) + self.min_scale

    def encode(self, params, x):
        """Encoder mean and scale ``(loc, scale)``, each (n, K), under trained ``params`` (SVI's get_params)."""
        enc = self._combine(params, "encoder")
        return self._enc_out(enc, jnp.asarray(x))

    def decode_logits(self, params, z):
        """Bernoulli logits (n, data_dim) of the decoder at latents ``z`` (n, K)."""
        dec = self._combine(params, "decoder")
        return jax.vmap(dec)(jnp.asarray(z))

    def _combine(self, params, name):
        init = self.encoder if name == "encoder" else self.decoder
        _, static = eqx.partition(init, eqx.is_inexact_array)
        key = f"{name}$params"
        if key not in params:
            raise KeyError(f"`params` has no {key!r} site; pass svi.get_params(svi_state) or init_params().")
        return eqx.combine(params[key], static)

    def init_params(self) -> dict:
        """The initial parameter dict (the same keys as ``svi.get_params``)."""
        return {
            "encoder$params": eqx.partition(self.encoder, eqx.is_inexact_array)[0],
            "decoder$params": eqx.partition(self.decoder, eqx.is_inexact_array)[0],
        }

    # -- NumPyro model and guide ----------------------------------------------------------
    def model(self, x, subsample_size: int | None = None):
        """p(z) p_φ(x | z): latent site ``"z"`` and observed site ``"x"`` in plate ``"data"``.

        ``subsample_size`` draws a minibatch inside the plate (log-likelihood scaled by n/B).
        """
        decoder = eqx_module("decoder", self.decoder)
        x = jnp.asarray(x)
        with numpyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
            xb = x[idx] if subsample_size is not None else x
            z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([self.latent_dim]).to_event(1))
            logits = jax.vmap(decoder)(z)
            numpyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=xb)

    def guide(self, x, subsample_size: int | None = None):
        """q_ψ(z | x) = Normal(μ_ψ(x), diag σ_ψ(x)²): the amortised encoder, site ``"z"`` in plate ``"data"``."""
        encoder = eqx_module("encoder", self.encoder)
        x = jnp.asarray(x)
        with numpyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
            xb = x[idx] if subsample_size is not None else x
            loc, scale = self._enc_out(encoder, xb)
            numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # -- evaluation -------------------------------------------------------------------------
    def test_log_likelihood(self, params, x, num_samples: int = 1000, rng_key=None, chunk_size: int = 100):
        """Importance-sampling estimate of log p(x_i) per image, the encoder as proposal.

            log p(x) ≈ log (1/S) Σ_s p(x | z_s) p(z_s) / q(z_s | x),   z_s ~ q(· | x)

        (Burda et al. 2016, eq. 8 with k = S). Computed by a streaming log-sum-exp over
        chunks of ``chunk_size`` samples (``lax.scan``), so memory stays O(chunk · n · 64).
        The estimate is a stochastic lower bound on log p(x) in expectation, tight as S grows.

        Args:
            params: parameter dict (``svi.get_params(state)`` or :meth:`init_params`).
            x: images, shape (n, data_dim), values 0/1.
            num_samples: importance samples per image S (>= 1).
            rng_key: JAX key.
            chunk_size: samples per chunk.

        Returns:
            array (n,) of log p(x_i) estimates (nats). Average it for a test-set number.
        """
        if rng_key is None:
            raise ValueError("`rng_key` is required: pass jax.random.key(seed).")
        num_samples, chunk_size = int(num_samples), int(chunk_size)
        if num_samples < 1:
            raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
        if chunk_size < 1:
            raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}.")
        x = jnp.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"`x` must have shape (n, {self.data_dim}), got {x.shape}.")
        return _is_loglik(self, params, x, num_samples, rng_key, min(chunk_size, num_samples))


@eqx.filter_jit
def _is_loglik(vae, params, x, num_samples, rng_key, chunk):
    loc, scale = vae.encode(params, x)
    dec = vae._combine(params, "decoder")
    num_chunks = -(-num_samples // chunk)
    q = dist.Normal(loc, scale).to_event(1)
    prior = dist.Normal(0.0, 1.0).expand([vae.latent_dim]).to_event(1)

    def body(carry, inp):
        key, c = inp
        z = q.sample(key, (chunk,))  # (chunk, n, K)
        logits = jax.vmap(jax.vmap(dec))(z)
        lw = dist.Bernoulli(logits=logits).to_event(1).log_prob(x) + prior.log_prob(z) - q.log_prob(z)
        # samples past num_samples in the last chunk carry no weight
        valid = (c * chunk + jnp.arange(chunk)) < num_samples
        lw = jnp.where(valid[:, None], lw, -jnp.inf)
        return jnp.logaddexp(carry, jax.scipy.special.logsumexp(lw, axis=0)), None

    keys = jax.random.split(rng_key, num_chunks)
    init = jnp.full(x.shape[0], -jnp.inf, dtype=loc.dtype)
    total, _ = jax.lax.scan(body, init, (keys, jnp.arange(num_chunks)))
    return total - jnp.log(num_samples)
