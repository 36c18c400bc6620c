"""The `genbayes` command: help and argument errors (the demo end to end: tests/test_demo_report.py)."""

import shutil
import subprocess
import sys

import pytest

from genbayes.cli import main


def test_help_from_any_directory(tmp_path):
    exe = shutil.which("genbayes")
    cmd = [exe] if exe else [sys.executable, "-m", "genbayes.cli"]
    for args in (["--help"], ["demo", "--help"]):
        out = subprocess.run(cmd + args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "demo" in out.stdout
    assert "--quick" in out.stdout and "--out" in out.stdout


def test_unknown_section_is_an_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--sections", "nope"]) == 2
    assert "unknown section" in capsys.readouterr().err


def test_bad_jobs_is_an_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--jobs", "0"]) == 2
    assert "--jobs must be a positive integer" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: genbayes" in capsys.readouterr().out


def test_import_and_demo_parser_do_not_load_jax():
    # genbayes loads its submodules on first use (PEP 562): `import genbayes` and the `genbayes demo`
    # parent process stay free of JAX, while every public name still resolves
    code = (
        "import sys, genbayes, genbayes.cli as c; c.build_parser(subcommands=False); "
        "print(sorted(m for m in ('jax', 'numpyro', 'optax') if m in sys.modules)); "
        "print(all(getattr(genbayes, n) is not None for n in genbayes.__all__)); "
        "print('jax' in sys.modules, set(genbayes.__all__) <= set(dir(genbayes)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["[]", "True", "True True"]


def test_unknown_attribute_is_an_attribute_error():
    import genbayes

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        genbayes.nope  # noqa: B018


def test_fast_compile_flags_keep_what_the_user_set(monkeypatch):
    from genbayes import cli
    from genbayes.cli import FAST_COMPILE_FLAGS, fast_compile_xla_flags

    monkeypatch.setattr(cli, "_jaxlib_release", lambda: (0, 10))  # the release every flag was checked on
    assert fast_compile_xla_flags("") == " ".join(f"{k}={v}" for k, v in FAST_COMPILE_FLAGS.items())
    user = "--xla_force_host_platform_device_count=4 --xla_cpu_use_fusion_emitters=true"
    out = fast_compile_xla_flags(user)
    assert out.startswith(user) and out.count("--xla_cpu_use_fusion_emitters") == 1
    assert "--xla_backend_optimization_level=0" in out


def test_fast_compile_flags_skip_an_unchecked_jaxlib(monkeypatch):
    # XLA aborts on a flag it does not know, so a jaxlib the emitter switch was not checked on gets only -O0
    from genbayes import cli

    monkeypatch.setattr(cli, "_jaxlib_release", lambda: (0, 99))
    assert cli.fast_compile_xla_flags("") == "--xla_backend_optimization_level=0"
    monkeypatch.setattr(cli, "_jaxlib_release", lambda: (0, 10))
    assert "--xla_cpu_use_fusion_emitters=false" in cli.fast_compile_xla_flags("")


def test_fast_compile_flags_only_where_jax_runs_on_the_cpu(monkeypatch):
    import importlib.metadata

    from genbayes import cli

    class Dist:
        def __init__(self, name):
            self.metadata = {"Name": name}

    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [Dist("jax"), Dist("numpyro")])
    assert cli._cpu_only()
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [Dist("jax"), Dist("jax_cuda12_plugin")])
    assert not cli._cpu_only()
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert cli._cpu_only()


@pytest.mark.parametrize("methods, msg", [
    ("", "--methods is empty"),
    ("smc,bogus", "unknown method(s) ['bogus']"),
])
def test_evidence_methods_errors_are_one_line(capsys, methods, msg):
    assert main(["evidence", "beta_bernoulli", "--methods", methods]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_every_option_of_every_command_has_help_text():
    import argparse

    from genbayes.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) >= {"demo", "cv", "evidence"}
    missing = [f"genbayes {name} {'/'.join(a.option_strings) or a.dest}"
               for name, sp in sub.choices.items() for a in sp._actions if not a.help]
    assert not missing, missing
    demo_help = sub.choices["demo"].format_help()
    from genbayes.demos import SECTIONS

    assert all(s in demo_help for s in SECTIONS), demo_help


def _cv_run(env):
    cmd = [sys.executable, "-m", "genbayes.cli", "cv", "normal_known_variance", "--n", "8", "--p", "1", "--method",
           "exact", "--no-progress"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_compilation_cache_is_reused_by_the_next_run(tmp_path):
    """The command keeps compiled programs in GENBAYES_COMPILATION_CACHE: a second identical run compiles
    nothing new (it adds no cache entry) and prints the same result."""
    import os

    folder = tmp_path / "cache"
    env = dict(os.environ, GENBAYES_COMPILATION_CACHE=str(folder), JAX_PLATFORMS="cpu")
    env.pop("JAX_ENABLE_COMPILATION_CACHE", None)  # set to false by an in-process main() of another test
    first = _cv_run(env)
    entries = sorted(p.name for p in folder.iterdir() if not p.name.endswith("-atime"))
    assert len(entries) >= 3, entries  # the data simulation, the held-out programs, ...
    second = _cv_run(env)
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith("-atime")) == entries
    assert first.splitlines()[-1].split("[")[0] == second.splitlines()[-1].split("[")[0]  # all but the timing


@pytest.mark.parametrize("how", ["option", "environment"])
def test_compilation_cache_can_be_turned_off(tmp_path, how):
    import os

    folder = tmp_path / "cache"
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(folder), XDG_CACHE_HOME=str(tmp_path))
    env["GENBAYES_COMPILATION_CACHE"] = "off" if how == "environment" else ""
    cmd = [sys.executable, "-m", "genbayes.cli", "cv", "normal_known_variance", "--n", "8", "--p", "1", "--method",
           "exact", "--no-progress"] + (["--no-compilation-cache"] if how == "option" else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not folder.exists() and not (tmp_path / "genbayes").exists()


def test_compilation_cache_folder_precedence():
    from genbayes.cli import compilation_cache_dir

    assert compilation_cache_dir({"GENBAYES_COMPILATION_CACHE": "OFF", "JAX_COMPILATION_CACHE_DIR": "/j"}) is None
    assert compilation_cache_dir({"GENBAYES_COMPILATION_CACHE": "/g", "JAX_COMPILATION_CACHE_DIR": "/j"}) == "/g"
    assert compilation_cache_dir({"JAX_COMPILATION_CACHE_DIR": "/j", "XDG_CACHE_HOME": "/x"}) == "/j"
    assert compilation_cache_dir({"XDG_CACHE_HOME": "/x"}) == "/x/genbayes/jax-compilation-cache"


def test_demo_sections_get_their_own_xla_flags():
    """Run-bound sections keep XLA's defaults; the others compile fast; flags the user set win for all."""
    from genbayes.cli import _RUN_BOUND_SECTIONS, _section_xla_flags, fast_compile_xla_flags
    from genbayes.demos import SECTIONS

    assert _RUN_BOUND_SECTIONS < set(SECTIONS)
    for name in SECTIONS:
        expected = "" if name in _RUN_BOUND_SECTIONS else fast_compile_xla_flags("")
        assert _section_xla_flags(name, "") == expected
        user = "--xla_backend_optimization_level=2"
        assert "--xla_backend_optimization_level=2" in _section_xla_flags(name, user)
        assert "--xla_backend_optimization_level=0" not in _section_xla_flags(name, user)
