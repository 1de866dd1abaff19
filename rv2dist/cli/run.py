"""The ``run`` verb: a job file's comparisons on one cluster, resumable
(:mod:`rv2dist.service.jobfile`, :mod:`rv2dist.service.runner`)."""

from __future__ import annotations

from rv2dist.cli.connection import connect, device, show_links
from rv2dist.cli.parser import progress_on


def run_job_file(args):
    from rv2dist.io.reader import open_activations
    from rv2dist.service.jobfile import load_job
    from rv2dist.service.runner import run_job

    job = load_job(args.job, out=args.out)
    for path in job.networks.values():  # every store checked before a cluster starts
        open_activations(path)
    with connect(args) as client:
        show_links(client)
        summary = run_job(job, client, device=device(args), progress=progress_on(args))
    print(f"job {job.name}: {len(summary.computed)} computed, {len(summary.skipped)} skipped; results in {job.out}")
