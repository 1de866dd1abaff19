"""A hostile and careless user's probe of rv2dist: the second-moment measures and their
options (API, command line, job files), mixed metric lists, results and figures of
every measure, ``record`` and ``run`` with odd inputs, numerics at the edges of
floating point, and resources.

    nice -n 19 python benchmarks/probe.py            # every case
    nice -n 19 python benchmarks/probe.py -k alpha   # the cases whose id holds 'alpha'

One line per case: id, area, verdict, and what was seen; then a count per verdict.
Verdicts: ``ok``; ``wrong-number`` (a value that differs from the dense float64
reference, or a bad value accepted with a result); ``data-loss`` (output replaced or
left half-written); ``traceback`` (an exception that is not a message to the user);
``unclear-error`` (an error or warning that does not name the value at fault, or one
where a result was due).  Every value is compared against the dense float64 formulas
of tests/reference.py and tests/reference_measures.py (or an invariance with an exact
answer), never against rv2dist itself.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import reference as RV
import reference_measures as R

import rv2dist

BLOCK = ("cca", "cca_r2", "svcca", "pwcca", "procrustes", "procrustes_distance", "shape_metric", "linreg", "ridge")
SECOND = BLOCK + ("rsa", "rsa_euclidean")
VERDICTS = ("ok", "wrong-number", "data-loss", "traceback", "unclear-error")
# exceptions that are messages to the user (the command line turns them into exit 2)
MESSAGES = (ValueError, TypeError, KeyError, OSError)
CASES = []


class Verdict(Exception):
    """A case's verdict other than ok, with what was seen."""

    def __init__(self, verdict, note):
        super().__init__(note)
        self.verdict, self.note = verdict, note


def case(area, name=None):
    def register(function):
        CASES.append((name or function.__name__, area, function))
        return function
    return register


# --- data ---------------------------------------------------------------------------

def rng(seed=0):
    return np.random.default_rng(seed)


def related(n=200, p=12, q=9, seed=0):
    """Two layers sharing a few directions, plus noise."""
    g = rng(seed)
    z = g.normal(size=(n, 4))
    x = z @ g.normal(size=(4, p)) + 0.7 * g.normal(size=(n, p))
    y = z @ g.normal(size=(4, q)) + 0.9 * g.normal(size=(n, q))
    return x, y


# --- references ---------------------------------------------------------------------

def _rank(x, rcond):
    return R.basis(x, rcond).shape[1]


def reference(metric, x, y, *, alpha=1.0, ridge_lambda=0.1, svcca_variance=0.99, rcond=R.RCOND, center=True):
    """The dense float64 value of ``metric`` between x and y (NaN where a layer has no
    variance)."""
    x, y = np.asarray(x, np.float64).reshape(len(x), -1), np.asarray(y, np.float64).reshape(len(y), -1)
    dead = not np.any(R.centred(x)) or not np.any(R.centred(y))
    if metric in ("rv2", "rv", "cka", "cka_debiased", "rv2_null"):
        with np.errstate(all="ignore"):
            return RV.dense_metric(x, y, metric, center)
    if dead:
        return np.nan
    if metric in ("cca", "cca_r2"):
        rho = R.canonical_correlations(x, y, rcond)
        return rho.mean() if metric == "cca" else (rho**2).mean()
    if metric == "svcca":
        return R.canonical_correlations(R._leading(x, svcca_variance), R._leading(y, svcca_variance), rcond).mean()
    if metric == "pwcca":
        return R.pwcca(x, y)
    if metric == "procrustes":
        return R.procrustes(x, y)
    if metric == "procrustes_distance":
        return R.procrustes_distance(x, y)
    if metric == "shape_metric":
        if alpha == 1.0:
            return math.acos(min(1.0, R.procrustes(x, y)))
        if alpha == 0.0:
            rho = R.canonical_correlations(x, y, rcond)
            return math.acos(min(1.0, rho.sum() / math.sqrt(_rank(x, rcond) * _rank(y, rcond))))
        return R.netrep_shape(x, y, alpha)
    if metric == "linreg":
        return R.linreg(x, y, rcond)
    if metric == "ridge":
        return R.ridge(x, y, ridge_lambda)
    if metric == "rsa":
        return R.rsa(x, y, center)
    if metric == "rsa_euclidean":
        return R.rsa_euclidean(x, y)
    raise ValueError(metric)


def expected_matrix(metric, a, b, **options):
    return np.array([[reference(metric, x, y, **options) for y in b.values()] for x in a.values()])


def close(got, want, rtol=1e-8, atol=1e-10):
    got, want = np.asarray(got, float), np.asarray(want, float)
    return got.shape == want.shape and bool(np.all(np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)))


def check_values(result, metrics, a, b, *, rtol=1e-8, atol=1e-10, **options):
    """Every cell of every metric of ``result`` against the reference; a Verdict
    naming the worst cell otherwise."""
    wrong = []
    for metric in metrics:
        got = np.asarray(result[metric] if hasattr(result, "data_vars") else result, float)
        want = expected_matrix(metric, a, b, **options)
        # distances from arccos and sqrt near 0 magnify rounding (docs/measures.md)
        tol = max(atol, 1e-6) if metric in ("shape_metric", "procrustes_distance") else atol
        if not close(got, want, rtol, tol):
            wrong.append(f"{metric}: {np.round(got.ravel()[:4], 6).tolist()} != {np.round(want.ravel()[:4], 6).tolist()}")
    if wrong:
        raise Verdict("wrong-number", "; ".join(wrong))


# --- running a call -------------------------------------------------------------------

def quietly(call):
    """``call()`` with its warnings recorded: (value, [warnings])."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        value = call()
    return value, seen


def _own(warning):
    """Warnings that are messages: rv2dist's categories and plain UserWarnings (which
    rv2dist warns at the caller's line); numpy's RuntimeWarnings and other libraries'
    own categories are not."""
    module = warning.category.__module__
    return module.startswith("rv2dist") or (module == "builtins" and not issubclass(warning.category, RuntimeWarning))


def raw_warnings(seen):
    """numpy's and other libraries' own warnings that reached the user."""
    return [f"{w.category.__name__}: {w.message}" for w in seen
            if not _own(w) and not issubclass(w.category, (DeprecationWarning, FutureWarning))]


def computes(call, check=None, *, allow_raw=False):
    """A call that must give a result; ``check(result, warnings)`` judges it."""
    try:
        result, seen = quietly(call)
    except MESSAGES as error:
        raise Verdict("unclear-error", f"refused a valid call: {type(error).__name__}: {error}") from None
    except Verdict:
        raise
    except Exception as error:  # noqa: BLE001 - the probe classifies whatever comes
        raise Verdict("traceback", f"{type(error).__name__}: {error}") from None
    raw = raw_warnings(seen)
    if check is not None:
        check(result, seen)
    if raw and not allow_raw:
        raise Verdict("unclear-error", f"right value, but raw warnings: {raw[:2]}")
    return result


def refuses(call, *needles, kinds=MESSAGES):
    """A call that must fail with a message naming every one of ``needles``."""
    try:
        quietly(call)
    except kinds as error:
        text = str(error)
        missing = [needle for needle in needles if needle.lower() not in text.lower()]
        if missing:
            raise Verdict("unclear-error", f"message lacks {missing}: {type(error).__name__}: {text[:200]}") from None
        return text
    except Exception as error:  # noqa: BLE001 - the probe classifies whatever comes
        raise Verdict("traceback", f"{type(error).__name__}: {str(error)[:200]}") from None
    raise Verdict("wrong-number", "accepted without an error")


_CLUSTER = None


def _scheduler():
    global _CLUSTER
    if _CLUSTER is None:
        from distributed import LocalCluster

        _CLUSTER = LocalCluster(n_workers=1, threads_per_worker=2, host="127.0.0.1", dashboard_address=None,
                                silence_logs=logging.CRITICAL)
    return _CLUSTER.scheduler_address


def cli(*args, env=None):
    """``rv2dist ARGS`` in this process on the probe's cluster: (status, stdout, stderr)."""
    from rv2dist import cli as command

    out, err = io.StringIO(), io.StringIO()
    saved = {key: os.environ.get(key) for key in ("DASK_SCHEDULER_ADDRESS", *(env or {}))}
    os.environ["DASK_SCHEDULER_ADDRESS"] = _scheduler()
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("default")
            try:
                status = command.main([str(arg) for arg in args])
            except SystemExit as exit:
                status = exit.code if isinstance(exit.code, int) else 2
            except Exception:  # noqa: BLE001 - a traceback a real process would print
                traceback.print_exc(file=err)
                status = "traceback"
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    return status, out.getvalue(), err.getvalue()


