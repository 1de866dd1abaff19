"""Declarative, resumable jobs: ``rv2dist run JOB.toml``.

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

Every comparison is submitted at once, so the scheduler reads a store's chunks once for
all the comparisons that share it.  Each result is written atomically the moment it is
finished, with a fingerprint of its inputs and parameters; running the job again skips
results whose fingerprint still matches and recomputes the others.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rv2dist.engine import buffers
from rv2dist.io.atomic import write_text
from rv2dist.io.chunks import chunk_checks
from rv2dist.io.errors import StoreError
from rv2dist.io.reader import open_activations, store_fingerprint
from rv2dist.io.results import COMBINED, RESULT_FORMATS, read_result, write_result
from rv2dist.io.schema import network_name
from rv2dist.core.significance import FLOOR_NOTE, MARK_LEVEL, floor_z

JOB_TYPES = {"name": str, "out": str, "metrics": (str, list), "center": bool, "route": str, "format": str,
             "plots": bool, "align_obs": bool, "networks": dict, "compare": list, "tests": bool, "correction": str,
             "permutations": int, "bootstrap": int, "seed": int, "confidence": float, "keep_replicates": bool}
JOB_TYPE_NAMES = {"name": "a string", "out": "a folder path in quotes", "metrics": "a list of metric names",
                  "center": "true or false", "route": "a string", "format": "a string", "plots": "true or false",
                  "align_obs": "true or false", "networks": "a [networks] table", "compare": "[[compare]] tables",
                  "tests": "true or false", "correction": "a string", "permutations": "a positive integer",
                  "bootstrap": "a positive integer", "seed": "a non-negative integer",
                  "confidence": "a number between 0 and 1, e.g. 0.95", "keep_replicates": "true or false"}
# keys passed on to rv2dist.similarity as they are
RESAMPLING_KEYS = ("tests", "correction", "permutations", "bootstrap", "seed", "confidence", "keep_replicates")
JOB_KEYS = set(JOB_TYPES)


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
    import re

    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".").replace("__", "_") or "_"
    if safe != name:
        safe += "-" + hashlib.sha256(name.encode()).hexdigest()[:6]
    return safe


@dataclass
class Job:
    """A parsed job file (see the module docstring for its keys)."""

    source: Path
    name: str
    networks: dict
    comparisons: list
    metrics: list = field(default_factory=lambda: ["rv2"])
    center: bool = True
    route: str = "auto"
    result_format: str = "nc"
    plots: bool = True
    align_obs: bool = False
    out: Path = Path("results")
    resampling: dict = field(default_factory=dict)

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
    if not path.is_file():
        raise JobError(f"{path}: no such job file")
    try:
        import tomllib as toml
    except ImportError:  # Python 3.10
        import tomli as toml
    try:
        spec = toml.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark some editors add
    except (toml.TOMLDecodeError, UnicodeDecodeError) as error:
        raise JobError(f"{path}: not valid TOML: {error}") from None
    unknown = sorted(set(spec) - JOB_KEYS)
    if unknown:
        raise JobError(f"{path}: unknown key {unknown[0]!r}; a job has {', '.join(sorted(JOB_KEYS))}")
    for key, kind in JOB_TYPES.items():
        # TOML's true is no count (bool is an int subclass in Python)
        if key in spec and (not isinstance(spec[key], kind) or (kind is not bool and isinstance(spec[key], bool))):
            raise JobError(f"{path}: {key} must be {JOB_TYPE_NAMES[key]}, not {spec[key]!r}")
    from rv2dist.planning.options import check_resampling
    from rv2dist.core.measures import MEASURES, check_names

    resampling = {key: spec[key] for key in RESAMPLING_KEYS if key in spec}
    try:
        check_resampling(**{key: None for key in RESAMPLING_KEYS}
                          | {"tests": False, "correction": "holm", "confidence": 0.95, "keep_replicates": False}
                          | resampling)
    except (TypeError, ValueError) as error:
        raise JobError(f"{path}: {error}") from None
    base = path.parent
    networks = spec.get("networks")
    if not isinstance(networks, dict) or not networks:
        raise JobError(f"{path}: needs a [networks] table of name = \"store path\"")
    for name, location in networks.items():
        if not isinstance(location, str):
            raise JobError(f"{path}: [networks] {name} must be a store path in quotes, not {location!r}")
    networks = {name: (base / location) for name, location in networks.items()}
    comparisons = _comparisons(path, spec.get("compare"), list(networks))
    metrics = spec.get("metrics", ["rv2"])
    if isinstance(metrics, list) and not metrics:
        raise JobError(f"{path}: metrics is empty; name at least one of {', '.join(MEASURES)}")
    try:
        metrics = check_names(metrics)
    except (TypeError, ValueError) as error:
        raise JobError(f"{path}: {error}") from None
    result_format = spec.get("format", "nc")
    if result_format not in RESULT_FORMATS:
        raise JobError(f"{path}: format must be one of {', '.join(RESULT_FORMATS)}, not {result_format!r}")
    route = spec.get("route", "auto")
    if route not in ("auto", "feature", "gram"):
        raise JobError(f"{path}: route must be auto, feature or gram, not {route!r}")
    return Job(
        source=path, name=str(spec.get("name", path.stem)), networks=networks, comparisons=comparisons,
        metrics=metrics, center=spec.get("center", True), route=route, result_format=result_format,
        plots=spec.get("plots", True), align_obs=spec.get("align_obs", False),
        out=_output_folder(path, spec.get("out", "results"), out), resampling=resampling,
    )


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


COMPARE_KEYS = {"reference": str, "against": (str, list), "pairs": list, "self": list}
COMPARE_TYPE_NAMES = {"reference": "a network name in quotes", "against": '"all" or a list of network names',
                      "pairs": 'a list of two-name lists, as [["a", "b"]]', "self": "a list of network names"}


def _comparisons(path, entries, names):
    if not entries:
        raise JobError(f"{path}: needs at least one [[compare]] table")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise JobError(f"{path}: compare must be [[compare]] tables")
    found = []

    def known(name, where):
        if not isinstance(name, str) or name not in names:
            raise JobError(f"{path}: {where} names network {name!r}, which [networks] does not list")
        return name

    def network_list(value, key, where):
        if not isinstance(value, list):
            raise JobError(f"{path}: {where}: {key} must be a list of network names, as {key} = [{value!r}]")
        return [known(name, where) for name in value]

    for number, entry in enumerate(entries, 1):
        where = f"[[compare]] number {number}"
        unknown = sorted(set(entry) - set(COMPARE_KEYS))
        if unknown:
            raise JobError(f"{path}: {where} has unknown key {unknown[0]!r}; "
                           f"a comparison has {', '.join(COMPARE_KEYS)}")
        kinds = [k for k in ("reference", "pairs", "self") if k in entry]
        if len(kinds) != 1:
            raise JobError(f"{path}: {where} needs exactly one of reference/against, pairs or self")
        if "against" in entry and "reference" not in entry:
            raise JobError(f"{path}: {where}: against goes with reference")
        for key, value in entry.items():
            if not isinstance(value, COMPARE_KEYS[key]):
                hint = f", as {key} = [{value!r}]" if isinstance(value, str) else ""
                raise JobError(f"{path}: {where}: {key} must be {COMPARE_TYPE_NAMES[key]}{hint}, not {value!r}")
        empty = next((key for key in ("against", "pairs", "self") if entry.get(key) == []), None)
        if empty:
            raise JobError(f"{path}: {where}: {empty} is empty, which makes no comparison; name at least one "
                           "network, or leave the table out")
        if "reference" in entry:
            reference = known(entry["reference"], where)
            against = entry.get("against", "all")
            if against == "all":
                others = [n for n in names if n != reference]
                if not others:
                    raise JobError(f"{path}: {where}: reference {reference!r} has no other network to compare "
                                   "against ([networks] lists only it)")
            else:
                others = network_list(against, "against", where)
            found += [Comparison(reference, other) for other in others]
        elif "pairs" in entry:
            for pair in entry["pairs"]:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise JobError(f"{path}: {where}: a pair needs two networks, as [\"a\", \"b\"], got {pair!r}")
                found.append(Comparison(known(pair[0], where), known(pair[1], where)))
        else:
            found += [Comparison(n, n) for n in network_list(entry["self"], "self", where)]
    return list(dict.fromkeys(found))  # a comparison named twice runs once


def inputs_of(job: Job, comparison: Comparison, store_prints) -> dict:
    """What a comparison's result depends on: both stores' content and the parameters."""
    return {"a": store_prints[comparison.a], "b": store_prints[comparison.b], "metrics": job.metrics,
            "center": job.center, "route": job.route, "align_obs": job.align_obs, **job.resampling}


def fingerprint(job: Job, comparison: Comparison, store_prints) -> str:
    """Digest of :func:`inputs_of`."""
    return hashlib.sha256(json.dumps(inputs_of(job, comparison, store_prints), sort_keys=True).encode()).hexdigest()


def _what_changed(job, comparison, previous, now):
    """Which input of a comparison changed since its result was written, in words."""
    if previous is None:
        return "its result was written without a record of its inputs"
    stores = {"a": job.networks[comparison.a], "b": job.networks[comparison.b]}
    changed = [f"store {stores[key]} changed" if key in stores else f"{key} changed"
               for key in now if previous.get(key) != now[key]]
    return ", ".join(dict.fromkeys(changed)) or "its inputs changed"


def _write_combined(job, finished, networks):
    """Combine the job's current results (done before, or computed now; in memory)
    along a ``comparison`` dimension and write them as one file."""
    from rv2dist import __version__
    from rv2dist.io.results import combine

    parts = [(comparison.name, networks[comparison.a], networks[comparison.b], finished[comparison])
             for comparison in job.comparisons if finished.get(comparison) is not None]
    if not parts:
        return None
    combined = combine(parts)
    # the options every comparison shared (bools as ints: netCDF has no booleans)
    combined.attrs.update({key: int(value) if isinstance(value, bool) else value
                           for key, value in job.resampling.items()})
    combined.attrs.update(job=job.name, metric=",".join(job.metrics), center=int(job.center),
                          route=routes_used(finished.values(), job.route), route_requested=job.route,
                          stores=json.dumps({name: str(path) for name, path in job.networks.items()}),
                          rv2dist_version=__version__,
                          created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    path = job.out / f"{COMBINED}.{job.result_format}"
    write_result(combined, path)
    return path


def routes_used(results, requested):
    """The routes the results were computed by, joined by commas (``requested`` when
    none is known yet)."""
    routes = sorted({str(r.attrs["route"]) for r in results if r is not None and r.attrs.get("route")})
    return ",".join(routes) or requested


def label_result(result, *, store_a, store_b, network_a, network_b, metrics, extra=None):
    """Provenance attrs of a result Dataset: inputs, parameters, version and time."""
    from rv2dist import __version__

    # the names as coordinates too: files opened together (open_mfdataset) keep them apart
    result = result.assign_coords(network_a=network_a, network_b=network_b)
    result["network_a"].attrs.update(long_name="network a", description="network of the rows (layer_a)")
    result["network_b"].attrs.update(long_name="network b", description="network of the columns (layer_b)")
    result.attrs.update(
        store_a=str(store_a), store_b=str(store_b), network_a=network_a, network_b=network_b,
        metric=",".join(metrics), rv2dist_version=__version__,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    )
    return result


def _recorded_inputs(path: Path):
    try:
        return json.loads(read_result(path).attrs["rv2dist_inputs"])
    except (StoreError, KeyError, ValueError):
        return None


def _finished_result(path: Path, wanted: str):
    """The result at ``path`` when it was computed from the same inputs and parameters
    (fingerprint ``wanted``), else None."""
    if not path.exists():
        return None
    try:
        result = read_result(path)
    except StoreError:
        return None
    return result if result.attrs.get("rv2dist_fingerprint") == wanted else None


def _check_kept_inputs(client, datasets, kept, stream):
    """Read every chunk of the stores of the ``kept`` comparisons on the cluster, each
    checked against its checksum: a chunk rewritten other than by rv2dist's writer leaves
    the store's fingerprint (its metadata and recorded checksums) as it was, and must not
    keep a result of the old data.  Costs one read of those stores, no products."""
    from rv2dist.service.cluster import watch

    names = sorted({name for comparison in kept for name in (comparison.a, comparison.b)})
    checks = [task for name in names for task in chunk_checks(datasets[name])]
    if not checks:
        return
    print(f"  check {', '.join(names)}: every chunk against its checksum (results kept rest on them)",
          file=stream, flush=True)
    futures = client.compute(checks)
    for future in watch(client, futures):
        if future.status == "error":
            error = future.exception()
            client.cancel(futures)
            raise error


def run_job(job: Job, client, *, device="cpu", progress=True, stream=None):
    """Run every comparison of ``job`` on ``client`` that is not already done.

    Parameters
    ----------
    job : Job
        From :func:`load_job`.
    client : distributed.Client
        The cluster to run on.
    device : {"cpu", "gpu"}
        Where the chunk products run.
    progress : bool
        A progress bar on stderr (overall, and per running comparison).
    stream : file, optional
        Where the per-comparison lines go (default stdout).

    Returns
    -------
    dict
        ``{"computed": [names], "skipped": [names]}``.

    Raises
    ------
    JobError
        After every other comparison has finished, when some failed (naming them).
    """
    from rv2dist.service import dashboard
    from rv2dist.api import plan, similarity, undefined_message
    from rv2dist.service.cluster import ClusterLostError, watch
    from rv2dist.service.progress import ProgressBar

    stream = stream or sys.stdout
    used = sorted({c.a for c in job.comparisons} | {c.b for c in job.comparisons})
    datasets = {name: open_activations(job.networks[name]) for name in used}
    prints = {name: store_fingerprint(job.networks[name]) for name in used}
    job.out.mkdir(parents=True, exist_ok=True)
    wanted = {c: fingerprint(job, c, prints) for c in job.comparisons}
    finished = {c: _finished_result(job.result_path(c), wanted[c]) for c in job.comparisons}
    skipped = [c for c in job.comparisons if finished[c] is not None]
    todo = [c for c in job.comparisons if finished[c] is None]
    print(f"job {job.name}: {len(job.comparisons)} comparisons; {len(skipped)} done before "
          f"(inputs and parameters unchanged), {len(todo)} to compute", file=stream, flush=True)
    for comparison in skipped:
        print(f"  skip {comparison.name}: done, {job.result_path(comparison)}", file=stream, flush=True)
        if job.plots and not job.plot_path(comparison).exists():
            _draw(job, comparison, finished[comparison])
            print(f"  drew {job.plot_path(comparison)}, which was missing", file=stream, flush=True)
    _check_kept_inputs(client, datasets, skipped, stream)
    for comparison in todo:
        if job.result_path(comparison).exists():
            previous = _recorded_inputs(job.result_path(comparison))
            reason = _what_changed(job, comparison, previous, inputs_of(job, comparison, prints))
            print(f"  recompute {comparison.name}: {reason} since {job.result_path(comparison)} was written",
                  file=stream, flush=True)

    board = dashboard.install(client)
    job_id = f"{job.name}-{uuid.uuid4().hex[:8]}"
    networks = {name: network_name(datasets[name], name) for name in used}

    def post(fields, **job_fields):
        if board:
            client.run_on_scheduler(dashboard.post_to_board, job_id, {"comparisons": fields, **job_fields})

    post({c.name: _board_entry(c, networks, "skipped", finished[c], job.metrics) for c in skipped} | {c.name: _board_entry(c, networks, "pending") for c in todo},
         name=job.name, status="running", started=datetime.datetime.now().timestamp(), client=client.id)

    options = dict(metric=list(job.metrics), center=job.center, route=job.route, client=client,
                   align_obs=job.align_obs, device=device, **job.resampling)

    def sides(comparison):
        return datasets[comparison.a], None if comparison.a == comparison.b else datasets[comparison.b]

    # for the report: how each comparison runs (shapes only, no data read)
    plans = {c: repr(plan(*sides(c), **options)) for c in job.comparisons}
    # a store in several comparisons is read by tasks of its own, which their graphs share
    shared = {name for name in used if sum(name in (c.a, c.b) for c in todo) > 1}
    lazies, tokens, task_totals = [], {}, {}
    for comparison in todo:
        reads = "read-tasks" if {comparison.a, comparison.b} & shared else "auto"
        lazy = similarity(*sides(comparison), **options, compute=False, reads=reads)
        token = dashboard.task_token(lazy.key)
        tokens[comparison] = token
        task_totals[comparison] = sum(dashboard.task_token(key) == token for key in lazy.__dask_graph__())
        post({comparison.name: {"status": "running", "token": token, "tasks_total": task_totals[comparison]}})
        lazies.append(lazy)
    # comparisons of the same data (one store under two names) have the same keys and
    # so one future: each of them is written when it finishes
    futures = {}
    submitted = time.perf_counter()
    for future, comparison in zip(client.compute(lazies) if todo else [], todo):
        futures.setdefault(future, []).append(comparison)
    seconds = {}
    computed, failed = [], {}
    bar = ProgressBar(len(todo), f"job {job.name}", unit="comparison", enabled=progress and bool(todo))
    pending = set(futures)

    def show_running():
        bar.detail = ""
        if pending and progress and board:
            running = [c for f in pending for c in futures[f]]
            done = client.run_on_scheduler(dashboard.tasks_done_on_board, [tokens[c] for c in running])
            bar.detail = ", ".join(f"{c.name} {100 * done.get(tokens[c], 0) // max(1, task_totals[c])}%"
                                   for c in running[:3]) + (" ..." if len(running) > 3 else "")
            bar.update(0)

    try:
        for future in watch(client, futures, on_poll=show_running):
            pending.discard(future)
            for comparison in futures[future]:
                if future.status == "error":
                    error = future.exception()
                    failed[comparison.name] = f"{type(error).__name__}: {error}"
                    post({comparison.name: {"status": "failed", "error": failed[comparison.name]}})
                    print(f"  FAILED {comparison.name}: {failed[comparison.name]}", file=stream, flush=True)
                else:
                    result = future.result().copy()  # its own attrs when a future serves two
                    seconds[comparison] = time.perf_counter() - submitted
                    _write(job, comparison, result, networks, wanted[comparison],
                           inputs_of(job, comparison, prints))
                    computed.append(comparison.name)
                    finished[comparison] = result
                    post({comparison.name: _board_entry(comparison, networks, "done", result, job.metrics,
                                                        seconds[comparison])})
                    print(f"  done {comparison.name} ({len(computed)}/{len(todo)}): {job.result_path(comparison)}",
                          file=stream, flush=True)
                    if result.attrs.get("undefined_layers"):
                        print(f"  note {comparison.name}: {undefined_message(result)}", file=stream, flush=True)
                bar.update()
    except BaseException as error:
        # best effort only: with the scheduler gone these fail too, and must not hide why
        with contextlib.suppress(Exception):
            client.cancel(list(futures))
        with contextlib.suppress(Exception):
            post({}, status="interrupted")
        saved = (f"{len(computed)} of {len(todo)} comparisons computed this run were saved in {job.out}; "
                 "run the job again to resume")
        if isinstance(error, ClusterLostError):
            raise ClusterLostError(f"{error}; {saved}") from None
        if isinstance(error, KeyboardInterrupt):
            raise KeyboardInterrupt(saved) from None
        raise
    finally:
        bar.close()
    buffers.job_finished(client)
    post({}, status="failed" if failed else "finished")
    combined = _write_combined(job, finished, networks)
    if combined is not None:
        print(f"  all results in one file: {combined} (rv2dist.open_results({str(job.out)!r}))",
              file=stream, flush=True)
    report = _write_report(job, networks, finished, plans, seconds, "failed" if failed else "finished")
    print(f"  report (opens without the cluster): {report}", file=stream, flush=True)
    if failed:
        names = ", ".join(failed)
        raise JobError(f"job {job.name}: {len(failed)} comparison(s) failed ({names}); "
                       f"first: {next(iter(failed.values()))}")
    return {"computed": computed, "skipped": [c.name for c in skipped]}


def _write(job, comparison, result, networks, digest, inputs):
    result = label_result(result, store_a=job.networks[comparison.a], store_b=job.networks[comparison.b],
                          network_a=networks[comparison.a], network_b=networks[comparison.b], metrics=job.metrics,
                          extra={"job": job.name, "rv2dist_fingerprint": digest,
                                 "rv2dist_inputs": json.dumps(inputs)})
    write_result(result, job.result_path(comparison))
    if job.plots:
        _draw(job, comparison, result)


def _draw(job, comparison, result):
    from rv2dist.plot import heatmap

    heatmap(result, job.plot_path(comparison))


def _board_entry(comparison, networks, status, result=None, metrics=None, seconds=None):
    entry = {"network_a": networks[comparison.a], "network_b": networks[comparison.b], "status": status}
    if result is not None:
        entry.update(matrices={metric: result[metric].values.tolist() for metric in metrics},
                     layers_a=[str(v) for v in result["layer_a"].values],
                     layers_b=[str(v) for v in result["layer_b"].values])
        # cells the page stars: corrected p below the level the heatmaps mark
        corrected = {metric: result[f"{metric}_p_corrected"].values for metric in metrics
                     if f"{metric}_p_corrected" in result.data_vars}
        if corrected:
            # where p rests on the floor, the page shows z in place of the star
            at_floor = {metric: floor_z(result[f"{metric}_p"].values, result[f"{metric}_z"].values)
                        for metric in corrected}
            at_floor = {metric: [[None if np.isnan(z) else round(float(z), 1) for z in row] for row in zs]
                        for metric, zs in at_floor.items() if zs is not None}
            entry.update(significant={metric: (np.nan_to_num(p, nan=1.0) < MARK_LEVEL).tolist()
                                      for metric, p in corrected.items()},
                         significance=f"* corrected p < {MARK_LEVEL:g} ({result.attrs.get('correction')})"
                         + (f"; {FLOOR_NOTE}" if at_floor else ""), floor_z=at_floor)
    if seconds is not None:
        entry["seconds"] = seconds
    return entry


def _write_report(job, networks, finished, plans, seconds, status):
    """``report.html`` in the results folder: every matrix of the job (values on hover,
    a metric selector), each comparison's plan and time, and the provenance — the
    rv2dist page with its data embedded, readable without the cluster."""
    from rv2dist import __version__
    from rv2dist.service import dashboard

    comparisons = []
    for comparison in job.comparisons:
        result = finished.get(comparison)
        entry = _board_entry(comparison, networks, "done" if result is not None else "not computed", result,
                             job.metrics, seconds.get(comparison))
        entry.update(name=comparison.name, plan=plans.get(comparison, ""))
        comparisons.append(entry)
    provenance = {"stores": ", ".join(f"{name} = {path}" for name, path in job.networks.items()),
                  "metrics": ", ".join(job.metrics), "center": job.center,
                  "route": routes_used(finished.values(), job.route),
                  "results": str(job.out), "rv2dist": __version__,
                  "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    done = sum(c["status"] == "done" for c in comparisons)
    data = {"jobs": [{"id": job.name, "name": job.name, "status": status, "comparisons_done": done,
                      "comparisons_total": len(comparisons), "comparisons": comparisons, "provenance": provenance}]}
    path = job.out / "report.html"
    write_text(path, dashboard.page_html(data))
    return path
