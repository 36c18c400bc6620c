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
