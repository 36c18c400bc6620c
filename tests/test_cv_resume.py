"""`genbayes cv --resume` and the CLI's output paths never lose or damage a user's file (issue 17, item 1)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from genbayes import cv
from genbayes.cli import main

# 12 batches of 50 random held-out sets, exact values: each batch is fast, so the runs are cheap
RUN = ["cv", "normal_known_variance", "--n", "14", "--p", "3", "--method", "exact", "--num-subsets", "600",
       "--batch-size", "50", "--x64", "--no-progress"]


def _run(*extra):
    return main(RUN + [str(e) for e in extra])


def _csv(path):
    import pandas as pd

    return pd.read_csv(path).iloc[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run's CSV row, and a resume file holding its first 4 batches (read-only copies are made)."""
    d = tmp_path_factory.mktemp("ref")
    assert _run("--output", d / "full.csv") == 0
    assert _run("--resume", d / "partial.jsonl", "--max-batches", "4") == 3
    return _csv(d / "full.csv"), d / "partial.jsonl"


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genbayes cv: error:"), err  # one line, no traceback
    return err[0]


# ---------------------------------------------------------------- foreign files, links


@pytest.mark.parametrize("content", [b"a\nb", b"one line of notes\n", b"", b"[1, 2, 3]\n{\"batch\": 0}\n"])
def test_foreign_file_is_refused_and_untouched(tmp_path, capsys, content):
    f = tmp_path / "notes.txt"
    f.write_bytes(content)
    assert _run("--resume", f) == 2
    assert "not a genbayes cv resume file" in _error_line(capsys)
    assert f.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # not even a lock file beside it


@pytest.mark.parametrize("garbage", ["binary", "deep_json_header", "deep_json_record"])
def test_garbage_is_refused_clearly(tmp_path, capsys, reference, garbage):
    f = tmp_path / "run.jsonl"
    if garbage == "binary":
        f.write_bytes(bytes(range(256)) * 10)
        expect = "not UTF-8"
    elif garbage == "deep_json_header":
        f.write_text("[" * 200_000 + "]" * 200_000 + "\n")
        expect = "not a genbayes header"
    else:
        head = reference[1].read_text().split("\n")[0]
        f.write_text(head + "\n" + "[" * 200_000 + "]" * 200_000 + "\n")
        expect = "line 2: not a JSON record"
    before = f.read_bytes()
    assert _run("--resume", f) == 2
    assert expect in _error_line(capsys)
    assert f.read_bytes() == before


def test_symlink_is_not_followed(tmp_path, capsys, reference):
    target = tmp_path / "elsewhere.jsonl"
    shutil.copy(reference[1], target)
    before = target.read_bytes()
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert _run("--resume", link) == 2
    assert "symbolic link" in _error_line(capsys)
    assert target.read_bytes() == before and link.is_symlink()


# ---------------------------------------------------------------- edited records


def _edit(lines, i, **changes):
    rec = json.loads(lines[i])
    rec.update(changes)
    lines[i] = json.dumps(rec)
    return lines


@pytest.mark.parametrize("edit, message", [
    (lambda L: _edit(L, 2, batch=99), "line 3: batch index 99 is not an integer in 0..11"),
    (lambda L: _edit(L, 2, batch=1e308), "line 3: batch index 1e+308 is not an integer"),
    (lambda L: _edit(L, 3, count=49), "line 4: count 49 of batch 2, which has 50"),
    (lambda L: _edit(L, 1, sum=float("nan")), "line 2: 'sum' is nan, not a finite number"),
    (lambda L: _edit(L, 2, sum=json.loads(L[2])["sum"] + 1e-6), "line 3: its checksum does not match"),
    (lambda L: L[:3] + [L[2]] + L[3:], "line 4: batch 1 again (first on line 3)"),
    (lambda L: L[:2] + [""] + L[2:], "line 3: an empty line"),
    (lambda L: _edit(L, 1, values=json.loads(L[1])["values"][:-1]), "line 2: 'values' is not a list of 50"),
])
def test_edited_records_are_refused_naming_the_line(tmp_path, capsys, reference, edit, message):
    f = tmp_path / "run.jsonl"
    lines = reference[1].read_text().rstrip("\n").split("\n")
    assert len(lines) == 5  # header + 4 batches
    f.write_text("\n".join(edit(lines)) + "\n")
    before = f.read_bytes()
    assert _run("--resume", f) == 2
    assert message in _error_line(capsys)
    assert f.read_bytes() == before


