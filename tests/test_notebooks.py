"""The notebooks execute from a clean state (nbclient), and their figures render."""

import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name, tmp_path, monkeypatch):
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    # the kernel must find this environment's `rv2dist` command and packages
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    # the notebooks keep their working folders for the reader: here they go with tmp_path
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    # one OpenMP thread for the kernel's PyTorch and BLAS: beside the suite's other processes
    # on few cores, threads spinning for each other make a small model's training many times slower
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nbclient.NotebookClient(book, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    return book, outputs


@pytest.mark.slow
def test_quickstart_runs(tmp_path, monkeypatch):
    _, outputs = _execute("quickstart.ipynb", tmp_path, monkeypatch)
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("dashboard: http" in o.get("text", "") for o in outputs)


@pytest.mark.slow
def test_seed_study_replication_runs(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    book, outputs = _execute("seed_study_replication.ipynb", tmp_path, monkeypatch)
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 4  # analogues of the study's Figures 1, 2, 3 and 4
    table = book.cells[-2].outputs[-1]["data"]["text/plain"]
    assert "holds here" in table and table.count("True") + table.count("False") == 6


@pytest.mark.slow
def test_compare_transformers_runs(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    book, outputs = _execute("compare_transformers.ipynb", tmp_path, monkeypatch)
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("fine-tuned copy" in o.get("text", "") for o in outputs)


@pytest.mark.slow
def test_grounding_runs(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    pytest.importorskip("mnist1d")

    _, outputs = _execute("grounding.ipynb", tmp_path, monkeypatch)
    text = "".join(o.get("text", "") for o in outputs)
    # real training: the trained networks far above chance, the untrained ones near it
    accuracy = {data: (float(trained), float(untrained)) for data, trained, untrained in
                re.findall(r"(\w+): test accuracy trained ([\d.]+) \[.*?\], untrained ([\d.]+)", text)}
    assert set(accuracy) == {"digits", "mnist1d"}
    assert accuracy["digits"][0] > 0.9 and accuracy["mnist1d"][0] > 0.5
    assert all(untrained < 0.2 for _, untrained in accuracy.values())
    # the six tables, in order, each with the measures and both data sets
    _, identification, monotonicity, deletion, sensitivity, findings = (
        o["data"]["text/plain"] for o in outputs if "text/html" in o.get("data", {}))
    for table in (identification, monotonicity, deletion):
        assert all(name in table.splitlines()[0] for name in ("rv2", "rv", "cka", "cka_debiased"))
        assert all(name in table for name in ("cca_r2", "svcca", "pwcca", "procrustes_distance", "shape_metric",
                                              "linreg", "ridge"))
        assert "digits" in table and "mnist1d" in table
    assert "within 1 layer" in identification and "untrained" in monotonicity
    assert "linreg (reference predicts)" in identification
    assert "Spearman with accuracy change" in deletion and "low-variance" in deletion
    assert "shuffled" in sensitivity and "rv2_null" in sensitivity
    # the whitening measures at n = 100 (layers of up to 256 units): degenerate, not a value
    assert "(degenerate below)" in sensitivity and "estimate outside its interval" in sensitivity
    assert "100 -> 597" in sensitivity and "100 -> 600" in sensitivity
    # the findings are computed from the tables: at least 7 per data set (more with
    # linear regression or the CCA family among the measures)
    assert all(paper in findings for paper in ("Kornblith", "Klabunde", "Ding", "seed study"))
    held = re.search(r"(\d+) of (\d+) findings hold here", text)
    assert held and int(held.group(2)) >= 14 and 0 < int(held.group(1)) <= int(held.group(2))
    # every value checked against the dense float64 formulas
    checked = re.search(r"cross-check: ([\d,]+) values equal the dense float64 formulas", text)
    assert checked and int(checked.group(1).replace(",", "")) > 10_000
    assert re.search(r"whole grounding run: \d+ s, peak memory [\d,]+ MiB", text)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2
