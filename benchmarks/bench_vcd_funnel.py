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

Part 3 (``--rules``): could VCD choose t per SVI step from its own particles (issue 16, option a), staying
stateless? At the default fit, 2000 chains of VCD's own kernel: the chains forget their start fast (the
population max over coordinates of |corr(x0_i, x_t,i)| in the guide's whitened coordinates is 0.06 at
t = 3; corr(f(z0), f(z_t)) 0.12 at t = 3), but q^(t) keeps drifting: the largest |E x_t,i|, that of log tau
(downward), is 0.64 guide sd at t = 3, 1.59 at 12, 2.11 at 32, 2.33 at 64, and E f(z_t) rises from -30.44
(t = 3) to -27.24 (12), -25.16 (32), -23.87 (64), E f(z0) = -33.93. The slow mode is a nonlinear one (the
spread of the thetas, which sets tau), so a forgetting criterion (correlation, or the squared jump, per
coordinate) says t = 3 is enough. Rules computed from 8 particles are ruled by noise (sd of f(z_2t) - f(z_t) per chain 4-10 nats): realised t
(10/50/90 % over 250 groups of 8) for "stop when the increment of the mean f over a doubling of t is below
2 se" 6/6/12; "below 0.1 nat" 6/24/48 (mean 28.6); max_i |corr_K(x0_i, x_t,i)| < 0.5: 2/24/64 (mean 31.1,
though the population value is below 0.1 from t = 3: the long runs are noise); corr_K(f(z0), f(z_t)) < 0.5:
1/1/3. None is a rule that runs about 40 steps on this model.

Part 4 (``--gradient``): no defect in how the improved particles enter the gradient. At the default fit,
2000 particles per key, 16 keys: d L_3 / d loc(log tau): surrogate gradient +0.110 (se 0.073), central
finite difference of the VCD estimate with common random numbers +0.107 (se 0.062), difference +0.003
(se 0.069); d / d loc(mu): -0.003 against -0.003 (difference 0.000, se 0.018). The fit sits at the
stationary point of the t = 3 objective; the distance is that objective's, not the estimator's.

Part 5 (``--models``): the four models of tests/test_vcd_models.py and the rho = 0.95 Gaussian of
tests/test_vcd.py at t = 3 (default) and t = 40 (the t at which the centred model passes), distance max /
mean, fit as in the test (ELBO: masked 0.41 / 0.198, two-site 0.75 / 0.239, binomial 0.53 / 0.205):

    model                      t = 3            t = 40
    masked                     0.34 / 0.132     5.75 / 1.265  (fails)
    two-site regression        0.10 / 0.038     0.10 / 0.040
    binomial hierarchical      0.77 / 0.161     0.50 / 0.063
    rho = 0.95 Gaussian sds    0.545, 0.565     0.542, 0.547  (optimum 0.559, tolerance 0.03)

