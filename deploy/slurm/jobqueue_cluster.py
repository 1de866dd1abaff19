"""rv2dist on SLURM through dask-jobqueue: GPU workers (`dask cuda worker`, one GPU each)
started as batch jobs, then a job file run against them.

    pip install dask-jobqueue
    python deploy/slurm/jobqueue_cluster.py job.toml --jobs 4 --partition gpu --account myproj

The scheduler runs inside this process on the login (or a service) node; workers connect
to it from the compute nodes.  `--print-script` shows the batch script without submitting.
"""

import argparse


def gpu_cluster(*, partition, account=None, walltime="02:00:00", gpus_per_job=1, memory="64GB", cores=8,
                interface=None):
    """A SLURMCluster whose every batch job runs ``dask cuda worker`` with ``gpus_per_job`` GPUs."""
    from dask_jobqueue import SLURMCluster

    return SLURMCluster(
        queue=partition,
        account=account,
        walltime=walltime,
        cores=cores,
        processes=1,  # dask-cuda starts one worker process per visible GPU itself
        memory=memory,
        interface=interface,
        worker_command="dask_cuda.cli",  # `python -m dask_cuda.cli` runs `dask cuda worker`
        worker_extra_args=["--resources", "GPU=1", "--rmm-pool-size", "70%"],
        job_extra_directives=[f"--gres=gpu:{gpus_per_job}"],
        # the dashboard stays on the scheduler's node: reach it through an SSH tunnel
        scheduler_options={"dashboard_address": "127.0.0.1:8787"},
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", nargs="?", help="rv2dist job file")
    parser.add_argument("--jobs", type=int, default=2, help="batch jobs (each with its GPUs)")
    parser.add_argument("--partition", default="gpu")
    parser.add_argument("--account")
    parser.add_argument("--gpus-per-job", type=int, default=1)
    parser.add_argument("--print-script", action="store_true", help="print the batch script and stop")
    args = parser.parse_args(argv)
    cluster = gpu_cluster(partition=args.partition, account=args.account, gpus_per_job=args.gpus_per_job)
    if args.print_script:
        print(cluster.job_script())
        cluster.close()
        return
    from distributed import Client

    from rv2dist.service.jobfile import load_job
    from rv2dist.service.runner import run_job

    cluster.scale(jobs=args.jobs)
    with cluster, Client(cluster) as client:
        print(f"dashboard (tunnel to it): {client.dashboard_link}")
        client.wait_for_workers(1)
        run_job(load_job(args.job), client, device="gpu")


if __name__ == "__main__":
    main()
