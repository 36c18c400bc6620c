"""Demo section: the marginal-likelihood / cross-validation identity (Fong & Holmes 2020)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import Estimate, Section, image_path, save_figure


def section(outdir: Path, *, quick: bool, seed: int) -> Section:
    """Run the identity part of the tour: every S_CV(p) and their sum against log p(x) (Fong & Holmes 2020).

    Args:
        outdir: the report folder; the section's PNG files are written there.
        quick: smaller sizes (the ``genbayes demo --quick`` run).
        seed: random seed of the data and of every ``rng_key``.

    Returns:
        :class:`genbayes.demos.Section` with the table, the image paths, a sentence on how to
        read them and ``ok`` (whether every check passed).
    """
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import conjugate
    from .. import cv

    rng = np.random.default_rng(seed)
    # each row says which quantity it compares: the identity (Σ_p S_CV(p) against log p(x)), or in
    # the full run one S_CV(1) by PSIS against its exact value
    rows = {"model": [], "n": [], "quantity": [], "method": [], "estimate ± SE": [], "exact": [], "gap": [],
            "checks": []}
    ok = True
    with jax.enable_x64(True):
        n = 12 if quick else 16
        nkv = conjugate.NormalKnownVariance(0.0, 4.0, 1.0)
        x = rng.normal(1.0, 1.0, n)
        rep_n = cv.identity(nkv, x)
        bb = conjugate.BetaBernoulli(2.0, 2.0)
        xb = rng.binomial(1, 0.3, 300 if quick else 2000)
        rep_b = cv.identity(bb, xb)
        reps = [("NormalKnownVariance", rep_n), ("BetaBernoulli", rep_b)]
        for name, rep in reps:
            good = abs(rep.gap) < 1e-8 * max(1.0, abs(rep.log_evidence))
            for k, v in zip(rows, [name, int(rep.n), "Σ_p S_CV(p) vs log p(x)", rep.method, Estimate(rep.total, rep.se),
                                   Estimate(rep.log_evidence), float(rep.gap), "ok" if good else "FAIL"]):
                rows[k].append(v)
            ok &= good
        if not quick:
            # PSIS leave-one-out on the same model written as plain NumPyro, against the exact value
            ps = cv.lpo(nkv.model, x, p=1, method="psis", rng_key=jax.random.PRNGKey(seed), num_warmup=300,
                        num_samples=500, num_chains=2)
            ex = cv.lpo(nkv, x, p=1)
            good = abs(ps.value - ex.value) < 4 * ps.se
            for k, v in zip(rows, ["NormalKnownVariance", n, "S_CV(1)", "psis", Estimate(ps.value, ps.se),
                                   Estimate(ex.value), float(ps.value - ex.value), "ok" if good else "FAIL"]):
                rows[k].append(v)
            ok &= good
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, (name, rep) in zip(axes, reps):
        rep.plot(ax=ax)
        ax.set_title(f"{name}, n={rep.n}: Σ S_CV(p) = {rep.total:.3f}, log p(x) = {rep.log_evidence:.3f}", fontsize=8)
    fig.tight_layout()
    path = image_path(outdir, "cv_identity.png")
    save_figure(fig, path, dpi=100)
    return Section(
        title="Cross-validation and the marginal likelihood",
        text=("The rows with quantity 'Σ_p S_CV(p) vs log p(x)' sum the exact leave-p-out scores S_CV(p) over "
              "p = 1..n and compare the sum with the exact log evidence (Fong & Holmes 2020): the gap should be at "
              "rounding level (checked below 1e-8 relative)."
              + ("" if quick else " The 'S_CV(1)' row is Bayesian leave-one-out by PSIS from NUTS draws against its "
                 "exact value (checked within 4 SE).")
              + " The plot shows S_CV(p) against p; the large-p terms (little training data) are the "
              "prior-sensitive ones that drag the evidence down."),
        table=rows,
        images=(path,),
        ok=bool(ok),
    )
