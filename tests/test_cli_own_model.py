"""`genbayes cv` and `genbayes evidence` on the user's own model file and data file (issue 18, item 1).

The model is written from scratch in the test's folder: a Bayesian linear regression with known noise,
beta ~ N(0, tau^2 I), y | X, beta ~ N(X beta, sigma^2 I), whose evidence y ~ N(0, sigma^2 I + tau^2 X X^T)
and leave-one-out predictives are Gaussian in closed form (computed here with SciPy/NumPy, independently
of genbayes).
"""

import re
import textwrap

import numpy as np
import pytest

from genbayes import _cli_models
from genbayes.cli import UsageError, main

TAU, SIGMA, N = 2.0, 0.5, 20

MODEL_FILE = f'''
import numpy as np
import numpyro
import numpyro.distributions as dist

TAU, SIGMA = {TAU}, {SIGMA}


def model(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, TAU).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("obs", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, SIGMA), obs=y)


def load_data():
    rng = np.random.default_rng(1)
    X = np.column_stack([np.ones({N}), rng.normal(size={N})])
    return {{"X": X, "y": X @ np.array([1.0, -0.5]) + SIGMA * rng.normal(size={N})}}
'''


def _data():
    rng = np.random.default_rng(1)
    X = np.column_stack([np.ones(N), rng.normal(size=N)])
    return X, X @ np.array([1.0, -0.5]) + SIGMA * rng.normal(size=N)


@pytest.fixture
def files(tmp_path):
    """The model file and its data as CSV (intercept column written as integers) and NPZ."""
    (tmp_path / "regression.py").write_text(MODEL_FILE)
    X, y = _data()
    rows = ["X[0],X[1],y"] + [f"1,{float(x1)!r},{float(yi)!r}" for x1, yi in zip(X[:, 1], y)]  # repr: exact float round trip
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    np.savez(tmp_path / "data.npz", X=X, y=y)
    return tmp_path


def _exact_log_evidence(X, y):
    from scipy.stats import multivariate_normal

    return multivariate_normal(np.zeros(len(y)), SIGMA**2 * np.eye(len(y)) + TAU**2 * X @ X.T).logpdf(y)


def _exact_loo(X, y):
    """S_CV(1): the mean over i of log p(y_i | y_-i), each a Gaussian posterior predictive."""
    from scipy.stats import norm

    out = []
    for i in range(len(y)):
        k = np.arange(len(y)) != i
        cov = np.linalg.inv(np.eye(X.shape[1]) / TAU**2 + X[k].T @ X[k] / SIGMA**2)
        mean = cov @ X[k].T @ y[k] / SIGMA**2
        out.append(norm(X[i] @ mean, np.sqrt(SIGMA**2 + X[i] @ cov @ X[i])).logpdf(y[i]))
    return float(np.mean(out))


def _one_error_line(capsys, command):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"genbayes {command}: error:"), err  # one line, no traceback
    return err[0]


# ------------------------------------------------------------------------- the check against closed forms


