"""The import layers between rv2dist's packages, read from the source (no import runs).

Each package (or module at the top of rv2dist) lists the rv2dist packages its modules
may import, at module level or inside functions, and every one is listed: the layers of
docs/architecture.md, from the pure mathematics (core) up to the command line.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "rv2dist"

# package -> the rv2dist packages (besides itself) its modules may import
MAY_IMPORT = {
    "core": set(),
    "planning": {"core"},
    "engine": {"core", "planning"},
    "io": {"core"},
    "api": {"core", "planning", "engine", "io"},
    "differences": {"core", "io"},
    "plot": {"core", "io"},
    "record": {"core", "io", "planning", "api", "service"},  # service: the progress bar
    "service": {"core", "io", "planning", "engine", "api", "plot", "__version__"},
    "cli": {"core", "io", "planning", "api", "plot", "record", "service", "__version__"},
}


def rv2dist_imports(source, module):
    """``[(line, imported rv2dist module)]`` of every import in ``source``, the code of
    ``module`` (dotted, e.g. ``rv2dist.io.reader``), relative imports resolved."""
    found = []
    package = module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # "from rv2dist import engine" imports the package rv2dist.engine
            found += [(node.lineno, f"{base}.{alias.name}" if base == "rv2dist" else base) for alias in node.names]
    return [(line, name) for line, name in found if name == "rv2dist" or name.startswith("rv2dist.")]


def _modules(package):
    """The modules of a package, or the module of that name at the top of rv2dist."""
    paths = [ROOT / f"{package}.py"] if (ROOT / f"{package}.py").exists() else sorted((ROOT / package).rglob("*.py"))
    for path in paths:
        yield path, ".".join(("rv2dist",) + path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_packages_import_only_the_layers_below_them(package):
    allowed = {f"rv2dist.{name}" for name in MAY_IMPORT[package] | {package}}
    wrong = [f"{path.relative_to(ROOT.parent)}:{line} imports {name}"
             for path, module in _modules(package)
             for line, name in rv2dist_imports(path.read_text(), module)
             if not any(name == top or name.startswith(f"{top}.") for top in allowed)]
    assert not wrong, "\n".join(wrong)


def test_every_kind_of_import_is_seen():
    source = """
import rv2dist.engine.buffers
from rv2dist import api, core
from ..planning import plan
from . import chunks

def late():
    from rv2dist.service.jobs import run_job
"""
    assert sorted(name for _, name in rv2dist_imports(source, "rv2dist.io.reader")) == [
        "rv2dist.api", "rv2dist.core", "rv2dist.engine.buffers", "rv2dist.io", "rv2dist.planning",
        "rv2dist.service.jobs"]


def test_every_package_and_module_has_its_layer():
    present = {path.stem for path in ROOT.glob("*.py") if not path.stem.startswith("_")}
    present |= {path.name for path in ROOT.iterdir() if path.is_dir() and (path / "__init__.py").exists()}
    assert present == set(MAY_IMPORT)


@pytest.mark.parametrize("package", ["core", "planning"])
def test_the_pure_layers_touch_no_dask_xarray_zarr_or_files(package):
    """core and planning work on arrays and shapes: no graph library, no store, no file
    (dask.utils.parse_bytes, for a memory budget written as text, is the one exception)."""
    found = []
    for path, _ in _modules(package):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}:{node.lineno} {name}" for name in names
                      if name.split(".")[0] in ("dask", "distributed", "xarray", "zarr", "h5py")
                      and name != "dask.utils"]
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
                found.append(f"{path.name}:{node.lineno} open()")
    assert not found, found
