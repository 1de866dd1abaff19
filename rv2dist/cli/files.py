"""The verbs on files alone, without a cluster: ``info`` (describe a store),
``import`` (make a store from other formats) and ``plot`` (draw a result)."""

from __future__ import annotations

from rv2dist.cli.parser import UsageError


def run_info(args):
    from rv2dist.io.reader import describe

    print(describe(args.store))


def run_import(args):
    from rv2dist.io.convert import convert
    from rv2dist.io.reader import describe

    convert(args.source, args.out, layers=args.layers, network=args.network, pool=args.pool,
            channel_axis=args.channel_axis, downsample_by=args.downsample, method=args.method,
            overwrite=args.overwrite, obs_dim=args.obs_dim)
    print(describe(args.out))


def run_plot(args):
    from rv2dist.io import results
    from rv2dist.plot import heatmap, job_grid
    from rv2dist.plot.figures import check_figure_path

    check_figure_path(args.out)
    if not 0 <= args.significance < 1:
        raise UsageError(f"--significance must be a level between 0 and 1, not {args.significance}")
    result = results.read(args.result)
    level = args.significance or None  # 0: no marks
    if result.sizes.get("comparison", 1) > 1:  # a job's combined result: one panel per comparison
        job_grid(result, metric=args.metric, path=args.out, significance=level)
    else:
        heatmap(result, args.out, metric=args.metric, significance=level)
    print(f"heatmap: {args.out}")