t = 40 breaks the masked model: ``obs=y, obs_mask=...`` makes ``y_unobserved`` a latent of all 20 entries,
and the 15 observed ones have a flat (improper) density, along which 40 HMC steps diffuse far; the guide's
scales there reach about 60, the VCD estimate about 360 nats per step, and the noise reaches a, b, sigma
(fitted sds 0.36, 0.37, 0.43 against NUTS 0.13, 0.22, 0.11; sigma 5.75 posterior sd off, E_q 1.13 against
0.50). Already t = 10 fails it (1.19 / 0.340; sigma 1.19 sd off, E_q 0.63), while the centred model needs
t of about 40 (t = 20: 0.87 / 0.145 against the ELBO's 0.139). So no fixed t passes all four models. Step
times (``--models --timing-only``: VCD against Trace_ELBO with 8 particles, alternated, best of 3 rounds),
measured at a load average of 15-20 on the 2-core machine, so only their order is telling: VCD/ELBO step
time at t = 3 / t = 40: masked 1.3 / 6.9, two-site 2.8 / 21.1, binomial 1.6 / 4.6, centred eight schools
2.6 / 10.3 (budget 1.5 (1 + 5 t): 24 / 302).

    python benchmarks/bench_vcd_funnel.py          # part 1 (about 30 s)
    python benchmarks/bench_vcd_funnel.py --vcd    # part 1 and 2 (minutes)
    python benchmarks/bench_vcd_funnel.py --rules  # part 3 (minutes)
    python benchmarks/bench_vcd_funnel.py --gradient  # part 4 (minutes)
    python benchmarks/bench_vcd_funnel.py --models --ts 3 40  # part 5 (tens of minutes; --names, --timing-only)
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
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


def _white(z, params):
    """Draws (constrained, per site) in the AutoNormal guide's whitened unconstrained coordinates x = (u - loc) / scale."""
    cols = []
    for n in sorted(k[: -len("_auto_loc")] for k in params if k.endswith("_auto_loc")):
        v = np.asarray(z[n])
        if n == "tau":  # positive: the unconstrained coordinate is log tau
            v = np.log(v)
        cols.append(((v - np.asarray(params[n + "_auto_loc"])) / np.asarray(params[n + "_auto_scale"])).reshape(len(v), -1))
    return np.concatenate(cols, 1)


def stopping_rules(num_chains=2000, group=8, ts=(0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64), num_steps=3000):
    """Could VCD choose t per SVI step from its own particles (issue 16, option a)? Evidence at the default fit.

    At the parameters of the default VCD fit (t = 3) of the centred model, ``num_chains`` chains of VCD's own
    HMC kernel (guide-preconditioned, defaults) are run for each t in ``ts`` with one key; JAX's
    ``random.split`` is prefix-consistent (checked below), so the chains for a smaller t are the first steps
    of those for a larger t. Printed per t: the population max over coordinates of |corr(x0_i, x_t,i)| in the
    guide's whitened coordinates, the largest |E x_t,i| (drift of q^(t) away from q), and E f(z_t),
    f = log p(y, z) - log q(z) (L_VCD = E f(z_t) - E f(z0)). Then the chains are cut into groups of ``group``
    (VCD's 8 particles) and three stopping rules computable from one step's particles are applied:
    forgetting (max_i |corr_K(x0_i, x_t,i)| < 0.5, or corr_K(f(z0), f(z_t)) < 0.5) and the objective's increment over a doubling of t
    (mean_K [f(z_2t) - f(z_t)] below 2 standard errors, or below 0.1 nats), t doubling from 3 to 48.
    """
    import numpyro
    from numpyro.infer import SVI
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.infer.util import log_density

    from genbayes import vcd as V
    from tests.test_vcd_models import MODELS

    k = jax.random.key(0)
    assert np.array_equal(np.asarray(jax.random.key_data(jax.random.split(k, 3))),
                          np.asarray(jax.random.key_data(jax.random.split(k, 5)))[:3]), "split is not prefix-consistent"
    model, args, *_ = MODELS["eight_schools_centered"]
    g = AutoNormal(model)
    params = V.fit(SVI(model, g, numpyro.optim.Adam(0.05), loss=V.VCD()), jax.random.key(1), num_steps, *args).params

    @jax.jit
    def f_of(z):
        one = lambda zi: log_density(model, args, {}, zi)[0] - log_density(g, args, {}, {**params, **zi})[0]  # noqa: E731
        return jax.vmap(one)(z)

    F, X = {}, {}
    for t in ts:
        z0, zt, _ = V.VCD(num_mcmc_steps=max(t, 1)).draw(jax.random.key(3), params, model, g, num_chains, *args)
        z = z0 if t == 0 else zt
        F[t], X[t] = np.asarray(f_of(z)), _white(z, params)
    print(f"default VCD fit of the centred model, {num_chains} chains of its HMC kernel:")
    print(f"{'t':>4} {'max|corr(x0,xt)|':>17} {'max|E x_t|':>11} {'E f(z_t)':>9} {'corr(f(z0),f(zt))':>18}")
    for t in ts[1:]:
        c = np.array([np.corrcoef(X[0][:, i], X[t][:, i])[0, 1] for i in range(X[0].shape[1])])
        print(f"{t:>4} {np.abs(c).max():>17.2f} {np.abs(X[t].mean(0)).max():>11.2f} {F[t].mean():>9.2f} "
              f"{np.corrcoef(F[0], F[t])[0, 1]:>18.2f}")
    G = num_chains // group
    grp = lambda a: a[: G * group].reshape(G, group, *a.shape[1:])  # noqa: E731
    rules = {
        "increment < 2 se": lambda d: d.mean(1) < 2 * d.std(1, ddof=1) / np.sqrt(group),
        "increment < 0.1 nat": lambda d: d.mean(1) < 0.1,
    }
    for name, test in rules.items():
        T, done = np.full(G, 48), np.zeros(G, bool)
        for t in (3, 6, 12, 24):
            stop = test(grp(F[2 * t] - F[t])) & ~done
            T[stop], done = 2 * t, done | stop
        print(f"rule {name:>22} ({group} particles): realised t 10/50/90% {np.percentile(T, [10, 50, 90])}, mean {T.mean():.1f}")
    T, done = np.full(G, ts[-1]), np.zeros(G, bool)
    for t in ts[1:]:
        a, b = grp(X[0]), grp(X[t])
        a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
        c = np.abs((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))).max(1)
        stop = (c < 0.5) & ~done
        T[stop], done = t, done | stop
    print(f"rule {'max|corr| < 0.5':>22} ({group} particles): realised t 10/50/90% {np.percentile(T, [10, 50, 90])}, mean {T.mean():.1f}")
    T, done = np.full(G, ts[-1]), np.zeros(G, bool)
    for t in ts[1:]:
        a, b = grp(F[0]), grp(F[t])
        a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
        stop = ((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1)) < 0.5) & ~done
        T[stop], done = t, done | stop
    print(f"rule {'corr(f0, ft) < 0.5':>22} ({group} particles): realised t 10/50/90% {np.percentile(T, [10, 50, 90])}, mean {T.mean():.1f}")


