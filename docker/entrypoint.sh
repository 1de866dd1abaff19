#!/usr/bin/env bash
# One image, three roles: `scheduler`, `worker` (CPU) or `cuda-worker` (GPU image), and
# a command the image has (`dask ...`, as the dask Helm chart runs it) runs as given, and
# anything else is passed to the rv2dist command line (`run /data/job.toml ...`).
set -euo pipefail
role="${1:-help}"
case "$role" in
    scheduler)   shift; exec dask scheduler --port 8786 --dashboard-address :8787 "$@" ;;
    worker)      shift; exec dask worker "${DASK_SCHEDULER_ADDRESS:-tcp://scheduler:8786}" "$@" ;;
    cuda-worker) shift; exec dask cuda worker "${DASK_SCHEDULER_ADDRESS:-tcp://scheduler:8786}" "$@" ;;
    help)        exec rv2dist --help ;;
    dask|python|bash|sh|rv2dist) exec "$@" ;;
    *)           exec rv2dist "$@" ;;
esac