def cli_process(*args, env=None):
    """``rv2dist ARGS`` in a process of its own: (status, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "rv2dist", *map(str, args)], capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    return done.returncode, done.stdout, done.stderr


def cli_refuses(*args, needles=(), absent=(), process=False, env=None, accepted="wrong-number"):
    """A command that must exit 2 naming ``needles``, leaving none of ``absent``;
    ``accepted`` is the verdict when it succeeds instead."""
    status, out, err = (cli_process if process else cli)(*args, env=env)
    if status == 0:
        raise Verdict(accepted, f"exit 0: {out.strip()[:200]}")
    left = [path for path in absent if os.path.lexists(path)]
    if any(not path.is_dir() or any(path.iterdir()) for path in map(Path, left)):
        raise Verdict("data-loss", f"exit {status}, left {list(map(str, left))}")
    if status == "traceback" or "Traceback" in err:
        raise Verdict("traceback", err.strip().splitlines()[-1][:200])
    if left:
        raise Verdict("unclear-error", f"exit {status}, an empty folder left: {list(map(str, left))}; "
                                       f"{err.strip()[-150:]}")
    if status != 2:
        raise Verdict("unclear-error", f"exit {status}: {err.strip()[:200]}")
    missing = [needle for needle in needles if needle.lower() not in err.lower()]
    if missing:
        raise Verdict("unclear-error", f"message lacks {missing}: {err.strip()[:200]}")
    return err


def cli_works(*args, env=None):
    status, out, err = cli(*args, env=env)
    if status == "traceback" or "Traceback" in err:
        raise Verdict("traceback", err.strip().splitlines()[-1][:200])
    if status != 0:
        raise Verdict("unclear-error", f"exit {status}: {err.strip()[:300]}")
    return out, err


# --- scratch folders and stores ---------------------------------------------------------

# made at the first case that writes (worker processes import this script too)
_SCRATCH = []
_COUNTER = [0]


def folder(name="case") -> Path:
    if not _SCRATCH:
        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="rv2dist-probe-")))
    _COUNTER[0] += 1
    path = _SCRATCH[0] / f"{_COUNTER[0]:03d}-{name}"
    path.mkdir()
    return path


def store(path, layers, **options):
    rv2dist.write_activations(path, layers, **options)
    return path


_STORES = {}


def pair_stores():
    """Two small stores (and their layers) shared by the command-line cases."""
    if not _STORES:
        where = folder("stores")
        x, y = related(240, 10, 7, seed=3)
        x2, y2 = related(240, 5, 6, seed=4)
        _STORES["a"] = {"l1": x, "l2": x2}
        _STORES["b"] = {"m1": y, "m2": y2 + x[:, :6]}
        _STORES["pa"] = store(where / "a.zarr", _STORES["a"])
        _STORES["pb"] = store(where / "b.zarr", _STORES["b"])
    return _STORES


def job_file(where, body, networks=None):
    """A job file in ``where`` over the shared stores (or ``networks``), ``body`` above the tables."""
    stores = pair_stores()
    networks = networks or {"a": stores["pa"], "b": stores["pb"]}
    table = "\n".join(f'{name} = "{path}"' for name, path in networks.items())
    names = list(networks)
    text = f'{body}\nout = "results"\nplots = false\n\n[networks]\n{table}\n\n[[compare]]\npairs = [["{names[0]}", "{names[-1]}"]]\n'
    path = where / "job.toml"
    path.write_text(text)
    return path


# === 1. the second-moment measures: options =============================================

def _api_option(option, value, metric):
    x, y = related(80, 6, 5)
    return lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=metric, **{option: value})


BAD_OPTIONS = [
    ("alpha", -0.1, "shape_metric"), ("alpha", 1.5, "shape_metric"), ("alpha", float("nan"), "shape_metric"),
    ("alpha", float("inf"), "shape_metric"), ("alpha", "0.5", "shape_metric"), ("alpha", True, "shape_metric"),
    ("alpha", None, "shape_metric"), ("alpha", [0.5], "shape_metric"), ("alpha", 1 + 0j, "shape_metric"),
    ("ridge_lambda", -1.0, "ridge"), ("ridge_lambda", float("nan"), "ridge"), ("ridge_lambda", float("inf"), "ridge"),
    ("ridge_lambda", "0.1", "ridge"), ("ridge_lambda", np.bool_(True), "ridge"),
    ("svcca_variance", 0, "svcca"), ("svcca_variance", 1.01, "svcca"), ("svcca_variance", float("nan"), "svcca"),
    ("svcca_variance", -0.5, "svcca"),
    ("rcond", -1e-9, "cca"), ("rcond", 1.0, "cca"), ("rcond", 1e300, "cca"), ("rcond", float("nan"), "cca"),
    ("rcond", "1e-8", "cca"),
]


def _bad_option_case(option, value, metric):
    def run():
        refuses(_api_option(option, value, metric), option, repr(value) if not isinstance(value, float) or
                math.isfinite(value) else str(value))
    return run


for _option, _value, _metric in BAD_OPTIONS:
    case("1-options", f"api-{_option}={_value!r}")(_bad_option_case(_option, _value, _metric))


def _good_option_case(option, value, metric, **reference_options):
    def run():
        x, y = related(150, 8, 6, seed=1)
        result = computes(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=metric, **{option: value}))
        check_values(result, [metric], {"x": x}, {"y": y}, **reference_options)
    return run


GOOD_OPTIONS = [
    ("alpha", np.float32(0.5), "shape_metric", dict(alpha=0.5)),
    ("alpha", 0, "shape_metric", dict(alpha=0.0)),
    ("alpha", 0.25, "shape_metric", dict(alpha=0.25)),
    ("ridge_lambda", 0, "ridge", dict(ridge_lambda=0.0)),
    ("ridge_lambda", 1e300, "ridge", dict(ridge_lambda=1e300)),
    ("ridge_lambda", 5e-324, "ridge", dict(ridge_lambda=5e-324)),
    ("svcca_variance", 1, "svcca", dict(svcca_variance=1.0)),
    ("svcca_variance", 1e-12, "svcca", dict(svcca_variance=1e-12)),
    ("rcond", 0, "cca", dict(rcond=0.0)),
    ("rcond", 0.5, "cca", dict(rcond=0.5)),
    ("rcond", 0.5, "linreg", dict(rcond=0.5)),
]
for _option, _value, _metric, _ref in GOOD_OPTIONS:
    case("1-options", f"api-{_metric}-{_option}={_value!r}-value")(_good_option_case(_option, _value, _metric, **_ref))


@case("1-options")
def api_option_unused_by_metric():
    """alpha with rv2 only: a valid value is harmless, a bad one still refused (checked once)."""
    x, y = related(60, 4, 3)
    computes(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric="rv2", alpha=0.3))
    refuses(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric="rv2", alpha=3), "alpha", "3")


@case("1-options")
def api_plan_bad_option():
    x, y = related(60, 4, 3)
    refuses(lambda: rv2dist.plan({"x": x}, {"y": y}, metric="ridge", ridge_lambda=-2), "ridge_lambda", "-2")


CLI_BAD = [
    (("--alpha", "-0.1"), "shape_metric", ("alpha", "-0.1")), (("--alpha", "nan"), "shape_metric", ("alpha", "nan")),
    (("--alpha", "inf"), "shape_metric", ("alpha", "inf")), (("--alpha", "0.5x"), "shape_metric", ("alpha", "0.5x")),
    (("--ridge-lambda", "-1"), "ridge", ("ridge", "-1")), (("--ridge-lambda", "nan"), "ridge", ("ridge", "nan")),
    (("--svcca-variance", "1.01"), "svcca", ("svcca", "1.01")), (("--svcca-variance", "0"), "svcca", ("svcca", "0")),
    (("--rcond", "2"), "cca", ("rcond", "2")), (("--rcond=-1e-3",), "cca", ("rcond", "-0.001")),
    (("--rcond", "2e400"), "cca", ("rcond", "inf")),
]


def _cli_bad_case(flags, metric, needles):
    def run():
        stores, where = pair_stores(), folder("cli-option")
        out, png = where / "r.nc", where / "r.png"
        cli_refuses("-q", "compare", stores["pa"], stores["pb"], "--metric", metric, *flags, "--out", out,
                    "--plot", png, needles=needles, absent=(out, png))
    return run


for _flags, _metric, _needles in CLI_BAD:
    case("1-options", f"cli-{'='.join(_flags).lstrip('-')}")(_cli_bad_case(_flags, _metric, _needles))


@case("1-options")
def cli_process_alpha_nan_exit_status():
    """A real process: exit status 2, nothing written."""
    stores, where = pair_stores(), folder("cli-process")
    cli_refuses("compare", stores["pa"], stores["pb"], "--metric", "shape_metric", "--alpha", "nan", "--out",
                where / "r.nc", needles=("alpha", "nan"), absent=(where / "r.nc",), process=True)


@case("1-options")
def cli_options_values():
    """--alpha 0.3 --ridge-lambda 2 --svcca-variance 0.9 --rcond 1e-6 reach the numbers."""
    stores, where = pair_stores(), folder("cli-values")
    out = where / "r.nc"
    cli_works("-q", "compare", stores["pa"], stores["pb"], "--metric", "shape_metric", "ridge", "svcca", "cca",
              "--alpha", "0.3", "--ridge-lambda", "2", "--svcca-variance", "0.9", "--rcond", "1e-6", "--out", out)
    result = rv2dist.open_results(out).isel(comparison=0)
    check_values(result, ["shape_metric", "ridge", "svcca", "cca"], stores["a"], stores["b"], alpha=0.3,
                 ridge_lambda=2.0, svcca_variance=0.9, rcond=1e-6)


JOB_BAD = [
    ("alpha = -0.1", ("alpha", "-0.1")), ("alpha = nan", ("alpha", "nan")), ('alpha = "0.5"', ("alpha", "0.5")),
    ("alpha = true", ("alpha", "true")), ("ridge_lambda = inf", ("ridge_lambda", "inf")),
    ("svcca_variance = 0", ("svcca_variance", "0")), ("rcond = -1", ("rcond", "-1")),
    ("alpha = [0.5]", ("alpha", "0.5")), ("rcond = {}", ("rcond",)), ("alhpa = 0.5", ("alhpa",)),
    ("ridge-lambda = 0.5", ("ridge-lambda",)), ("svcca_variance = 1.5", ("svcca_variance", "1.5")),
]


def _job_bad_case(line, needles):
    def run():
        where = folder("job-option")
        job = job_file(where, f'metrics = ["shape_metric", "ridge", "svcca", "cca"]\n{line}')
        cli_refuses("-q", "run", job, needles=("job.toml", *needles), absent=(where / "results",))
    return run


for _line, _needles in JOB_BAD:
    case("1-options", f"job-{_line.replace(' ', '')}")(_job_bad_case(_line, _needles))


@case("1-options")
def job_options_values():
    where = folder("job-values")
    job = job_file(where, 'metrics = ["shape_metric", "ridge", "svcca"]\nalpha = 0.5\nridge_lambda = 0\n'
                          'svcca_variance = 1\n')
    cli_works("-q", "run", job)
    stores = pair_stores()
    result = rv2dist.open_results(where / "results").isel(comparison=0)
    check_values(result, ["shape_metric", "ridge", "svcca"], stores["a"], stores["b"], alpha=0.5, ridge_lambda=0.0,
                 svcca_variance=1.0)


@case("1-options")
def job_rerun_changed_alpha():
    """A rerun after alpha changes recomputes: the kept result must not be the old alpha's."""
    where = folder("job-rerun")
    cli_works("-q", "run", job_file(where, 'metrics = ["shape_metric"]\nalpha = 1.0'))
    cli_works("-q", "run", job_file(where, 'metrics = ["shape_metric"]\nalpha = 0.2'))
    stores = pair_stores()
    result = rv2dist.open_results(where / "results").isel(comparison=0)
    check_values(result, ["shape_metric"], stores["a"], stores["b"], alpha=0.2)


