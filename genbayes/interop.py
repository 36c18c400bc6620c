"""ArviZ conversion. The only module that imports arviz, so that a move to ArviZ 1.x is one file."""

from __future__ import annotations

import numpy as np

from ._validation import check_positive_scalar, check_real_array

__all__ = ["batched_to_inference_data", "mcmc_to_inference_data", "gibbs_to_inference_data", "unit_log_likelihood", "effective_sample_size", "psis_log_weights", "psis_khat_threshold", "loo", "lpo_to_elpd_data"]


def _arviz():
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*")
        import arviz as az
    return az


def batched_to_inference_data(result):
    """InferenceData for a :class:`genbayes.batched.BatchedSamples`: one chain per replicate.

    The ``chain`` dimension indexes the B weight vectors (so ArviZ's per-chain diagnostics are
    per-replicate), and ``sample_stats`` holds the per-replicate NUTS diagnostics, broadcast
    over draws.

    Args:
        result: a :class:`genbayes.batched.BatchedSamples`.

    Returns:
        ``arviz.InferenceData`` with groups ``posterior`` and ``sample_stats``.

    Example:
        >>> import numpy as np
        >>> from genbayes.batched import BatchedSamples
        >>> from genbayes.interop import batched_to_inference_data
        >>> res = BatchedSamples(samples={"mu": np.zeros((3, 5))}, weights=np.ones((3, 4)),
        ...                      diagnostics={"num_divergent": np.zeros(3, int)})
        >>> idata = batched_to_inference_data(res)
        >>> dict(idata.posterior.sizes)
        {'chain': 3, 'draw': 5}
    """
    az = _arviz()
    posterior = {k: np.asarray(v) for k, v in result.samples.items()}
    S = result.num_samples
    stats = {k: np.repeat(np.asarray(v)[:, None], S, axis=1) for k, v in result.diagnostics.items()}
    idata = az.from_dict(posterior=posterior, sample_stats=stats)
    idata.posterior.attrs["chain_meaning"] = "replicate (one weighted posterior per chain)"
    return idata


def effective_sample_size(draws) -> float:
    """ArviZ's bulk effective sample size of a single chain of scalar draws.

    Args:
        draws: 1-D array of S draws.

    Returns:
        float: the rank-normalised bulk ESS of Vehtari et al. (2021, "Rank-normalization,
        folding, and localization").

    Example:
        >>> import numpy as np
        >>> from genbayes.interop import effective_sample_size
        >>> draws = np.random.default_rng(0).normal(size=400)     # independent draws: ESS ~ S
        >>> 300 < effective_sample_size(draws) < 500
        True
    """
    d = check_real_array(draws, "draws", ndim=1)
    if d.size < 4:
        raise ValueError(f"`draws` has {d.size} value(s); the rank-normalised ESS needs at least 4 draws.")
    az = _arviz()
    return float(az.ess(d[None, :]))


def psis_khat_threshold(num_draws: int) -> float:
    r"""ArviZ's sample-size-dependent "good" threshold for Pareto k̂: ``min(1 − 1/log10(S), 0.7)``.

    Vehtari et al. (2024, JMLR 25(72), "Pareto smoothed importance sampling", §3): with S draws
    the PSIS estimate is reliable for :math:`\hat k < 1 - 1/\log_{10} S`, capped at 0.7.

    Args:
        num_draws: the number of draws S.

    Returns:
        float: the threshold.

    Example:
        >>> from genbayes.interop import psis_khat_threshold
        >>> psis_khat_threshold(100), psis_khat_threshold(10**6)
        (0.5, 0.7)
    """
    if isinstance(num_draws, bool) or not isinstance(num_draws, (int, np.integer)) or num_draws < 2:
        raise ValueError(f"`num_draws` must be an integer >= 2 (the number of draws S), got {num_draws!r}.")
    return float(min(1.0 - 1.0 / np.log10(num_draws), 0.7))


