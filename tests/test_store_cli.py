"""Activation stores and the command line: round trips, bad input, exit statuses."""

import numpy as np
import pytest

import rv2dist
from conftest import relu_network, run_cli, write_unchecked
from rv2dist import cli
from rv2dist.io.errors import StoreError
from rv2dist.io.results import read_result
from rv2dist.io.writer import write_activations


def test_store_round_trip_gives_same_matrix(rng, tmp_path):
    a = relu_network(rng, 300, (4, 30, 7))
    b = relu_network(rng, 300, (12, 3))
    for name, layers in (("a", a), ("b", b)):
        rv2dist.write_activations(tmp_path / f"{name}.zarr", layers, chunk_bytes=4000)
    opened = rv2dist.open_activations(tmp_path / "a.zarr")
    assert list(opened.attrs["layers"]) == list(a)
    assert len(opened["l1"].data.chunks[0]) > 1
    got = rv2dist.similarity(tmp_path / "a.zarr", str(tmp_path / "b.zarr"), metric=["rv2", "cka"])
    want = rv2dist.similarity(a, b, metric=["rv2", "cka"])
    assert list(got.layer_a.values) == list(a) and list(got.layer_b.values) == list(b)
    for metric in ("rv2", "cka"):
        assert np.array_equal(got[metric].values, want[metric].values) or np.max(
            np.abs(got[metric].values - want[metric].values)) < 1e-13


def test_zarr_v2_store_readable(rng, tmp_path):
    a = relu_network(rng, 50, (3, 5))
    rv2dist.write_activations(tmp_path / "v2.zarr", a, zarr_format=2)
    assert rv2dist.similarity(tmp_path / "v2.zarr").shape == (2, 2)


def test_bad_stores_name_the_fault(rng, tmp_path):
    with pytest.raises(StoreError, match="no such activation store"):
        rv2dist.open_activations(tmp_path / "missing.zarr")
    (tmp_path / "empty.zarr").write_text("")
    with pytest.raises(StoreError, match="not an activation store"):
        rv2dist.open_activations(tmp_path / "empty.zarr")
    (tmp_path / "folder.zarr").mkdir()
    with pytest.raises(StoreError, match="not a zarr store"):
        rv2dist.open_activations(tmp_path / "folder.zarr")
    (tmp_path / ".half.zarr.partial-1234").mkdir()
    with pytest.raises(StoreError, match="interrupted"):
        rv2dist.open_activations(tmp_path / "half.zarr")
    rv2dist.write_activations(tmp_path / "a.zarr", relu_network(rng, 20, (2,)), obs=[f"s{i}" for i in range(20)])
    rv2dist.write_activations(tmp_path / "b.zarr", relu_network(rng, 20, (2,)),
                              obs=[f"s{i}" for i in range(19)] + ["other"])
    with pytest.raises(ValueError, match="observation ids differ first at position 19: 's19' against 'other' "
                                         r"\(network a \(.*a.zarr\) against network b \(.*b.zarr\);"):
        rv2dist.similarity(tmp_path / "a.zarr", tmp_path / "b.zarr")
    rv2dist.write_activations(tmp_path / "c.zarr", relu_network(rng, 15, (2,)))
    with pytest.raises(ValueError, match=r"network a \(.*a.zarr\) holds 20 observations and network b "
                                         r"\(.*c.zarr\) 15; the two must hold the same observations"):
        rv2dist.similarity(tmp_path / "a.zarr", tmp_path / "c.zarr")


def test_cli_compare_info_plot_and_errors(rng, tmp_path):
    rv2dist.write_activations(tmp_path / "a.zarr", relu_network(rng, 200, (3, 9)), network="alpha")
    rv2dist.write_activations(tmp_path / "b.zarr", relu_network(rng, 200, (4,)), network="beta")
    done = run_cli("compare", tmp_path / "a.zarr", tmp_path / "b.zarr", "--metric", "rv2", "cka",
                    "--out", tmp_path / "r.nc", "--plot", tmp_path / "r.png")
    assert done.returncode == 0, done.stderr
    result = read_result(tmp_path / "r.nc")
    want = rv2dist.similarity(tmp_path / "a.zarr", tmp_path / "b.zarr", metric="rv2")
    assert np.max(np.abs(result.rv2.values - want.values)) < 1e-12
    assert result.attrs["network_a"] == "alpha" and result.attrs["network_b"] == "beta"
    assert (tmp_path / "r.png").stat().st_size > 1000
    info = run_cli("info", tmp_path / "a.zarr")
    assert info.returncode == 0 and "alpha" in info.stdout and "l1" in info.stdout
    assert run_cli("plot", tmp_path / "r.nc", "--out", tmp_path / "p.svg").returncode == 0

    broken = relu_network(rng, 200, (3, 9))
    broken["l1"][5, 0] = np.inf
    write_unchecked(tmp_path / "inf.zarr", broken, network="gamma")
    cases = [
        (("compare", tmp_path / "a.zarr", tmp_path / "inf.zarr", "--out", tmp_path / "x.nc"),
         f"layer 'l1' of network b ({tmp_path / 'inf.zarr'}) contains NaN or Inf"),
        (("compare", tmp_path / "nope.zarr", "--out", tmp_path / "x.nc"), "nope.zarr"),
        (("compare", tmp_path / "a.zarr", "--out", tmp_path / "x.txt"), "x.txt"),
        (("compare", tmp_path / "a.zarr", "--out", tmp_path / "no/dir/x.nc"), "does not exist"),
        (("compare", tmp_path / "a.zarr", "--layers", "fc9", "--out", tmp_path / "x.nc"), "fc9"),
        (("info", tmp_path / "nope.zarr"), "nope.zarr"),
        (("plot", tmp_path / "r.nc", "--metric", "rv", "--out", tmp_path / "q.png"), "'rv'"),
        (("plot", tmp_path / "nope.nc", "--out", tmp_path / "q.png"), "nope.nc"),
        (("demo", "--n-obs", "2", "--out", tmp_path / "d"), "--n-obs"),
    ]
    for args, named in cases:
        done = run_cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert named in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert "100%" not in done.stderr, done.stderr  # a failed job's bar does not claim it finished
    assert not (tmp_path / "x.nc").exists() and not (tmp_path / "q.png").exists()
    assert run_cli("compare").returncode == 2