# === 1. the second-moment measures: values on awkward data ================================

def _all_measures_case(make, *, rtol=1e-8, atol=1e-10, expect_nan=False, call_options=None, **reference_options):
    """Every second-moment measure between the layers ``make()`` gives, against the dense reference."""
    def run():
        a, b = make()
        options = call_options or {}

        def judge(result, seen):
            check_values(result, SECOND, a, b, rtol=rtol, atol=atol, **reference_options)
            if expect_nan and not any("variance" in str(w.message) for w in seen):
                raise Verdict("unclear-error", "NaN cells without a warning naming the layer")
        computes(lambda: rv2dist.similarity(a, b, metric=list(SECOND), **options), judge)
    return run


def _duplicate_columns():
    x, y = related(150, 6, 5)
    return {"x": np.hstack([x, x[:, :3]])}, {"y": y}


def _constant_column():
    x, y = related(150, 6, 5)
    x[:, 2] = 7.25
    return {"x": x}, {"y": y}


def _zero_layer():
    x, y = related(100, 6, 5)
    return {"x": x, "zero": np.zeros((100, 4))}, {"y": y}


def _p_above_n():
    x, y = related(25, 40, 6)
    return {"x": x}, {"y": y}


def _p_equals_n():
    x, y = related(30, 30, 30)
    return {"x": x}, {"y": y}


def _n(n):
    def make():
        x, y = related(n, 3, 2, seed=n)
        return {"x": x}, {"y": y}
    return make


def _float32():
    x, y = related(400, 10, 8)
    return {"x": x.astype(np.float32)}, {"y": y.astype(np.float32)}


def _offset(shift):
    def make():
        x, y = related(300, 8, 6)
        return {"x": x + shift * rng(5).uniform(0.5, 1.5, size=8)}, {"y": y - shift}
    return make


def _integers():
    x, y = related(200, 6, 5)
    return {"x": np.round(10 * x).astype(np.int64)}, {"y": np.round(10 * y).astype(np.int16)}


def _booleans():
    x, y = related(200, 6, 5)
    return {"x": x > 0}, {"y": y > 0.3}


def _one_unit():
    x, y = related(120, 1, 1)
    return {"x": x, "x3": related(120, 3, 1, seed=2)[0]}, {"y": y}


def _several_layers():
    g = rng(9)
    a = {f"a{i}": g.normal(size=(180, w)) + i for i, w in enumerate((3, 7, 12))}
    b = {f"b{i}": a["a1"][:, :min(w, 7)] @ g.normal(size=(min(w, 7), w)) + g.normal(size=(180, w))
         for i, w in enumerate((4, 9))}
    return a, b


def _image_shaped():
    g = rng(3)
    return {"conv": g.normal(size=(90, 2, 3, 2))}, {"fc": g.normal(size=(90, 5))}


for _name, _make, _extra in [
    ("duplicate-columns", _duplicate_columns, {}), ("constant-column", _constant_column, {}),
    ("all-zero-layer", _zero_layer, dict(expect_nan=True)), ("p-above-n", _p_above_n, {}),
    ("p-equals-n", _p_equals_n, {}), ("n=3", _n(3), {}), ("n=4", _n(4), {}),
    ("float32", _float32, dict(rtol=1e-4, atol=1e-5, rcond=1e-5)), ("offset-1e6", _offset(1e6), {}),
    ("offset-1e12", _offset(1e12), dict(rtol=1e-4, atol=1e-5)), ("integers", _integers, {}),
    ("booleans", _booleans, {}), ("one-unit", _one_unit, {}), ("several-layers", _several_layers, {}),
    ("image-shaped-units", _image_shaped, {}),
]:
    case("1-values", f"all-measures-{_name}")(_all_measures_case(_make, **_extra))

case("1-values", "all-measures-uncentred-flag")(_all_measures_case(
    _several_layers, call_options=dict(center=False), center=False))


@case("1-values")
def n_equals_2():
    """Two observations: every block measure is defined or NaN, never a crash; rsa needs 3."""
    x, y = related(2, 3, 2)
    refuses(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=list(SECOND)), "rsa", "3", "2")
    result = computes(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=list(BLOCK)))
    check_values(result, BLOCK, {"x": x}, {"y": y})


@case("1-values")
def self_job_exact_ones():
    """A network against itself: similarities exactly 1, distances exactly 0 on the diagonal."""
    a, _ = _several_layers()
    result = computes(lambda: rv2dist.similarity(a, metric=list(BLOCK)))
    for metric in BLOCK:
        diagonal = np.diag(result[metric].values)
        if metric == "ridge":  # a penalised fit of a layer from itself explains less than all of it
            continue
        want = 0.0 if metric in ("procrustes_distance", "shape_metric") else 1.0
        if not np.allclose(diagonal, want, atol=1e-12):
            raise Verdict("wrong-number", f"{metric} diagonal {diagonal}")
    check_values(result, BLOCK, a, a, atol=1e-7)


@case("1-values")
def invariance_rotation_scale():
    """y = 1e-7 x Q + 3: every measure gives its value for equal layers."""
    x, _ = related(200, 7, 2)
    q, _ = np.linalg.qr(rng(2).normal(size=(7, 7)))
    result = computes(lambda: rv2dist.similarity({"x": x}, {"y": 1e-7 * x @ q + 3}, metric=list(SECOND)))
    for metric in SECOND:
        want = 0.0 if metric in ("procrustes_distance", "shape_metric") else 1.0
        if metric == "ridge":  # a penalised fit explains less than all, at any scale
            want = reference("ridge", x, x)
        got = result[metric].values.item()
        if not np.isclose(got, want, atol=2e-7):
            raise Verdict("wrong-number", f"{metric} = {got}, not {want}")


@case("1-values")
def route_gram_refused():
    x, y = related(60, 4, 3)
    refuses(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=["rv2", "cca"], route="gram"), "gram", "cca")


@case("1-values")
def route_auto_wide_layers():
    """Layers wider than n with a block measure: the feature route, values right."""
    x, y = related(40, 120, 90)
    result = computes(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=["rv2", "procrustes", "ridge"]))
    check_values(result, ["rv2", "procrustes", "ridge"], {"x": x}, {"y": y})


@case("1-values")
def memory_budget_too_small_for_blocks():
    x, y = related(300, 200, 150)
    refuses(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric="cca", memory_budget=20_000), "x", "budget")


@case("1-values")
def plan_for_other_measures_refused():
    x, y = related(60, 4, 3)
    p = rv2dist.plan({"x": x}, {"y": y}, metric="rv2")
    refuses(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric="cca", plan=p), "plan")


@case("1-values")
def plan_then_run_block_measures():
    x, y = related(90, 6, 4)
    p = rv2dist.plan({"x": x}, {"y": y}, metric=["cca", "ridge"], ridge_lambda=0.5)
    result = computes(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=["cca", "ridge"], plan=p,
                                                 ridge_lambda=0.5))
    check_values(result, ["cca", "ridge"], {"x": x}, {"y": y}, ridge_lambda=0.5)


def _permutation_case(metric, self_job=False):
    def run():
        from rv2dist.core.resampling import permutation

        x, y = related(40, 3, 3, seed=11)
        k = 30
        b = None if self_job else {"y": y}
        result = computes(lambda: rv2dist.similarity({"x": x}, b, metric=[metric], permutations=k, seed=4))
        other = x if self_job else y
        observed = reference(metric, x, other)
        sign = -1 if metric in ("procrustes_distance", "shape_metric") else 1
        permuted = [reference(metric, x, other[permutation(4, i, len(x))]) for i in range(k)]
        want = (1 + sum(sign * v >= sign * observed - 1e-12 * abs(observed) for v in permuted)) / (k + 1)
        got = float(np.asarray(result[f"{metric}_p_permutation"]).ravel()[0])
        if not np.isclose(got, want):
            raise Verdict("wrong-number", f"p_permutation {got} != {want}")
    return run


for _metric in ("cca", "procrustes_distance", "ridge", "pwcca"):
    case("1-values", f"permutations-{_metric}")(_permutation_case(_metric))
case("1-values", "permutations-self-linreg")(_permutation_case("linreg", self_job=True))


def _bootstrap_case(metric, **options):
    def run():
        from rv2dist.core import resampling

        x, y = related(60, 3, 3, seed=12)
        boots = 50
        result = computes(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=[metric], bootstrap=boots, seed=2,
                                                     **options))
        weights = resampling.poisson_weights(2, 0, len(x), boots).astype(int)
        values = [reference(metric, np.repeat(x, w, axis=0), np.repeat(y, w, axis=0), **options) for w in weights.T]
        want = np.nanquantile(values, [0.025, 0.975])
        got = [result[f"{metric}_low"].values.item(), result[f"{metric}_high"].values.item()]
        if not close(got, want, rtol=1e-6, atol=1e-7):
            raise Verdict("wrong-number", f"interval {got} != {want.tolist()}")
    return run


