"""What a plan is: the types the planner returns, and their printout.

A :class:`Plan` holds every decision that changes the work of a job (route, row
chunks, column blocks or tiles, compute dtype, how stored chunks are read, the
sub-plans of permutations and bootstrap replicates) with its cost in operations, tasks
and memory per task; ``print(plan)`` says each and why, and
``similarity(..., plan=p)`` runs it as printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class PlanError(ValueError):
    """The job cannot be planned within the memory budget."""


@dataclass(frozen=True)
class Product:
    """One cross-product of the feature route: slab columns ``rows`` x ``cols``.

    ``row_pieces``/``col_pieces`` hold ``(layer, layer start, layer stop, offset)``;
    ``mirrored`` marks an off-diagonal block of a symmetric product, standing for its
    transpose as well.
    """

    row_block: int
    row_range: tuple[int, int]
    col_block: int
    col_range: tuple[int, int]
    row_pieces: tuple
    col_pieces: tuple
    mirrored: bool

    @property
    def symmetric(self) -> bool:
        return self.row_block == self.col_block and self.row_range == self.col_range

    @property
    def size(self) -> int:
        """Elements of the product."""
        return (self.row_range[1] - self.row_range[0]) * (self.col_range[1] - self.col_range[0])


@dataclass(frozen=True)
class RouteCost:
    """What one route would do: its work, its memory per task and its layout.

    ``blocks``, ``products``, ``groups`` and ``sub_rows`` are the feature route's column
    blocks, cross-products, products per task and rows per sub-block; ``cube_group``
    the gram route's row blocks per block of its tr(A^3) pass (0: none);
    ``block_bytes`` and ``block_flops`` the second-moment measures' task (its centred
    blocks, decompositions and SVDs; 0 without them).  ``streamed`` is the part of
    ``flops`` that streams through memory instead of running in matrix products (the
    gram route's inner products of tiles), which the planner weighs as more costly.
    """

    flops: float
    cube_flops: float
    peak: int
    row_chunks: tuple[int, ...]
    n_tasks: int
    blocks: tuple = ()
    products: tuple = ()
    groups: tuple = ()
    sub_rows: int = 0
    cube_group: int = 0
    block_bytes: int = 0
    block_flops: float = 0.0
    streamed: float = 0.0


@dataclass(frozen=True)
class SubPlan:
    """``count`` passes of a resampling ``kind`` (``"permutation"`` or ``"bootstrap"``),
    each run as ``plan``."""

    kind: str
    count: int
    plan: Plan


@dataclass(frozen=True)
class Plan:
    """How one job runs: route, chunking, work and memory.  ``print(plan)`` explains it.

    Attributes beyond the route's :class:`RouteCost`: ``reason`` why the route;
    ``layer_names``/``widths`` of both sides in order (``n_layers_a`` of them a's);
    ``self_job`` for a network against itself; ``products`` ``"all"`` or ``"cross"``
    (only a's against b's: what a permutation of b changes); ``column_sums`` whether
    uncentred statistics carry the column sums (centred ones always do); ``reads``
    ``"in-task"`` (a stored chunk is read by the one task that uses it) or
    ``"read-tasks"`` (read by tasks of their own, which several graphs may share), with
    ``reads_reason``; ``resampling`` the :class:`SubPlan` of each resampling kind.
    """

    route: str
    reason: str
    n_obs: int
    layer_names: tuple[str, ...]
    widths: tuple[int, ...]
    n_layers_a: int
    self_job: bool
    input_dtype: str
    compute_dtype: str
    memory_budget: int
    parallelism: int
    device: str
    cost: RouteCost
    alternative_flops: dict = field(default_factory=dict)
    n_stat_sets: int = 1
    pairs: str = "all"
    tests: bool = False
    column_sums: bool = True
    reads: str = "read-tasks"
    reads_reason: str = ""
    resampling: tuple = ()

    @property
    def n_layers(self) -> int:
        return len(self.layer_names)

    @property
    def row_chunks(self) -> tuple[int, ...]:
        return self.cost.row_chunks

    @property
    def flops(self) -> float:
        """Operations of the job's statistics (every statistic set, the tests' cubes)."""
        return self.cost.flops * self.n_stat_sets + self.cost.cube_flops

    @property
    def n_tasks(self) -> int:
        return self.cost.n_tasks * self.n_stat_sets

    @property
    def peak_task_bytes(self) -> int:
        return int(self.cost.peak)

    @property
    def blocks(self) -> tuple:
        return self.cost.blocks

    @property
    def products(self) -> tuple:
        return self.cost.products

    @property
    def product_groups(self) -> tuple:
        return self.cost.groups

    @property
    def sub_rows(self) -> int:
        return self.cost.sub_rows

    @property
    def cube_group(self) -> int:
        return self.cost.cube_group

    @property
    def cube_flops(self) -> float:
        return self.cost.cube_flops

    @property
    def total_flops(self) -> float:
        """Operations with every resampling pass."""
        return self.flops + sum(sub.count * sub.plan.flops for sub in self.resampling)

    @property
    def total_tasks(self) -> int:
        return self.n_tasks + sum(sub.count * sub.plan.n_tasks for sub in self.resampling)

    def __repr__(self) -> str:
        from rv2dist.planning.routes import ROUTES

        lines = [f"rv2dist plan: route={self.route} ({self.reason})", *_shape_lines(self)]
        lines += ROUTES[self.route].describe(self)
        others = ", ".join(f"{r} {flops_text(f)}" for r, f in self.alternative_flops.items())
        lines += [
            f"  work           {flops_text(self.flops)} in about {self.n_tasks:,} tasks"
            + (f" (alternatives: {others})" if others else ""),
            f"  peak per task  {bytes_text(self.peak_task_bytes)} of a {bytes_text(self.memory_budget)} budget",
            f"  reads          {self.reads}: {self.reads_reason}",
        ]
        if self.cost.block_bytes:
            lines.append(f"  second moments centred p x p blocks of every layer and cell ({bytes_text(self.cost.block_bytes)}"
                         f" in one task), an eigendecomposition per layer, an SVD per cell: about "
                         f"{flops_text(self.cost.block_flops)}")
        if self.tests:
            lines.append("  tests          exact permutation moments from the same sums, no extra pass; "
                         + ROUTES[self.route].skewness(self))
        lines += [_resampling_line(sub) for sub in self.resampling]
        return "\n".join(lines)


def _shape_lines(plan):
    la = plan.n_layers_a
    lb = la if plan.self_job else plan.n_layers - la
    rows = plan.row_chunks
    return [
        f"  observations   {plan.n_obs:,} in {len(rows)} row chunk(s) of <= {max(rows):,}",
        f"  layers         {la} x {lb} ({'self' if plan.self_job else 'cross'}), widths "
        f"{min(plan.widths):,}..{max(plan.widths):,}, {sum(plan.widths):,} units in all",
        f"  arithmetic     {plan.compute_dtype} products from {plan.input_dtype} input on the {plan.device},"
        " float64 sums over observations",
    ]


def _resampling_line(sub):
    what = ("the cross products of the rows of b permuted" if sub.kind == "permutation"
            else "every product with Poisson(1) weights on the rows")
    label = "permutations" if sub.kind == "permutation" else sub.kind
    return (f"  {label:<14} {sub.count:,} x {what} ({sub.plan.route} route): "
            f"{flops_text(sub.count * sub.plan.flops)} more, {sub.count:,} x {sub.plan.n_tasks:,} tasks")


def flops_text(value: float) -> str:
    """Operations in words: ``"6.67 TFLOP"``."""
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} FLOP"


def bytes_text(value: float) -> str:
    """Bytes in words: ``"408 MiB"``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{int(value)} B"


def cost_line(plan: Plan) -> str:
    """The plan's cost in one line: its work in FLOP (resampling included) and tasks."""
    parts = [f"products {flops_text(plan.flops)}"] + [
        f"{sub.count:,} {'permutations' if sub.kind == 'permutation' else 'bootstrap replicates'} "
        f"{flops_text(sub.count * sub.plan.flops)}" for sub in plan.resampling]
    return (f"rv2dist: this job computes about {flops_text(plan.total_flops)} in about {plan.total_tasks:,} tasks "
            f"({', '.join(parts)}; {plan.route} route); rv2dist.plan() and plan_models() tell it beforehand")
