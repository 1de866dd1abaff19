"""Job files (``rv2dist run JOB.toml``): what a job is, read and checked.

A job names network stores, the comparisons to make, the metrics and options, and an
output folder::

    name = "seed study"          # default: the job file's name
    out = "results"              # inside the job file's folder ('rv2dist run --out DIR': anywhere)
    metrics = ["rv2", "cka"]     # default ["rv2"]
    center = true
    route = "auto"
    format = "nc"                # or "zarr"
    plots = true                 # a PNG heatmap of the first metric per comparison
    align_obs = false            # reorder b's observations to a's when the id sets match
    tests = true                 # z, p and corrected p per metric (see rv2dist.similarity)
    correction = "holm"          # or "bh"
    permutations = 1000          # Monte Carlo permutation p-values (optional)
    bootstrap = 200              # Poisson bootstrap percentile intervals (optional)
    keep_replicates = false      # also store each replicate (for rv2dist.compare_cells/compare_results)
    seed = 0
    confidence = 0.95
    alpha = 1.0                  # the second-moment measures' options (see rv2dist.similarity)
    ridge_lambda = 0.1
    svcca_variance = 0.99

    [networks]
    standard = "stores/standard.zarr"
    freeze = "stores/freeze.zarr"
    untrained = "stores/untrained.zarr"

    [[compare]]                  # each network against a reference
    reference = "standard"
    against = ["freeze", "untrained"]     # or "all": every other network

    [[compare]]
    pairs = [["freeze", "untrained"]]

    [[compare]]
    self = ["standard"]          # a network against itself

Results are named ``<a>__<b>.nc`` after the networks; a name with characters other than
letters, digits, ``.``, ``-`` and ``_`` gets them replaced and a short digest added, so no
name places a file outside the results folder.  Unknown keys, here or inside a
``[[compare]]`` table, and values of the wrong type are errors naming the file and key.
Running a job is :mod:`rv2dist.service.runner`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rv2dist.core.checks import first_repeated
from rv2dist.io.results import RESULT_FORMATS
from rv2dist.planning.routes import ROUTE_CHOICES


@dataclass(frozen=True)
class _Key:
    """A key of a job file: the TOML types it takes, and how an error says them."""

    kinds: type | tuple
    said: str


JOB_KEYS = {
    "name": _Key(str, "a string"),
    "out": _Key(str, "a folder path in quotes"),
    "metrics": _Key((str, list), "a list of metric names"),
    "center": _Key(bool, "true or false"),
    "route": _Key(str, "a string"),
    "format": _Key(str, "a string"),
    "plots": _Key(bool, "true or false"),
    "align_obs": _Key(bool, "true or false"),
    "networks": _Key(dict, "a [networks] table"),
    "compare": _Key(list, "[[compare]] tables"),
    "tests": _Key(bool, "true or false"),
    "correction": _Key(str, "a string"),
    "permutations": _Key(int, "a positive integer"),
    "bootstrap": _Key(int, "a positive integer"),
    "seed": _Key(int, "a non-negative integer"),
    "confidence": _Key(float, "a number between 0 and 1, e.g. 0.95"),
    "keep_replicates": _Key(bool, "true or false"),
    "alpha": _Key((int, float), "a number from 0 to 1"),
    "ridge_lambda": _Key((int, float), "a number of 0 or more"),
    "svcca_variance": _Key((int, float), "a number above 0, at most 1"),
    "rcond": _Key((int, float), "a number from 0 to 1"),
}
COMPARE_KEYS = {
    "reference": _Key(str, "a network name in quotes"),
    "against": _Key((str, list), '"all" or a list of network names'),
    "pairs": _Key(list, 'a list of two-name lists, as [["a", "b"]]'),
    "self": _Key(list, "a list of network names"),
}
# keys passed on to rv2dist.similarity as they are
RESAMPLING_KEYS = ("tests", "correction", "permutations", "bootstrap", "seed", "confidence", "keep_replicates")
# the second-moment measures' options, passed on to rv2dist.similarity as they are
MEASURE_KEYS = ("alpha", "ridge_lambda", "svcca_variance", "rcond")


class JobError(ValueError):
    """A job file is malformed or refers to something that is not there."""


@dataclass(frozen=True)
class Comparison:
    """Network ``a`` against network ``b`` (the same name: against itself)."""

    a: str
    b: str

    @property
    def name(self) -> str:
        return f"{self.a}__{self.b}"

    @property
    def file_name(self) -> str:
        """The name as a file name that stays in the results folder, whatever the
        network names hold."""
        return f"{safe_file_name(self.a)}__{safe_file_name(self.b)}"


def safe_file_name(name: str) -> str:
    """``name`` with every character but letters, digits, ``.``, ``-`` and ``_`` (and a
    leading dot) replaced, plus a short digest when anything was, so that two names
    never share a file."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".").replace("__", "_") or "_"
    if safe != name:
        safe += "-" + hashlib.sha256(name.encode()).hexdigest()[:6]
    return safe