for _metric, _opts in (("cca_r2", {}), ("shape_metric", dict(alpha=0.0)), ("svcca", dict(svcca_variance=0.9)),
                       ("rsa_euclidean", {})):
    case("1-values", f"bootstrap-{_metric}")(_bootstrap_case(_metric, **_opts))


@case("1-values")
def tests_with_block_measure_only():
    """tests=True asked with cca alone: the exact tests are the RV family's; saying nothing is not enough."""
    x, y = related(60, 4, 3)
    try:
        result, seen = quietly(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=["cca"], tests=True))
    except MESSAGES as error:
        if "cca" in str(error) and "test" in str(error):
            return
        raise Verdict("unclear-error", str(error)[:200]) from None
    if "cca_z" not in result and not any("test" in str(w.message) for w in seen):
        raise Verdict("unclear-error", "tests=True silently gives nothing for cca (no error, no warning)")


@case("1-values")
def forced_ones_warning_names_cells():
    x, y = related(20, 15, 12)
    result, seen = quietly(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric="cca"))
    if not any(issubclass(w.category, rv2dist.DegenerateCellWarning) and "x" in str(w.message) for w in seen):
        raise Verdict("unclear-error", "no DegenerateCellWarning naming the cell")
    check_values(result, ["cca"], {"x": x}, {"y": y})




@case("1-values")
def bootstrap_self_job_linreg():
    """A network against itself with bootstrap: linreg's intervals of both off-diagonal cells (not symmetric)."""
    from rv2dist.core import resampling

    g = rng(40)
    z = g.normal(size=(50, 2))
    a = {"p": z @ g.normal(size=(2, 3)) + g.normal(size=(50, 3)), "q": z @ g.normal(size=(2, 2)) + g.normal(size=(50, 2))}
    result = computes(lambda: rv2dist.similarity(a, metric=["linreg"], bootstrap=45, seed=5))
    weights = resampling.poisson_weights(5, 0, 50, 45).astype(int)
    for rows, cols in (("p", "q"), ("q", "p")):
        values = [reference("linreg", np.repeat(a[rows], w, axis=0), np.repeat(a[cols], w, axis=0)) for w in weights.T]
        want = np.nanquantile(values, [0.025, 0.975])
        got = [result[f"linreg_{end}"].sel(layer_a=rows, layer_b=cols).values.item() for end in ("low", "high")]
        if not close(got, want, rtol=1e-6, atol=1e-7):
            raise Verdict("wrong-number", f"{rows}->{cols} interval {got} != {want.tolist()}")


@case("1-values")
def layer_selection_pair_block_measures():
    a, b = _several_layers()
    result = computes(lambda: rv2dist.similarity(a, b, metric=["cca", "linreg"], layers=(["a2", "a0"], ["b1"])))
    check_values(result, ["cca", "linreg"], {"a2": a["a2"], "a0": a["a0"]}, {"b1": b["b1"]})


@case("1-values")
def align_obs_block_measures():
    """Stores holding the same ids in other orders: align_obs puts b's rows in a's order before the blocks."""
    where = folder("align")
    x, y = related(120, 5, 4)
    order = rng(3).permutation(120)
    pa = store(where / "a.zarr", {"x": x}, obs=[f"id{i}" for i in range(120)])
    pb = store(where / "b.zarr", {"y": y[order]}, obs=[f"id{i}" for i in order])
    result = computes(lambda: rv2dist.similarity(pa, pb, metric=["pwcca", "ridge", "shape_metric"], align_obs=True,
                                                 alpha=0.5))
    check_values(result, ["pwcca", "ridge", "shape_metric"], {"x": x}, {"y": y}, alpha=0.5)


@case("1-values")
def many_small_chunks_store_block_measures():
    """A store of 17-row chunks (the last one short): every measure from summed chunk blocks."""
    where = folder("chunks")
    x, y = related(203, 6, 5)
    pa = store(where / "a.zarr", {"x": x}, chunk_bytes=6 * 8 * 17)
    pb = store(where / "b.zarr", {"y": y}, chunk_bytes=5 * 8 * 13)
    result = computes(lambda: rv2dist.similarity(pa, pb, metric=list(SECOND)))
    check_values(result, SECOND, {"x": x}, {"y": y})


@case("1-values")
def float32_with_float64_precision():
    """precision='float64' on float32 input: float64 products and the 1e-8 cut-off."""
    x, y = related(300, 8, 6)
    a, b = {"x": x.astype(np.float32)}, {"y": y.astype(np.float32)}
    result = computes(lambda: rv2dist.similarity(a, b, metric=["cca", "linreg", "svcca"], precision="float64"))
    check_values(result, ["cca", "linreg", "svcca"], a, b, rtol=1e-9)


@case("1-values")
def lazy_result_block_measures():
    x, y = related(90, 5, 4)
    lazy = computes(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=["cca", "procrustes"], compute=False))
    check_values(computes(lazy.compute), ["cca", "procrustes"], {"x": x}, {"y": y})


@case("1-values")
def kept_replicates_block_measure():
    """keep_replicates: replicate k of cca is the reference's cca of the data weighted by draw k."""
    from rv2dist.core import resampling

    x, y = related(40, 3, 3, seed=41)
    result = computes(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=["cca"], bootstrap=41, seed=9,
                                                 keep_replicates=True))
    weights = resampling.poisson_weights(9, 0, 40, 41).astype(int)
    want = [reference("cca", np.repeat(x, w, axis=0), np.repeat(y, w, axis=0)) for w in weights.T]
    if not close(result["cca_replicates"].values.ravel(), want, rtol=1e-7, atol=1e-9):
        raise Verdict("wrong-number", "a kept replicate differs from the weighted reference")


@case("4-record-run")
def compare_models_block_measures():
    """compare_models with cca and ridge: against the activations computed by hand."""
    import torch

    torch.manual_seed(1)
    net_a = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4))
    net_b = torch.nn.Sequential(torch.nn.Linear(6, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    inputs = torch.randn(90, 6)
    loader = [(inputs[i:i + 32], None) for i in range(0, 90, 32)]
    result = computes(lambda: rv2dist.compare_models(net_a, net_b, loader, ["0", "2"], ["1"], metric=["cca", "ridge"],
                                                     dtype="float64", progress=False))
    with torch.no_grad():
        a = {"0": net_a[0](inputs).double().numpy(), "2": net_a(inputs).double().numpy()}
        b = {"1": net_b[1](net_b[0](inputs)).double().numpy()}
    check_values(result, ["cca", "ridge"], a, b, rtol=1e-6, atol=1e-8)



@case("1-values")
def bootstrap_intervals_against_the_population():
    """20 samples of n = 500 from one population (50 and 40 units sharing 4 directions):
    how often each 0.95 interval holds the value at n = 200,000 (dense formulas), and
    whether every miss was said (ShiftedIntervalWarning naming the measure)."""
    g0 = rng(123)
    p, q = 50, 40
    mix_x, mix_y = g0.normal(size=(4, p)), g0.normal(size=(4, q))

    def draw(n, seed):
        g = rng(seed)
        z = g.normal(size=(n, 4))
        return z @ mix_x + 0.7 * g.normal(size=(n, p)), z @ mix_y + 0.9 * g.normal(size=(n, q))

    def cka(x, y):  # linear CKA from the p x q products (no n x n Gram at n = 200,000)
        x, y = R.centred(x), R.centred(y)
        return np.sum((x.T @ y) ** 2) / np.sqrt(np.sum((x.T @ x) ** 2) * np.sum((y.T @ y) ** 2))

    metrics = ("cca", "linreg", "procrustes", "shape_metric", "cka")
    big = draw(200_000, 999)
    population = {m: cka(*big) if m == "cka" else reference(m, *big) for m in metrics}
    held, unsaid = dict.fromkeys(metrics, 0), dict.fromkeys(metrics, 0)
    for sample in range(20):
        x, y = draw(500, sample)
        result, seen = quietly(lambda x=x, y=y, sample=sample: rv2dist.similarity(
            {"x": x}, {"y": y}, metric=list(metrics), bootstrap=100, seed=sample))
        said = " ".join(str(w.message) for w in seen if w.category.__name__ == "ShiftedIntervalWarning")
        for m in metrics:
            inside = result[f"{m}_low"].item() <= population[m] <= result[f"{m}_high"].item()
            held[m] += inside
            unsaid[m] += not inside and f"({m} in" not in said and f", {m} in" not in said
    coverage = ", ".join(f"{m} {held[m]}/20" for m in metrics)
    silent = {m: count for m, count in unsaid.items() if count > 2}
    if silent:
        raise Verdict("wrong-number", f"intervals missed the population value without a word: {silent}; "
                                      f"held: {coverage}")
    print(f"    (intervals holding the population value: {coverage})", flush=True)


# === 2. metric lists =========================================================================

def _metric_refused(metric, *needles):
    def run():
        x, y = related(60, 4, 3)
        refuses(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=metric), *needles)
    return run


for _metric, _needles in [
    (["cca", "cca"], ("cca", "more than once")), (["cca", "ridge", "rv2", "ridge"], ("ridge", "more than once")),
    ("CCA", ("CCA", "cca")), (" cca", ("' cca'",)), ("cca ", ("'cca '",)), ("all", ("all",)),
    (["rv2", "all"], ("all",)), ([], ("metric",)), ([None], ("None",)), ("cca,ridge", ("cca,ridge",)),
    ({"cca"}, ("metric",)), (["cca", 5], ("5",)), ("procrustes-distance", ("procrustes-distance", "procrustes_distance")),
    (b"cca", ("metric",)),
]:
    case("2-metrics", f"api-metric={_metric!r}")(_metric_refused(_metric, *_needles))


@case("2-metrics")
def api_metric_tuple():
    x, y = related(80, 5, 4)
    result = computes(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=("ridge", "rv2", "pwcca")))
    check_values(result, ["ridge", "rv2", "pwcca"], {"x": x}, {"y": y})