def psis_log_weights(log_ratios, reff: float = 1.0):
    """Pareto-smoothed, normalized log importance weights by ArviZ's ``psislw``.

    Args:
        log_ratios: array ``(m, S)``: m sets of S log importance ratios (draws on the last axis).
        reff: relative MCMC efficiency (ESS / S) of the draws.

    Returns:
        ``(log_weights, khat)``: normalized smoothed log weights ``(m, S)`` and the Pareto shape
        estimates ``(m,)`` (Vehtari et al. 2024, JMLR 25(72)).

    Example:
        >>> import numpy as np
        >>> from genbayes.interop import psis_log_weights
        >>> lw, khat = psis_log_weights(np.random.default_rng(0).normal(size=(2, 500)))
        >>> lw.shape, khat.shape, bool(np.allclose(np.exp(lw).sum(axis=1), 1.0))
        ((2, 500), (2,), True)
    """
    lr = check_real_array(log_ratios, "log_ratios", neg_inf_ok=True)  # -inf: a draw of weight 0
    if lr.shape[-1] < 2:
        raise ValueError(f"`log_ratios` must hold S >= 2 draws on its last axis, got shape {lr.shape}.")
    check_positive_scalar(reff, "reff")
    return _psis_log_weights(lr, reff)


def _psis_log_weights(log_ratios, reff):
    # unchecked: genbayes.cv passes +inf ratios through and reports the resulting k̂ in its diagnostics
    az = _arviz()
    lw, khat = az.psislw(np.asarray(log_ratios, dtype=float), reff=float(reff))
    return np.asarray(lw), np.asarray(khat)


def loo(log_lik, reff=None, pointwise: bool = True):
    r"""``arviz.loo`` on a log-likelihood array ``(chains, draws, n)`` (an independent reference for p = 1).

    PSIS-LOO (Vehtari, Gelman & Gabry 2017): :math:`\widehat{\mathrm{elpd}}_{loo} = \sum_i \log
    \frac{\sum_s w_i^s p(x_i \mid \theta^s)}{\sum_s w_i^s}` with Pareto-smoothed weights
    :math:`w_i^s \propto 1/p(x_i \mid \theta^s)`.

    Args:
        log_lik: array ``(chains, draws, n)`` of :math:`\log p(x_i \mid \theta^s)`.
        reff: relative MCMC efficiency (default: ArviZ estimates it).
        pointwise: keep the per-observation values.

    Returns:
        ``arviz.ELPDData``.

    Example:
        >>> import numpy as np
        >>> from genbayes.interop import loo
        >>> ll = np.random.default_rng(0).normal(-1.0, 0.1, size=(2, 200, 5))
        >>> res = loo(ll)
        >>> bool(-5.5 < res["elpd_loo"] < -4.5), int(res["n_data_points"])
        (True, 5)
    """
    az = _arviz()
    ll = check_real_array(log_lik, "log_lik", ndim=3)
    if min(ll.shape) == 0 or ll.shape[1] < 4:
        raise ValueError(f"`log_lik` must have shape (chains, draws >= 4, n >= 1), got {ll.shape}.")
    idata = az.from_dict(posterior={"_": np.zeros(ll.shape[:2])}, log_likelihood={"y": ll})
    return az.loo(idata, pointwise=pointwise, reff=reff, var_name="y")