def test_main_returns_two_on_bad_input(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path / "missing.zarr")]) == 2
    assert "missing.zarr" in capsys.readouterr().err


def test_compare_says_what_a_long_job_costs_before_it_starts(rng, tmp_path, monkeypatch):
    from rv2dist import api
    from rv2dist.planning.plan import cost_line

    write_activations(tmp_path / "a.zarr", relu_network(rng, 200, (6, 9)))
    monkeypatch.setattr(api, "COST_LINE_FLOP", 0)  # as if the job were long
    done = run_cli("compare", tmp_path / "a.zarr", "--out", tmp_path / "r.nc", "--bootstrap", "50")
    assert done.returncode == 0, done.stderr
    want = cost_line(rv2dist.plan(tmp_path / "a.zarr", bootstrap=50))
    lines = [line for line in done.stderr.splitlines() if "this job computes" in line]
    assert lines == [want] and "50 bootstrap replicates" in want


def test_demo_runs_end_to_end(tmp_path):
    done = run_cli("demo", "--n-obs", "600", "--out", tmp_path / "demo")
    assert done.returncode == 0, done.stderr
    result = read_result(tmp_path / "demo" / "result.nc")
    assert result.rv2.shape == (11, 11)
    # like two trained seeds: each layer most alike its counterpart, early layers nearly
    # identical, similarity falling off the diagonal and with depth
    values = result.rv2.values
    assert (values.argmax(axis=1) == np.arange(11)).all()
    assert values[0, 0] > 0.9 and values[0, 0] > values[-1, -1] + 0.3
    assert values[5, 5] > values[5, 7] > values[5, 10]
    assert "synthetic" in done.stdout and "compare_models" in done.stdout
    assert (tmp_path / "demo" / "rv2.png").exists()


def test_demo_replaces_an_earlier_demo_only_when_asked(rng, tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    rv2dist.write_activations(out / "standard.zarr", relu_network(rng, 20, (3,)))
    (out / "rv2.png").write_bytes(b"mine")
    times = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert cli.main(["demo", "--out", str(out), "--n-obs", "50"]) == 2  # refused before any work
    assert f"{out} holds an earlier demo's standard.zarr, rv2.png; pass --overwrite to replace them" in \
        capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == times
    assert sorted(p.name for p in out.iterdir()) == ["rv2.png", "standard.zarr"]


def test_cli_shows_rv2dists_warnings_once_as_plain_lines(rng, tmp_path):
    layers = relu_network(rng, 60, (3, 4))
    rv2dist.write_activations(tmp_path / "a.zarr", layers)
    done = run_cli("compare", tmp_path / "a.zarr", "--out", tmp_path / "r.nc", "--bootstrap", "5")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "replicates" in line]
    assert lines == [("rv2dist compare: warning: bootstrap=5: with fewer than 41 replicates the 0.95 interval's "
                      "ends rest on the most extreme replicates; use 41 or more (1,000 for a paper)")], done.stderr
    # found in a task on a worker process, told by the command
    rv2dist.write_activations(tmp_path / "flat.zarr", {"flat": np.full((60, 2), 3.0), **layers})
    done = run_cli("compare", tmp_path / "a.zarr", tmp_path / "flat.zarr", "--out", tmp_path / "f.nc")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "variance" in line]
    assert lines == ["rv2dist compare: warning: layer(s) 'flat' have zero variance: their rows/columns are NaN"]
    assert list(np.atleast_1d(read_result(tmp_path / "f.nc").attrs["undefined_layers"])) == ["flat"]
