"""Centred eight schools with a mean-field guide: where do the divergences' optima lie, and where does VCD land?

Evidence for issue 16's rule on the funnel (tests/test_vcd_models.py, the xfail case). Part 1 optimises
over the mean-field Gaussian family in the unconstrained coordinates (mu, log tau, theta) by brute
force (L-BFGS, 40,000 common random numbers for E_q, 20,000 non-centred NUTS draws for E_p):
KL(q‖p) (the ELBO's optimum), KL(p‖q) (moment matching), and KL(q‖p) + KL(p‖q), the t → ∞ limit of
the VCD objective L = KL(q‖p) − KL(q^(t)‖p) + KL(q^(t)‖q) (Ruiz & Titsias 2019, eq. 8). For each it
prints E_q[tau] and the distance |E_q − E_NUTS| / sd_NUTS per parameter (constrained), max and mean.
Part 2 (``--vcd``) fits VCD with ``genbayes.vcd.fit`` (AutoNormal, Adam(0.05), 3000 steps, seed 1,
as the test) for several t and reports the same distances of the fitted q and of q^(t).

Measured (shared 2-core box; the test's NUTS reference, 1000 draws, for the distances; ELBO fit by
SGD: max 0.63, mean 0.139):

    exact optimum of           E_q[tau]   max    mean
    KL(q‖p)   (ELBO)             6.06     0.71   0.152
    KL(p‖q)                      4.40     0.21   0.049
    KL(q‖p) + KL(p‖q)  (t → ∞)   7.01     0.99   0.127

    VCD fit, default but t     E_q[tau]   max    mean    (acceptance)
    t = 3 (default)              9.21     1.65   0.392   0.96
    t = 10                       7.41     1.11   0.207   0.93
    t = 20                       6.61     0.87   0.145   0.90
    t = 40                       6.43     0.82   0.124   0.86

So the rule holds at VCD's t → ∞ limit (narrowly on the mean, 0.127 against 0.139) and from some t
between 20 and 40, not at the default t = 3.

Part 1 alone measures distances against its own 20,000 NUTS draws: 0.79 / 0.166, 0.27 / 0.027 and
1.09 / 0.118 for the three optima.

    python benchmarks/bench_vcd_funnel.py          # part 1 (about 30 s)
    python benchmarks/bench_vcd_funnel.py --vcd    # part 1 and 2 (minutes)
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize as so
from numpyro.infer import MCMC, NUTS

from tests.zoo import models as zoo


def nuts_reference(num_samples=20000, seed=0):
    mc = MCMC(NUTS(zoo.eight_schools_noncentered, target_accept_prob=0.95), num_warmup=1000,
              num_samples=num_samples, progress_bar=False)
    mc.run(jax.random.key(seed), zoo.SCHOOLS_SIGMA, zoo.SCHOOLS_Y)
    s = mc.get_samples()
    u = np.column_stack([s["mu"], np.log(s["tau"]), s["theta"]])
    c = np.column_stack([s["mu"], s["tau"], s["theta"]])
    return u, c


def mean_field_optima(u, c, ref=None, num_draws=40000):
    """Brute-force optima of KL(q‖p), KL(p‖q) and their sum over mean-field Gaussians in (mu, log tau, theta)."""
    sig, y = jnp.asarray(zoo.SCHOOLS_SIGMA, float), jnp.asarray(zoo.SCHOOLS_Y, float)
    mp, vp = u.mean(0), u.var(0)
    cm, cs = (c.mean(0), c.std(0)) if ref is None else ref

    def logp(v):  # log p(y, mu, log tau, theta), up to a constant
        mu, lt, th = v[0], v[1], v[2:]
        tau = jnp.exp(lt)
        lp = -0.5 * (mu / 5) ** 2 - jnp.log1p((tau / 5) ** 2) + lt
        return lp + jnp.sum(-0.5 * ((th - mu) / tau) ** 2 - lt) + jnp.sum(-0.5 * ((y - th) / sig) ** 2)

    eps = jax.random.normal(jax.random.key(1), (num_draws, 10))

    def kl_qp(p):  # up to a constant
        return -jnp.sum(p[10:]) - jnp.mean(jax.vmap(logp)(p[:10] + jnp.exp(p[10:]) * eps))

    def kl_pq(p):  # up to a constant
        return jnp.sum(p[10:] + 0.5 * ((mp - p[:10]) ** 2 + vp) / jnp.exp(2 * p[10:]))

    objectives = {"KL(q||p) (ELBO)": kl_qp, "KL(p||q)": kl_pq, "KL(q||p)+KL(p||q) (VCD, t->inf)": lambda p: kl_qp(p) + kl_pq(p)}
    x0 = np.concatenate([mp, 0.5 * np.log(vp)])
    out = {}
    for name, f in objectives.items():
        vg = jax.jit(jax.value_and_grad(f))
        r = so.minimize(lambda p: tuple(np.asarray(a, float) for a in vg(p)), x0, jac=True, method="L-BFGS-B")
        m, s = r.x[:10], np.exp(r.x[10:])
        qmean = m.copy()
        qmean[1] = np.exp(m[1] + s[1] ** 2 / 2)
        d = np.abs(qmean - cm) / cs
        out[name] = d
        print(f"{name:>32}: E_q[tau] {qmean[1]:.2f} (log tau ~ N({m[1]:.2f}, {s[1]:.2f}^2)), theta sd {s[2:].mean():.2f}; "
              f"distance max {d.max():.2f} mean {d.mean():.3f}")
    return out


def vcd_sweep(ts=(3, 10, 20, 40), num_steps=3000):
    import numpyro
    from numpyro.infer import SVI, Predictive
    from numpyro.infer.autoguide import AutoNormal

    from genbayes import vcd as V
    from tests.test_vcd_models import MODELS, _flat, _reference_and_elbo

    name = "eight_schools_centered"
    model, args, _, _, sites, select = MODELS[name]
    m, s, d_elbo = _reference_and_elbo(name)
    print(f"ELBO fit (SGD): distance max {d_elbo.max():.2f} mean {d_elbo.mean():.3f}")
    for t in ts:
        g = AutoNormal(model)
        run = V.fit(SVI(model, g, numpyro.optim.Adam(0.05), loss=V.VCD(num_mcmc_steps=t)), jax.random.key(1), num_steps, *args)
        fq = _flat(Predictive(g, params=run.params, num_samples=4000)(jax.random.key(2), *args), sites, select)
        d = np.abs(fq.mean(0) - m) / s
        _, zt, acc = run.svi.loss.draw(jax.random.key(2), run.params, model, g, 4000, *args)
        dt = np.abs(_flat(zt, sites, select).mean(0) - m) / s
        print(f"VCD t = {t:>2}: E_q[tau] {fq[:, 1].mean():.2f}, fitted q max {d.max():.2f} mean {d.mean():.3f}; "
              f"q^(t) max {dt.max():.2f} mean {dt.mean():.3f}; acceptance {float(np.mean(run.report.accept[num_steps // 2:])):.2f}")
    return m, s


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--vcd", action="store_true")
    a = p.parse_args()
    ref = None
    if a.vcd:
        ref = vcd_sweep()
    jax.config.update("jax_enable_x64", True)
    u, c = nuts_reference()
    mean_field_optima(u, c, ref)