@case("2-metrics")
def api_metric_numpy_strings():
    """metric=np.array(['cca', 'rv2']) (what a careless user passes from a config): values or a clear refusal."""
    x, y = related(80, 5, 4)
    call = lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=np.array(["cca", "rv2"]))
    try:
        result, _ = quietly(call)
    except MESSAGES as error:
        if "metric" not in str(error):
            raise Verdict("unclear-error", str(error)[:200]) from None
        return
    check_values(result, ["cca", "rv2"], {"x": x}, {"y": y})


@case("2-metrics")
def api_every_measure_at_once():
    """All eighteen measures in one call, uncentred: each against its reference."""
    from rv2dist.core.measures import MEASURES

    a, b = _several_layers()
    result = computes(lambda: rv2dist.similarity(a, b, metric=list(MEASURES), center=False))
    check_values(result, list(MEASURES), a, b, center=False)


@case("2-metrics")
def api_single_block_metric_is_dataarray():
    """A single measure by name gives a DataArray (as rv2 does), not a Dataset."""
    x, y = related(80, 5, 4)
    result = computes(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric="procrustes"))
    if not hasattr(result, "dims") or hasattr(result, "data_vars"):
        raise Verdict("unclear-error", f"metric='procrustes' gave a {type(result).__name__}")
    check_values(result, ["procrustes"], {"x": x}, {"y": y})


def _cli_metric_refused(metrics, needles):
    def run():
        stores, where = pair_stores(), folder("cli-metric")
        cli_refuses("-q", "compare", stores["pa"], stores["pb"], "--metric", *metrics, "--out", where / "r.nc",
                    needles=needles, absent=(where / "r.nc",))
    return run


for _metrics, _needles in [(("cca", "cca"), ("cca",)), (("CCA",), ("CCA",)), (("all",), ("all",)),
                           (("rv2,cca",), ("rv2,cca",))]:
    case("2-metrics", f"cli-metric={','.join(_metrics)}")(_cli_metric_refused(_metrics, _needles))


def _job_metric_refused(line, needles):
    def run():
        where = folder("job-metric")
        cli_refuses("-q", "run", job_file(where, line), needles=("job.toml", *needles), absent=(where / "results",))
    return run


for _line, _needles in [('metrics = ["cca", "cca"]', ("cca",)), ('metrics = "all"', ("all",)),
                        ('metrics = ["cca", 5]', ("5",)), ('metrics = "CCA"', ("CCA",)),
                        ('metrics = ["cca"]\nroute = "gram"', ("gram", "cca"))]:
    case("2-metrics", f"job-{_line.splitlines()[0].replace(' ', '')}")(_job_metric_refused(_line, _needles))


@case("2-metrics")
def job_rsa_on_the_gram_route():
    """rsa (of the RV family's sums) on the gram route, uncentred: allowed, and right."""
    where = folder("job-rsa-gram")
    cli_works("-q", "run", job_file(where, 'metrics = ["rsa", "rv2"]\nroute = "gram"\ncenter = false'))
    stores = pair_stores()
    check_values(rv2dist.open_results(where / "results").isel(comparison=0), ["rsa", "rv2"], stores["a"],
                 stores["b"], center=False)


@case("2-metrics")
def job_string_metric_block():
    """metrics = "pwcca" (one name, not a list) runs; the values are right."""
    where = folder("job-one-metric")
    cli_works("-q", "run", job_file(where, 'metrics = "pwcca"'))
    stores = pair_stores()
    check_values(rv2dist.open_results(where / "results").isel(comparison=0), ["pwcca"], stores["a"], stores["b"])



# === 3. results and figures of every measure =========================================================

def _png(path):
    data = Path(path).read_bytes() if Path(path).exists() else b""
    if not data.startswith(b"\x89PNG"):
        raise Verdict("data-loss", f"{path} is no PNG ({len(data)} bytes)")


def _result_case(metric):
    """compare --metric M --plot; open_results, heatmap, job_grid, diagonal and `rv2dist plot` of the file."""
    def run():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from rv2dist.plot import diagonal, heatmap, job_grid

        stores, where = pair_stores(), folder(f"result-{metric}")
        out = where / "r.nc"
        cli_works("-q", "compare", stores["pa"], stores["pb"], "--metric", metric, "--out", out, "--plot",
                  where / "cli.png")
        _png(where / "cli.png")
        opened = rv2dist.open_results(out)
        check_values(opened.isel(comparison=0), [metric], stores["a"], stores["b"])
        try:
            ax = heatmap(out, metric=metric)
            image = ax.images[0]
            distance = metric in ("procrustes_distance", "shape_metric")
            if distance and (not image.cmap.name.endswith("_r") or image.norm.vmin != 0):
                raise Verdict("unclear-error", f"{metric} drawn as {image.cmap.name} from {image.norm.vmin}")
            plt.close("all")
            heatmap(out, where / "h.png", metric=metric, annotate=True)
            job_grid([out, out], metric=metric, path=where / "g.png")
            diagonal(out, metric=metric, path=where / "d.png")
        except Verdict:
            raise
        except Exception as error:  # noqa: BLE001 - the probe classifies whatever comes
            raise Verdict("traceback", f"{type(error).__name__}: {error}") from None
        for name in ("h.png", "g.png", "d.png"):
            _png(where / name)
        cli_works("plot", out, "--out", where / "p.png", "--metric", metric)
        _png(where / "p.png")
    return run


for _metric in SECOND:
    case("3-results", f"result-and-figures-{_metric}")(_result_case(_metric))


@case("3-results")
def zarr_result_block_measures():
    """A .zarr result of block measures with ranks and forced ones: open_results gives them back."""
    stores, where = pair_stores(), folder("zarr-result")
    cli_works("-q", "compare", stores["pa"], stores["pb"], "--metric", "cca", "linreg", "--out", where / "r.zarr")
    opened = rv2dist.open_results(where / "r.zarr").isel(comparison=0)
    check_values(opened, ["cca", "linreg"], stores["a"], stores["b"])
    ranks = [int(v) for v in opened["rank_a"].values]
    if ranks != [_rank(x, R.RCOND) for x in stores["a"].values()]:
        raise Verdict("wrong-number", f"rank_a {ranks}")


@case("3-results")
def nan_cells_figures():
    """An all-zero layer: NaN cells in every figure, and a figure written."""
    import matplotlib

    matplotlib.use("Agg")
    from rv2dist.plot import diagonal, heatmap, job_grid

    where = folder("nan-figures")
    a, b = _zero_layer()
    b = {"x": a["x"], "zero": np.zeros((100, 2))}
    result = computes(lambda: rv2dist.similarity(a, b, metric=["shape_metric", "cca"]))
    check_values(result, ["shape_metric", "cca"], a, b)
    try:
        heatmap(result, where / "h.png", metric="shape_metric", annotate=True)
        job_grid([result, result], metric="cca", path=where / "g.png")
        diagonal(result, metric="shape_metric", path=where / "d.png")
    except Exception as error:  # noqa: BLE001 - the probe classifies whatever comes
        raise Verdict("traceback", f"{type(error).__name__}: {error}") from None
    for name in ("h.png", "g.png", "d.png"):
        _png(where / name)


@case("3-results")
def report_html_distances_and_nan():
    """report.html of a job with distances and an all-zero layer: the page's data give the values, NaN as null."""
    where = folder("report")
    x, y = related(150, 6, 5)
    na = store(where / "na.zarr", {"x": x, "zero": np.zeros((150, 3))})
    nb = store(where / "nb.zarr", {"y": y})
    job = job_file(where, 'metrics = ["procrustes_distance", "shape_metric", "cca"]', networks={"na": na, "nb": nb})
    cli_works("-q", "run", job)
    page = (where / "results" / "report.html").read_text()
    start = page.index("{", page.index("const DATA = ")) if "const DATA = {" in page else None
    if start is None:
        raise Verdict("unclear-error", "no embedded data found in report.html")
    data, _ = json.JSONDecoder().raw_decode(page[start:])
    entry = data["jobs"][0]["comparisons"][0]
    for metric in ("procrustes_distance", "shape_metric", "cca"):
        got = np.array([[np.nan if v is None else v for v in row] for row in entry["matrices"][metric]])
        if not close(got, expected_matrix(metric, {"x": x, "zero": np.zeros((150, 3))}, {"y": y}), atol=1e-6):
            raise Verdict("wrong-number", f"{metric} in report.html: {got.tolist()}")
    if entry["scales"].get("shape_metric") != "distance":
        raise Verdict("unclear-error", f"shape_metric's scale in the page: {entry['scales']}")


@case("3-results")
def open_results_mixed_measures_list():
    """open_results([cca result, ridge result]): one Dataset, each value where it was computed."""
    x, y = related(90, 5, 4)
    r1 = rv2dist.similarity({"x": x}, {"y": y}, metric=["cca"])
    r2 = rv2dist.similarity({"x": x}, {"y": y}, metric=["ridge"])
    opened = computes(lambda: rv2dist.open_results([r1, r2]))
    got = opened["cca"].isel(comparison=0).values.item(), opened["ridge"].isel(comparison=1).values.item()
    if not (close(got[0], reference("cca", x, y)) and close(got[1], reference("ridge", x, y))):
        raise Verdict("wrong-number", f"{got}")


@case("3-results")
def job_combined_ranks_two_networks():
    """combined.nc of a job comparing one reference with two networks whose layers share names but not ranks."""
    where = folder("combined-ranks")
    g = rng(21)
    z = g.normal(size=(120, 3))
    nets = {"r": {"l": z @ g.normal(size=(3, 6))}, "s": {"l": g.normal(size=(120, 6))},
            "t": {"l": np.hstack([z, z])}}
    paths = {name: store(where / f"{name}.zarr", layers) for name, layers in nets.items()}
    table = "\n".join(f'{name} = "{path}"' for name, path in paths.items())
    (where / "job.toml").write_text(f'metrics = ["cca", "linreg"]\nplots = false\n[networks]\n{table}\n'
                                    '[[compare]]\nreference = "r"\n')
    cli_works("-q", "run", where / "job.toml")
    combined = rv2dist.open_results(where / "results")
    for other in ("s", "t"):
        one = combined.sel(comparison=f"r__{other}")
        check_values(one, ["cca", "linreg"], nets["r"], nets[other])
        rank_b = int(np.asarray(one["rank_b"].values).ravel()[0])
        if rank_b != _rank(nets[other]["l"], R.RCOND):
            raise Verdict("wrong-number", f"rank_b of {other}: {rank_b}")


