"""Time per SVI step of VCD against Trace_ELBO (same model, guide, optimiser), and the VAE acceptance.

Part 1 (speed): breast-cancer logistic regression (31 parameters, 455 points), AutoDiagonalNormal,
t = 1, 3, 5 HMC steps with L = 5 leapfrog steps, 8 particles (VCD's default) for both. Prints the
ratio VCD/ELBO and the issue's budget 1.5 × (1 + t·L). Part 2 (``--vae``): digits VAE trained by ELBO and by VCD with equal architecture
and number of steps; test log-likelihood by importance sampling with 1,000 samples per image.

Measured on the shared 2-core box (stateless VCD defaults, 8 particles): VCD/ELBO step time 2.98,
4.63, 6.39 at t = 1, 3, 5 (budgets 9, 24, 39); digits VAE (3000 steps, VCD after 500 ELBO warm-up
steps from ``fit``): test log-likelihood −16.196 (VCD, t = 5) against −16.788 (ELBO) nats/image,
final acceptance 0.88.

    python benchmarks/bench_vcd.py            # speed only
    python benchmarks/bench_vcd.py --vae      # speed + VAE acceptance (minutes)
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpyro
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoDiagonalNormal

from genbayes import vcd as V
from genbayes.models import logistic_regression as lr
from genbayes.models import vae


def _time_steps(svi, state, args, n):
    step = jax.jit(lambda s: svi.update(s, *args))
    s, _ = step(state)
    jax.block_until_ready(s)
    t0 = time.perf_counter()
    for _ in range(n):
        s, loss = step(s)
    jax.block_until_ready(loss)
    return (time.perf_counter() - t0) / n


def speed(n=200, num_particles=8):
    """Per-step time of VCD (defaults but t) against Trace_ELBO with the same number of particles.

    The issue's budget is 1.5 (1 + t·L) ELBO steps: an ELBO step costs about one gradient per
    particle, VCD about 1 + t·L (the leapfrog gradients) plus a few log densities per particle, and
    per step (shared by the particles) the preconditioner and 10 power-iteration Hessian-vector
    products for the step-size cap.
    """
    X, y = lr.breast_cancer(num_features=None)
    args = (jnp.asarray(X), jnp.asarray(y))
    opt = numpyro.optim.Adam(1e-3)
    svi = SVI(lr.model, AutoDiagonalNormal(lr.model), opt, Trace_ELBO(num_particles=num_particles))
    base = _time_steps(svi, svi.init(jax.random.key(0), *args), args, n)
    print(f"Trace_ELBO({num_particles} particles): {base * 1e6:.0f} us/step")
    print(f"{'t':>3} {'L':>3} {'VCD us/step':>12} {'ratio':>7} {'budget 1.5(1+tL)':>17}")
    out = {}
    for t in (1, 3, 5):
        loss = V.VCD(num_mcmc_steps=t, num_leapfrog=5, num_particles=num_particles)
        svi = SVI(lr.model, AutoDiagonalNormal(lr.model), opt, loss=loss)
        tv = _time_steps(svi, svi.init(jax.random.key(0), *args), args, n)
        out[t] = tv / base
        print(f"{t:>3} {5:>3} {tv * 1e6:>12.0f} {tv / base:>7.2f} {1.5 * (1 + 5 * t):>17.1f}")
    return out


def vae_acceptance(steps=3000, hidden=(200, 200), batch=100, seed=0):
    data = vae.load_digits()
    x, xt = jnp.asarray(data.x_train), jnp.asarray(data.x_test)
    out = {}
    for method in ("elbo", "vcd"):
        net = vae.VAE(latent_dim=10, hidden=hidden, rng_key=jax.random.key(seed))
        opt = numpyro.optim.Adam(1e-3)
        t0 = time.perf_counter()
        if method == "elbo":
            svi = SVI(net.model, net.guide, opt, Trace_ELBO())
            params = svi.run(jax.random.key(seed + 1), steps, x, subsample_size=batch, progress_bar=False).params
        else:
            loss = V.VCD(num_mcmc_steps=5, num_leapfrog=5)
            svi = SVI(net.model, net.guide, opt, loss=loss)
            # defaults: ELBO warm-up (min(500, steps // 5) steps) then `steps` VCD steps
            run = V.fit(svi, jax.random.key(seed + 1), steps, x, subsample_size=batch)
            params = run.params
            print(f"VCD final acceptance {float(run.report.accept[-100:].mean()):.3f}, "
                  f"step size {float(run.report.step_size[-1]):.4f}")
        secs = time.perf_counter() - t0
        ll = net.test_log_likelihood(params, xt, num_samples=1000, rng_key=jax.random.key(99), chunk_size=100)
        out[method] = float(ll.mean())
        print(f"{method}: {steps} steps in {secs:.1f} s, test log-likelihood {out[method]:.3f} nats/image "
              f"(IS, 1000 samples, {xt.shape[0]} images)")
    print(f"VCD − ELBO: {out['vcd'] - out['elbo']:+.3f} nats/image")
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--vae", action="store_true")
    p.add_argument("--steps", type=int, default=3000)
    a = p.parse_args()
    speed()
    if a.vae:
        vae_acceptance(steps=a.steps)
