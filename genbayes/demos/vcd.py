"""Demo section: VCD against the ELBO on the paper's 2-D targets and on breast-cancer logistic regression.

Also holds the comparison functions reused by the notebook, the benchmark and the acceptance tests.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO, init_to_feasible
from numpyro.infer.autoguide import AutoDiagonalNormal, AutoMultivariateNormal

from .. import vcd as V
from ..models import logistic_regression as lr
from ..models import toy2d
from . import Estimate, Section, image_path, save_figure


def _optim(lr_, steps):
    # constant for half the run, then halved every sixth: the last iterate settles near the optimum
    return numpyro.optim.optax_to_numpyro(
        optax.adam(optax.exponential_decay(lr_, max(1, steps // 6), 0.5, transition_begin=steps // 2))
    )


def fit_2d(name: str, method: str, num_steps: int, seed: int = 0, num_mcmc_steps: int = 5):
    """Fit a mean-field Gaussian (AutoDiagonalNormal) to a 2-D target by ``"elbo"`` or ``"vcd"``.

    Returns ``(loc, scale)`` as NumPy arrays.
    """
    target = toy2d.get(name)
    model = target.model
    # start at the origin: along the ρ = 0.95 ridge the VCD gradient on the mean is weak, so a random
    # start (NumPyro's default init_to_uniform) takes thousands of steps to come back
    guide = AutoDiagonalNormal(model, init_loc_fn=init_to_feasible)
    key = jax.random.key(seed)
    if method == "elbo":
        svi = SVI(model, guide, _optim(0.02, num_steps), Trace_ELBO())
        p = svi.run(key, num_steps, progress_bar=False).params
    elif method == "vcd":
        # the plain idiom with VCD's defaults; fit adds the ELBO warm-up and averages the last iterates
        svi = SVI(model, guide, _optim(0.02, num_steps), loss=V.VCD(num_mcmc_steps=num_mcmc_steps))
        p = V.fit(svi, key, num_steps).params
    else:
        raise ValueError(f"`method` must be 'elbo' or 'vcd', got {method!r}.")
    return np.asarray(p["auto_loc"]), np.asarray(p["auto_scale"])


def _lpd(alpha, beta, X, y):
    """Held-out log predictive density Σ_i log (1/S) Σ_s p(y_i | θ_s)."""
    return _lpd_se(alpha, beta, X, y)[0]


def _lpd_se(alpha, beta, X, y):
    """Held-out lpd Σ_i log p̂_i, p̂_i = (1/S) Σ_s p(y_i | θ_s), and its Monte Carlo standard error.

    SE by the delta method for independent draws: Var(log p̂_i) ≈ Var_s(p(y_i | θ_s)) / (S p̂_i²),
    summed over test points (for autocorrelated MCMC draws it is a lower bound).
    """
    logits = alpha[:, None] + beta @ X.T  # (S, n)
    ll = y * jax.nn.log_sigmoid(logits) + (1 - y) * jax.nn.log_sigmoid(-logits)
    lpd_i = jax.scipy.special.logsumexp(ll, axis=0) - jnp.log(ll.shape[0])
    rel = jnp.exp(ll - lpd_i)  # p(y_i | θ_s) / p̂_i
    se = jnp.sqrt(jnp.sum(jnp.var(rel, axis=0) / ll.shape[0]))
    return float(jnp.sum(lpd_i)), float(se)


def _lpd_is(guide, params, X, y, Xt, yt, num_draws, seed):
    """Exact-posterior held-out lpd by self-normalised importance sampling, proposal q widened by 1.2.

    p̂_i = Σ_s w_s p(y_i | θ_s), w ∝ p(θ_s, D) / r(θ_s); SE by the delta method,
    Var(log p̂_i) ≈ Σ_s w_s² (p(y_i | θ_s) − p̂_i)² / p̂_i². Returns (lpd, se, effective sample size).
    """
    import numpyro.distributions as dist
    from numpyro.infer.util import log_density

    q = guide.get_posterior(params)
    if isinstance(q, dist.Normal):  # mean field: the flat posterior is a batch of Normals
        q = dist.Normal(q.loc, 1.2 * q.scale).to_event(1)
    else:
        q = dist.MultivariateNormal(q.loc, scale_tril=1.2 * q.scale_tril)
    th = q.sample(jax.random.key(seed + 2), (num_draws,))
    joint = jax.vmap(lambda t: log_density(lr.model, (X, y), {}, {"alpha": t[0], "beta": t[1:]})[0])
    lw = joint(th) - q.log_prob(th)
    w = jnp.exp(lw - jax.scipy.special.logsumexp(lw))
    logits = th[:, :1] + th[:, 1:] @ Xt.T
    p = jnp.exp(yt * jax.nn.log_sigmoid(logits) + (1 - yt) * jax.nn.log_sigmoid(-logits))
    p_hat = w @ p
    var = jnp.sum(w[:, None] ** 2 * (p - p_hat) ** 2, axis=0) / p_hat**2
    return float(jnp.sum(jnp.log(p_hat))), float(jnp.sqrt(jnp.sum(var))), float(1 / jnp.sum(w**2))


GUIDES = {"multivariate": AutoMultivariateNormal, "diagonal": AutoDiagonalNormal}
"""The guide families the VCD section fits, by name."""


def logistic_regression_comparison(num_steps: int = 2000, seed: int = 0, *, guide: str = "multivariate",
                                   vcd_steps: int | None = None, num_mcmc_steps: int = 3, num_particles: int = 4,
                                   num_samples: int = 8000, num_q_samples: int = 20000) -> dict:
    """ELBO, VCD (same guide family, same optimiser) and NUTS on breast-cancer logistic regression.

    All 30 standardised features, 20% held out. ELBO runs ``num_steps`` steps; VCD starts from
    the ELBO fit (its score-function gradient is noisy far from the posterior) and runs
    ``vcd_steps`` (default ``num_steps``) more. ``guide`` is ``"multivariate"``
    (AutoMultivariateNormal, full covariance) or ``"diagonal"`` (AutoDiagonalNormal, mean field).

    Why the full-covariance guide is the default: the features are strongly correlated, so the
    posterior is too (NUTS covariance eigenvalues 0.02..1.1 at seed 0). A mean-field q cannot
    represent those correlations, and the closer its marginal SDs get to the posterior's, the more
    it over-disperses the test logits x_iᵀβ. With the NUTS mean and the Gaussian-approximation
    optima of a mean-field q (seed 0, 4000 draws): sd_i = 1/sqrt(Λ_ii) (the KL(q‖p) optimum, what
    the ELBO finds) gives lpd −7.81; sd_i = (Σ_ii/Λ_ii)^{1/4} (the symmetrised-KL optimum that VCD
    approaches) −8.92; sd_i = sqrt(Σ_ii) (exact marginals) −10.77; full covariance −7.21 (NUTS
    −7.21). So for mean field the issue's two acceptance directions (SDs closer to NUTS *and*
    lpd ≥ ELBO) contradict each other on this data; VCD does what its divergence asks (its
    objective at the VCD optimum is 16.9 ± 0.4 against 30.3 ± 0.5 at the ELBO optimum), and its
    lpd is lower (−8.5 against −7.7). With the full-covariance guide both directions hold.

    Returns:
        dict with held-out log predictive densities ``lpd_{elbo,vcd,nuts}`` (nats summed over
        test points) and their Monte Carlo standard errors ``lpd_se_*`` (from ``num_q_samples``
        draws of q, ``num_samples`` NUTS draws), the mean absolute error of the 31 posterior
        standard deviations against NUTS (``sd_err_*``), the mean SD ratio (``sd_ratio_*``) and
        VCD's final HMC acceptance rate (``vcd_accept``).
    """
    if guide not in GUIDES:
        raise ValueError(f"`guide` must be one of {sorted(GUIDES)}, got {guide!r}.")
    vcd_steps = num_steps if vcd_steps is None else int(vcd_steps)
    X, y, Xt, yt = lr.breast_cancer(num_features=None, test_fraction=0.2, seed=seed)
    X, y, Xt, yt = map(jnp.asarray, (X, y, Xt, yt))
    key = jax.random.key(seed)
    # dense mass: the posterior is ill-conditioned (eigenvalues 0.02..1.1), so NUTS with a dense mass
    # matrix takes far shorter trajectories and 8000 draws cost about what 2000 diagonal-mass draws do
    mc = MCMC(NUTS(lr.model, dense_mass=True), num_warmup=500, num_samples=num_samples, progress_bar=False)
    mc.run(key, X, y)
    nuts = mc.get_samples()
    out = {}
    out["lpd_nuts"], out["lpd_se_nuts"] = _lpd_se(nuts["alpha"], nuts["beta"], Xt, yt)
    sd_nuts = np.concatenate([[np.std(nuts["alpha"])], np.std(nuts["beta"], 0)])
    elbo_params = None
    for method in ("elbo", "vcd"):
        g = GUIDES[guide](lr.model)
        if method == "elbo":
            svi = SVI(lr.model, g, _optim(0.01, num_steps), Trace_ELBO())
            params = elbo_params = svi.run(key, num_steps, X, y, progress_bar=False).params
        else:
            loss = V.VCD(num_mcmc_steps=num_mcmc_steps, num_particles=num_particles)
            svi = SVI(lr.model, g, _optim(0.003, vcd_steps), loss=loss)
            state = svi.init(key, X, y, init_params=dict(elbo_params))
            run = V.fit(svi, key, vcd_steps, X, y, init_state=state)
            params = run.params
            out["vcd_accept"] = float(np.mean(np.asarray(run.report.accept)[-200:]))
            # a precise exact-posterior reference: self-normalised importance sampling from the VCD q
            out["lpd_is"], out["lpd_se_is"], out["is_ess"] = _lpd_is(g, params, X, y, Xt, yt, num_q_samples, seed)
        s = g.sample_posterior(jax.random.key(seed + 1), params, sample_shape=(num_q_samples,))
        out[f"lpd_{method}"], out[f"lpd_se_{method}"] = _lpd_se(s["alpha"], s["beta"], Xt, yt)
        sd = np.concatenate([[np.std(s["alpha"])], np.std(s["beta"], 0)])
        out[f"sd_err_{method}"] = float(np.mean(np.abs(sd - sd_nuts)))
        out[f"sd_ratio_{method}"] = float(np.mean(sd / sd_nuts))
    return out


def _hpd_levels(dens, masses=(0.9, 0.5)):
    """Density levels whose upper sets hold ``masses`` of a density tabulated on a regular grid (increasing levels).

    Example:
        >>> import numpy as np
        >>> from genbayes.demos.vcd import _hpd_levels
        >>> x = np.linspace(-6, 6, 601); d = np.exp(-0.5 * x**2)
        >>> lo, hi = _hpd_levels(d)        # the 90% and 50% HPD sets of N(0, 1): |x| < 1.645 and |x| < 0.674
        >>> round(float(np.max(np.abs(x[d >= lo]))), 2), round(float(np.max(np.abs(x[d >= hi]))), 2)
        (1.64, 0.68)
    """
    d = np.sort(np.asarray(dens, float).ravel())[::-1]
    cum = np.cumsum(d) / d.sum()
    return sorted(float(d[min(np.searchsorted(cum, m), d.size - 1)]) for m in masses)


_FIT_STYLE = {"elbo": ("tab:blue", "ELBO q (mean field)"), "vcd": ("tab:red", "VCD q (mean field)")}


def _contours(ax, target, fits):
    """The target's and the fits' 50% and 90% highest-density regions, with a legend and labelled axes."""
    from matplotlib.lines import Line2D

    xs = np.linspace(*target.xlim, 200)
    ys = np.linspace(*target.ylim, 200)
    Xg, Yg = np.meshgrid(xs, ys)
    grid = jnp.stack([Xg, Yg], -1)
    # levels at the 50% and 90% highest-density regions: contours of the same probability for every
    # density (matplotlib's default evenly spaced levels put a near-zero one along the frame's corners)
    p = np.exp(np.asarray(target.log_density(grid)))
    handles = []
    cs = ax.contour(Xg, Yg, p, _hpd_levels(p), colors="tab:green", linewidths=(1.0, 1.8))
    cs.set_label("target")
    handles.append(Line2D([], [], color="tab:green", label="target"))
    for (loc, scale), method in zip(fits, ("elbo", "vcd")):
        color, name = _FIT_STYLE[method]
        q = np.exp(-0.5 * (((Xg - loc[0]) / scale[0]) ** 2 + ((Yg - loc[1]) / scale[1]) ** 2))
        cs = ax.contour(Xg, Yg, q, _hpd_levels(q), colors=color, linewidths=(1.0, 1.8))
        cs.set_label(name)
        handles.append(Line2D([], [], color=color, label=name))
    handles.append(Line2D([], [], color="gray", lw=1.0, label="thin: 90% region, thick: 50%"))
    ax.set_xlabel("θ₁")
    ax.set_ylabel("θ₂")
    ax.set_aspect("equal")
    # below the panel: inside, it would cover the contours on some targets
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    ax.set_title(target.name)


def section(outdir: Path, *, quick: bool, seed: int) -> Section:
    """ELBO (blue) and VCD (red) mean-field fits over the 2-D targets (green); SDs against theory.

    The VCD part of the tour (Ruiz & Titsias 2019), also comparing ELBO, VCD and NUTS on
    breast-cancer logistic regression.

    Args:
        outdir: the report folder; the section's PNG files are written there.
        quick: smaller sizes (the ``genbayes demo --quick`` run).
        seed: random seed of the data and of every ``rng_key``.

    Returns:
        :class:`genbayes.demos.Section` with the table, the image paths, a sentence on how to
        read them and ``ok`` (whether every check passed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("gaussian",) if quick else toy2d.NAMES
    steps = 1500 if quick else 3000
    rows = []  # one dict per row; a cell a row does not have is shown as "-", as in the other sections
    lam = np.linalg.inv(np.asarray(toy2d.GAUSSIAN_COV))
    theory = {"elbo": float(1 / np.sqrt(lam[0, 0])), "vcd": float(np.sqrt(np.sqrt(1 / lam[0, 0])))}
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4.8), squeeze=False)
    ok = True
    for ax, name in zip(axes[0], names):
        fits = [fit_2d(name, m, steps, seed) for m in ("elbo", "vcd")]
        _contours(ax, toy2d.get(name), fits)
        wider = bool(np.all(fits[1][1] > fits[0][1]))  # VCD wider than the under-dispersed ELBO fit, every target
        for m, (loc, sc) in zip(("elbo", "vcd"), fits):
            row = {"target": name, "method": m, "sd θ₁": float(sc[0]), "sd θ₂": float(sc[1])}
            good = wider
            if name == "gaussian":
                # optimisation results, not Monte Carlo averages: the tolerance is the optimiser's spread over
                # seeds (ELBO 0.03, VCD 0.06: the VCD gradient is a noisy HMC-based estimate)
                tol = 0.03 if m == "elbo" else 0.06
                good &= bool(np.all(np.abs(sc - theory[m]) < tol))
                row.update({"sd (theory)": theory[m], "tolerance": tol})
            row["checks"] = "ok" if good else "FAIL"
            ok &= good
            rows.append(row)
    fig.tight_layout()
    png = save_figure(fig, image_path(outdir, "vcd_2d.png"), dpi=100)
    text = (
        "Mean-field Gaussian fits (blue: ELBO, red: VCD with 5 guide-preconditioned HMC steps) over the target (green); "
        "each density is drawn at its 50% (thick) and 90% (thin) highest-density regions. "
        "ELBO under-disperses (theory 1/sqrt(Λ_ii) ≈ 0.312 on the ρ = 0.95 Gaussian); VCD approaches the "
        "symmetrised-KL width sqrt(sqrt(Σ_ii/Λ_ii)) ≈ 0.559."
    )
    if not quick:
        r = logistic_regression_comparison(num_steps=2000, vcd_steps=1000, seed=seed, guide="multivariate")
        for m in ("elbo", "vcd", "nuts"):
            rows.append({"target": "breast cancer", "method": m,
                         "held-out lpd (nats)": Estimate(r[f"lpd_{m}"], r[f"lpd_se_{m}"]),
                         **({"mean |sd − sd NUTS|": r[f"sd_err_{m}"]} if m != "nuts" else {})})
        text += (" Breast cancer logistic regression (full-covariance guide for ELBO and VCD, VCD warm-started "
                 "from the ELBO fit): held-out log predictive density in nats over the test set (higher is better) "
                 "and the mean absolute error of the 31 posterior SDs against NUTS.")
    cols = list(dict.fromkeys(k for row in rows for k in row))
    table = {c: [row.get(c) for row in rows] for c in cols}
    return Section(title="VCD: variational inference improved by MCMC", text=text, table=table, images=(png,), ok=ok)