def gradient_check(num_particles=2000, num_keys=16, h=0.02, num_steps=3000):
    """Option (c): is the default fit on the centred model the optimum of the t = 3 objective, or a gradient defect?

    At the default VCD fit (AutoNormal, t = 3), for the guide's loc of log tau and of mu: the mean of the
    surrogate's gradient (the estimator of Ruiz & Titsias 2019, eq. 12, with the default leave-one-out
    control variate and clip) against the central finite difference of the VCD estimate
    E f(z_t) - E f(z0) with common random numbers (same keys), ``num_particles`` particles per key. The
    kernel acts on u / S (S the guide's scale), so it does not move with a loc: the difference is the
    derivative of the t = 3 objective itself. Agreement within 4 standard errors with both near zero
    means the fit sits at that objective's stationary point (no gradient defect).
    """
    import numpyro
    from numpyro.infer import SVI
    from numpyro.infer.autoguide import AutoNormal

    from genbayes import vcd as V
    from tests.test_vcd_models import MODELS

    model, args, *_ = MODELS["eight_schools_centered"]
    g = AutoNormal(model)
    params = V.fit(SVI(model, g, numpyro.optim.Adam(0.05), loss=V.VCD()), jax.random.key(1), num_steps, *args).params
    loss = V.VCD(num_particles=num_particles)
    wg = loss.wrap_guide(g)
    state = SVI(model, wg, numpyro.optim.Adam(0.0), loss=loss).init(jax.random.key(0), *args).mutable_state[V.STATE_SITE]

    def out(p, key):
        return loss.loss_with_mutable_state(key, {**p, V.STATE_SITE: state}, model, wg, *args)

    names = ("tau_auto_loc", "mu_auto_loc")

    @jax.jit
    def per_key(key):
        grad = jax.grad(lambda p: out(p, key)["loss"])(params)
        fd = [(out({**params, n: params[n] + h}, key)["mutable_state"][V.STATE_SITE]["vcd"]
               - out({**params, n: params[n] - h}, key)["mutable_state"][V.STATE_SITE]["vcd"]) / (2 * h) for n in names]
        return jnp.stack([grad[n] for n in names]), jnp.stack(fd)

    grads, fds = map(np.asarray, zip(*[per_key(k) for k in jax.random.split(jax.random.key(7), num_keys)]))
    for i, n in enumerate(names):
        se = lambda a: a.std(ddof=1) / np.sqrt(len(a))  # noqa: E731
        d = grads[:, i] - fds[:, i]
        print(f"d L_3 / d {n}: surrogate gradient {grads[:, i].mean():+.3f} (se {se(grads[:, i]):.3f}), finite difference "
              f"{fds[:, i].mean():+.3f} (se {se(fds[:, i]):.3f}); difference {d.mean():+.3f} (se {se(d):.3f})")


def _step_times(svis, args, n=30, rounds=3):
    """Seconds per compiled SVI step of each SVI in ``svis``, timed in alternation, the minimum of ``rounds`` rounds
    (on a shared machine the minimum is the least disturbed measurement)."""
    import time

    steps, states = [], []
    for svi in svis:
        step = jax.jit(lambda s, svi=svi: svi.update(s, *args))
        s, _ = step(svi.init(jax.random.key(0), *args))
        jax.block_until_ready(s)
        steps.append(step)
        states.append(s)
    best = [np.inf] * len(svis)
    for _ in range(rounds):
        for i, step in enumerate(steps):
            s = states[i]
            t0 = time.perf_counter()
            for _ in range(n):
                s, loss = step(s)
            jax.block_until_ready(loss)
            best[i] = min(best[i], (time.perf_counter() - t0) / n)
    return best


