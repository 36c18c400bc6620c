"""gb.use_cpu_devices (the opt-in that splits the CPU into JAX devices) and the genbayes command's default."""

import os
import subprocess
import sys

import jax
import pytest

import genbayes as gb
from genbayes import cli


def test_use_cpu_devices_before_jax_starts_gives_that_many_devices():
    code = ("import genbayes as gb, jax; n = gb.use_cpu_devices(3); "
            "print(n, len(jax.devices()), gb.batched.run.__name__)")
    env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES" and k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "3", "run"]


def test_use_cpu_devices_after_jax_started_is_an_error_naming_the_fix():
    have = len(jax.devices("cpu"))
    assert gb.use_cpu_devices(have) == have  # asking for what is there is fine
    with pytest.raises(RuntimeError, match=f"already started with {have}.*JAX_NUM_CPU_DEVICES={have + 1}"):
        gb.use_cpu_devices(have + 1)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="`count` must be a positive integer"):
            gb.use_cpu_devices(bad)


@pytest.fixture
def no_jax_yet(monkeypatch):
    """The command's view before JAX is imported (as when run as `genbayes ...`)."""
    monkeypatch.delitem(sys.modules, "jax")
    for k in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS", cli.CPU_DEVICES_ENV):
        monkeypatch.setenv(k, "")  # records the value to restore (delenv alone would not, when unset)
        monkeypatch.delenv(k)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    return monkeypatch


def test_command_uses_one_device_per_core_by_default(no_jax_yet):
    cli._use_cpu_devices("evidence", None)
    assert os.environ["JAX_NUM_CPU_DEVICES"] == str(os.cpu_count())


@pytest.mark.parametrize("setting, expected", [("1", "1"), ("3", "3")])
def test_command_device_count_can_be_chosen(no_jax_yet, setting, expected):
    no_jax_yet.setenv(cli.CPU_DEVICES_ENV, setting)
    cli._use_cpu_devices("cv", None)
    assert os.environ["JAX_NUM_CPU_DEVICES"] == expected


def test_command_leaves_alone_what_the_user_gave_jax_and_the_parallel_demo(no_jax_yet):
    no_jax_yet.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    cli._use_cpu_devices("evidence", None)
    assert "JAX_NUM_CPU_DEVICES" not in os.environ
    no_jax_yet.delenv("XLA_FLAGS")
    cli._use_cpu_devices("demo", None)  # several worker processes already use the cores
    assert "JAX_NUM_CPU_DEVICES" not in os.environ
    cli._use_cpu_devices("demo", 1)
    assert os.environ["JAX_NUM_CPU_DEVICES"] == str(os.cpu_count())


def test_command_rejects_a_bad_device_count(no_jax_yet):
    no_jax_yet.setenv(cli.CPU_DEVICES_ENV, "two")
    with pytest.raises(cli.UsageError, match="GENBAYES_CPU_DEVICES must be a positive integer"):
        cli._use_cpu_devices("evidence", None)
