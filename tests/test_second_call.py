"""No compilation on a second call with same-shaped inputs, for every public entry point (issue 21).

Each case of ``tests/compile_cases.py`` runs once with seed 0 and again with seed 1: other data,
hyperparameters and random key, the same shapes. The second call must reuse every compiled
program (counted with JAX's backend-compilation event, :class:`genbayes._programs.count_compilations`)
and must compute something else (its inputs really were inputs, not constants baked in); and
what it computed must equal the same call made with every cache cleared, so that nothing of the
first call (a hyperparameter, a closure's data) was baked into the reused program.
``benchmarks/compile_counts.py`` prints the counts of both calls.
"""

import warnings

import pytest

from genbayes._programs import clear_program_caches, count_compilations
from tests.compile_cases import CASES, KNOWN_COMPILES, SLOW


def _marks(name):
    marks = [pytest.mark.slow] if name in SLOW else []
    if name in KNOWN_COMPILES:  # strict: passing means it was fixed, and the entry must go
        marks.append(pytest.mark.xfail(strict=True, reason=f"{KNOWN_COMPILES[name]} compilation left on the second call"))
    return marks


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in CASES])
def test_second_call_with_new_values_compiles_nothing(name, x64):
    case = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny sampler settings: ESS/divergence warnings are expected
        with count_compilations() as first:
            out0 = case(0)
        with count_compilations() as second:
            out1 = case(1)
        clear_program_caches()
        fresh = case(1)
    assert second.count == 0, f"{name}: {second.count} compilations on the second call (first: {first.count})"
    assert out0 != out1, f"{name}: the second call returned the first call's value: were the inputs baked in?"
    assert out1 == pytest.approx(fresh, rel=1e-9, abs=1e-12), \
        f"{name}: the reused programs gave {out1!r}, programs built for this call {fresh!r}: something was baked in"