@dataclass(frozen=True)
class Job:
    """A parsed job file (see the module docstring for its keys).  ``resampling`` and
    ``measure_options`` hold the significance keys and the second-moment measures'
    options the file gives, as it gives them."""

    source: Path
    name: str
    networks: Mapping[str, Path]
    comparisons: tuple[Comparison, ...]
    metrics: tuple[str, ...] = ("rv2",)
    center: bool = True
    route: str = "auto"
    result_format: str = "nc"
    plots: bool = True
    align_obs: bool = False
    out: Path = Path("results")
    resampling: Mapping[str, object] = field(default_factory=dict)
    measure_options: Mapping[str, object] = field(default_factory=dict)

    def result_path(self, comparison: Comparison) -> Path:
        return self.out / f"{comparison.file_name}.{self.result_format}"

    def plot_path(self, comparison: Comparison) -> Path:
        return self.out / f"{comparison.file_name}.png"


def load_job(path, out=None) -> Job:
    """Read and check a job file; errors name the file and the key at fault.

    Parameters
    ----------
    path : str or Path
        The job file (TOML).
    out : str or Path, optional
        Results folder chosen on the command line; it may be anywhere, while the job's
        own ``out`` must stay inside the job file's folder.
    """
    path = Path(path)
    spec = _read_toml(path)
    _check_keys(path, spec, JOB_KEYS, f"a job has {', '.join(sorted(JOB_KEYS))}")
    networks = _networks(path, spec.get("networks"))
    metrics = _metrics(path, spec.get("metrics", ["rv2"]))
    route = _choice(path, "route", spec.get("route", "auto"), ROUTE_CHOICES)
    resampling = _resampling(path, spec)
    _check_measures(path, metrics, route, resampling.get("tests", False))
    return Job(
        source=path, name=str(spec.get("name", path.stem)), networks=networks,
        comparisons=_comparisons(path, spec.get("compare"), list(networks)),
        metrics=metrics, center=spec.get("center", True), route=route,
        result_format=_choice(path, "format", spec.get("format", "nc"), RESULT_FORMATS),
        plots=spec.get("plots", True), align_obs=spec.get("align_obs", False),
        out=_output_folder(path, spec.get("out", "results"), out), resampling=resampling,
        measure_options=_measure_options(path, spec),
    )


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise JobError(f"{path}: no such job file")
    try:
        import tomllib as toml
    except ImportError:  # Python 3.10
        import tomli as toml
    try:
        return toml.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark some editors add
    except (toml.TOMLDecodeError, UnicodeDecodeError) as error:
        raise JobError(f"{path}: not valid TOML: {error}") from None


def _check_keys(path, table, keys, has, where=None):
    """No key but ``keys`` (``has`` lists them), each of its type; ``where`` names the
    table in errors (None: the job's top level)."""
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise JobError(f"{path}: {where + ' has ' if where else ''}unknown key {unknown[0]!r}; {has}")
    for key, value in table.items():
        kinds = keys[key].kinds
        # TOML's true is no count (bool is an int subclass in Python)
        if not isinstance(value, kinds) or (kinds is not bool and isinstance(value, bool)):
            hint = f", as {key} = [{value!r}]" if where and isinstance(value, str) else ""
            raise JobError(f"{path}: {where + ': ' if where else ''}{key} must be {keys[key].said}{hint}, "
                           f"not {value!r}")


def _resampling(path, spec) -> dict:
    from rv2dist.planning.options import check_resampling

    resampling = {key: spec[key] for key in RESAMPLING_KEYS if key in spec}
    try:
        check_resampling(**{key: None for key in RESAMPLING_KEYS}
                          | {"tests": False, "correction": "holm", "confidence": 0.95, "keep_replicates": False}
                          | resampling)
    except (TypeError, ValueError) as error:
        raise JobError(f"{path}: {error}") from None
    return resampling


def _measure_options(path, spec) -> dict:
    from rv2dist.core.block_measures import check_measure_options

    options = {key: spec[key] for key in MEASURE_KEYS if key in spec}
    try:
        check_measure_options(**options)
    except (TypeError, ValueError) as error:
        raise JobError(f"{path}: {error}") from None
    return options


def _check_measures(path, metrics, route, tests):
    """The metrics against the route and the tests, before any cluster starts."""
    from rv2dist.core.measures import MEASURES
    from rv2dist.core.significance import check_tests

    blocks = [name for name in metrics if MEASURES[name].family == "blocks"]
    if route == "gram" and blocks:
        raise JobError(f'{path}: route = "gram" sums no p x p blocks, which metrics {", ".join(blocks)} need; give '
                       'route = "auto" or "feature", or leave them out')
    try:
        check_tests(metrics, tests)
    except ValueError as error:
        raise JobError(f"{path}: {error}") from None