@case("3-results")
def compare_cells_block_measure():
    """Paired bootstrap difference of two cca cells: the estimate is the reference's difference."""
    a, b = _several_layers()
    result = computes(lambda: rv2dist.similarity(a, b, metric="cca", bootstrap=60, keep_replicates=True))
    d = computes(lambda: rv2dist.compare_cells(result, "cca", ("a1", "b0"), ("a2", "b1")))
    want = reference("cca", a["a1"], b["b0"]) - reference("cca", a["a2"], b["b1"])
    if not np.isclose(d.estimate, want, atol=1e-10):
        raise Verdict("wrong-number", f"estimate {d.estimate} != {want}")


@case("3-results")
def heatmap_forced_ones_variable():
    """heatmap(metric='forced_ones') on a degenerate result: drawn (it is a (layer_a, layer_b) variable)."""
    import matplotlib

    matplotlib.use("Agg")
    from rv2dist.plot import heatmap

    x, y = related(20, 15, 12)
    result, _ = quietly(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=["cca"]))
    want = max(0, _rank(x, R.RCOND) + _rank(y, R.RCOND) - 19)
    if int(result["forced_ones"].values.item()) != want:
        raise Verdict("wrong-number", f"forced_ones {result['forced_ones'].values.item()} != {want}")
    computes(lambda: heatmap(result, folder("forced") / "f.png", metric="forced_ones"))



# === 4. record, plan and run with odd models, inputs and job files ==================================

NETS_PY = """
import torch


class Net(torch.nn.Module):
    def __init__(self, width=6):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(8, width)
        self.act = torch.nn.Tanh()
        self.fc2 = torch.nn.Linear(width, 5)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Broken(torch.nn.Module):
    def __init__(self):
        super().__init__()
        raise RuntimeError("cannot build")


class Labeller(torch.nn.Module):
    def forward(self, x):
        return {"label": "not a tensor"}


class Words(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 3)
        self.head = Labeller()

    def forward(self, x):
        return self.head(self.fc1(x))


def not_a_model():
    return 42


instance = Net()
"""


def _record_setup():
    where = folder("record")
    (where / "nets.py").write_text(NETS_PY)
    g = rng(7)
    np.save(where / "inputs.npy", g.normal(size=(64, 8)).astype(np.float32))
    return where


def _record_refused(model, extra, needles, setup=None):
    def run():
        where = _record_setup()
        if setup:
            setup(where)
        spec = model.replace("{w}", str(where))
        args = [a.replace("{w}", str(where)) for a in extra]
        cli_refuses("-q", "record", spec, "--out", where / "out.zarr", *args,
                    needles=tuple(n.replace("{w}", str(where)) for n in needles), absent=(where / "out.zarr",))
    return run


def _write(name, data):
    def setup(where):
        (where / name).write_bytes(data) if isinstance(data, bytes) else np.save(where / name, data)
    return setup


def _npz(name, **arrays):
    def setup(where):
        np.savez(where / name, **arrays)
    return setup


def _torch_save(name, what):
    def setup(where):
        import torch

        torch.save(what, where / name)
    return setup


