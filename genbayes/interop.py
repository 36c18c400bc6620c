"""ArviZ conversion. The only module that imports arviz, so that a move to ArviZ 1.x is one file."""

from __future__ import annotations

import numpy as np

__all__ = ["batched_to_inference_data", "effective_sample_size", "psis_log_weights", "psis_khat_threshold", "loo", "lpo_to_elpd_data"]


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
    """
    az = _arviz()
    posterior = {k: np.asarray(v) for k, v in result.samples.items()}
    S = result.num_samples
    stats = {k: np.repeat(np.asarray(v)[:, None], S, axis=1) for k, v in result.diagnostics.items()}
    idata = az.from_dict(posterior=posterior, sample_stats=stats)
    idata.posterior.attrs["chain_meaning"] = "replicate (one weighted posterior per chain)"
    return idata


def effective_sample_size(draws) -> float:
    """ArviZ's bulk effective sample size of a single chain of scalar draws."""
    az = _arviz()
    return float(az.ess(np.asarray(draws)[None, :]))


def psis_khat_threshold(num_draws: int) -> float:
    """ArviZ's sample-size-dependent "good" threshold for Pareto k̂: ``min(1 − 1/log10(S), 0.7)``."""
    return float(min(1.0 - 1.0 / np.log10(num_draws), 0.7))


def psis_log_weights(log_ratios, reff: float = 1.0):
    """Pareto-smoothed, normalized log importance weights by ArviZ's ``psislw``.

    Args:
        log_ratios: array ``(m, S)``: m sets of S log importance ratios (draws on the last axis).
        reff: relative MCMC efficiency (ESS / S) of the draws.

    Returns:
        ``(log_weights, khat)``: normalized smoothed log weights ``(m, S)`` and the Pareto shape
        estimates ``(m,)`` (Vehtari et al. 2024, JMLR 25(72)).
    """
    az = _arviz()
    lw, khat = az.psislw(np.asarray(log_ratios, dtype=float), reff=float(reff))
    return np.asarray(lw), np.asarray(khat)


def loo(log_lik, reff=None, pointwise: bool = True):
    """``arviz.loo`` on a log-likelihood array ``(chains, draws, n)`` (an independent reference for p = 1)."""
    az = _arviz()
    ll = np.asarray(log_lik, dtype=float)
    idata = az.from_dict(posterior={"_": np.zeros(ll.shape[:2])}, log_likelihood={"y": ll})
    return az.loo(idata, pointwise=pointwise, reff=reff, var_name="y")


def lpo_to_elpd_data(result):
    """ArviZ ``ELPDData`` for a p = 1 :class:`genbayes.cv.LPOResult` (all n held-out points), for ``arviz.compare``.

    ``elpd_loo`` is n · S_CV(1); ``se`` is ArviZ's data standard error sqrt(n · var(elpd_i)),
    the Monte Carlo error of our estimate is kept as ``mc_se``.
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