def _networks(path, networks) -> dict:
    if not isinstance(networks, dict) or not networks:
        raise JobError(f"{path}: needs a [networks] table of name = \"store path\"")
    for name, location in networks.items():
        if not isinstance(location, str):
            raise JobError(f"{path}: [networks] {name} must be a store path in quotes, not {location!r}")
    return {name: (path.parent / location) for name, location in networks.items()}


def _metrics(path, metrics) -> tuple[str, ...]:
    from rv2dist.core.measures import MEASURES, check_names

    if isinstance(metrics, list) and not metrics:
        raise JobError(f"{path}: metrics is empty; name at least one of {', '.join(MEASURES)}")
    try:
        return tuple(check_names(metrics))
    except (TypeError, ValueError) as error:
        raise JobError(f"{path}: {error}") from None


def _choice(path, key, value, choices):
    if value not in choices:
        raise JobError(f"{path}: {key} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _output_folder(path, relative, override):
    """The results folder: ``override`` (a command-line choice, anywhere) or the job's
    ``out``, which must stay inside the job file's folder."""
    if override is not None:
        return Path(override)
    base = path.parent.resolve()
    folder = (base / relative).resolve()
    if Path(relative).is_absolute() or (folder != base and base not in folder.parents):
        raise JobError(f"{path}: out = {relative!r} leaves the job's folder {base}; give a folder inside it, "
                       "or choose one anywhere with 'rv2dist run JOB --out DIR'")
    return folder


def _comparisons(path, entries, names) -> tuple[Comparison, ...]:
    if not entries:
        raise JobError(f"{path}: needs at least one [[compare]] table")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise JobError(f"{path}: compare must be [[compare]] tables")
    found = []
    for number, entry in enumerate(entries, 1):
        found += _CompareTable(path, f"[[compare]] number {number}", names).comparisons(entry)
    found = tuple(dict.fromkeys(found))  # a comparison named twice runs once
    clash = first_repeated(c.name for c in found)
    if clash is not None:
        # the results name each comparison <a>__<b>: two of one name would be one label in combined.nc
        both = " and ".join(f"{c.a!r} against {c.b!r}" for c in found if c.name == clash)
        raise JobError(f"{path}: comparisons {both} would both be called {clash!r} in the results; rename a "
                       "network (a '__' in a network name makes such clashes)")
    return found


@dataclass(frozen=True)
class _CompareTable:
    """One ``[[compare]]`` table of ``path``, called ``where`` in errors, among the
    networks ``names``."""

    path: Path
    where: str
    names: list

    def fail(self, message):
        raise JobError(f"{self.path}: {self.where}: {message}")

    def comparisons(self, entry) -> list[Comparison]:
        _check_keys(self.path, entry, COMPARE_KEYS, f"a comparison has {', '.join(COMPARE_KEYS)}", self.where)
        if len([kind for kind in ("reference", "pairs", "self") if kind in entry]) != 1:
            raise JobError(f"{self.path}: {self.where} needs exactly one of reference/against, pairs or self")
        if "against" in entry and "reference" not in entry:
            self.fail("against goes with reference")
        empty = next((key for key in ("against", "pairs", "self") if entry.get(key) == []), None)
        if empty:
            self.fail(f"{empty} is empty, which makes no comparison; name at least one network, or leave the "
                      "table out")
        if "reference" in entry:
            return self.against_reference(entry["reference"], entry.get("against", "all"))
        if "pairs" in entry:
            return [self.pair(pair) for pair in entry["pairs"]]
        return [Comparison(n, n) for n in self.network_list(entry["self"], "self")]

    def against_reference(self, reference, against) -> list[Comparison]:
        reference = self.known(reference)
        if against != "all":
            others = self.network_list(against, "against")
        else:
            others = [n for n in self.names if n != reference]
            if not others:
                self.fail(f"reference {reference!r} has no other network to compare against ([networks] lists "
                          "only it)")
        return [Comparison(reference, other) for other in others]

    def pair(self, pair) -> Comparison:
        if not isinstance(pair, list) or len(pair) != 2:
            self.fail(f"a pair needs two networks, as [\"a\", \"b\"], got {pair!r}")
        return Comparison(self.known(pair[0]), self.known(pair[1]))

    def known(self, name) -> str:
        if not isinstance(name, str) or name not in self.names:
            raise JobError(f"{self.path}: {self.where} names network {name!r}, which [networks] does not list")
        return name

    def network_list(self, value, key) -> list[str]:
        if not isinstance(value, list):
            self.fail(f"{key} must be a list of network names, as {key} = [{value!r}]")
        return [self.known(name) for name in value]
