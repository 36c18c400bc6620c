import os

import jax
import numpyro
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture], derandomize=True
)
settings.register_profile("dev", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def x64():
    """Run a test in float64 (identity checks), restoring the previous setting afterwards.

    It holds for all examples of a hypothesis test (nothing to reset between them), hence the
    suppressed `function_scoped_fixture` health check in the profiles.
    """
    prev = jax.config.jax_enable_x64
    # JAX 0.10: after switching jax_enable_x64, a jitted program compiled in the other mode can be
    # reused with arguments of the old dtype and fail with RuntimeProgramInputMismatch (seen on the
    # zoo matrix after float32 tests on the same xdist worker); start each mode with fresh caches.
    jax.clear_caches()
    numpyro.enable_x64(True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", prev)
        jax.clear_caches()
