"""ArviZ conversion. The only module that imports arviz, so that a move to ArviZ 1.x is one file."""

from __future__ import annotations

import numpy as np

__all__ = ["batched_to_inference_data"]


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