def lpo_to_elpd_data(result):
    """ArviZ ``ELPDData`` for a p = 1 :class:`genbayes.cv.LPOResult` (all n held-out points), for ``arviz.compare``.

    ``elpd_loo`` is n · S_CV(1) (Fong & Holmes 2020: S_CV(1) is the mean leave-one-out log
    predictive, the ``elpd_loo``/n of Vehtari, Gelman & Gabry 2017); ``se`` is ArviZ's data
    standard error sqrt(n · var(elpd_i)), the Monte Carlo error of our estimate is kept as ``mc_se``.

    Args:
        result: a p = 1 :class:`genbayes.cv.LPOResult` over all n held-out points.

    Returns:
        ``arviz.ELPDData``.

    Raises:
        ValueError: for any other result (p > 1, ``S_CCV``, random subsets, no per-point values).

    Example:
        >>> import jax.numpy as jnp, genbayes as gb
        >>> from genbayes.interop import lpo_to_elpd_data
        >>> fam = gb.conjugate.NormalKnownVariance(0.0, 1.0, 1.0)
        >>> r = gb.cv.lpo(fam, jnp.array([0.2, -0.4, 1.0]), p=1, method="enumerate")
        >>> elpd = lpo_to_elpd_data(r)
        >>> elpd["n_data_points"], bool(abs(elpd["elpd_loo"] - 3 * r.value) < 1e-5)
        (3, True)
    """
    import xarray as xr

    az = _arviz()
    d = result.diagnostics
    if result.p != 1 or result.quantity != "S_CV" or "values" not in d or not result.exhaustive:
        raise ValueError("to_elpd_data needs a p = 1 S_CV result over all n held-out points (per-point values kept).")
    order = np.argmax(np.asarray(d["subsets"]), axis=1) if "subsets" in d else np.arange(result.n)
    elpd_i = np.empty(result.n)
    elpd_i[order] = np.asarray(d["values"])
    n = result.n
    khat = np.full(n, np.nan)
    if "khat" in d:
        khat[order] = np.asarray(d["khat"])
    fields = {
        "elpd_loo": float(elpd_i.sum()),
        "se": float(np.sqrt(n * np.var(elpd_i))),
        "p_loo": np.nan,
        "n_samples": int(d.get("num_draws", 0)),
        "n_data_points": n,
        "warning": bool(d.get("num_high_khat", 0) > 0),
        "loo_i": xr.DataArray(elpd_i, dims=["y_dim_0"]),
        "pareto_k": xr.DataArray(khat, dims=["y_dim_0"]),
        "scale": "log",
        "good_k": d.get("khat_threshold", 0.7),
        "mc_se": float(result.se * n),
        "method": result.method,
    }
    return az.ELPDData(data=list(fields.values()), index=list(fields.keys()))

def unit_log_likelihood(model, samples, *args, units=None, mask=None, batch_ndims=2, **kwargs):
    r"""Pointwise log-likelihood per observation *unit*, :math:`\log p(x_u \mid \theta_s)`, for ArviZ.

    The log-likelihood that PSIS-LOO, WAIC and ``arviz.compare`` score point by point
    (Vehtari, Gelman & Gabry 2017) must be one value per exchangeable unit: the units of
    :mod:`genbayes.units` (every observed site's entries at one index of the outermost plate by
    default; groups for leave-one-group-out; masked entries in no unit). With enumerated discrete
    latents it is each unit's *marginal* likelihood. Computed by :func:`genbayes.units.log_likelihood`
    (each observed site's scale, e.g. a Gibbs learning rate, multiplies its entries).

    Args:
        model: the NumPyro model the draws are from.
        samples: dict site -> draws with ``batch_ndims`` leading axes (chains, draws); deterministic
            and observed sites are ignored.
        *args, **kwargs: the model's arguments.
        units: the observation units (any spec :func:`genbayes.units.find` accepts, or a ``Units``).
        mask: optional dict observed site -> boolean array (``False``: in no unit).
        batch_ndims: number of leading sample axes (2: chains, draws).

    Returns:
        ``(log_lik, units)``: array ``(*batch, U)`` and the resolved :class:`genbayes.units.Units`.

    Example:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> from genbayes.interop import unit_log_likelihood
        >>> def model(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("n", x.shape[0]):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=x)
        >>> ll, u = unit_log_likelihood(model, {"mu": jnp.zeros((2, 3))}, jnp.arange(4.0), units=jnp.array([0, 0, 1, 1]))
        >>> ll.shape, u.num_units
        ((2, 3, 2), 2)
    """
    from . import units as _units

    U = _units.find(model, *args, units=units, mask=mask, **kwargs)
    tr = _units._trace(model, args, kwargs)  # abstract: which sites are latent
    latent = {k: v for k, v in samples.items()
              if k in tr and tr[k]["type"] == "sample" and not tr[k]["is_observed"]}
    ll = _units.log_likelihood(model, latent, *args, units=U, batch_ndims=batch_ndims, **kwargs)
    return np.asarray(ll), U


def _unit_group(ll, U):
    """The ``log_likelihood`` group's variable: named after the one observed site in units, else ``units``."""
    name = U.sites[0] if len(U.sites) == 1 else "units"
    return name, {name: ll}, {name: ["unit"]}, {"unit": np.asarray(U.labels)}


