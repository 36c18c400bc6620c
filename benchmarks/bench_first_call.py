"""Benchmark: the first call of ``gb.batched.run`` (NUTS) in a fresh process, with and without marking the sampler state per chain.

Under ``vmap``, a loop whose carry starts out the same for every chain (NumPyro's ``init_kernel``
returns constant ``accept_prob``, ``num_steps``, a shared initial point, ...) is batched twice
over by JAX: its batching rule re-batches the whole body, and every loop nested in it, until the
batched parts stop changing. ``gb.batched`` marks that state per chain from the start
(``genbayes.batched._nuts_state_per_chain``); the baseline, run beside it, is the same program
with the marking switched off. Each call runs in a
fresh process (a first call: trace, lower, compile, run), the two arms alternate, and the draws
of the two arms are compared in float64 (they should be identical).

Printed per kernel: median first-call seconds of each arm and their ratio, the XLA compilations
of each arm's call, the primitives the batching traced (``BatchTrace.process_primitive`` calls, a count that does not depend on the
machine's load), and the largest difference between the two arms' draws.

    PYTHONPATH=. python benchmarks/bench_first_call.py [--rounds R] [--kernels nuts dense]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

KERNELS = {
    "nuts": {"kernel": "nuts"},
    "dense": {"kernel": "nuts", "dense_mass": True},
}


def child(kernel: str, marked: bool) -> None:
    """One first call, in this fresh process: prints a JSON line."""
    import time

    import jax
    import numpy as np
    import numpyro
    import numpyro.distributions as dist
    from jax._src.interpreters import batching

    numpyro.enable_x64()
    import genbayes as gb
    from genbayes._programs import count_compilations

    if not marked:  # the baseline: the same program without the marking
        gb.batched._nuts_state_per_chain = lambda state, key: state
    binds = [0]
    process_primitive = batching.BatchTrace.process_primitive

    def counted(self, *a, **k):
        binds[0] += 1
        return process_primitive(self, *a, **k)

    batching.BatchTrace.process_primitive = counted

    def model(X, y=None):
        b = numpyro.sample("b", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
        s = numpyro.sample("s", dist.HalfNormal(1.0))
        with numpyro.plate("n", X.shape[0]):
            numpyro.sample("y", dist.Normal(X @ b, s), obs=y)

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    y = X @ np.ones(3) + rng.normal(size=50)
    t0 = time.perf_counter()
    with count_compilations() as c:
        r = gb.batched.run(model, np.ones((8, 50)), X, y=y, num_warmup=100, num_samples=200,
                           rng_key=jax.random.PRNGKey(0), progress=False, **KERNELS[kernel])
        b = np.asarray(r.samples["b"])
    print(json.dumps({"seconds": time.perf_counter() - t0, "binds": binds[0], "compilations": c.count,
                      "draws": b.ravel()[:: max(1, b.size // 500)].tolist()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=list(KERNELS))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1] == "marked")
        return
    import numpy as np

    env = dict(os.environ, JAX_PLATFORMS="cpu")
    print(f"first call of gb.batched.run in a fresh process: 8 posteriors, 100 + 200 iterations, regression with "
          f"3 coefficients and a noise scale, float64; {args.rounds} alternating rounds; {os.cpu_count()} CPUs")
    print(f"{'kernel':>8} {'marked s':>9} {'unmarked s':>11} {'ratio':>6} {'compilations':>13} {'binds marked':>13} {'unmarked':>9} {'max |diff| of draws':>20}")
    for kernel in args.kernels:
        res: dict[str, list[dict]] = {"marked": [], "unmarked": []}
        for _ in range(args.rounds):
            for arm in ("unmarked", "marked"):
                out = subprocess.run([sys.executable, __file__, "--child", kernel, arm], env=env, capture_output=True,
                                     text=True, check=True).stdout
                res[arm].append(json.loads(out.strip().splitlines()[-1]))
        sec = {a: statistics.median(r["seconds"] for r in rs) for a, rs in res.items()}
        diff = max(float(np.max(np.abs(np.subtract(m["draws"], u["draws"])))) for m, u in zip(res["marked"], res["unmarked"]))
        print(f"{kernel:>8} {sec['marked']:9.2f} {sec['unmarked']:11.2f} {sec['unmarked'] / sec['marked']:5.2f}x "
              f"{res['marked'][0]['compilations']:>6d} / {res['unmarked'][0]['compilations']:<4d} {res['marked'][0]['binds']:13d} {res['unmarked'][0]['binds']:9d} {diff:20.3g}", flush=True)


if __name__ == "__main__":
    main()
