"""What a job has done before: each result carries a fingerprint of its inputs (both
stores' content and the parameters); running the job again keeps the results whose
fingerprint still matches, says why the others are computed again, and reads the
kept results' stores once against their checksums."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from rv2dist.io.chunks import chunk_checks
from rv2dist.io.errors import StoreError
from rv2dist.io.reader import store_fingerprint
from rv2dist.io.results import read_result
from rv2dist.service.jobfile import Comparison, Job

FINGERPRINT_ATTR = "rv2dist_fingerprint"
INPUTS_ATTR = "rv2dist_inputs"


@dataclass(frozen=True)
class Inputs:
    """What the results of ``job`` depend on: the fingerprint of each network's store."""

    job: Job
    store_prints: dict

    @classmethod
    def of(cls, job: Job, networks) -> Inputs:
        return cls(job, {name: store_fingerprint(job.networks[name]) for name in networks})

    def of_comparison(self, comparison: Comparison) -> dict:
        """What a comparison's result depends on: both stores' content and the parameters."""
        job = self.job
        return {"a": self.store_prints[comparison.a], "b": self.store_prints[comparison.b],
                "metrics": list(job.metrics), "center": job.center, "route": job.route,
                "align_obs": job.align_obs, **job.resampling, **job.measure_options}

    def fingerprint(self, comparison: Comparison) -> str:
        """Digest of :meth:`of_comparison`."""
        return hashlib.sha256(json.dumps(self.of_comparison(comparison), sort_keys=True).encode()).hexdigest()

    def provenance(self, comparison: Comparison) -> dict:
        """The attrs a result keeps so that a later run can tell whether it is current."""
        return {FINGERPRINT_ATTR: self.fingerprint(comparison),
                INPUTS_ATTR: json.dumps(self.of_comparison(comparison))}

    def kept_result(self, comparison: Comparison):
        """The result of ``comparison`` in the results folder when it was computed from
        the same inputs and parameters, else None."""
        path = self.job.result_path(comparison)
        if not path.exists():
            return None
        try:
            result = read_result(path)
        except StoreError:
            return None
        return result if result.attrs.get(FINGERPRINT_ATTR) == self.fingerprint(comparison) else None

    def why_recompute(self, comparison: Comparison) -> str | None:
        """Which input of a comparison changed since its result was written, in words
        (None: it has no result yet)."""
        path = self.job.result_path(comparison)
        if not path.exists():
            return None
        previous = _recorded_inputs(path)
        if previous is None:
            return "its result was written without a record of its inputs"
        stores = {"a": self.job.networks[comparison.a], "b": self.job.networks[comparison.b]}
        now = self.of_comparison(comparison)
        changed = [f"store {stores[key]} changed" if key in stores else f"{key} changed"
                   for key in now if previous.get(key) != now[key]]
        return ", ".join(dict.fromkeys(changed)) or "its inputs changed"


def _recorded_inputs(path: Path):
    try:
        return json.loads(read_result(path).attrs[INPUTS_ATTR])
    except (StoreError, KeyError, ValueError):
        return None


def kept_networks(kept) -> list[str]:
    """The networks the ``kept`` comparisons read, sorted."""
    return sorted({name for comparison in kept for name in (comparison.a, comparison.b)})


def input_checks(datasets, kept) -> list:
    """Tasks that read every chunk of the stores of the ``kept`` comparisons, each
    checked against its checksum: a chunk rewritten other than by rv2dist's writer leaves
    the store's fingerprint (its metadata and recorded checksums) as it was, and must not
    keep a result of the old data.  One read of those stores, no products."""
    return [task for name in kept_networks(kept) for task in chunk_checks(datasets[name])]


def run_checks(client, checks) -> None:
    """Run :func:`input_checks`' tasks on ``client``; the first fault is raised."""
    from rv2dist.service.cluster import watch

    futures = client.compute(checks)
    for future in watch(client, futures):
        if future.status == "error":
            error = future.exception()
            client.cancel(futures)
            raise error