def mcmc_to_inference_data(mcmc, *, units=None, mask=None, **from_numpyro_kwargs):
    r"""InferenceData for a NumPyro MCMC run, with the pointwise log-likelihood per observation unit.

    ``arviz.from_numpyro`` stores one log-likelihood per *entry* of each observed site, so that
    ``arviz.loo`` on a model with two observed sites, grouped data, masked responses or an inner
    plate scores the wrong points, and on a model with enumerated discrete latents it fails. Here
    the ``log_likelihood`` group holds one variable of shape ``(chains, draws, U)`` (dimension
    ``unit``, coordinates the unit labels), :math:`\log p(x_u \mid \theta_s)` summed over every
    observed entry of unit u, and marginal over enumerated latents (:func:`unit_log_likelihood`),
    so ``arviz.loo`` / ``waic`` / ``compare`` are per unit (Vehtari, Gelman & Gabry 2017). The
    variable is named after the observed site when one site is in units, else ``"units"``.

    Args:
        mcmc: a ``numpyro.infer.MCMC`` that has been run.
        units: the observation units (:func:`genbayes.units.find`): default the outermost plate of
            the observed sites; a plate name; group ids (leave-one-group-out); or a ``Units``.
        mask: optional dict observed site -> boolean array (``False`` entries are not scored).
        **from_numpyro_kwargs: passed to ``arviz.from_numpyro`` (e.g. ``coords``, ``dims``).

    Returns:
        ``arviz.InferenceData`` with groups ``posterior``, ``sample_stats``, ``observed_data`` (when
        ArviZ finds it) and ``log_likelihood``; ``log_likelihood.attrs["units"]`` describes the units.

    Example:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import MCMC, NUTS
        >>> from genbayes.interop import mcmc_to_inference_data
        >>> def model(z, y):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("a", z.shape[0]):
        ...         numpyro.sample("z", dist.Normal(mu, 1.0), obs=z)
        ...     with numpyro.plate("b", y.shape[0]):
        ...         numpyro.sample("y", dist.Normal(mu, 2.0), obs=y)
        >>> mcmc = MCMC(NUTS(model), num_warmup=50, num_samples=50, progress_bar=False)
        >>> mcmc.run(jax.random.PRNGKey(0), jnp.zeros(2), jnp.ones(4))
        >>> idata = mcmc_to_inference_data(mcmc, units={"z": jnp.array([0, 1]), "y": jnp.array([0, 0, 1, 1])})
        >>> dict(idata.log_likelihood.sizes)
        {'chain': 1, 'draw': 50, 'unit': 2}
    """
    az = _arviz()
    model = mcmc.sampler.model
    args, kwargs = getattr(mcmc, "_args", ()), getattr(mcmc, "_kwargs", {})
    samples = mcmc.get_samples(group_by_chain=True)
    ll, U = unit_log_likelihood(model, samples, *args, units=units, mask=mask, batch_ndims=2, **kwargs)
    name, group, dims, coords = _unit_group(ll, U)
    idata = az.from_numpyro(mcmc, log_likelihood=False, **from_numpyro_kwargs)
    idata.add_groups({"log_likelihood": group}, dims=dims, coords=coords)
    idata.log_likelihood.attrs["units"] = repr(U)
    return idata


