"""Shared pieces of the benchmarks: a loop baseline that compiles once, and alternating timing.

Loop baselines. NumPyro 0.22.0's ``MCMC(..., progress_bar=False)`` recompiles its sampler on every
``.run()`` (one backend compilation per call, seconds on a CPU, even with ``jit_model_args=True``;
pyro-ppl/numpyro#2171, fixed upstream after 0.22.0). A baseline that loops over ``MCMC.run`` so
measures compilation, not sampling. :func:`compiled_nuts_loop` is the loop a careful user writes
instead: one NUTS chain from NumPyro's functional API (``hmc(..., algo="NUTS")``) under one
``lax.scan``, jitted over the model arguments, called once per weight vector / temperature / fold.

Timing. :func:`compare` calls each side once cold (compile included) and then in alternating warm
rounds, counting XLA compilations with :class:`genbayes._programs.count_compilations`, and prints
cold time, XLA compile time, warm time and compilations for every side, with ratios taken round by
round (the machine is shared: ratios of things run beside each other, not absolute times, are the
measurement).
"""

from __future__ import annotations

import time

import jax
import numpy as np
from numpyro.infer.hmc import hmc
from numpyro.infer.util import initialize_model

from genbayes._programs import count_compilations


def compiled_nuts_loop(model, num_warmup, num_samples, **nuts_kwargs):
    """One jitted NUTS chain ``chain(key, *model_args) -> (samples, extras)``; compiles once per shape.

    NumPyro's initialisation, warm-up adaptation and sampling are one program (``initialize_model``
    with ``dynamic_args=True``, ``hmc(potential_fn_gen=..., algo="NUTS")``, one ``lax.scan`` over
    warm-up and draws, as ``gb.batched`` does per chain). ``nuts_kwargs`` go to the kernel's
    ``init_kernel`` (``dense_mass``, ``target_accept_prob``, ``max_tree_depth``, ...). ``extras`` holds
    the kept draws' ``num_steps`` and ``diverging``. Pass the model arguments as arrays so that new
    values reuse the program.
    """

    def chain(key, *args):
        k_init, k_run = jax.random.split(key)
        info = initialize_model(k_init, model, model_args=args, dynamic_args=True)
        init_kernel, sample_kernel = hmc(potential_fn_gen=info.potential_fn, algo="NUTS")
        state = init_kernel(info.param_info, num_warmup, model_args=args, rng_key=k_run, **nuts_kwargs)

        def step(s, _):
            s = sample_kernel(s, model_args=args)
            return s, (s.z, s.num_steps, s.diverging)

        _, (zs, steps, div) = jax.lax.scan(step, state, None, length=num_warmup + num_samples)
        zs = jax.tree_util.tree_map(lambda v: v[num_warmup:], zs)
        samples = jax.vmap(info.postprocess_fn(*args))(zs)
        return samples, {"num_steps": steps[num_warmup:], "diverging": div[num_warmup:]}

    return jax.jit(chain)


def _call(fn):
    t0 = time.perf_counter()
    with count_compilations() as c:
        out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0, c


def compare(sides, rounds=3, title=None):
    """Time ``sides`` (name -> zero-argument callable; the first is "ours") cold, then ``rounds`` warm.

    Each side's first call is its cold time (XLA compile time and compilation count reported
    beside it); then ``rounds`` rounds call every side once, the order alternating between rounds.
    Ratios (other side / ours, so > 1 means ours is faster) are taken within each round; the
    median and range over rounds are printed. Returns ``{name: {"out", "cold", "compile_s",
    "compiles", "warm", "warm_compiles"}}`` (``warm`` a list over rounds).
    """
    names = list(sides)
    res = {}
    for name in names:
        out, t, c = _call(sides[name])
        res[name] = {"out": out, "cold": t, "compile_s": c.seconds, "compiles": c.count, "warm": [], "warm_compiles": 0}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            _, t, c = _call(sides[name])
            res[name]["warm"].append(t)
            res[name]["warm_compiles"] += c.count
    if title:
        print(title)
    w = max(len(n) for n in names)
    print(f"  {'':<{w}} {'cold s':>8} {'XLA compile s':>14} {'compilations':>13} {'warm s (median)':>16} "
          f"{'compilations (warm, all rounds)':>32}")
    for name in names:
        s = res[name]
        print(f"  {name:<{w}} {s['cold']:8.2f} {s['compile_s']:14.2f} {s['compiles']:13d} "
              f"{np.median(s['warm']):16.3f} {s['warm_compiles']:32d}")
    ours = names[0]
    for name in names[1:]:
        warm = np.array(res[name]["warm"]) / np.array(res[ours]["warm"])
        print(f"  ratio {name} / {ours}: cold {res[name]['cold'] / res[ours]['cold']:.2f}x, warm median "
              f"{np.median(warm):.2f}x (range {warm.min():.2f}-{warm.max():.2f} over {rounds} alternating rounds)")
    return res
