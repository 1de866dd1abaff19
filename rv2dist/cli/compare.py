"""The ``compare`` verb (two stores, or one against itself, into one result file) and
``demo`` (two synthetic networks compared the same way)."""

from __future__ import annotations

import os
from pathlib import Path

from rv2dist.cli.connection import connect, device, show_links
from rv2dist.cli.parser import UsageError, check_at_least, progress_on
from rv2dist.service.jobfile import MEASURE_KEYS, RESAMPLING_KEYS

DEMO_RESULT, DEMO_PLOT = "result.nc", "rv2.png"


def run_compare(args):
    from rv2dist.core import significance
    from rv2dist.io.reader import open_activations
    from rv2dist.io.results import check_result_path
    from rv2dist.planning.options import check_job_options
    from rv2dist.plot.figures import check_figure_path

    check_result_path(args.out)  # before any work: a result replaces no folder or store
    if args.plot:
        check_figure_path(args.plot)
    for path in filter(None, (args.a, args.b)):
        open_activations(path)
    resampling = {key: getattr(args, key) for key in RESAMPLING_KEYS}
    measure_options = {key: getattr(args, key) for key in MEASURE_KEYS}
    check_job_options(list(args.metric), resampling, measure_options)  # before the cluster starts
    options = dict(metric=list(args.metric), center=not args.no_center, route=args.route, layers=args.layers,
                   device=device(args), align_obs=args.align_obs, precision=args.precision,
                   memory_budget=args.memory_budget, **resampling, **measure_options)
    with connect(args) as client:
        show_links(client)
        result = compare_stores(args.a, args.b, options, out=Path(args.out), plot=args.plot, client=client,
                                progress=progress_on(args))
    first = args.metric[0]
    print(_title(result, first))
    print(result[first].to_pandas().round(3).to_string())
    if f"{first}_p_corrected" in result.data_vars:
        print(f"\n{first}: p-values corrected across the matrix ({args.correction})")
        print(result[f"{first}_p_corrected"].to_pandas().to_string(float_format="{:.2g}".format))
        if significance.at_floor(result[f"{first}_p"].values).any():
            print(f"(p-values of {significance.P_FLOOR:g} rest on the floor: p <= {significance.P_FLOOR:g}; "
                  f"{first}_z ranks those cells)")
    print(f"result: {args.out}")


def _title(result, metric) -> str:
    """The line above the printed matrix: the measure, the options it was computed
    with, and which network is which side (regression is not symmetric)."""
    from rv2dist.core.measures import MEASURES

    attrs = result[metric].attrs
    options = ", ".join(f"{key}={attrs[key]:g}" for key in MEASURES[metric].options if key in attrs)
    return (f"{metric}: {attrs.get('long_name', metric)}{f' ({options})' if options else ''}; rows: layers of "
            f"{result.attrs.get('network_a', 'a')}, columns: layers of {result.attrs.get('network_b', 'b')}")


def compare_stores(a, b, options, *, out, plot, client, progress):
    """Compare store ``a`` with ``b`` (None: itself) on ``client`` with
    :func:`rv2dist.similarity`'s keyword ``options``; write the labelled result to
    ``out`` (and its heatmap to ``plot``, unless None) and return it.  With
    ``progress``, the cost line of a long job and a bar of its tasks on stderr."""
    from rv2dist.api import plan, similarity, warn_undefined
    from rv2dist.io.reader import open_activations
    from rv2dist.io.results import write_result
    from rv2dist.io.schema import network_name
    from rv2dist.plot import heatmap
    from rv2dist.service.outputs import label_result
    from rv2dist.service.progress import announce_cost

    announce_cost(plan(a, b, client=client, **options), enabled=progress)  # what a long job costs, first
    result = _computed(similarity(a, b, client=client, **options, compute=False), client, progress)
    warn_undefined(result)
    net_a = network_name(open_activations(a), Path(a).stem)
    net_b = network_name(open_activations(b), Path(b).stem) if b else net_a
    result = label_result(result, store_a=a, store_b=b or a, network_a=net_a, network_b=net_b,
                          metrics=options["metric"])
    write_result(result, out)
    if plot:
        heatmap(result, plot)
    return result


def _computed(lazy, client, progress):
    """``lazy`` computed on ``client``, with a bar of its finished tasks (counted by the
    rv2dist board on the scheduler) subscribed to the computation's events."""
    from rv2dist.service import dashboard
    from rv2dist.service.cluster import compute
    from rv2dist.service.events import JobEvents
    from rv2dist.service.progress import TaskBar

    tasks = dashboard.tasks_of(lazy)
    events = JobEvents()
    with TaskBar(tasks, "compare", enabled=progress and dashboard.install(client)) as bar:
        bar.attach(events)
        return compute(client, lazy, tasks, events)


def run_demo(args):
    from rv2dist.io.results import check_result_path
    from rv2dist.io.writer import write_activations
    from rv2dist.service.demo import related_networks

    check_at_least(args, n_obs=4)
    out = Path(args.out)
    paths = [out / "standard.zarr", out / "drifted.zarr"]
    taken = [path for path in (*paths, out / DEMO_RESULT, out / DEMO_PLOT) if os.path.lexists(path)]
    if taken and not args.overwrite:
        raise UsageError(f"{out} holds an earlier demo's {', '.join(path.name for path in taken)}; pass "
                         "--overwrite to replace them, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    check_result_path(out / DEMO_RESULT)  # before any work: a result replaces no folder
    for path, layers in zip(paths, related_networks(args.n_obs)):
        write_activations(path, layers, network=path.stem, overwrite=args.overwrite,
                          attrs={"source": "rv2dist demo: synthetic activations, not a trained network"})
    # (no dashboard links: the cluster and its pages go when the demo ends in seconds)
    with connect(args) as client:
        result = compare_stores(paths[0], paths[1], dict(metric=["rv2", "cka"], device=device(args)),
                                out=out / DEMO_RESULT, plot=out / DEMO_PLOT, client=client, progress=progress_on(args))
    print("RV2 between the layers of two synthetic networks (random data shaped like two trained seeds\n"
          "of one architecture: corresponding layers most alike, early layers nearly identical):")
    print(result["rv2"].to_pandas().round(2).to_string())
    print(f"stores:  {paths[0]}  {paths[1]}")
    print(f"result:  {out / DEMO_RESULT}")
    print(f"heatmap: {out / DEMO_PLOT}")
    print("\nYour own networks:\n"
          "  rv2dist import acts.npz --out mine.zarr --pool            # .npz/.npy/.h5/.nc activations\n"
          "  rv2dist compare mine.zarr theirs.zarr --out result.nc --plot result.png\n"
          "  python: rv2dist.compare_models(model_a, model_b, loader, layers)   # two PyTorch models\n"
          "  many networks: rv2dist run job.toml (see docs/jobs.md)")