def test_evidence_and_cv_of_a_model_file_match_the_closed_forms(files, capsys):
    X, y = _data()
    model, csv = f"{files / 'regression.py'}:model", str(files / "data.csv")

    assert main(["evidence", model, "--data", csv, "--methods", "laplace,bridge", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "regression.py:model on" in out and "X (20, 2), y (20,)" in out
    # the demo report's table format: "log Z ± SE" (the value alone when se is 0), error, |error|/SE, valid
    rows = {m.group(1): (float(m.group(2)), float(m.group(3) or 0.0), m.group(4))
            for m in re.finditer(r"^\s*(laplace|bridge)\s+(-?[\d.]+)(?: ± ([\d.e-]+))?\s+-\s+-\s+(yes|no)\s", out, re.M)}
    assert set(rows) == {"laplace", "bridge"}, out
    exact = _exact_log_evidence(X, y)
    # Gaussian posterior: Laplace is exact up to the optimiser's tolerance; bridge within its Monte Carlo error
    assert rows["laplace"][2] == "yes" and abs(rows["laplace"][0] - exact) < 1e-3, (rows, exact)
    log_z, se, valid = rows["bridge"]
    assert valid == "yes" and 0 < se < 0.05 and abs(log_z - exact) < 4 * se + 1e-3, (rows, exact)

    out_csv = files / "loo.csv"
    assert main(["cv", model, "--data", csv, "--p", "1", "--method", "psis", "--x64", "--num-warmup", "300",
                 "--num-samples", "2000", "--num-chains", "2", "--no-progress", "--output", str(out_csv)]) == 0
    import pandas as pd

    row = pd.read_csv(out_csv).iloc[0]
    loo = _exact_loo(X, y)
    assert row["method"] == "psis" and bool(row["valid"]) and row["num_subsets"] == N
    assert 0 < row["se"] < 0.02 and abs(row["value"] - loo) < 4 * row["se"], (row.to_dict(), loo)


# ------------------------------------------------------------------------- the data rules (no compilation)


def test_csv_npz_and_data_function_give_the_same_arguments(files, monkeypatch):
    X, y = _data()
    model = str(files / "regression.py")  # no ':FUNCTION' means ':model'
    from_csv = _cli_models.load(model, str(files / "data.csv"))
    from_npz = _cli_models.load(model, str(files / "data.npz"))
    same_file = _cli_models.load(model, ":load_data")
    other_file = _cli_models.load(model, f"{files / 'regression.py'}:load_data")
    for p in (from_csv, from_npz, same_file, other_file):
        assert p.kwargs == {} and len(p.args) == 2  # bound positionally, in the model's parameter order
        assert p.args[0].dtype == np.float64 and p.args[1].dtype == np.float64
        np.testing.assert_array_equal(p.args[0], X)
        np.testing.assert_array_equal(p.args[1], y)
    # a dotted module:function, importable from the current folder
    pkg = files / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(MODEL_FILE)
    monkeypatch.chdir(files)
    dotted = _cli_models.load("mypkg.models:model", "data.csv")
    assert dotted.model.__module__ == "mypkg.models"
    np.testing.assert_array_equal(dotted.args[0], X)


def test_integer_columns_become_int32_and_mixed_blocks_float64(tmp_path):
    (tmp_path / "m.py").write_text(textwrap.dedent("""
        def model(X, k, y):
            pass
    """))
    (tmp_path / "d.csv").write_text("X_0,X_1,k,y\n1,2.5,3,0\n1,-1,0,1\n")
    p = _cli_models.load(f"{tmp_path / 'm.py'}:model", str(tmp_path / "d.csv"))
    X, k, y = p.args
    assert X.dtype == np.float64 and X.tolist() == [[1.0, 2.5], [1.0, -1.0]]
    assert k.dtype == np.int32 and k.tolist() == [3, 0] and y.dtype == np.int32 and y.tolist() == [0, 1]
    (tmp_path / "e.csv").write_text("X_0,X_1,k,y\n1,2,3,0\n1,-1,0,1\n")  # every X column integer
    assert _cli_models.load(f"{tmp_path / 'm.py'}:model", str(tmp_path / "e.csv")).args[0].dtype == np.int32


def test_editing_the_model_or_the_data_changes_the_fingerprint(files):
    model, csv = str(files / "regression.py"), str(files / "data.csv")
    before = _cli_models.load(model, csv).source_digest
    assert _cli_models.load(model, csv).source_digest == before
    (files / "data.csv").write_text((files / "data.csv").read_text().replace("X[0],X[1],y\n1,", "X[0],X[1],y\n2,"))
    after_data = _cli_models.load(model, csv).source_digest
    (files / "regression.py").write_text(MODEL_FILE.replace("TAU, SIGMA = 2.0", "TAU, SIGMA = 3.0"))
    after_model = _cli_models.load(model, csv).source_digest
    assert len({before, after_data, after_model}) == 3


# ------------------------------------------------------------------------- one-line errors


@pytest.mark.parametrize("command", ["cv", "evidence"])
@pytest.mark.parametrize("model, data, msg", [
    ("missing.py:model", "data.csv", "the file missing.py does not exist"),
    ("regression.py:nope", "data.csv", "has no function 'nope'; its functions are ['load_data', 'model']"),
    ("regression.py:model", "absent.csv", "--data: the file absent.csv does not exist"),
    ("regression.py:model", ":nope", "has no function 'nope'"),
    ("regression.py:model", "extra.csv", "has 'z', which regression.py:model(X, y=None) does not take; the data give "
                                         "columns X[0], X[1], z, y"),
    ("regression.py:model", "nox.csv", "regression.py:model(X, y=None) needs 'X', which --data nox.csv does not "
                                       "give; the data give columns y"),
    ("regression.py:model", "gap.csv", "the columns of 'X' must be numbered 0..2; X[1] (or X_1) is missing"),
    ("regression.py:model", "text.csv", "column 'y' is not numeric (e.g. 'high')"),
    ("regression.py:model", "blank.csv", "column 'y' has an empty or NaN cell (data row 2)"),
    ("regression.py:model", "noy.csv", "no observed sample site"),
    ("regression.py:model", None, "needs 'X': pass --data FILE"),
    ("broken.py:model", "data.csv", "broken.py line 2: SyntaxError"),
    ("no_such_package.models:model", "data.csv", "cannot import module 'no_such_package.models'"),
    ("nonsense", None, "'nonsense' is neither a bundled model"),
])
def test_mistakes_are_one_line_errors(files, monkeypatch, capsys, command, model, data, msg):
    (files / "extra.csv").write_text("X[0],X[1],z,y\n1,0.5,3,1.0\n")
    (files / "nox.csv").write_text("y\n1.0\n")
    (files / "gap.csv").write_text("X[0],X[2],y\n1,0.5,1.0\n")
    (files / "text.csv").write_text("X[0],X[1],y\n1,0.5,high\n")
    (files / "blank.csv").write_text("X[0],X[1],y\n1,0.5,1.0\n1,0.2,\n")
    (files / "noy.csv").write_text("X[0],X[1]\n1,0.5\n")
    (files / "broken.py").write_text("import numpyro\ndef model(:\n")
    monkeypatch.chdir(files)
    assert main([command, model] + (["--data", data] if data else [])) == 2
    assert msg in _one_error_line(capsys, command)


def test_bundled_names_refuse_data_and_own_models_refuse_n(files, monkeypatch, capsys):
    monkeypatch.chdir(files)
    assert main(["evidence", "beta_bernoulli", "--data", "data.csv"]) == 2
    assert "--data is for your own model" in _one_error_line(capsys, "evidence")
    assert main(["cv", "beta_bernoulli", "--data", "data.csv"]) == 2
    assert "--data is for your own model" in _one_error_line(capsys, "cv")
    assert main(["cv", "regression.py", "--data", "data.csv", "--n", "5"]) == 2
    assert "leave --n out" in _one_error_line(capsys, "cv")
    assert main(["cv", "regression.py", "--data", "data.csv", "--p", "21", "--method", "psis"]) == 2
    assert "1..n = 1..20" in _one_error_line(capsys, "cv")  # p checked against the data's 20 units


def test_usage_error_is_the_cli_class():
    # the library raises genbayes.cli.UsageError, which `main` turns into one line and exit code 2
    with pytest.raises(UsageError):
        _cli_models.load("/nonexistent/model.py:model")


def test_resume_file_of_an_own_model_refuses_an_edited_model_and_continues_the_same_one(files, monkeypatch, capsys):
    monkeypatch.chdir(files)
    run = ["cv", "regression.py:model", "--data", "data.csv", "--units", "obs", "--method", "psis", "--x64",
           "--num-warmup", "100", "--num-samples", "200", "--num-chains", "1", "--batch-size", "5", "--no-progress",
           "--resume", "loo.jsonl"]
    assert main(run + ["--max-batches", "1"]) == 3  # 1 of the 4 batches of 5 held-out points saved
    original = (files / "regression.py").read_text()
    (files / "regression.py").write_text(original.replace("TAU, SIGMA = 2.0", "TAU, SIGMA = 3.0"))
    capsys.readouterr()
    assert main(run) == 2
    assert "was written for a different run" in _one_error_line(capsys, "cv")
    (files / "regression.py").write_text(original)
    assert main(run) == 0
    assert "resuming p=1 from loo.jsonl: 1 of 4 batches done" in capsys.readouterr().out
