"""The planner: shapes, dtypes, resources and options in, a :class:`Plan` out.

Pure: it never touches data.  Strategies are strings resolved by small ``_choose_*``
functions, each of which records why it chose what it chose, in the plan's printout.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from rv2dist.planning.options import Resampling, Resources, budget_bytes
from rv2dist.planning.plan import Plan, PlanError, SubPlan, flops_text
from rv2dist.planning.routes import ROUTE_CHOICES, ROUTES

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "input", "float64")
READS = ("auto", "in-task", "read-tasks", "none")
PAIRS = ("all", "cross")
_NARROW = ("float32", "float16", "bfloat16")
# an element operation that streams through memory (the gram route's tile inner products)
# took 16-20 times a GEMM operation's time on a 2-core CPU (both routes timed in
# benchmarks/RESULTS.md, "Route choice"): counted as 16, the routes cross where their times do
STREAMED_COST = 16.0


@dataclass(frozen=True)
class Shapes:
    """The shapes of a job: observations, both sides' layer names and widths (``b``
    None: a against itself), the input dtype and its row chunking (if any)."""

    n_obs: int
    names_a: tuple[str, ...]
    widths_a: tuple[int, ...]
    names_b: tuple[str, ...] | None
    widths_b: tuple[int, ...] | None
    dtype: str = "float64"
    row_chunks: tuple[int, ...] | None = None

    @property
    def widths(self) -> tuple[int, ...]:
        return self.widths_a + (self.widths_b or ())

    @property
    def itemsize(self) -> int:
        return 4 if self.dtype in _NARROW else 8


@dataclass(frozen=True)
class Work:
    """What the statistics hold: ``compute_dtype`` of the products, ``pairs`` of layers
    multiplied, whether the tests want tr(A^3) (``cubes``), and whether second-moment
    measures want every cell's centred p x p block (``second_moments``)."""

    compute_dtype: str
    pairs: str = "all"
    cubes: bool = False
    second_moments: bool = False

    @property
    def compute_itemsize(self) -> int:
        return 8 if self.compute_dtype == "float64" else 4


