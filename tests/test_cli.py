"""The `genbayes` command: help, and the demo's conjugate section end to end."""

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


def test_demo_conjugate_section_writes_report(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["demo", "--quick", "--out", str(out), "--sections", "conjugate"]) == 0
    printed = capsys.readouterr().out
    assert "Exact conjugate families" in printed and "NormalGammaRegression (radiata pine)" in printed
    report = (out / "report.md").read_text()
    assert "| family |" in report and "-310.128" in report  # the radiata pine exact evidence
    assert (out / "conjugate_posteriors.png").stat().st_size > 10_000
    html = (out / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and "Checks: passed" in html


def test_unknown_section_is_an_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--sections", "nope"]) == 2
    assert "unknown section" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: genbayes" in capsys.readouterr().out
