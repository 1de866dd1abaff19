"""The options a plan is made from, as small frozen types, validated once: the
resources a job may use and its significance and resampling options."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from rv2dist.core import checks
from rv2dist.core.errors import FewReplicatesWarning
from rv2dist.core.significance import choose_correction, fewest_replicates

DEVICES = ("cpu", "gpu")
# each replicate is a pass over the data and a few tasks per row chunk in the graph:
# a million would be hours of work and gigabytes of graph before the first result
MAX_RESAMPLES = 100_000


@dataclass(frozen=True)
class Resources:
    """What one job may use (cubed's ``Spec`` is the model).

    Attributes
    ----------
    memory_budget : int
        Bytes one task may use (worker memory per thread, or GPU memory).
    parallelism : int
        Tasks that run at once.
    device : {"cpu", "gpu"}
        Where the chunks live and the products run.
    """

    memory_budget: int
    parallelism: int = 1
    device: str = "cpu"

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        checks.count("parallelism", self.parallelism)


def budget_bytes(memory_budget) -> int:
    """``memory_budget`` as bytes: a positive number, or text such as ``"4GB"`` or
    ``"512 MiB"`` (dask's notation)."""
    budget = memory_budget
    if isinstance(budget, str):
        from dask.utils import parse_bytes

        try:
            budget = parse_bytes(budget)
        except ValueError:
            pass
    if not checks.real_number(budget) or not 0 < budget < math.inf:
        raise ValueError(f"memory_budget must be a positive number of bytes or a size such as '4GB', "
                         f"got {memory_budget!r}")
    return budget


@dataclass(frozen=True)
class Resampling:
    """The significance and resampling options of a job, validated (counts 0: none).

    Attributes
    ----------
    tests : bool
        z-scores and p-values from the exact permutation moments.
    correction : {"holm", "bh"}
        Adjustment of the p-values across the matrix.
    permutations, bootstrap : int
        Seeded Monte Carlo permutations and Poisson bootstrap replicates (0: none).
    seed : int
        Seed of both.
    confidence : float
        Level of the bootstrap intervals.
    keep_replicates : bool
        Keep every bootstrap replicate in the result.
    """

    tests: bool = False
    correction: str = "holm"
    permutations: int = 0
    bootstrap: int = 0
    seed: int = 0
    confidence: float = 0.95
    keep_replicates: bool = False

    @property
    def resampled(self) -> bool:
        """Whether the job adds passes of permutations or bootstrap replicates."""
        return bool(self.permutations or self.bootstrap)


def _resample_count(option, value) -> int:
    if value is None:
        return 0
    return checks.count(option, value, most=MAX_RESAMPLES,
                        advice=", each a pass over the data; for p-values below 1e-5 use the analytic tests "
                               "(tests=True; --tests)")


def check_resampling(tests=False, correction="holm", permutations=None, bootstrap=None, seed=None, confidence=0.95,
                     keep_replicates=False, stacklevel=3) -> Resampling:
    """The options, validated, as a :class:`Resampling`; too few replicates for the
    interval's ``confidence`` warn (:class:`~rv2dist.FewReplicatesWarning`)."""
    checks.flag("tests", tests)
    checks.flag("keep_replicates", keep_replicates)
    choose_correction(correction)
    permutations = _resample_count("permutations", permutations)
    bootstrap = _resample_count("bootstrap", bootstrap)
    if keep_replicates and not bootstrap:
        raise ValueError("keep_replicates=True keeps bootstrap replicates: give bootstrap=B as well")
    seed = 0 if seed is None else seed
    if not checks.whole_number(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    if not checks.real_number(confidence) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number between 0 and 1, not {confidence!r}")
    fewest = fewest_replicates(confidence)
    if 0 < bootstrap < fewest:
        warnings.warn(f"bootstrap={bootstrap}: with fewer than {fewest} replicates the {confidence:g} interval's ends "
                      f"rest on the most extreme replicates; use {fewest} or more (1,000 for a paper)",
                      FewReplicatesWarning, stacklevel=stacklevel)
    return Resampling(bool(tests), correction, permutations, bootstrap, int(seed), float(confidence),
                      bool(keep_replicates))


def check_job_options(metric, resampling, measure_options) -> None:
    """What a job says of its options before it reads any data: an unknown metric,
    ``tests`` that no metric asked for has, resampling or second-moment options out of
    range (a ValueError naming it); ``resampling`` and ``measure_options`` hold
    :func:`check_resampling`'s and
    :func:`~rv2dist.core.block_measures.check_measure_options`'s keywords."""
    from rv2dist.core.block_measures import check_measure_options
    from rv2dist.core.measures import check_names
    from rv2dist.core.significance import check_tests

    names = check_names(metric)
    check_tests(names, check_resampling(**resampling, stacklevel=4).tests)
    check_measure_options(**measure_options)

