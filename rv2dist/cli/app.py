"""The ``rv2dist`` command line.

Exit status: 0 on success; 2 on bad input or usage, with a one-paragraph message
naming the file, layer or value at fault and no partial output; 1 for anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from rv2dist.core.measures import MEASURES
from rv2dist.core import significance
from rv2dist.record.verb import add_record_parser, run_record
from rv2dist.core.significance import MARK_LEVEL

# OSError: a read-only or full output folder, a folder where a file should go (the
# messages name the path)
_BAD_INPUT = (ValueError, TypeError, KeyError, OSError)


class UsageError(ValueError):
    """Bad arguments that argparse cannot see."""


def _add_cluster_options(parser):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--scheduler", metavar="ADDR", help="address of a running dask scheduler")
    group.add_argument("--scheduler-file", metavar="FILE", help="scheduler file of a running cluster")
    group.add_argument("--gpus", action="store_true", help="local dask-cuda cluster, one worker per GPU")


def _parser():
    from rv2dist import __version__

    parser = argparse.ArgumentParser(
        prog="rv2dist",
        description="RV2 / RV / CKA similarity matrices between network layers, on Dask.",
    )
    parser.add_argument("--version", action="version", version=f"rv2dist {__version__}")
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    talk.add_argument("-v", "--verbose", action="store_true",
                      help="show rv2dist's and the embedded cluster's log lines (INFO and up)")
    talk.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
                      help="log lines of rv2dist and the embedded cluster from this level (default: none)")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    demo = verbs.add_parser("demo", help="synthesise two networks, compare them, draw the heatmap")
    demo.add_argument("--out", default="rv2dist-demo", help="output folder (default: ./rv2dist-demo)")
    demo.add_argument("--n-obs", type=int, default=23582, help="observations (default: 23582, as the seed study)")
    demo.add_argument("--overwrite", action="store_true",
                      help="replace the stores, result and heatmap of an earlier demo in --out")
    _add_cluster_options(demo)

    compare = verbs.add_parser("compare", help="compare the layers of store A with those of B (or A itself)")
    compare.add_argument("a", help="activation store of network A")
    compare.add_argument("b", nargs="?", help="activation store of network B (default: A against itself)")
    compare.add_argument("--metric", nargs="+", default=["rv2"], choices=list(MEASURES), metavar="M",
                         help=f"metrics among {', '.join(MEASURES)} (default: rv2)")
    compare.add_argument("--no-center", action="store_true", help="do not centre columns (hoggorm's RV2)")
    compare.add_argument("--route", default="auto", choices=("auto", "feature", "gram"),
                         help="exact route: cross-products per row chunk (feature) or off-diagonal Gram tiles "
                              "(gram); auto picks the cheaper (default)")
    compare.add_argument("--precision", default="auto", choices=("auto", "input", "float64"),
                         help="dtype of the per-chunk products: auto (the input's on CPUs, float64 on GPUs), "
                              "input, or float64; sums are float64 always")
    compare.add_argument("--memory-budget", type=_bytes, metavar="BYTES",
                         help="bytes one task may use, e.g. 2GB (default: half of worker memory per thread)")
    compare.add_argument("--layers", nargs="+", metavar="LAYER", help="layers to compare (default: all)")
    compare.add_argument("--align-obs", action="store_true",
                         help="reorder B's observations to A's when both hold the same ids")
    compare.add_argument("--out", required=True, metavar="RESULT", help="result file, .nc or .zarr")
    compare.add_argument("--plot", metavar="PNG", help="also draw the first metric's heatmap")
    _add_significance_options(compare)
    _add_cluster_options(compare)

    run = verbs.add_parser("run", help="run a job file: many comparisons, resumable")
    run.add_argument("job", help="job file (TOML; see rv2dist.jobs for its keys)")
    run.add_argument("--out", metavar="DIR", help="results folder, anywhere (default: the job's out, "
                                                  "a folder inside the job file's folder)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_cluster_options(run)

    cluster = verbs.add_parser("cluster", help="start a local cluster; print its address and dashboard")
    cluster.add_argument("--workers", type=int, help="workers (default: one per core)")
    cluster.add_argument("--gpus", action="store_true", help="one dask-cuda worker per GPU")

    convert = verbs.add_parser("import", help="make a store from .npz/.npy files or another store, "
                                              "with pooling and downsampling")
    convert.add_argument("source", help=".npz file, folder of .npy files (one per layer), .h5/.hdf5 file (one "
                                        "dataset per layer), .nc file or xarray zarr store, or an activation store")
    convert.add_argument("--obs-dim", metavar="DIM", help="sample dimension of a .nc file or xarray store "
                                                          "(default: obs)")
    convert.add_argument("--out", required=True, metavar="STORE", help="the store to write")
    convert.add_argument("--network", help="network name (default: the source store's, else STORE's name)")
    convert.add_argument("--layers", nargs="+", metavar="LAYER", help="layers in depth order (default: all)")
    convert.add_argument("--pool", action="store_true", help="average feature maps over spatial/temporal axes")
    convert.add_argument("--channel-axis", type=int, default=1, help="channel axis of feature maps (default: 1)")
    convert.add_argument("--downsample", type=int, default=1, metavar="K", help="keep one observation in K")
    convert.add_argument("--method", default="stride", choices=("stride", "mean"),
                         help="every K-th observation, or the mean of each block of K (default: stride)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing STORE")

    add_record_parser(verbs)

    info = verbs.add_parser("info", help="describe an activation store")
    info.add_argument("store", help="the activation store (checks that every chunk is there)")

    plot = verbs.add_parser("plot", help="draw a result as a heatmap (a job's combined result: one per comparison)")
    plot.add_argument("result", help="result file (.nc or .zarr), a job's combined.nc, or a job's results folder")
    plot.add_argument("--out", required=True, help="image file (.png, .svg or .pdf)")
    plot.add_argument("--metric", help="metric to draw (default: the first)")
    plot.add_argument("--significance", type=float, default=MARK_LEVEL, metavar="LEVEL",
                      help="mark cells whose corrected p-value is below LEVEL, when the result has tests "
                           "(default: 0.05; 0: no marks)")
    return parser


def _add_significance_options(verb):
    tests = verb.add_argument_group("significance")
    tests.add_argument("--tests", action="store_true",
                       help="add z-scores, p-values and corrected p-values from the exact permutation moments")
    tests.add_argument("--correction", default="holm", choices=("holm", "bh"),
                       help="correction across the matrix: holm (family-wise error) or bh (false discovery "
                            "rate; default: holm)")
    tests.add_argument("--permutations", type=int, metavar="K", help="also K seeded Monte Carlo permutations")
    tests.add_argument("--bootstrap", type=int, metavar="B",
                       help="percentile intervals from B Poisson bootstrap replicates")
    tests.add_argument("--keep-replicates", action="store_true",
                       help="also store every bootstrap replicate, for paired differences between cells and "
                            "results (rv2dist.compare_cells, rv2dist.compare_results)")
    tests.add_argument("--seed", type=int, default=0, help="seed of permutations and bootstrap (default: 0)")
    tests.add_argument("--confidence", type=float, default=0.95, help="level of the intervals (default: 0.95)")


def _bytes(text):
    """A byte count from the command line: 2000000000, 2GB, 1.5GiB."""
    from dask.utils import parse_bytes

    try:
        value = parse_bytes(text)
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes (e.g. 2GB)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of bytes")
    return value


def _check_output(path, suffixes, what):
    path = Path(path)
    if path.suffix not in suffixes:
        raise UsageError(f"{what} {path} must end in {' or '.join(suffixes)}")
    if not path.parent.exists():
        raise UsageError(f"{what} {path}: folder {path.parent} does not exist")
    return path


def _compare(a, b, *, metric, center, route, layers, out, plot, client, gpus=False, align_obs=False,
             precision="auto", memory_budget=None, resampling=None):
    from rv2dist.io.reader import open_activations
    from rv2dist.io.results import write_result
    from rv2dist.io.schema import network_name
    from rv2dist.api import plan, similarity, warn_undefined
    from rv2dist.service.jobs import label_result
    from rv2dist.plot import heatmap
    from rv2dist.service.progress import announce_cost

    options = dict(metric=list(metric), center=center, route=route, layers=layers, client=client,
                   device=_device(gpus, client), align_obs=align_obs, precision=precision,
                   memory_budget=memory_budget, **(resampling or {}))
    announce_cost(plan(a, b, **options))  # a long job says what it costs before it starts
    result = similarity(a, b, **options, compute=False)
    result = _compute_with_progress(result, client)
    warn_undefined(result)
    net_a = network_name(open_activations(a), Path(a).stem)
    net_b = network_name(open_activations(b), Path(b).stem) if b else net_a
    result = label_result(result, store_a=a, store_b=b or a, network_a=net_a, network_b=net_b, metrics=metric)
    write_result(result, out)
    if plot:
        heatmap(result, plot)
    return result


def _compute_with_progress(lazy, client):
    """Compute on ``client`` with a bar of the job's finished tasks (counted by the
    rv2dist board on the scheduler), in bounded time if the cluster goes away."""
    from rv2dist.service import dashboard
    from rv2dist.service.cluster import watch
    from rv2dist.service.progress import ProgressBar
    from rv2dist.engine.buffers import job_finished

    token = dashboard.task_token(lazy.key)
    total = sum(dashboard.task_token(key) == token for key in lazy.__dask_graph__())
    counted = dashboard.install(client)
    future = client.compute(lazy)
    with ProgressBar(total, "compare", unit="task", enabled=counted) as bar:
        def show_done():
            bar.update(client.run_on_scheduler(dashboard.tasks_done_on_board, [token]).get(token, 0) - bar.done)

        for finished in watch(client, [future], on_poll=show_done):
            result = finished.result()  # a failed job's bar stops where it failed, short of 100 %
            bar.update(total - bar.done)
            job_finished(client)
            return result


def _device(gpus, client):
    """GPU with --gpus, or when the cluster's workers declare a GPU resource
    (`dask cuda worker --resources GPU=1`, as the deploy recipes start them)."""
    if gpus:
        return "gpu"
    workers = client.scheduler_info()["workers"].values()
    return "gpu" if workers and all("GPU" in w.get("resources", {}) for w in workers) else "cpu"


def _connect(args, links=True):
    import logging

    from rv2dist.service.cluster import EMBEDDED_LOG_LEVEL, connect, dashboard_link

    import distributed  # noqa: F401  (its import sets its loggers' levels: set ours after)

    # rv2dist reports a lost scheduler in one line; the client's own reconnect errors
    # would print tracebacks before it
    logging.getLogger("distributed.client").setLevel(EMBEDDED_LOG_LEVEL)

    scheduler = getattr(args, "scheduler", None)
    if hasattr(args, "scheduler") and not (scheduler or args.scheduler_file or args.gpus):
        # how the container and Kubernetes recipes name their scheduler
        scheduler = os.environ.get("DASK_SCHEDULER_ADDRESS")
    client = connect(scheduler=scheduler, scheduler_file=getattr(args, "scheduler_file", None),
                     gpus=getattr(args, "gpus", False), workers=getattr(args, "workers", None))
    from rv2dist.service import dashboard

    link = dashboard_link(client) if links else None
    if link:
        print(f"dashboard: {link}", flush=True)
        if dashboard.install(client):
            print(f"rv2dist page: {dashboard.page_link(link)}", flush=True)
    return client


def _run_demo(args):
    from rv2dist.io.results import check_result_path
    from rv2dist.io.writer import write_activations
    from rv2dist.service.demo import related_networks

    if args.n_obs < 4:
        raise UsageError(f"--n-obs must be at least 4, got {args.n_obs}")
    out = Path(args.out)
    paths = [out / "standard.zarr", out / "drifted.zarr"]
    taken = [path for path in (*paths, out / "result.nc", out / "rv2.png") if os.path.lexists(path)]
    if taken and not args.overwrite:
        raise UsageError(f"{out} holds an earlier demo's {', '.join(path.name for path in taken)}; pass "
                         "--overwrite to replace them, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    check_result_path(out / "result.nc")  # before any work: a result replaces no folder
    net_a, net_b = related_networks(args.n_obs)
    for path, layers in zip(paths, (net_a, net_b)):
        write_activations(path, layers, network=path.stem, overwrite=args.overwrite,
                          attrs={"source": "rv2dist demo: synthetic activations, not a trained network"})
    # (no dashboard links: the cluster and its pages go when the demo ends in seconds)
    with _connect(args, links=False) as client:
        result = _compare(paths[0], paths[1], metric=["rv2", "cka"], center=True, route="auto",
                          layers=None, out=out / "result.nc", plot=out / "rv2.png", client=client,
                          gpus=args.gpus)
    print("RV2 between the layers of two synthetic networks (random data shaped like two trained seeds\n"
          "of one architecture: corresponding layers most alike, early layers nearly identical):")
    print(result["rv2"].to_pandas().round(2).to_string())
    print(f"stores:  {paths[0]}  {paths[1]}")
    print(f"result:  {out / 'result.nc'}")
    print(f"heatmap: {out / 'rv2.png'}")
    print("\nYour own networks:\n"
          "  rv2dist import acts.npz --out mine.zarr --pool            # .npz/.npy/.h5/.nc activations\n"
          "  rv2dist compare mine.zarr theirs.zarr --out result.nc --plot result.png\n"
          "  python: rv2dist.compare_models(model_a, model_b, loader, layers)   # two PyTorch models\n"
          "  many networks: rv2dist run job.toml (see docs/jobs.md)")


def _run_compare(args):
    from rv2dist.io.reader import open_activations
    from rv2dist.io.results import check_result_path

    _check_output(args.out, (".nc", ".zarr"), "result")
    check_result_path(args.out)  # before any work: a result replaces no folder or store
    if args.plot:
        _check_output(args.plot, (".png", ".svg", ".pdf"), "plot")
    for path in filter(None, (args.a, args.b)):
        open_activations(path)
    resampling = _resampling(args)
    with _connect(args) as client:
        result = _compare(args.a, args.b, metric=args.metric, center=not args.no_center, route=args.route,
                          layers=args.layers, out=Path(args.out), plot=args.plot, client=client,
                          gpus=args.gpus, align_obs=args.align_obs, precision=args.precision,
                          memory_budget=args.memory_budget, resampling=resampling)
    first = args.metric[0]
    print(result[first].to_pandas().round(3).to_string())
    if f"{first}_p_corrected" in result.data_vars:
        print(f"\n{first}: p-values corrected across the matrix ({args.correction})")
        print(result[f"{first}_p_corrected"].to_pandas().to_string(float_format="{:.2g}".format))
        if significance.at_floor(result[f"{first}_p"].values).any():
            print(f"(p-values of {significance.P_FLOOR:g} rest on the floor: p <= {significance.P_FLOOR:g}; "
                  f"{first}_z ranks those cells)")
    print(f"result: {args.out}")


def _resampling(args):
    """The significance options of ``compare``, checked before any work."""
    from rv2dist.planning.options import check_resampling

    options = {key: getattr(args, key) for key in ("tests", "correction", "permutations", "bootstrap", "seed",
                                                   "confidence", "keep_replicates")}
    check_resampling(**options)
    return options


def _run_import(args):
    from rv2dist.io.convert import convert

    convert(args.source, args.out, layers=args.layers, network=args.network, pool=args.pool,
            channel_axis=args.channel_axis, downsample_by=args.downsample, method=args.method,
            overwrite=args.overwrite, obs_dim=args.obs_dim)
    from rv2dist.io.reader import describe

    print(describe(args.out))


def _run_job(args):
    from rv2dist.service.jobs import load_job, run_job

    job = load_job(args.job, out=args.out)
    from rv2dist.io.reader import open_activations

    for name, path in job.networks.items():
        open_activations(path)
    with _connect(args) as client:
        summary = run_job(job, client, device=_device(args.gpus, client), progress=not args.no_progress)
    print(f"job {job.name}: {len(summary['computed'])} computed, {len(summary['skipped'])} skipped; "
          f"results in {job.out}")


def _run_info(args):
    from rv2dist.io.reader import describe

    print(describe(args.store))


def _run_plot(args):
    from rv2dist.io import results
    from rv2dist.plot import heatmap, job_grid

    _check_output(args.out, (".png", ".svg", ".pdf"), "plot")
    if not 0 <= args.significance < 1:
        raise UsageError(f"--significance must be a level between 0 and 1, not {args.significance}")
    result = results.read(args.result)
    if result.sizes.get("comparison", 1) > 1:  # a job's combined result: one panel per comparison
        job_grid(result, metric=args.metric, path=args.out, significance=args.significance or None)
    else:
        heatmap(result, args.out, metric=args.metric, significance=args.significance or None)
    print(f"heatmap: {args.out}")


def _run_cluster(args):
    import time

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    with _connect(args) as client:
        print(f"scheduler: {client.scheduler.address}", flush=True)
        print("Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


_VERBS = {"demo": _run_demo, "run": _run_job, "compare": _run_compare, "info": _run_info, "import": _run_import, "plot": _run_plot,
          "cluster": _run_cluster, "record": run_record}


def _set_verbosity(args):
    """-q: no progress bars; -v / --log-level: log lines of rv2dist and of the embedded
    cluster (kept out of the terminal by default) from that level."""
    import logging

    from rv2dist.service import cluster
    from rv2dist.service import progress

    progress.ENABLED = not args.quiet
    level = args.log_level or ("INFO" if args.verbose else None)
    if level:
        cluster.EMBEDDED_LOG_LEVEL = getattr(logging, level)
        logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("rv2dist").setLevel(level)


@contextlib.contextmanager
def _plain_warnings(verb):
    """rv2dist's own warnings as the errors are shown, ``rv2dist VERB: warning: ...``,
    each text once (options are checked before the job and again when it starts);
    other libraries' warnings as Python shows them."""
    import warnings

    shown = set()
    python_way = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not category.__module__.startswith("rv2dist"):
            return python_way(message, category, filename, lineno, file, line)
        text = f"rv2dist {verb}: warning: {message}"
        if text not in shown:
            shown.add(text)
            print(text, file=sys.stderr, flush=True)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = python_way


def main(argv=None) -> int:
    """Entry point of the ``rv2dist`` command."""
    from rv2dist.service.cluster import ClusterLostError

    args = _parser().parse_args(argv)
    _set_verbosity(args)
    try:
        with _plain_warnings(args.verb):
            _VERBS[args.verb](args)
    except BrokenPipeError:
        # `rv2dist info STORE | head`: the reader left; nothing more to say, and the
        # interpreter's final flush must not complain either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except ClusterLostError as error:
        print(f"rv2dist {args.verb}: error: {_said(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        # Ctrl-C: results already written stay (each is written whole or not at all)
        print(f"\nrv2dist {args.verb}: interrupted" + (f"; {error}" if str(error) else ""), file=sys.stderr)
        return 130
    except _BAD_INPUT as error:
        print(f"rv2dist {args.verb}: error: {_said(error)}", file=sys.stderr)
        return 2
    return 0


def _said(error):
    """What an error says, never an empty line: its message without leading or
    trailing blank lines, or its type when it says nothing."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    text = str(message).strip()
    return text if text else type(error).__name__