def _choose_compute_dtype(input_dtype: str, precision: str, device: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "float64" or input_dtype not in _NARROW:
        return "float64"
    if precision == "auto" and device == "gpu":
        # data-centre GPUs run float64 GEMM at half the float32 rate, without TF32's rounding
        return "float64"
    return "float32"


def _route_costs(shapes, resources, work):
    """``({route: RouteCost}, {route: PlanError})``: the routes that fit the budget and
    why the others do not."""
    costs, failures = {}, {}
    for name, route in ROUTES.items():
        try:
            costs[name] = route.cost(shapes, resources, work)
        except PlanError as error:
            failures[name] = error
    return costs, failures


def _choose_route(route, costs, failures):
    """The route and why; a route that does not fit the budget leaves the others."""
    if route not in ROUTE_CHOICES:
        raise ValueError(f"unknown route {route!r}; choose one of {', '.join(ROUTE_CHOICES)}")
    if route != "auto":
        if route in failures:
            raise failures[route]
        return route, "requested"
    if not costs:
        raise PlanError("no route fits: " + "; ".join(f"{name}: {error}" for name, error in failures.items()))
    if failures:
        (chosen,) = costs
        other, error = next(iter(failures.items()))
        return chosen, f"auto: the only route within the memory budget ({other}: {error})"
    total = {name: _weighed(cost) for name, cost in costs.items()}
    chosen = min(total, key=total.get)
    other = next(name for name in total if name != chosen)
    tests = " with the tests' tr(A^3)" if any(cost.cube_flops for cost in costs.values()) else ""
    return chosen, (f"auto: less work than {other}{tests}, {flops_text(total[chosen])} against "
                    f"{flops_text(total[other])} as matrix-product operations; {ROUTES[chosen].summary}")


def _weighed(cost) -> float:
    """A route's work in matrix-product operations: one streamed through memory (an
    inner product of n x n tiles) costs as much as STREAMED_COST in a GEMM."""
    return cost.flops + (STREAMED_COST - 1.0) * cost.streamed + cost.cube_flops


def _choose_reads(reads, plan):
    """How stored chunks are read, and why."""
    if reads not in READS:
        raise ValueError(f"unknown reads {reads!r}; choose one of {', '.join(READS)}")
    if reads == "none":
        return "none", "every input is in memory"
    one_consumer = (plan.device == "cpu" and plan.route == "feature" and not plan.resampling
                    and len(plan.cost.groups) == 1 and plan.n_stat_sets == 1)
    if reads == "read-tasks":
        return reads, "requested: each stored chunk read by a task of its own, which other jobs' graphs share"
    if reads == "in-task" and not one_consumer:
        raise ValueError("reads='in-task' needs one task per row chunk (the feature route on the CPU, one product "
                         "group, one statistic set, no resampling); this job has several")
    if one_consumer:
        return "in-task", "each stored chunk read by the one task that uses it: no read task, no chunk moved"
    return "read-tasks", "each stored chunk read once by a task of its own, for the several tasks that use it"


def _plan(shapes, resources, work, route, n_stat_sets, tests, column_sums):
    """The job's own plan (without resampling or read mode)."""
    costs, failures = _route_costs(shapes, resources, work)
    chosen, reason = _choose_route(route, costs, failures)
    logger.info("rv2dist route %s: %s", chosen, reason)
    others = {name: cost.flops * n_stat_sets + cost.cube_flops for name, cost in costs.items() if name != chosen}
    return Plan(route=chosen, reason=reason, n_obs=shapes.n_obs, layer_names=shapes.names_a + (shapes.names_b or ()),
                widths=shapes.widths, n_layers_a=len(shapes.widths_a), self_job=shapes.widths_b is None,
                input_dtype=shapes.dtype, compute_dtype=work.compute_dtype,
                memory_budget=int(resources.memory_budget), parallelism=resources.parallelism,
                device=resources.device, cost=costs[chosen], alternative_flops=others, n_stat_sets=n_stat_sets,
                pairs=work.pairs if chosen == "feature" else "all", tests=tests, column_sums=column_sums)


def _resampling_plans(main, shapes, resources, work, resampling, column_sums):
    """The :class:`SubPlan` of each resampling kind of the job."""
    subs = []
    if resampling.permutations:
        # a permutation changes only the products between a and the permuted b, and its
        # p-values read only those
        other = dataclasses.replace(shapes, names_b=shapes.names_b or shapes.names_a,
                                    widths_b=shapes.widths_b or shapes.widths_a)
        permuted = _plan(other, resources, dataclasses.replace(work, pairs="cross", cubes=False), main.route,
                         main.n_stat_sets, False, False)
        subs.append(SubPlan("permutation", resampling.permutations, permuted))
    if resampling.bootstrap:
        # weighted rows enter the products of a route that takes weights (the feature route)
        weighted = (dataclasses.replace(main, tests=False, cost=dataclasses.replace(main.cost, cube_flops=0.0))
                    if ROUTES[main.route].takes_weights else
                    _plan(shapes, resources, dataclasses.replace(work, cubes=False), "feature", main.n_stat_sets,
                          False, column_sums))
        subs.append(SubPlan("bootstrap", resampling.bootstrap, weighted))
    return tuple(subs)


def make_plan(n_obs, layers_a, layers_b=None, *, dtype="float64", route="auto", memory_budget, parallelism=1,
              row_chunks=None, precision="auto", device="cpu", n_stat_sets=1, pairs="all", skewness=False,
              column_sums=True, resampling=Resampling(), reads="auto", second_moments=False) -> Plan:
    """Plan a similarity job from shapes alone.

    Parameters
    ----------
    n_obs : int
        Number of observations (rows) shared by every layer.
    layers_a, layers_b : sequence of (str, int)
        Layer names and widths (units) in depth order; ``layers_b=None`` plans ``a``
        against itself, computing each product once.
    dtype : str
        Input dtype (the widest of all layers).
    route : {"auto", "feature", "gram"}
        ``"feature"`` sums cross-products ``X_l' X_m`` over row chunks (cost ~ n p q per
        pair); ``"gram"`` sums Frobenius products of off-diagonal Gram tiles (cost ~
        n^2 (sum p + L^2) / 2); ``"auto"`` takes the one with fewer operations among
        those that fit the budget (see :mod:`rv2dist.planning.routes`).
    memory_budget : int or str
        Bytes one task may use (worker memory per thread, or GPU memory); text such
        as ``"4GB"`` is read as dask reads sizes.
    parallelism : int
        Number of tasks that run at once; the planner aims for at least twice as many
        row chunks (feature) or tiles (gram).
    row_chunks : tuple of int, optional
        The input's existing row chunking, kept when it fits the budget.
    precision : {"auto", "input", "float64"}
        Dtype of the per-chunk products: ``"input"`` keeps float32 input in float32,
        ``"float64"`` upcasts, ``"auto"`` is ``"input"`` on CPUs and ``"float64"`` on
        GPUs (fast float64 there, and no silent TF32).  Sums are always float64.
    device : {"cpu", "gpu"}
        Where the chunks live.
    n_stat_sets : int
        Number of statistic sets (2 when centred and uncentred measures are both asked).
    pairs : {"all", "cross"}
        The products: every one the statistics need, or only those between ``a`` and
        ``b`` (no layer's own ``X'X``): what a permutation of ``b``'s rows changes.
    skewness : bool
        The tests' p-values want ``tr(A^3)`` of every layer's centred Gram: the feature
        route cubes each layer's own cross-product (``2 p^3``), the gram route sums
        products of triples of its tiles (about ``n^3 L / 3``); ``"auto"`` weighs it.
    column_sums : bool
        Uncentred statistics carry the column sums behind ``1'Ã1`` (a pass of their own).
    resampling : rv2dist.planning.options.Resampling
        The tests, permutations and bootstrap replicates: their sub-plans join the plan.
    reads : {"auto", "in-task", "read-tasks", "none"}
        How stored chunks are read: by the one task using each (``"in-task"``, where
        each chunk has one), by read tasks of their own (``"read-tasks"``, which other
        jobs' graphs share), ``"auto"`` the first where it applies, ``"none"`` for
        inputs in memory.
    second_moments : bool
        Second-moment measures (CCA, Procrustes, regression ...) want the centred p x p
        block of every layer and result cell: only the feature route sums them, and
        they must fit the budget in one task.

    Raises
    ------
    PlanError
        When no route fits ``memory_budget``.
    """
    if n_obs < 2:
        raise ValueError(f"need at least 2 observations, got {n_obs}")
    if pairs not in PAIRS:
        raise ValueError(f"unknown pairs {pairs!r}; choose one of {', '.join(PAIRS)}")
    resources = Resources(budget_bytes(memory_budget), parallelism, device)
    shapes = Shapes(n_obs, tuple(n for n, _ in layers_a), tuple(int(w) for _, w in layers_a),
                    None if layers_b is None else tuple(n for n, _ in layers_b),
                    None if layers_b is None else tuple(int(w) for _, w in layers_b),
                    dtype, tuple(row_chunks) if row_chunks else None)
    work = Work(_choose_compute_dtype(dtype, precision, device), pairs, skewness, second_moments)
    main = _plan(shapes, resources, work, route, n_stat_sets, resampling.tests, column_sums)
    main = dataclasses.replace(main, resampling=_resampling_plans(main, shapes, resources, work, resampling,
                                                                  column_sums))
    mode, why = _choose_reads(reads, main)
    return dataclasses.replace(main, reads=mode, reads_reason=why)


def check_given_plan(given, wanted):
    """``given`` (``plan=``) when it plans the same job as ``wanted`` does; a ValueError
    naming the first difference otherwise."""
    for field in ("n_obs", "layer_names", "widths", "self_job", "input_dtype", "n_stat_sets", "column_sums", "tests"):
        if getattr(given, field) != getattr(wanted, field):
            raise ValueError(f"plan= was made for another job: its {field} is {getattr(given, field)!r}, this "
                             f"job's {getattr(wanted, field)!r}; make it with rv2dist.plan() and the same arguments")
    if bool(given.cost.block_bytes) != bool(wanted.cost.block_bytes):
        raise ValueError("plan= was made for other measures (with or without the second-moment measures' blocks); "
                         "make it with rv2dist.plan() and the same arguments")
    kinds = [(sub.kind, sub.count) for sub in given.resampling]
    if kinds != [(sub.kind, sub.count) for sub in wanted.resampling]:
        raise ValueError(f"plan= was made for other resampling ({kinds or 'none'}); make it with rv2dist.plan() "
                         "and the same arguments")
    return given
