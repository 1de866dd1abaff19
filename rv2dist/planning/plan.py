"""The planner: shapes, dtypes and a memory budget in, a :class:`Plan` out.

Pure: it never touches data.  Strategies are strings resolved by small ``_choose_*``
functions, each of which records why it chose what it chose.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from rv2dist.io.inputs import real_number
from rv2dist.core.feature import SUB_ROWS
from rv2dist.core.feature_totals import MAX_CUBED_WIDTH

logger = logging.getLogger(__name__)

ROUTES = ("auto", "feature", "gram")
PRECISIONS = ("auto", "input", "float64")
SPLIT_EVERY = 4
_MIN_CHUNK_ROWS = 1024
_MIN_TILE_ROWS = 256
_MAX_COLUMN_BLOCKS = 256


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


@dataclass(frozen=True)
class Plan:
    """How one job runs: route, chunking, work and memory.  ``print(plan)`` explains it."""

    route: str
    reason: str
    n_obs: int
    layer_names: tuple[str, ...]
    widths: tuple[int, ...]
    n_layers_a: int
    self_job: bool
    input_dtype: str
    compute_dtype: str
    row_chunks: tuple[int, ...]
    memory_budget: int
    flops: float
    peak_task_bytes: int
    n_tasks: int
    alternative_flops: dict = field(default_factory=dict)
    blocks: tuple = ()
    products: tuple = ()
    product_groups: tuple = ()
    sub_rows: int = SUB_ROWS
    n_stat_sets: int = 1
    cross_only: bool = False
    resampling: tuple = ()
    tests: bool = False
    # of ``flops``: the tests' tr(A^3) of every layer (the skewness of their p-values)
    cube_flops: float = 0.0
    # gram route: row blocks per block of its pass over triples for tr(A^3) (0: no pass)
    cube_group: int = 0
    # whether statistics of uncentred data carry the column sums behind 1'Ã1 and the row
    # sums (rv2_null, the tests need them; centred statistics always do)
    column_sums: bool = True

    @property
    def n_layers(self) -> int:
        return len(self.layer_names)

    def __repr__(self) -> str:
        la = self.n_layers_a
        lb = la if self.self_job else self.n_layers - la
        kind = "self" if self.self_job else "cross"
        rows = self.row_chunks
        lines = [
            f"rv2dist plan: route={self.route} ({self.reason})",
            f"  observations   {self.n_obs:,} in {len(rows)} row chunk(s) of <= {max(rows):,}",
            f"  layers         {la} x {lb} ({kind}), widths {min(self.widths):,}..{max(self.widths):,},"
            f" {sum(self.widths):,} units in all",
            f"  arithmetic     {self.compute_dtype} products from {self.input_dtype} input,"
            " float64 sums over observations",
        ]
        if self.route == "feature":
            lines.append(
                f"  products       {len(self.blocks)} column block(s), {len(self.products)} product(s)"
                f" in {len(self.product_groups)} task(s) per row chunk"
            )
        else:
            lines.append(f"  gram tiles     {len(rows)} x {len(rows)} blocks of {max(rows):,} rows (upper half)")
        others = ", ".join(f"{r} {_flops(f)}" for r, f in self.alternative_flops.items())
        lines += [
            f"  work           {_flops(self.flops)} in about {self.n_tasks:,} tasks"
            + (f" (alternatives: {others})" if others else ""),
            f"  peak per task  {_bytes(self.peak_task_bytes)} of a {_bytes(self.memory_budget)} budget",
        ]
        if self.tests:
            lines.append("  tests          exact permutation moments from the same sums, no extra pass; "
                         + self._skewness_line())
        for kind, count, plan in self.resampling:
            what = ("the cross products of the rows of b permuted" if kind == "permutation"
                    else "every product with Poisson(1) weights on the rows")
            lines.append(f"  {'permutations' if kind == 'permutation' else kind:<14} {count:,} x {what} ({plan.route} route):"
                         f" {_flops(count * plan.flops)} more, {count:,} x {plan.n_tasks:,} tasks")
        return "\n".join(lines)


    def _skewness_line(self) -> str:
        if self.route == "feature" and self.cube_flops:
            return f"skewness from tr(A^3) of each layer's own cross-product: {_flops(self.cube_flops)}"
        if self.route == "gram" and self.cube_group:
            tiles = sum(b_i * b_j for i, b_i in enumerate(self.row_chunks) for b_j in self.row_chunks[i:])
            return (f"skewness from tr(A^3) over triples of Gram blocks: {_flops(self.cube_flops)}; the tiles, "
                    f"{_bytes(8 * tiles * self.n_layers)} in all, stay in worker memory until their triples are done")
        why = ("layers wider than 4,096 units" if self.route == "feature"
               else f"more than {MAX_CUBE_TASKS:,} triples of Gram blocks; raise the memory budget")
        return f"normal p-values (no tr(A^3): uncentred data, or {why})"


def block_triples(count):
    """``(i, j, k, orders)`` for the row blocks ``i <= j <= k`` of ``count`` blocks, with
    the number of distinct orders of each triple (1, 3 or 6): the terms of tr(A^3) of a
    Gram in tiles (see :func:`rv2dist.core.gram.gram_cube`)."""
    import itertools

    return [(i, j, k, len(set(itertools.permutations((i, j, k)))))
            for i, j, k in itertools.combinations_with_replacement(range(count), 3)]


def _flops(value: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} FLOP"


def _bytes(value: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{int(value)} B"


def _even_chunks(n: int, rows: int) -> tuple[int, ...]:
    count = max(1, math.ceil(n / rows))
    base, extra = divmod(n, count)
    return tuple(base + (i < extra) for i in range(count))


def budget_bytes(memory_budget):
    """``memory_budget`` as bytes: a positive number, or text such as ``"4GB"`` or
    ``"512 MiB"`` (dask's notation)."""
    budget = memory_budget
    if isinstance(budget, str):
        from dask.utils import parse_bytes

        try:
            budget = parse_bytes(budget)
        except ValueError:
            pass
    if not real_number(budget) or not 0 < budget < math.inf:
        raise ValueError(f"memory_budget must be a positive number of bytes or a size such as '4GB', "
                         f"got {memory_budget!r}")
    return budget


def _choose_compute_dtype(input_dtype: str, precision: str, device: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    narrow = input_dtype in ("float32", "float16", "bfloat16")
    if precision == "float64" or not narrow:
        return "float64"
    if precision == "auto" and device == "gpu":
        # data-centre GPUs run float64 GEMM at half the float32 rate, without TF32's rounding
        return "float64"
    return "float32"


def _choose_pieces(widths, first_layer, max_width):
    """Split layers into pieces of at most ``max_width`` columns and pack consecutive
    pieces into blocks of at most ``max_width`` columns."""
    blocks, current, used = [], [], 0
    for layer, width in enumerate(widths, start=first_layer):
        for start in range(0, width, max_width):
            stop = min(width, start + max_width)
            if used + stop - start > max_width and current:
                blocks.append(tuple(current))
                current, used = [], 0
            current.append((layer, start, stop, used))
            used += stop - start
    if current:
        blocks.append(tuple(current))
    return blocks


def _block_width(block) -> int:
    return sum(stop - start for _, start, stop, _ in block)


def _feature_products(blocks_a, blocks_b, self_job, cross_only=False):
    products = []

    def whole(index, block):
        return index, (0, _block_width(block)), block

    if self_job:
        for i, bi in enumerate(blocks_a):
            for j in range(i, len(blocks_a)):
                bj = blocks_a[j]
                products.append(_product(whole(i, bi), whole(j, bj), mirrored=i != j))
        return products
    offset = len(blocks_a)
    for i, bi in enumerate(blocks_a):
        for j, bj in enumerate(blocks_b, start=offset):
            products.append(_product(whole(i, bi), whole(j, bj), mirrored=False))
    if cross_only:
        return products
    # each layer's own X'X, for the normalisation
    pieces_of = {}
    for index, block in enumerate(list(blocks_a) + list(blocks_b)):
        for layer, start, stop, offset_in in block:
            piece = (layer, start, stop, 0)
            pieces_of.setdefault(layer, []).append((index, (offset_in, offset_in + stop - start), (piece,)))
    for pieces in pieces_of.values():
        for i, first in enumerate(pieces):
            for second in pieces[i:]:
                products.append(_product(first, second, mirrored=first is not second))
    return products


def _product(rows, cols, mirrored):
    (ri, rr, rp), (ci, cr, cp) = rows, cols
    return Product(ri, rr, ci, cr, tuple(rp), tuple(cp), mirrored)


def _product_flops(product: Product, n: int) -> float:
    p = product.row_range[1] - product.row_range[0]
    q = product.col_range[1] - product.col_range[0]
    return n * p * (p + 1) if product.symmetric else 2.0 * n * p * q


def _feature_cost(n, widths_a, widths_b, itemsize, compute_itemsize, budget, parallelism, row_chunks, device,
                  cross_only=False, tests=False):
    total_width = sum(widths_a) + sum(widths_b or ())
    # float64 sums of one product: SPLIT_EVERY + 1 of them alive in a tree reduction
    max_width = int(math.sqrt(_accumulator_limit(budget)))
    if max_width < 1:
        raise PlanError(f"a memory budget of {_bytes(budget)} cannot hold any product")
    max_width = min(max_width, max(sum(widths_a), sum(widths_b or ())))
    if total_width / max_width > _MAX_COLUMN_BLOCKS:
        raise PlanError(
            f"{total_width:,} units in blocks of {max_width:,} columns make more than"
            f" {_MAX_COLUMN_BLOCKS} column blocks; raise the memory budget of {_bytes(budget)}"
        )
    blocks_a = _choose_pieces(widths_a, 0, max_width)
    blocks_b = _choose_pieces(widths_b, len(widths_a), max_width) if widths_b else []
    products = _feature_products(blocks_a, blocks_b, widths_b is None, cross_only)
    groups = _group_products(products, budget)
    group_bytes = max(sum(_product_size(p) for p in products[a:b]) for a, b in groups)
    # a chunk task holds its rows of every layer, shifted slabs of at most as many
    # rows, and one group's float64 sums with their product buffers
    per_row = total_width * (itemsize + compute_itemsize)
    max_rows = int((budget - group_bytes * (8 + compute_itemsize)) // per_row)
    if max_rows < 1:
        raise PlanError(
            f"one observation of all layers ({_bytes(per_row)}) besides the products' sums"
            f" does not fit the memory budget of {_bytes(budget)}"
        )
    chunks = _choose_row_chunks(n, row_chunks, max_rows, parallelism)
    flops = sum(_product_flops(p, n) for p in products) + 2.0 * n * total_width * (
        len(widths_a) + len(widths_b or ())
    )
    rows = max(chunks)
    # GPU memory has no first-touch cost to amortise: one sub-block, fewer launches
    sub_rows = rows if device == "gpu" else min(rows, SUB_ROWS)
    peak = max(
        total_width * (rows * itemsize + sub_rows * compute_itemsize) + group_bytes * (8 + compute_itemsize),
        (SPLIT_EVERY + 1) * group_bytes * 8,
    )
    n_tasks = len(groups) * (len(chunks) + math.ceil(len(chunks) / (SPLIT_EVERY - 1)))
    # tr(C^3) of each layer's own p x p cross-product C (wider layers: too costly)
    cubes = sum(2.0 * w**3 for w in tuple(widths_a) + tuple(widths_b or ()) if w <= MAX_CUBED_WIDTH) if tests else 0.0
    return dict(flops=flops, cube_flops=cubes, peak=peak, chunks=chunks, blocks=tuple(blocks_a + blocks_b),
                products=tuple(products), groups=tuple(groups), n_tasks=n_tasks, sub_rows=sub_rows)


def _choose_row_chunks(n, row_chunks, max_rows, parallelism):
    """Row chunks of at most ``max_rows``, about two per parallel task (one task at a
    time gains nothing from more chunks, which only add partial sums).  The input's
    chunks are kept or each split evenly, so that a stored chunk is read by whole parts."""
    wanted = 1 if parallelism == 1 else 2 * parallelism
    rows = min(max_rows, max(min(n, _MIN_CHUNK_ROWS), math.ceil(n / wanted)))
    if row_chunks and min(row_chunks) >= min(n, 64):
        if max(row_chunks) <= max_rows and len(row_chunks) >= wanted:
            return tuple(row_chunks)
        return tuple(part for stored in row_chunks for part in _even_chunks(stored, rows))
    return _even_chunks(n, rows)


def _accumulator_limit(budget):
    """Elements of float64 sums that SPLIT_EVERY + 1 at a time fit the budget."""
    return budget / (8 * (SPLIT_EVERY + 1))


def _product_size(product: Product) -> int:
    return (product.row_range[1] - product.row_range[0]) * (product.col_range[1] - product.col_range[0])


def _group_products(products, budget):
    """Consecutive products whose float64 sums, SPLIT_EVERY + 1 at a time in the tree
    reduction, fit the budget: one task per group and row chunk."""
    limit = _accumulator_limit(budget)
    groups, start, used = [], 0, 0
    for i, product in enumerate(products):
        size = _product_size(product)
        if used + size > limit and i > start:
            groups.append((start, i))
            start, used = i, 0
        used += size
    groups.append((start, len(products)))
    return groups


def _gram_cost(n, widths_a, widths_b, itemsize, budget, parallelism, tests=False):
    widths = tuple(widths_a) + tuple(widths_b or ())
    n_layers, total_width = len(widths), sum(widths)

    def peak(b):
        # a tile task's float64 tiles and rows; with tests, a cube task's three tiles and a product
        return max(2 * n_layers * b * b * 8 + 2 * b * total_width * itemsize + b * max(widths) * 8,
                   4 * n_layers * b * b * 8 if tests else 0)

    target_blocks = 1
    while target_blocks * (target_blocks + 1) // 2 < 2 * parallelism:
        target_blocks += 1
    rows = max(min(n, _MIN_TILE_ROWS), math.ceil(n / target_blocks))
    while rows > 1 and peak(rows) > budget:
        rows = rows // 2
    if peak(rows) > budget:
        raise PlanError(f"no gram tile fits the memory budget of {_bytes(budget)}")
    chunks = _even_chunks(n, rows)
    # the tiles i <= j: sum of b_i b_j = (n^2 + sum b_i^2) / 2, without listing them
    pairs = len(chunks) * (len(chunks) + 1) // 2
    flops = (n * n + sum(b * b for b in chunks)) / 2 * (2.0 * total_width + 2.0 * n_layers**2)
    group, cubes, cube_tasks = (_cube_pass(n, rows, len(chunks), n_layers, budget, parallelism) if tests
                                else (0, 0.0, 0))
    return dict(flops=flops, cube_flops=cubes, cube_group=group, peak=peak(max(chunks)), chunks=chunks, blocks=(),
                products=(), groups=(), n_tasks=2 * len(chunks) + pairs * (3 if group else 2) + cube_tasks)


# the most tasks of the gram route's cube pass (one per triple of its blocks); beyond, its
# tests keep normal p-values
MAX_CUBE_TASKS = 50_000


def _triples(count):
    return count * (count + 1) * (count + 2) // 6


def _cube_pass(n, rows, blocks, n_layers, budget, parallelism):
    """The gram route's pass over triples of Gram blocks for tr(A^3): ``(group, flops,
    tasks)``, ``group`` row blocks of the tiles making one block of the pass.  Blocks as
    large as a task's three assembled blocks, their inputs and a product fit the budget
    (fewer, larger tasks), while leaving about two tasks per parallel one; group 0 when
    it would take more than MAX_CUBE_TASKS tasks."""
    largest = max(1, int(math.sqrt(budget / (7 * 8 * n_layers))) // rows)
    wanted = 1
    while _triples(wanted) < 2 * parallelism and wanted < blocks:
        wanted += 1
    group = max(1, min(largest, blocks // wanted))
    count = -(-blocks // group)
    tasks = _triples(count)
    if tasks > MAX_CUBE_TASKS:
        return 0, 0.0, 0
    side = n / count
    return group, tasks * 2.0 * n_layers * side * side * (side + 1), tasks


def _choose_route(route, costs, failures):
    """The route and why; ``failures`` holds the PlanError of a route that does not fit
    the budget (the other one may)."""
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; choose one of {', '.join(ROUTES)}")
    if route != "auto":
        if route in failures:
            raise failures[route]
        return route, "requested"
    if len(failures) == 2:
        raise PlanError(f"neither route fits: feature: {failures['feature']}; gram: {failures['gram']}")
    if failures:
        (chosen,) = costs
        (other, error), = failures.items()
        return chosen, f"auto: the only route within the memory budget ({other}: {error})"
    feature, gram = (costs[r]["flops"] + costs[r]["cube_flops"] for r in ("feature", "gram"))
    tests = " with the tests' tr(A^3)" if costs["feature"]["cube_flops"] or costs["gram"]["cube_flops"] else ""
    if feature <= gram:
        return "feature", (f"auto: fewer operations than gram{tests}, {_flops(feature)} against {_flops(gram)}; "
                           "layers narrower than n")
    return "gram", (f"auto: fewer operations than feature{tests}, {_flops(gram)} against {_flops(feature)}; "
                    "layers wider than n")


def make_plan(n_obs, layers_a, layers_b=None, *, dtype="float64", route="auto", memory_budget,
              parallelism=1, row_chunks=None, precision="auto", device="cpu", n_stat_sets=1,
              cross_only=False, tests=False) -> Plan:
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
        pair); ``"gram"`` sums Frobenius products of off-diagonal Gram tiles
        (cost ~ n^2 (sum p + L^2) / 2); ``"auto"`` takes the one with fewer operations.
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
        GPUs (fast float64 there, and no silent TF32).  Sums over observations are
        always float64.
    device : {"cpu", "gpu"}
        Where the chunks live.
    n_stat_sets : int
        Number of statistic sets (2 when centred and uncentred metrics are both asked).
    cross_only : bool
        Only the products between ``a`` and ``b`` (the feature route skips each
        layer's own ``X'X``): what a permutation of ``b``'s rows changes.
    tests : bool
        The tests' p-values want the skewness, so ``tr(A^3)`` of every layer's centred
        Gram ``A``: the feature route cubes each layer's own cross-product (``2 p^3``,
        layers up to MAX_CUBED_WIDTH units), the gram route sums products of triples of
        its tiles (about ``n^3 L / 3``); ``"auto"`` weighs these costs too.

    Raises
    ------
    PlanError
        When nothing of the job fits ``memory_budget``.
    """
    if n_obs < 2:
        raise ValueError(f"need at least 2 observations, got {n_obs}")
    memory_budget = budget_bytes(memory_budget)
    names = tuple(name for name, _ in layers_a) + tuple(name for name, _ in (layers_b or ()))
    widths_a = tuple(int(w) for _, w in layers_a)
    widths_b = tuple(int(w) for _, w in layers_b) if layers_b is not None else None
    itemsize_in = 8 if dtype not in ("float32", "float16", "bfloat16") else 4
    compute = _choose_compute_dtype(dtype, precision, device)
    estimates = {
        "feature": lambda: _feature_cost(n_obs, widths_a, widths_b, itemsize_in, 8 if compute == "float64" else 4,
                                         memory_budget, parallelism, row_chunks, device, cross_only, tests),
        "gram": lambda: _gram_cost(n_obs, widths_a, widths_b, itemsize_in, memory_budget, parallelism, tests),
    }
    costs, failures = {}, {}
    for name, estimate in estimates.items():
        try:
            costs[name] = estimate()
        except PlanError as error:
            failures[name] = error
    chosen, reason = _choose_route(route, costs, failures)
    cost = costs[chosen]
    logger.info("rv2dist route %s: %s", chosen, reason)
    return Plan(
        route=chosen,
        reason=reason,
        n_obs=n_obs,
        layer_names=names,
        widths=widths_a + (widths_b or ()),
        n_layers_a=len(widths_a),
        self_job=layers_b is None,
        input_dtype=dtype,
        compute_dtype=compute,
        row_chunks=cost["chunks"],
        memory_budget=int(memory_budget),
        flops=cost["flops"] * n_stat_sets + cost["cube_flops"],
        peak_task_bytes=int(cost["peak"]),
        n_tasks=cost["n_tasks"] * n_stat_sets,
        alternative_flops={r: c["flops"] * n_stat_sets + c["cube_flops"] for r, c in costs.items() if r != chosen},
        blocks=cost["blocks"],
        products=cost["products"],
        product_groups=cost["groups"],
        sub_rows=cost.get("sub_rows", SUB_ROWS),
        n_stat_sets=n_stat_sets,
        cross_only=cross_only and chosen == "feature",
        tests=tests,
        cube_flops=cost["cube_flops"],
        cube_group=cost.get("cube_group", 0),
    )
