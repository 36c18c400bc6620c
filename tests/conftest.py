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


@pytest.fixture
def chromium():
    """A headless Chromium WebDriver (Debian's ``chromium`` and ``chromium-driver``), closed afterwards.

    Skips with the reason when the browser is missing; with ``GENBAYES_REQUIRE_BROWSER=1`` (set by
    ``.ci/run``) a missing browser fails the test instead.
    """
    import shutil

    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        msg = "headless browser check needs Chromium and ChromeDriver (apt install chromium chromium-driver)"
        if os.environ.get("GENBAYES_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (in the test extra)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        yield drv
    finally:
        drv.quit()
