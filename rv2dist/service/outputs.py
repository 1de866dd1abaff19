"""The files a comparison leaves: its result labelled with its provenance (the
networks, stores, metrics, version and time), its heatmap, and a job's combined result."""

from __future__ import annotations

import datetime
import json

from rv2dist.io.results import COMBINED, combine, write_result
from rv2dist.service.jobfile import Comparison, Job


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def label_result(result, *, store_a, store_b, network_a, network_b, metrics, extra=None):
    """Provenance attrs of a result Dataset: inputs, parameters, version and time."""
    from rv2dist import __version__

    # the names as coordinates too: files opened together (open_mfdataset) keep them apart
    result = result.assign_coords(network_a=network_a, network_b=network_b)
    result["network_a"].attrs.update(long_name="network a", description="network of the rows (layer_a)")
    result["network_b"].attrs.update(long_name="network b", description="network of the columns (layer_b)")
    result.attrs.update(store_a=str(store_a), store_b=str(store_b), network_a=network_a, network_b=network_b,
                        metric=",".join(metrics), rv2dist_version=__version__, created=_now(), **(extra or {}))
    return result


def routes_used(results, requested) -> str:
    """The routes the results were computed by, joined by commas (``requested`` when
    none is known yet)."""
    routes = sorted({str(r.attrs["route"]) for r in results if r is not None and r.attrs.get("route")})
    return ",".join(routes) or requested


def write_comparison(job: Job, comparison: Comparison, result, networks, provenance) -> None:
    """Write a comparison's labelled result (and its heatmap when the job draws them);
    ``networks`` maps the job's network names to the stores' own, ``provenance`` holds
    the attrs a later run reads (see :mod:`rv2dist.service.resume`)."""
    result = label_result(result, store_a=job.networks[comparison.a], store_b=job.networks[comparison.b],
                          network_a=networks[comparison.a], network_b=networks[comparison.b], metrics=job.metrics,
                          extra={"job": job.name, **provenance})
    write_result(result, job.result_path(comparison))
    if job.plots:
        draw(job, comparison, result)


def draw(job: Job, comparison: Comparison, result) -> None:
    """The heatmap of a comparison's result, next to it."""
    from rv2dist.plot import heatmap

    heatmap(result, job.plot_path(comparison))


def write_combined(job: Job, results, networks):
    """Combine the job's current results (``{comparison: result}``, done before or now)
    along a ``comparison`` dimension and write them as one file; its path, or None when
    there is no result."""
    from rv2dist import __version__

    parts = [(comparison.name, networks[comparison.a], networks[comparison.b], results[comparison])
             for comparison in job.comparisons if results.get(comparison) is not None]
    if not parts:
        return None
    combined = combine(parts)
    # the options every comparison shared (bools as ints: netCDF has no booleans)
    combined.attrs.update({key: int(value) if isinstance(value, bool) else value
                           for key, value in {**job.resampling, **job.measure_options}.items()})
    combined.attrs.update(job=job.name, metric=",".join(job.metrics), center=int(job.center),
                          route=routes_used(results.values(), job.route), route_requested=job.route,
                          stores=json.dumps({name: str(path) for name, path in job.networks.items()}),
                          rv2dist_version=__version__, created=_now())
    path = job.out / f"{COMBINED}.{job.result_format}"
    write_result(combined, path)
    return path