def test_other_run_or_other_data_is_refused(tmp_path, capsys, reference):
    f = tmp_path / "run.jsonl"
    shutil.copy(reference[1], f)
    assert _run("--resume", f, "--seed", "3") == 2  # other data (and settings)
    assert "different run" in _error_line(capsys)
    assert main([a if a != "14" else "15" for a in RUN] + ["--resume", str(f)]) == 2
    assert "different run" in _error_line(capsys)
    assert f.read_bytes() == reference[1].read_bytes()


def test_resume_completes_to_the_uninterrupted_result(tmp_path, reference):
    f = tmp_path / "run.jsonl"
    shutil.copy(reference[1], f)
    assert _run("--resume", f, "--output", tmp_path / "res.csv") == 0
    row, full = _csv(tmp_path / "res.csv"), reference[0]
    assert row["value"] == full["value"] and row["se"] == full["se"]
    recs = [json.loads(x) for x in f.read_text().splitlines()[1:]]
    assert sorted(r["batch"] for r in recs) == list(range(12))


# ---------------------------------------------------------------- Ctrl-C


def test_ctrl_c_gives_one_line_and_a_file_that_resumes(tmp_path, capsys, monkeypatch, reference):
    f = tmp_path / "run.jsonl"
    real = cv._Runner.batch
    calls = []

    def batch(self, b):
        calls.append(b)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, b)

    monkeypatch.setattr(cv._Runner, "batch", batch)
    assert _run("--resume", f) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"genbayes cv: interrupted; 4 of 12 batches of p=3 are saved in {f}; run the same command "
                   "again to continue."]
    monkeypatch.setattr(cv._Runner, "batch", real)
    assert _run("--resume", f, "--output", tmp_path / "res.csv") == 0
    row = _csv(tmp_path / "res.csv")
    assert row["value"] == reference[0]["value"] and row["se"] == reference[0]["se"]


# ---------------------------------------------------------------- other processes: a lock, and SIGKILL anywhere


def _start(f, pause=None, out=None):
    env = dict(os.environ)
    env.pop(cv._TEST_PAUSE_ENV, None)
    if pause:
        env[cv._TEST_PAUSE_ENV] = pause
    cmd = [sys.executable, "-m", "genbayes.cli", *RUN, "--resume", str(f)] + (["--output", str(out)] if out else [])
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_pause(proc, stage, timeout=120):
    t0 = time.time()
    for line in proc.stderr:  # the hook prints "PAUSE <stage>" and sleeps
        if line.strip() == f"PAUSE {stage}":
            return
        assert time.time() - t0 < timeout
    raise AssertionError(f"the process ended before pausing at {stage}: rc {proc.wait()}")


def _kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    proc.stdout.close()


def test_lock_and_sigkill_anywhere_resume_to_the_identical_result(tmp_path, capsys, reference):
    f = tmp_path / "run.jsonl"
    # 1. killed in the middle of appending a record (half a line written, fsynced) ...
    proc = _start(f, pause="append:120")
    _wait_for_pause(proc, "append")
    # ... while it holds the file, a second process stops with a clear message and changes nothing
    before = f.read_bytes()
    assert _run("--resume", f) == 2
    assert "in use by another genbayes process" in _error_line(capsys)
    assert f.read_bytes() == before
    _kill(proc)
    text = f.read_text()
    assert not text.endswith("\n")  # the cut record is there

    # 2. the next run repairs the file by a rewrite: killed inside it (temporary file written, not yet renamed)
    proc = _start(f, pause="rewrite:120")
    _wait_for_pause(proc, "rewrite")
    _kill(proc)
    assert f.read_text() == text  # the file is the old one, whole, not truncated

    # 3. killed at random moments while batches are computed and saved (seeded, so reproducible): each
    #    batch ends with a 0.05 s pause that announces itself; the kill comes a random 0-0.3 s after the
    #    k-th announcement, i.e. in a pause, in the next batch's computation or in its append
    rng = np.random.default_rng(17)
    for _ in range(3):
        proc = _start(f, pause="batch:0.05")
        for _ in range(int(rng.integers(1, 3))):
            _wait_for_pause(proc, "batch")
        time.sleep(rng.uniform(0.0, 0.3))
        _kill(proc)
        json.loads(f.read_text().split("\n")[0])  # the header is always whole
    assert f.read_text().count("\n") >= 4  # the kills came while batches were being saved

    # 4. the rest, uninterrupted: identical to a run that was never killed
    assert _run("--resume", f, "--output", tmp_path / "res.csv") == 0
    row = _csv(tmp_path / "res.csv")
    assert row["value"] == reference[0]["value"] and row["se"] == reference[0]["se"]
    recs = [json.loads(x) for x in f.read_text().splitlines()[1:]]
    assert sorted(r["batch"] for r in recs) == list(range(12))  # each batch once