def gibbs_to_inference_data(mcmc, *, sites=None, units=None, mask=None, **from_numpyro_kwargs):
    r"""InferenceData for an MCMC run of a Gibbs posterior, with :math:`-w\,\ell` per unit as the log likelihood.

    ``az.from_numpyro`` records the unscaled ``log_prob`` of observed sites, which for a
    :class:`genbayes.losses.Loss` site is :math:`-\ell` and ignores the learning rate. Here the
    ``log_likelihood`` group holds, per draw and observation unit (:mod:`genbayes.units`), the
    observed sites' log density *times their scale*, :math:`-w\,\ell(\theta, x_u)` (the generalized
    log likelihood the posterior was drawn for, Bissiri et al. 2016, eq. 1), so ``arviz.loo``/``waic``
    estimate the predictive performance of the Gibbs posterior in that currency, one point per unit
    (as :func:`mcmc_to_inference_data`). With ``sites=`` instead it holds one variable per named
    site, one value per entry (the per-entry form). The group's attrs hold ``loss_<site>`` (the
    loss name, or ``"likelihood"`` for an ordinary site) and ``learning_rate_<site>`` (the scale: a
    float, or a list when it varies).

    Args:
        mcmc: a ``numpyro.infer.MCMC`` that has been run (its model, arguments and draws are used).
        sites: observed sites to include entry by entry (default: ``None``, per unit).
        units: the observation units (:func:`genbayes.units.find`; default the outermost plate of
            the observed sites); not together with ``sites``.
        mask: optional dict observed site -> boolean array (``False`` entries are not scored).
        **from_numpyro_kwargs: passed to ``arviz.from_numpyro`` (e.g. ``coords``, ``dims``).

    Returns:
        ``arviz.InferenceData`` with groups ``posterior``, ``sample_stats``, ``observed_data``, ``log_likelihood``.

    Example:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import MCMC, NUTS
        >>> from genbayes.handlers import gibbs
        >>> from genbayes.losses import absolute
        >>> from genbayes.interop import gibbs_to_inference_data
        >>> def model(y):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with numpyro.plate("n", y.shape[0]):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> mcmc = MCMC(NUTS(gibbs(model, loss={"y": absolute}, learning_rate=0.5)), num_warmup=100,
        ...             num_samples=100, progress_bar=False)
        >>> mcmc.run(jax.random.PRNGKey(0), jnp.linspace(-1.0, 1.0, 20))
        >>> idata = gibbs_to_inference_data(mcmc)
        >>> idata.log_likelihood.attrs["loss_y"], idata.log_likelihood.attrs["learning_rate_y"]
        ('absolute', 0.5)
    """
    import jax
    import jax.numpy as jnp
    from numpyro.handlers import seed, substitute, trace

    from .fisher import _find_loss

    if sites is not None and (units is not None or mask is not None):
        raise ValueError("Pass either `sites` (per-entry log-likelihood of the named sites) or `units`/`mask` "
                         "(per-unit log-likelihood), not both.")
    az = _arviz()
    model = mcmc.sampler.model
    args, kwargs = getattr(mcmc, "_args", ()), getattr(mcmc, "_kwargs", {})
    samples = mcmc.get_samples(group_by_chain=True)
    first = jax.tree_util.tree_map(lambda a: a[0, 0], samples)
    tr = trace(substitute(seed(model, 0), first)).get_trace(*args, **kwargs)
    observed = [k for k, s in tr.items() if s["type"] == "sample" and s["is_observed"]]
    if sites is None:
        ll, U = unit_log_likelihood(model, samples, *args, units=units, mask=mask, batch_ndims=2, **kwargs)
        _, group, dims, coords = _unit_group(ll, U)
        idata = az.from_numpyro(mcmc, log_likelihood=False, **from_numpyro_kwargs)
        idata.add_groups({"log_likelihood": group}, dims=dims, coords=coords)
        idata.log_likelihood.attrs["units"] = repr(U)
        names = list(U.sites)
    else:
        names = [sites] if isinstance(sites, str) else list(sites)
        bad = sorted(set(names) - set(observed))
        if bad:
            raise ValueError(f"`sites` names {bad}, which are not observed sites; observed: {observed}.")
        latent = [k for k in samples if k in tr and tr[k]["type"] == "sample" and not tr[k]["is_observed"]]

        def loglik(params):
            t = trace(substitute(seed(model, 0), params)).get_trace(*args, **kwargs)
            out = {}
            for k in names:
                lp = t[k]["fn"].log_prob(t[k]["value"])
                out[k] = lp if t[k]["scale"] is None else lp * t[k]["scale"]
            return out

        C, S = np.shape(samples[latent[0]])[:2]
        flat = {k: jnp.reshape(samples[k], (C * S, *np.shape(samples[k])[2:])) for k in latent}
        ll = jax.lax.map(loglik, flat, batch_size=min(C * S, 64))
        ll = {k: np.asarray(v).reshape(C, S, *np.shape(v)[1:]) for k, v in ll.items()}
        idata = az.from_numpyro(mcmc, log_likelihood=False, **from_numpyro_kwargs)
        idata.add_groups({"log_likelihood": ll})
    attrs = {}
    for k in names:
        loss, _ = _find_loss(tr[k]["fn"])
        attrs[f"loss_{k}"] = "likelihood" if loss is None else loss.name
        scale = 1.0 if tr[k]["scale"] is None else np.asarray(tr[k]["scale"])
        scale = np.asarray(scale, dtype=float)
        attrs[f"learning_rate_{k}"] = float(scale.ravel()[0]) if np.all(scale == scale.ravel()[0]) else scale.tolist()
    idata.log_likelihood.attrs.update(attrs)
    return idata