def models_by_t(ts=(3, 40), names=None, num_steps=3000, fits=True):
    """The rule of tests/test_vcd_models.py for VCD defaults but t, on all four models, with the step time.

    Per model and t: distance from NUTS (max / mean over parameters, posterior sd) of the ``fit`` (as in the
    test), the mean acceptance of the second half, and the time of one compiled SVI step against
    Trace_ELBO with the same 8 particles (same process, same model). Then the rho = 0.95 Gaussian of
    tests/test_vcd.py (plain idiom, AutoDiagonalNormal, Adam(0.01), 3000 steps, seed 0): fitted sds against
    the symmetrised-KL optimum 0.559. ``fits=False``: the step times only.
    """
    import numpyro
    from numpyro.infer import SVI, Predictive, Trace_ELBO
    from numpyro.infer.autoguide import AutoDiagonalNormal, AutoNormal

    from genbayes import vcd as V
    from genbayes.models import toy2d
    from tests.test_vcd_models import MODELS, _flat, _reference_and_elbo

    for name in names or MODELS:
        model, args, _, _, sites, select = MODELS[name]
        opt = numpyro.optim.Adam(0.05)
        elbo8 = SVI(model, AutoNormal(model), opt, Trace_ELBO(num_particles=8))
        if not fits:
            for t in ts:
                base, tv = _step_times([elbo8, SVI(model, AutoNormal(model), opt, loss=V.VCD(num_mcmc_steps=t))], args)
                print(f"{name}: VCD t = {t:>2}: {tv * 1e6:.0f} us/step = {tv / base:.1f} Trace_ELBO(8) steps "
                      f"(budget 1.5 (1 + 5 t) = {1.5 * (1 + 5 * t):.0f})", flush=True)
            continue
        m, s, d_elbo = _reference_and_elbo(name)
        print(f"{name}: ELBO distance max {d_elbo.max():.2f} mean {d_elbo.mean():.3f}")
        for t in ts:
            g = AutoNormal(model)
            svi = SVI(model, g, opt, loss=V.VCD(num_mcmc_steps=t))
            run = V.fit(svi, jax.random.key(1), num_steps, *args)
            q = _flat(Predictive(g, params=run.params, num_samples=4000)(jax.random.key(2), *args), sites, select)
            d = np.abs(q.mean(0) - m) / s
            base, tv = _step_times([elbo8, SVI(model, AutoNormal(model), opt, loss=V.VCD(num_mcmc_steps=t))], args)
            ok = d.max() <= 2 and d.mean() <= d_elbo.mean()
            print(f"  VCD t = {t:>2}: distance max {d.max():.2f} mean {d.mean():.3f} ({'meets' if ok else 'fails'} the rule), "
                  f"acceptance {float(np.mean(np.asarray(run.report.accept)[num_steps // 2:])):.2f}, "
                  f"{tv * 1e6:.0f} us/step = {tv / base:.1f} Trace_ELBO(8) steps (budget 1.5 (1 + 5 t) = {1.5 * (1 + 5 * t):.0f})",
                  flush=True)

    def gauss():
        numpyro.sample("z", dist.MultivariateNormal(0.0, toy2d.GAUSSIAN_COV))

    for t in ts if fits else ():
        svi = SVI(gauss, AutoDiagonalNormal(gauss), numpyro.optim.Adam(0.01), loss=V.VCD(num_mcmc_steps=t))
        sd = np.asarray(svi.run(jax.random.key(0), num_steps, progress_bar=False).params["auto_scale"])
        print(f"rho = 0.95 Gaussian, VCD t = {t:>2}: sds {np.round(sd, 3)} (symmetrised-KL optimum 0.559, test tolerance 0.03)",
              flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--vcd", action="store_true")
    p.add_argument("--rules", action="store_true", help="stopping rules for an adaptive t (option a)")
    p.add_argument("--models", action="store_true", help="all four models and the Gaussian at each --ts")
    p.add_argument("--gradient", action="store_true", help="surrogate gradient against finite differences at the default fit")
    p.add_argument("--ts", type=int, nargs="+", default=[3, 40])
    p.add_argument("--names", nargs="+", default=None)
    p.add_argument("--timing-only", action="store_true", help="with --models: step times, no fits")
    a = p.parse_args()
    if a.rules:
        stopping_rules()
    if a.gradient:
        gradient_check()
    if a.models:
        models_by_t(tuple(a.ts), a.names, fits=not a.timing_only)
    if a.rules or a.models or a.gradient:
        raise SystemExit
    ref = None
    if a.vcd:
        ref = vcd_sweep()
    jax.config.update("jax_enable_x64", True)
    u, c = nuts_reference()
    mean_field_optima(u, c, ref)
