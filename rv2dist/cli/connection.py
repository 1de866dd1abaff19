"""How a verb reaches its cluster (``--scheduler``, ``--scheduler-file``, ``--gpus``,
``DASK_SCHEDULER_ADDRESS``, else an embedded local one), where its work runs, and the
``cluster`` verb that starts one and waits."""

from __future__ import annotations

import os

from rv2dist.cli.parser import check_at_least, log_level


def connect(args):
    """A :class:`distributed.Client` to the cluster ``args`` ask for (use it in ``with``).
    The embedded cluster's log lines show from ``-v``/``--log-level`` only."""
    import logging

    import distributed  # noqa: F401  (its import sets its loggers' levels: set ours after)

    from rv2dist.service import cluster

    cluster.check_config()  # a bad value is named before any cluster starts
    asked = log_level(args)
    level = getattr(logging, asked) if asked else cluster.EMBEDDED_LOG_LEVEL
    # rv2dist reports a lost scheduler in one line; the client's own reconnect errors
    # would print tracebacks before it
    logging.getLogger("distributed.client").setLevel(level)
    if args.gpus:
        return cluster.connect_gpus(log_level=level)
    scheduler, scheduler_file = getattr(args, "scheduler", None), getattr(args, "scheduler_file", None)
    if hasattr(args, "scheduler") and not (scheduler or scheduler_file):
        # how the container and Kubernetes recipes name their scheduler
        scheduler = os.environ.get("DASK_SCHEDULER_ADDRESS")
    return cluster.connect(scheduler=scheduler, scheduler_file=scheduler_file,
                           workers=getattr(args, "workers", None), log_level=level)


def show_links(client) -> None:
    """Print the cluster's dashboard and the rv2dist page on it (installing its board)."""
    from rv2dist.service import dashboard
    from rv2dist.service.cluster import dashboard_link

    link = dashboard_link(client)
    if link:
        print(f"dashboard: {link}", flush=True)
        if dashboard.install(client):
            print(f"rv2dist page: {dashboard.page_link(link)}", flush=True)


def device(args) -> str:
    """Where the chunk products run: the GPUs with ``--gpus``, else as
    :func:`rv2dist.similarity`'s ``device="auto"`` decides (the GPU when the cluster's
    workers declare a GPU resource; :func:`rv2dist.engine.execute.gpu_workers`)."""
    return "gpu" if args.gpus else "auto"


def run_cluster(args):
    """``rv2dist cluster``: start a local cluster, print its address and links, and wait
    for Ctrl-C."""
    import time

    check_at_least(args, workers=1)
    with connect(args) as client:
        show_links(client)
        print(f"scheduler: {client.scheduler.address}", flush=True)
        print("Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
