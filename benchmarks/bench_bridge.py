"""Benchmark: bridge sampling of the radiata pine evidence from existing NUTS draws.

Williams' radiata pine with the Friel & Wyse (2012) Normal–Gamma prior (covariate "density"): the
exact log evidence is closed form (gb.conjugate.NormalGammaRegression.log_evidence). The posterior is
drawn once by numpyro.infer.MCMC (NUTS, 4 chains x 1000 draws, vectorized chains); then
gb.bridge.bridge_sampling on those 4000 draws, cold (first call: compilation included) and warm
(later calls with new proposal keys), for both proposals. Printed: log Z, error against exact,
|error|/SE, the spread of the warm estimates over proposal keys against the reported SE, the XLA
compilations of each call, and the ratios warm/cold and warm/NUTS (the run that produced the draws).
Finally the log_evidence(method="bridge") path (genbayes.batched NUTS + bridge in one call).

Usage: python benchmarks/bench_bridge.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import numpyro
from numpyro.infer import MCMC, NUTS

from genbayes._programs import count_compilations
from genbayes.bridge import _bridge_evidence, bridge_sampling
from genbayes.evidence import _evidence_units
from genbayes.models import radiata_pine


def main(quick: bool):
    numpyro.enable_x64()
    X, y = radiata_pine.design("density")
    fam = radiata_pine.prior()
    exact = float(fam.log_evidence(X, y))
    num_chains, num_samples = 4, 1000

    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(fam.model), num_warmup=1000, num_samples=num_samples, num_chains=num_chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), X, y)
    draws = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
    t_nuts = time.perf_counter() - t0
    print(f"radiata pine (density): exact log Z = {exact:.4f}")
    print(f"NUTS (numpyro.infer.MCMC, {num_chains} chains x {num_samples} draws after 1000 warm-up, vectorized): "
          f"{t_nuts:.2f} s including compilation")

    reps = 5 if quick else 20
    print(f"\n{'proposal':>8} {'call':>5} {'log Z':>11} {'error':>9} {'SE':>8} {'|err|/SE':>9} {'iters':>5} "
          f"{'ESS':>6} {'compiles':>8} {'time s':>8}")
    for proposal in ("normal", "warp3"):
        rows = []
        for r in range(reps + 1):
            with count_compilations() as c:
                t0 = time.perf_counter()
                ev = bridge_sampling(fam, X, y, samples=draws, rng_key=jax.random.PRNGKey(r), proposal=proposal)
                t = time.perf_counter() - t0
            rows.append((ev, t, c.count))
            if r < 2:
                err = ev.log_z - exact
                print(f"{proposal:>8} {'cold' if r == 0 else 'warm':>5} {ev.log_z:11.4f} {err:9.4f} {ev.se:8.4f} "
                      f"{abs(err) / ev.se:9.2f} {ev.diagnostics['iterations']:5d} {ev.diagnostics['ess']:6.0f} "
                      f"{c.count:8d} {t:8.3f}{'' if ev.valid else '  INVALID'}")
        t_cold = rows[0][1]
        t_warm = float(np.median([t for _, t, _ in rows[1:]]))
        est = np.array([ev.log_z for ev, _, _ in rows[1:]])
        se = float(np.mean([ev.se for ev, _, _ in rows[1:]]))
        print(f"{proposal:>8}: warm median {t_warm:.3f} s over {reps} keys (compilations after the first call: "
              f"{sum(c for _, _, c in rows[1:])}); warm/cold = {t_warm / t_cold:.3f}, warm/NUTS = {t_warm / t_nuts:.4f}; "
              f"mean error {est.mean() - exact:+.4f}, sd over proposal keys {est.std(ddof=1):.4f} "
              f"(the posterior draws are fixed, so only the proposal part of the mean SE {se:.4f} varies)")

    units = _evidence_units(fam.model, (X, y), {})
    nw, ns = (500, 1000) if quick else (1000, 2000)
    t0 = time.perf_counter()
    lz, se, diag = _bridge_evidence(fam.model, (X, y), {}, jax.random.PRNGKey(1), units=units, num_warmup=nw,
                                    num_samples=ns, num_chains=4)
    t = time.perf_counter() - t0
    print(f"\nlog_evidence path (_bridge_evidence: gb.batched NUTS 4 chains x {nw}+{ns}, then bridge): "
          f"log Z {lz:.4f}, error {lz - exact:+.4f}, SE {se:.4f}, |err|/SE {abs(lz - exact) / se:.2f}, "
          f"{t:.2f} s{'' if not diag.get('invalid') else '  INVALID: ' + '; '.join(diag['invalid'])}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer warm repetitions and a shorter NUTS run")
    main(p.parse_args().quick)