# ---------------------------------------------------------------- output paths and CLI errors


def test_output_refuses_existing_files_and_links_without_force(tmp_path, capsys):
    out = tmp_path / "out.csv"
    out.write_text("mine\n")
    assert _run("--output", out) == 2
    assert "already exists" in _error_line(capsys)
    assert out.read_text() == "mine\n"
    outside = tmp_path / "outside.txt"
    outside.write_text("keep\n")
    link = tmp_path / "link.csv"
    link.symlink_to(outside)
    assert _run("--output", link) == 2
    assert "symbolic link" in _error_line(capsys)
    # --force replaces the link itself with the CSV; the file it pointed at is never written
    assert _run("--output", link, "--force") == 0
    assert not link.is_symlink() and "value" in link.read_text() and outside.read_text() == "keep\n"


def test_demo_out_refuses_existing_report_and_links(tmp_path, capsys):
    d = tmp_path / "report"
    d.mkdir()
    (d / "report.md").write_text("old report\n")
    assert main(["demo", "--out", str(d), "--sections", "cv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds report files ['report.md']" in err[0] and "--force" in err[0]
    assert (d / "report.md").read_text() == "old report\n"
    (d / "report.md").unlink()
    outside = tmp_path / "precious.png"
    outside.write_bytes(b"png")
    (d / "cv_identity.png").symlink_to(outside)
    assert main(["demo", "--out", str(d), "--sections", "cv"]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert outside.read_bytes() == b"png"


def test_report_files_replace_links_never_follow_them(tmp_path):
    from genbayes.demos import Section
    from genbayes.report import write_report

    outside = tmp_path / "outside.md"
    outside.write_text("keep")
    d = tmp_path / "r"
    d.mkdir()
    (d / "report.md").symlink_to(outside)
    write_report(d, [Section("S", "t", {"a": [1]})], quick=True, seed=0)
    assert outside.read_text() == "keep" and not (d / "report.md").is_symlink()
    assert "## S" in (d / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--num-subsets", "0"], "--num-subsets must be an integer >= 1"),
    (["--num-chains", "0"], "--num-chains must be an integer >= 1"),
    (["--batch-size", "-5"], "--batch-size must be an integer >= 1"),
    (["--p", "50"], "--p must lie in 1..n = 1..40"),
    (["--memory-budget", "1K"], "needs at least"),
])
def test_cli_user_errors_are_one_line(capsys, args, message):
    assert main(["cv", "normal_known_variance", "--method", "exact", "--no-progress", *args]) == 2
    assert message in _error_line(capsys)


def test_logistic_regression_n_beyond_the_data_is_an_error(capsys):
    assert main(["cv", "logistic_regression", "--n", "100000"]) == 2
    assert "more than the 569 rows" in _error_line(capsys)


def test_demo_force_replaces_links_never_their_targets(tmp_path):
    from genbayes import cli

    d = tmp_path / "report"
    d.mkdir()
    outside = tmp_path / "precious.png"
    outside.write_bytes(b"png")
    (d / "cv_identity.png").symlink_to(outside)
    (d / "notes.txt").symlink_to(outside)  # not a report file name: left alone
    cli._check_demo_out(d, force=True)  # --force: no refusal ...
    cli._unlink_report_links(d)  # ... and the links among report names go before any section writes
    assert sorted(os.listdir(d)) == ["notes.txt"] and outside.read_bytes() == b"png"


def test_a_computed_nan_batch_resumes_but_an_edited_one_does_not(tmp_path):
    # a batch whose held-out densities were NaN is written with a valid checksum and read back as it was
    # (the result is then marked invalid); the same NaN typed in by hand is refused
    import jax

    from genbayes.cli import UsageError

    plan = cv._Plan(14, 3, 100, False, jax.random.PRNGKey(0), 50)
    config = {"run": 1}
    digest = cv._run_digest(config, (np.arange(14.0),))
    f = tmp_path / "run.jsonl"
    store = cv._ResumeFile(f, config, digest, plan, {"values": lambda m: m})
    store.lock()
    assert store.read() == {}
    rec = {"batch": 0, "count": 50, "sum": float("nan"), "sumsq": float("nan"), "indep_mc_var": 0.0,
           "values": [float("nan")] + [0.0] * 49}
    store.append(rec)
    got = store.read()
    assert list(got) == [0] and np.isnan(got[0]["sum"]) and got[0]["values"][1:] == [0.0] * 49
    lines = f.read_text().splitlines()
    lines[1] = lines[1].replace('"indep_mc_var": 0.0', '"indep_mc_var": NaN')
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match="line 2: .* not a finite number"):
        store.read()
    store.unlock()
