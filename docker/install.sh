#!/usr/bin/env bash
# The one install line for rv2dist: the Docker images run it, and so does CI (.ci/run),
# so the step the images take is exercised on every change.
#   RV2DIST_SOURCE  what to install (default: the checkout this script is in)
#   RV2DIST_EXTRAS  extras, e.g. "test" or "gpu" (default: none)
#   RV2DIST_EDITABLE=1  install in development mode (CI)
#   RV2DIST_KEEP    space-separated packages whose installed versions must not change
#                   (the GPU image keeps RAPIDS's dask, distributed, dask-cuda and cupy)
set -euo pipefail
source_dir="${RV2DIST_SOURCE:-$(cd "$(dirname "$0")/.." && pwd)}"
target="$source_dir"
if [ -n "${RV2DIST_EXTRAS:-}" ]; then
    target="$source_dir[$RV2DIST_EXTRAS]"
fi
constraints=()
if [ -n "${RV2DIST_KEEP:-}" ]; then
    keep_file="$(mktemp)"
    for package in $RV2DIST_KEEP; do
        python -m pip list --format=freeze 2>/dev/null | grep -i "^${package}==" >> "$keep_file" || true
    done
    constraints=(--constraint "$keep_file")
fi
editable=()
if [ "${RV2DIST_EDITABLE:-0}" = 1 ]; then
    editable=(--editable)
fi
python -m pip install --no-cache-dir --quiet "${constraints[@]}" "${editable[@]}" "$target"
python -c "import rv2dist; print('rv2dist', rv2dist.__version__, 'installed')"