INPUTS = ["--inputs", "{w}/inputs.npy", "--layers", "fc1"]
RECORD_BAD = [
    ("missing-model-file", "{w}/missing.py:Net", INPUTS, ("missing.py",), None),
    ("missing-class", "{w}/nets.py:Nope", INPUTS, ("Nope",), None),
    ("callable-not-model", "{w}/nets.py:not_a_model", INPUTS, ("not_a_model", "int"), None),
    ("constructor-raises", "{w}/nets.py:Broken", INPUTS, ("Broken", "cannot build"), None),
    ("garbage-pt2", "{w}/model.pt2", INPUTS, ("model.pt2",), _write("model.pt2", b"garbage" * 10)),
    ("empty-folder", "{w}/empty", INPUTS, ("empty",), lambda w: (w / "empty").mkdir()),
    ("npy-as-model", "{w}/inputs.npy", INPUTS, ("inputs.npy",), None),
    ("wrong-input-shape", "{w}/nets.py:Net", ["--inputs", "{w}/five.npy", "--layers", "fc1"], ("(10, 5)",),
     _write("five.npy", np.zeros((10, 5), np.float32))),
    ("missing-inputs", "{w}/nets.py:Net", ["--inputs", "{w}/nothing.npy", "--layers", "fc1"], ("nothing.npy",), None),
    ("npz-unnamed-arrays", "{w}/nets.py:Net", ["--inputs", "{w}/two.npz", "--layers", "fc1"], ("two.npz", "inputs"),
     _npz("two.npz", a=np.zeros((4, 8)), b=np.zeros((4, 8)))),
    ("garbage-npz", "{w}/nets.py:Net", ["--inputs", "{w}/bad.npz", "--layers", "fc1"], ("bad.npz",),
     _write("bad.npz", b"PK garbage")),
    ("garbage-npy", "{w}/nets.py:Net", ["--inputs", "{w}/bad.npy", "--layers", "fc1"], ("bad.npy",),
     _write("bad.npy", b"\x93NUMPY garbage")),
    ("empty-npy", "{w}/nets.py:Net", ["--inputs", "{w}/empty.npy", "--layers", "fc1"], ("empty.npy",),
     _write("empty.npy", b"")),
    ("cut-zip-npz", "{w}/nets.py:Net", ["--inputs", "{w}/cut.npz", "--layers", "fc1"], ("cut.npz",),
     _write("cut.npz", b"PK\x03\x04" + b"\0" * 40)),
    ("object-npy", "{w}/nets.py:Net", ["--inputs", "{w}/obj.npy", "--layers", "fc1"], ("obj.npy",),
     lambda w: np.save(w / "obj.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)),
    ("nan-inputs", "{w}/nets.py:Net", ["--inputs", "{w}/nan.npy", "--layers", "fc1"], ("fc1",),
     _write("nan.npy", np.full((16, 8), np.nan, np.float32))),
    ("unknown-layer", "{w}/nets.py:Net", ["--inputs", "{w}/inputs.npy", "--layers", "fc9"], ("fc9",), None),
    ("output-not-tensor", "{w}/nets.py:Words", ["--inputs", "{w}/inputs.npy", "--layers", "head"], ("head",), None),
    ("checkpoint-mismatch", "{w}/nets.py:Net", [*INPUTS, "--checkpoint", "{w}/other.pt"], ("other.pt",),
     _torch_save("other.pt", {"fc1.weight": np.zeros(3)})),
    ("checkpoint-wrong-shape", "{w}/nets.py:Net", [*INPUTS, "--checkpoint", "{w}/shape.pt"], ("shape.pt",), None),
    ("arg-not-key-value", "{w}/nets.py:Net", [*INPUTS, "--arg", "width"], ("width",), None),
    ("arg-wrong-value", "{w}/nets.py:Net", [*INPUTS, "--arg", "width=-3"], ("width",), None),
    ("text-empty-file", "{w}/nets.py:Net", ["--text", "{w}/empty.txt", "--layers", "fc1"], ("empty.txt",),
     _write("empty.txt", b"")),
    ("instance-with-arg", "{w}/nets.py:instance", [*INPUTS, "--arg", "width=3"], ("instance",), None),
]


def _shape_checkpoint(where):
    import torch

    torch.save({"fc1.weight": torch.zeros(3, 8), "fc1.bias": torch.zeros(3), "fc2.weight": torch.zeros(5, 3),
                "fc2.bias": torch.zeros(5)}, where / "shape.pt")


RECORD_BAD = [(n, m, e, nd, _shape_checkpoint if n == "checkpoint-wrong-shape" else s)
              for n, m, e, nd, s in RECORD_BAD]
for _name, _model, _extra, _needles, _setup in RECORD_BAD:
    case("4-record-run", f"record-{_name}")(_record_refused(_model, _extra, _needles, _setup))


@case("4-record-run")
def record_then_compare_values():
    """record fc1 and act of nets.py:Net; the store's layers against the activations computed by hand."""
    import torch

    where = _record_setup()
    cli_works("-q", "record", f"{where}/nets.py:Net", "--inputs", where / "inputs.npy", "--layers", "fc1", "act",
              "--out", where / "net.zarr", "--dtype", "float64")
    sys.path.insert(0, str(where))
    try:
        import importlib

        nets = importlib.import_module("nets")
    finally:
        sys.path.remove(str(where))
    model = nets.Net().eval()
    with torch.no_grad():
        x = torch.from_numpy(np.load(where / "inputs.npy"))
        fc1 = model.fc1(x).double().numpy()
        act = model.act(model.fc1(x)).double().numpy()
    result = computes(lambda: rv2dist.similarity(where / "net.zarr", metric=["cca", "rv2", "procrustes"]))
    check_values(result, ["cca", "rv2", "procrustes"], {"fc1": fc1, "act": act}, {"fc1": fc1, "act": act},
                 rtol=1e-5, atol=1e-6)


@case("4-record-run")
def plan_verb():
    """`rv2dist plan` (the brief names it; the CLI has no such verb): a usage error, exit 2."""
    cli_refuses("plan", "a.zarr", needles=("plan",))


def _job_refused(body, needles, tables=""):
    def run():
        where = folder("job-odd")
        path = job_file(where, body)
        if tables:
            path.write_text(path.read_text() + tables)
        cli_refuses("-q", "run", path, needles=("job.toml", *needles), absent=(where / "results",),
                    accepted="unclear-error")
    return run


for _name, _body, _needles, _tables in [
    ("alpha-in-compare-table", 'metrics = ["shape_metric"]', ("alpha",), "alpha = 0.5\n"),
    ("alpha-under-networks", 'metrics = ["shape_metric"]', ("alpha",), "[networks.extra]\nalpha = 0.5\n"),
    ("metric-singular-key", 'metric = ["cca"]', ("metric",), ""),
    ("svcca-underflow", 'metrics = ["svcca"]\nsvcca_variance = 1e-400', ("svcca_variance",), ""),
    ("ridge-lambda-string", 'metrics = ["ridge"]\nridge_lambda = "0.1"', ("ridge_lambda",), ""),
    ("rcond-bool", 'metrics = ["cca"]\nrcond = false', ("rcond",), ""),
    ("cca-tests", 'metrics = ["cca"]\ntests = true', ("tests", "cca"), ""),
    ("keep-replicates-no-bootstrap", 'metrics = ["cca"]\nkeep_replicates = true', ("keep_replicates",), ""),
]:
    case("4-record-run", f"job-{_name}")(_job_refused(_body, _needles, _tables))


@case("4-record-run")
def job_alpha_integer_value():
    """alpha = 0 (a TOML integer) is a number: the CCA-like shape metric."""
    where = folder("job-alpha-int")
    cli_works("-q", "run", job_file(where, 'metrics = ["shape_metric"]\nalpha = 0'))
    stores = pair_stores()
    check_values(rv2dist.open_results(where / "results").isel(comparison=0), ["shape_metric"], stores["a"],
                 stores["b"], alpha=0.0)


@case("4-record-run")
def job_block_measures_bootstrap_permutations():
    """A job with block measures, bootstrap and permutations: intervals and p-values against the reference."""
    from rv2dist.core import resampling

    where = folder("job-resampling")
    x, y = related(40, 3, 3, seed=30)
    na, nb = store(where / "na.zarr", {"x": x}), store(where / "nb.zarr", {"y": y})
    job = job_file(where, 'metrics = ["procrustes", "linreg"]\nbootstrap = 45\npermutations = 20\nseed = 3',
                   networks={"na": na, "nb": nb})
    cli_works("-q", "run", job)
    one = rv2dist.open_results(where / "results").isel(comparison=0)
    weights = resampling.poisson_weights(3, 0, 40, 45).astype(int)
    for metric in ("procrustes", "linreg"):
        values = [reference(metric, np.repeat(x, w, axis=0), np.repeat(y, w, axis=0)) for w in weights.T]
        low, high = np.nanquantile(values, [0.025, 0.975])
        got = one[f"{metric}_low"].values.item(), one[f"{metric}_high"].values.item()
        if not close(got, [low, high], rtol=1e-6, atol=1e-7):
            raise Verdict("wrong-number", f"{metric} interval {got} != {(low, high)}")
        observed = reference(metric, x, y)
        permuted = [reference(metric, x, y[resampling.permutation(3, i, 40)]) for i in range(20)]
        want = (1 + sum(v >= observed - 1e-12 * abs(observed) for v in permuted)) / 21
        if not np.isclose(one[f"{metric}_p_permutation"].values.item(), want):
            raise Verdict("wrong-number", f"{metric} p {one[f'{metric}_p_permutation'].values.item()} != {want}")



# === 5. numerics at the edges of floating point; many layers; names ================================

def _nan_or_inf_case(kind, metrics, chunked=False):
    def run():
        x, y = related(200, 6, 5)
        x = x.copy()
        if kind == "nan-chunk":
            x[50:100] = np.nan
        else:
            x[3, 2] = np.inf if kind == "inf" else -np.inf
        a = x
        if chunked:
            import dask.array as da

            a = da.from_array(x, chunks=50)
        refuses(lambda: rv2dist.similarity({"x": a}, {"y": y}, metric=list(metrics)), "'x'", "nan or inf")
    return run


for _kind, _metrics, _chunked in [("nan-chunk", ("cca",), False), ("nan-chunk", ("cca", "rv2"), True),
                                  ("inf", ("ridge",), False), ("-inf", ("procrustes", "rsa"), True),
                                  ("inf", ("rv2",), True)]:
    case("5-numerics", f"{_kind}-{'+'.join(_metrics)}{'-dask' if _chunked else ''}")(
        _nan_or_inf_case(_kind, _metrics, _chunked))


@case("5-numerics")
def store_write_nan_chunk():
    """write_activations with one row chunk all NaN: refused naming the layer and observation; no store left."""
    where = folder("nan-store")
    x, _ = related(300, 4, 2)
    x[128:256] = np.nan
    refuses(lambda: rv2dist.write_activations(where / "s.zarr", {"x": x}, chunk_bytes=4 * 8 * 128), "'x'", "128")
    if os.path.lexists(where / "s.zarr") or any(where.iterdir()):
        raise Verdict("data-loss", f"left {list(where.iterdir())}")


def _scaled_case(scale, dtype, metrics, refusal=None, **call):
    """Every measure is scale-free: x * scale gives x's value, or a refusal that names the layer and the scale."""
    def run():
        x, y = related(200, 6, 5)
        a, b = {"x": (x * scale).astype(dtype)}, {"y": y.astype(dtype)}
        call_ = lambda: rv2dist.similarity(a, b, metric=list(metrics), **call)
        if refusal:
            refuses(call_, "'x'", refusal)
            return
        result = computes(call_)
        tol = dict(rtol=1e-8, atol=1e-10) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5, rcond=1e-5)
        check_values(result, metrics, {"x": np.asarray(a["x"], float) / scale}, b, **tol)
    return run


for _scale, _dtype, _metrics, _refusal in [
    (1e-310, np.float64, ("cca", "rv2"), "multiply"), (1e-200, np.float64, ("procrustes",), "multiply"),
    (1e300, np.float64, ("cca", "procrustes"), "float64"), (1e155, np.float64, ("procrustes",), "float64"),
    (1e200, np.float64, ("rv2", "ridge"), "float64"), (1e150, np.float64, ("cca",), "multiply"),
    (1e20, np.float32, ("rv2", "cca", "procrustes", "ridge"), None), (1e-20, np.float32, ("cca",), "float32"),
    (1e-6, np.float32, ("rv2", "cca", "shape_metric"), None), (1e-30, np.float64, ("rv2", "cca", "ridge"), None),
]:
    case("5-numerics", f"scaled-{_scale:g}-{np.dtype(_dtype).name}-{'+'.join(_metrics)}")(
        _scaled_case(_scale, _dtype, _metrics, _refusal))


@case("5-numerics")
def float16_input():
    x, y = related(200, 6, 5)
    a, b = {"x": x.astype(np.float16)}, {"y": y.astype(np.float16)}
    result = computes(lambda: rv2dist.similarity(a, b, metric=["rv2", "cca", "procrustes", "pwcca"]))
    check_values(result, ["rv2", "cca", "procrustes", "pwcca"], a, b, rtol=1e-4, atol=1e-5, rcond=1e-5)


@case("5-numerics")
def tiny_columns_beside_normal_ones():
    """Columns of 1e-300 next to normal ones: they carry no variance worth the name."""
    x, y = related(200, 6, 5)
    x = np.hstack([x, 1e-300 * rng(1).normal(size=(200, 3))])
    result = computes(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=["rv2", "cca", "linreg", "procrustes"]))
    check_values(result, ["rv2", "cca", "linreg", "procrustes"], {"x": x}, {"y": y})


@case("5-numerics")
def fifty_small_layers():
    g = rng(50)
    z = g.normal(size=(150, 3))
    a = {f"l{i:02d}": z @ g.normal(size=(3, 2 + i % 5)) + (0.2 + i / 25) * g.normal(size=(150, 2 + i % 5))
         for i in range(50)}
    result = computes(lambda: rv2dist.similarity(a, metric=["rv2", "cca", "procrustes_distance"]))
    check_values(result, ["rv2", "cca", "procrustes_distance"], a, a, atol=1e-7)


@case("5-numerics")
def fifty_layers_two_networks_linreg():
    """linreg is not symmetric: 50 x 50 cells of b from a, each from its own pair."""
    g = rng(51)
    z = g.normal(size=(120, 3))
    a = {f"a{i}": z @ g.normal(size=(3, 3)) + g.normal(size=(120, 3)) for i in range(50)}
    b = {f"b{i}": z @ g.normal(size=(3, 2)) + g.normal(size=(120, 2)) for i in range(50)}
    result = computes(lambda: rv2dist.similarity(a, b, metric=["linreg", "ridge"]))
    check_values(result, ["linreg", "ridge"], a, b)


def _names_case(names, stage_figures=True):
    """Layer names through a store, compare, open_results, heatmap and a job's report."""
    def run():
        import matplotlib

        matplotlib.use("Agg")
        from rv2dist.plot import heatmap

        where = folder("names")
        g = rng(8)
        a = {name: g.normal(size=(80, 3)) for name in names}
        b = {"other": next(iter(a.values())) + g.normal(size=(80, 3))}
        try:
            pa = store(where / "a.zarr", a)
        except MESSAGES as error:
            if any(n[:20] in str(error) for n in names) and not os.path.lexists(where / "a.zarr"):
                return
            raise Verdict("unclear-error" if not os.path.lexists(where / "a.zarr") else "data-loss",
                          f"{type(error).__name__}: {str(error)[:200]}") from None
        except Exception as error:  # noqa: BLE001 - the probe classifies whatever comes
            raise Verdict("traceback", f"{type(error).__name__}: {str(error)[:200]}") from None
        pb = store(where / "b.zarr", b)
        cli_works("-q", "compare", pa, pb, "--metric", "cca", "rv2", "--out", where / "r.nc")
        opened = rv2dist.open_results(where / "r.nc").isel(comparison=0)
        if list(opened["layer_a"].values) != list(names):
            raise Verdict("data-loss", f"layer names came back as {list(opened['layer_a'].values)[:3]}")
        check_values(opened, ["cca", "rv2"], a, b)
        if stage_figures:
            computes(lambda: heatmap(opened, where / "h.png", metric="cca"), allow_raw=True)
            job = job_file(where, 'metrics = ["cca"]', networks={"a": pa, "b": pb})
            job.write_text(job.read_text().replace("plots = false", "plots = true"))
            cli_works("-q", "run", job)
            page = (where / "results" / "report.html").read_text()
            for name in names:
                if json.dumps(name).replace("<", "\\u003c")[1:-1][:50] not in page:
                    raise Verdict("data-loss", f"{name[:30]!r} not in report.html")
    return run


