"""Demo section: log evidence estimators on Williams' radiata pine data against the exact value.

Friel & Wyse's (2012) Normal–Gamma regression of compression strength on density has a closed-form
evidence (−310.128), the standard benchmark for marginal-likelihood estimators. Each estimator of
:func:`genbayes.evidence.log_evidence` is run on it and shown beside the exact value with its standard
error and its time; the second panel is the thermodynamic-integration integrand E_β[log p(x | θ)]
on the power-posterior ladder, all temperatures drawn by one batched NUTS program.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import jax
import numpy as np

from .. import evidence
from .._config import x64
from ..models import radiata_pine
from . import Section, image_path


def section(outdir: Path, *, quick: bool = True, seed: int = 0) -> Section:
    """Run the evidence part of the tour: the estimators side by side on the radiata pine data (Friel & Wyse 2012).

    Args:
        outdir: the report folder; the section's PNG files are written there.
        quick: smaller sizes (the ``genbayes demo --quick`` run).
        seed: random seed of the data and of every ``rng_key``.

    Returns:
        :class:`genbayes.demos.Section` with the table, the image paths, a sentence on how to
        read them and ``ok`` (whether every check passed).
    """
    with x64():  # evidence values near -310 are compared at the 0.01-nat level
        return _section(outdir, quick=quick, seed=seed)


def _section(outdir: Path, *, quick: bool, seed: int) -> Section:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    X, y = radiata_pine.design("density")
    fam = radiata_pine.prior()
    exact = float(fam.log_evidence(X, y))
    ladder = {"ladder": 12 if quick else 32, "num_warmup": 200 if quick else 500,
              "num_samples": 300 if quick else 1000}
    opts = {"smc": {"num_particles": 300 if quick else 1000, "num_runs": 4 if quick else 8},
            "thermodynamic": ladder, "stepping_stone": ladder}
    # Laplace and SMC are one compiled program each (~20 s apiece on 2 cores); the quick run shows
    # the power-posterior pair, which shares one ladder run
    methods = ["exact", "stepping_stone", "thermodynamic"] if quick else \
        ["exact", "laplace", "smc", "stepping_stone", "thermodynamic"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        res = evidence.compare(fam, X, y, methods=methods, rng_key=jax.random.PRNGKey(seed), options=opts)
    ok = True
    table = {"method": [], "log Z": [], "SE": [], "error": [], "|error|/SE": [], "time (s)": []}
    for m, ev in res.items():
        err = ev.log_z - exact
        z = abs(err) / ev.se if ev.se > 0 else float("nan")
        if ev.se > 0 and not z <= 4:
            ok = False
        table["method"].append(m)
        table["log Z"].append(round(ev.log_z, 4))
        table["SE"].append(round(ev.se, 4))
        table["error"].append(round(err, 4))
        table["|error|/SE"].append(round(z, 2) if np.isfinite(z) else "-")
        table["time (s)"].append(round(ev.diagnostics.get("time_s", 0.0), 2))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    names = [m for m in res if m != "exact"]
    errs = [res[m].log_z - exact for m in names]
    ses = [2 * res[m].se for m in names]
    axes[0].errorbar(errs, range(len(names)), xerr=ses, fmt="o", capsize=4)
    axes[0].axvline(0.0, color="k", lw=1)
    axes[0].set_yticks(range(len(names)), names)
    axes[0].set_xlabel("log Z − exact (nats), ± 2 SE")
    axes[0].set_title(f"radiata pine (density), exact log Z = {exact:.3f}")
    d = res["thermodynamic"].diagnostics
    axes[1].plot(d["ladder"], d["mean_log_likelihood"], "o-", ms=3)
    axes[1].set_xscale("symlog", linthresh=1e-4)
    axes[1].set_yscale("symlog")
    axes[1].set_xlabel("temperature β")
    axes[1].set_ylabel("E_β[log p(x | θ)]")
    axes[1].set_title("thermodynamic integrand (one batched NUTS program)")
    fig.tight_layout()
    path = image_path(outdir, "evidence_radiata.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    text = (
        "Each row is one estimator of the log evidence of the radiata pine density model; 'error' is its distance "
        "from the closed form and '|error|/SE' that distance in its own standard errors (Monte Carlo methods "
        "should mostly be below 2, always below 4; Laplace is deterministic and its error is bias). The right "
        "panel is the curve whose area is log Z in thermodynamic integration."
    )
    if quick:
        text += " The quick run leaves out Laplace and SMC (both in the full run)."
    if caught:
        text += " Warnings: " + "; ".join(str(w.message) for w in caught)
    return Section(title="Marginal likelihood estimators (radiata pine)", text=text, table=table,
                   images=(path,), ok=ok)