for _label, _names in [
    ("long-200", ["L" * 200, "M" * 199]), ("long-300", ["x" * 300]), ("unicode", ["昔の層", "שכבה", "e\u0301", "🧠"]),
    ("nfc-nfd", ["\u00e9", "e\u0301"]), ("look-like-coords", ["rank_a", "forced_ones", "layer_a", "cca"]),
    ("html-and-tex", ["<b>x", "$x_1$", "a&b", "<script>"]), ("whitespace", [" lead", "trail ", "tab\tin", "new\nline"]),
]:
    case("5-numerics", f"names-{_label}")(_names_case(_names))


@case("5-numerics")
def comparison_labels_collide():
    """Networks 'a__b' vs 'c' and 'a' vs 'b__c': both comparisons are 'a__b__c' by name."""
    where = folder("collide")
    g = rng(12)
    nets = {name: {"l": g.normal(size=(60, 3))} for name in ("a__b", "c", "a", "b__c")}
    paths = {name: store(where / f"n{i}.zarr", layers) for i, (name, layers) in enumerate(nets.items())}
    table = "\n".join(f'"{name}" = "{path}"' for name, path in paths.items())
    (where / "job.toml").write_text(f'metrics = ["cca"]\nplots = false\n[networks]\n{table}\n'
                                    '[[compare]]\npairs = [["a__b", "c"], ["a", "b__c"]]\n')
    status, _, err = cli("-q", "run", where / "job.toml")
    if status != 0:
        if status == 2 and "a__b__c" in err:
            return
        raise Verdict("traceback" if status == "traceback" else "unclear-error", err.strip()[-200:])
    combined = rv2dist.open_results(where / "results")
    labels = list(combined["comparison"].values)
    if len(set(labels)) != len(labels):
        raise Verdict("data-loss", f"combined result's comparisons share a label: {labels}")
    for label in labels:
        one = combined.sel(comparison=label)
        na, nb = str(one["network_a"].values), str(one["network_b"].values)
        check_values(one, ["cca"], nets[na], nets[nb])



# === 6. resources: memory budgets, workers, schedulers =======================================

def _budget_refused(budget, *needles):
    def run():
        x, y = related(100, 8, 6)
        refuses(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=["cca", "rv2"], memory_budget=budget), *needles)
    return run


for _budget, _needles in [(0, ("memory_budget", "0")), (-1, ("memory_budget", "-1")), ("tiny", ("'tiny'",)),
                          (float("nan"), ("memory_budget", "nan")), (True, ("memory_budget", "True")),
                          ([4], ("memory_budget",)), ("-4GB", ("-4GB",)), (1, ("budget",)), ("1kB", ("budget",)),
                          ("0B", ("memory_budget",))]:
    case("6-resources", f"api-memory_budget={_budget!r}")(_budget_refused(_budget, *_needles))


def _budget_works(budget):
    def run():
        x, y = related(100, 8, 6)
        result = computes(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=["cca", "rv2"], memory_budget=budget))
        check_values(result, ["cca", "rv2"], {"x": x}, {"y": y})
    return run


for _budget in ("4GB ", " 64 MiB", np.int64(10**8), 1e30, "100000"):
    case("6-resources", f"api-memory_budget={_budget!r}-value")(_budget_works(_budget))


def _cli_budget_refused(budget, needles):
    def run():
        stores, where = pair_stores(), folder("cli-budget")
        cli_refuses("-q", "compare", stores["pa"], stores["pb"], "--metric", "cca", f"--memory-budget={budget}",
                    "--out", where / "r.nc", needles=needles, absent=(where / "r.nc",))
    return run


for _budget, _needles in [("0", ("0",)), ("-5GB", ("-5GB",)), ("lots", ("lots",)), ("1B", ("budget",))]:
    case("6-resources", f"cli-memory-budget={_budget}")(_cli_budget_refused(_budget, _needles))


def _workers_refused(workers, needles):
    def run():
        cli_refuses("cluster", "--workers", workers, needles=needles)
    return run


for _workers, _needles in [("0", ("workers", "0")), ("-1", ("workers", "-1")), ("two", ("workers", "two"))]:
    case("6-resources", f"cluster-workers={_workers}")(_workers_refused(_workers, _needles))


def _scheduler_refused(args, needles, env=None):
    def run():
        stores, where = pair_stores(), folder("scheduler")
        # dask reads its environment once, when a process starts: these run in processes of their own
        cli_refuses("-q", "compare", stores["pa"], stores["pb"], "--metric", "cca", "--out", where / "r.nc", *args,
                    needles=needles, absent=(where / "r.nc",), process=True,
                    env={"DASK_RV2DIST__SCHEDULER_TIMEOUT": "3", **(env or {})})
    return run


def _garbage_scheduler_file():
    path = folder("sched-file") / "scheduler.json"
    path.write_text("{not json")
    return path


for _name, _args, _needles, _env in [
    ("garbage-address", ("--scheduler", "garbage"), ("garbage",), None),
    ("unreachable-port", ("--scheduler", "tcp://127.0.0.1:1"), ("127.0.0.1:1",), None),
    ("address-with-space", ("--scheduler", "tcp://127.0.0.1: 8786"), ("8786",), None),
    ("missing-file", ("--scheduler-file", "/nonexistent/scheduler.json"), ("scheduler.json",), None),
    ("env-garbage", (), ("garbage",), {"DASK_SCHEDULER_ADDRESS": "garbage"}),
    ("timeout-garbage", ("--scheduler", "tcp://127.0.0.1:1"), ("timeout",),
     {"DASK_RV2DIST__SCHEDULER_TIMEOUT": "soon"}),
]:
    case("6-resources", f"scheduler-{_name}")(_scheduler_refused(_args, _needles, _env))


@case("6-resources")
def scheduler_file_garbage():
    stores, where = pair_stores(), folder("scheduler")
    path = _garbage_scheduler_file()
    cli_refuses("-q", "compare", stores["pa"], stores["pb"], "--out", where / "r.nc", "--scheduler-file", path,
                needles=(str(path),), absent=(where / "r.nc",))


def _client_refused(client, needles):
    def run():
        x, y = related(50, 3, 2)
        refuses(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric="cca", client=client), *needles)
    return run


for _client, _needles in [("garbage", ("garbage",)), (5, ("client", "int")), (object(), ("client", "object"))]:
    case("6-resources", f"api-client={_client!r}"[:40])(_client_refused(_client, _needles))


@case("6-resources")
def api_client_unreachable():
    import dask

    x, y = related(50, 3, 2)
    with dask.config.set({"rv2dist.scheduler-timeout": 2}):
        refuses(lambda: rv2dist.similarity({"x": x}, {"y": y}, metric="cca", client="tcp://127.0.0.1:1"),
                "127.0.0.1:1")


@case("6-resources")
def device_gpu():
    """device='gpu': the reference's values where a GPU is usable, else a message naming CuPy and the GPU."""
    x, y = related(50, 3, 2)
    call = lambda: rv2dist.similarity({"x": x}, {"y": y}, metric=["cca", "rv2"], device="gpu")  # noqa: E731
    try:
        result, _ = quietly(call)
    except MESSAGES:
        refuses(call, "cupy", "gpu")
        return
    check_values(result, ["cca", "rv2"], {"x": x}, {"y": y}, rtol=1e-6)


@case("6-resources")
def job_with_garbage_scheduler():
    where = folder("job-scheduler")
    job = job_file(where, 'metrics = ["cca"]')
    cli_refuses("-q", "run", job, "--scheduler", "nowhere", needles=("nowhere",), absent=(where / "results",))


# === running ================================================================================

def run_case(function):
    try:
        function()
    except Verdict as verdict:
        return verdict.verdict, verdict.note
    except Exception as error:  # noqa: BLE001 - the probe classifies whatever comes
        return "traceback", f"(in the probe) {type(error).__name__}: {error}"
    return "ok", ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only the cases whose id or area holds this text")
    parser.add_argument("--json", metavar="FILE", help="also write the verdicts as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the stores and results it writes (a folder rv2dist-probe-* in the temporary folder)")
    args = parser.parse_args(argv)
    os.environ.setdefault("DASK_RV2DIST__PROGRESS", "false")
    counts = dict.fromkeys(VERDICTS, 0)
    areas, rows = {}, []
    for number, (name, area, function) in enumerate(CASES, 1):
        if args.k not in name and args.k not in area:
            continue
        started = time.perf_counter()
        verdict, note = run_case(function)
        counts[verdict] += 1
        areas[area] = areas.get(area, 0) + 1
        rows.append({"id": number, "case": name, "area": area, "verdict": verdict, "note": note})
        print(f"{number:3d} {area:12s} {verdict:13s} {name}  ({time.perf_counter() - started:.1f}s) {note}"[:400],
              flush=True)
    print("\ncases per area: " + ", ".join(f"{area} {count}" for area, count in areas.items()))
    print("verdicts: " + ", ".join(f"{verdict} {count}" for verdict, count in counts.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if _CLUSTER is not None:
        _CLUSTER.close()
    if _SCRATCH and args.keep:
        print(f"stores and results: {_SCRATCH[0]}")
    elif _SCRATCH:
        shutil.rmtree(_SCRATCH[0], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
