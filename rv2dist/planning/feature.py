"""The feature route's layout and cost: column blocks, cross-products, products per
task and row chunks, sized to the memory budget (shapes only).

Per row chunk c the route sums ``X_l[c]' X_m[c]`` for every pair of layers (``p x q``
each, cost ``2 n p q``); layers are packed into column blocks whose products' float64
sums fit the budget, a layer too wide for one block is split into pieces, and all
products of a chunk run in the fewest tasks whose sums fit.
"""

from __future__ import annotations

import math

from rv2dist.core.feature import SUB_ROWS
from rv2dist.core.feature_totals import MAX_CUBED_WIDTH
from rv2dist.planning.plan import PlanError, Product, RouteCost, bytes_text, flops_text

# partial sums added per task of a tree reduction
SPLIT_EVERY = 4
_MIN_CHUNK_ROWS = 1024
_MAX_COLUMN_BLOCKS = 256


def even_chunks(n: int, rows: int) -> tuple[int, ...]:
    """``n`` rows in the fewest chunks of at most ``rows``, as equal as they can be."""
    count = max(1, math.ceil(n / rows))
    base, extra = divmod(n, count)
    return tuple(base + (i < extra) for i in range(count))


def _pieces(widths, first_layer, max_width):
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


def _whole(index, block):
    return index, (0, _block_width(block)), block


def _product(rows, cols, mirrored):
    (ri, rr, rp), (ci, cr, cp) = rows, cols
    return Product(ri, rr, ci, cr, tuple(rp), tuple(cp), mirrored)


def _self_products(blocks):
    return [_product(_whole(i, bi), _whole(j, blocks[j]), mirrored=i != j)
            for i, bi in enumerate(blocks) for j in range(i, len(blocks))]


def _own_products(blocks):
    """Each layer's own ``X'X``, for the normalisation, from its pieces in ``blocks``."""
    pieces_of = {}
    for index, block in enumerate(blocks):
        for layer, start, stop, offset_in in block:
            piece = (layer, start, stop, 0)
            pieces_of.setdefault(layer, []).append((index, (offset_in, offset_in + stop - start), (piece,)))
    return [_product(first, second, mirrored=first is not second)
            for pieces in pieces_of.values() for i, first in enumerate(pieces) for second in pieces[i:]]


def _products(blocks_a, blocks_b, self_job, pairs):
    """The cross-products: a self job's block pairs once; a's blocks against b's, and
    with ``pairs="all"`` each layer's own ``X'X``."""
    if self_job:
        return _self_products(blocks_a)
    offset = len(blocks_a)
    products = [_product(_whole(i, bi), _whole(j, bj), mirrored=False)
                for i, bi in enumerate(blocks_a) for j, bj in enumerate(blocks_b, start=offset)]
    return products if pairs == "cross" else products + _own_products(list(blocks_a) + list(blocks_b))


def _product_flops(product: Product, n: int) -> float:
    p = product.row_range[1] - product.row_range[0]
    q = product.col_range[1] - product.col_range[0]
    return n * p * (p + 1) if product.symmetric else 2.0 * n * p * q


def _accumulator_limit(budget):
    """Elements of float64 sums that SPLIT_EVERY + 1 at a time fit the budget."""
    return budget / (8 * (SPLIT_EVERY + 1))


def _group_products(products, budget):
    """Consecutive products whose float64 sums, SPLIT_EVERY + 1 at a time in the tree
    reduction, fit the budget: one task per group and row chunk."""
    limit = _accumulator_limit(budget)
    groups, start, used = [], 0, 0
    for i, product in enumerate(products):
        if used + product.size > limit and i > start:
            groups.append((start, i))
            start, used = i, 0
        used += product.size
    groups.append((start, len(products)))
    return groups


def choose_row_chunks(n, row_chunks, max_rows, parallelism):
    """Row chunks of at most ``max_rows``, about two per parallel task (one task at a
    time gains nothing from more chunks, which only add partial sums).  The input's
    chunks are kept or each split evenly, so that a stored chunk is read by whole parts."""
    wanted = 1 if parallelism == 1 else 2 * parallelism
    rows = min(max_rows, max(min(n, _MIN_CHUNK_ROWS), math.ceil(n / wanted)))
    if row_chunks and min(row_chunks) >= min(n, 64):
        if max(row_chunks) <= max_rows and len(row_chunks) >= wanted:
            return tuple(row_chunks)
        return tuple(part for stored in row_chunks for part in even_chunks(stored, rows))
    return even_chunks(n, rows)


def _column_width(widths_a, widths_b, budget):
    """The widest column block whose products' sums fit the budget."""
    total_width = sum(widths_a) + sum(widths_b or ())
    max_width = int(math.sqrt(_accumulator_limit(budget)))
    if max_width < 1:
        raise PlanError(f"a memory budget of {bytes_text(budget)} cannot hold any product")
    max_width = min(max_width, max(sum(widths_a), sum(widths_b or ())))
    if total_width / max_width > _MAX_COLUMN_BLOCKS:
        raise PlanError(f"{total_width:,} units in blocks of {max_width:,} columns make more than"
                        f" {_MAX_COLUMN_BLOCKS} column blocks; raise the memory budget of {bytes_text(budget)}")
    return max_width


def _second_moments(shapes, budget, self_job):
    """``(bytes, flops)`` of the second-moment measures' task: the centred blocks of
    every layer and result cell (a self job's upper half), each layer's eigenvectors,
    and per cell the rotations into both eigenbases and an SVD; a PlanError naming the
    widest layer when they do not fit the budget."""
    widths_a = shapes.widths_a
    widths_b = widths_a if self_job else shapes.widths_b
    cells = [(p, q) for i, p in enumerate(widths_a) for j, q in enumerate(widths_b) if not self_job or i <= j]
    own = sum(p * p for p in shapes.widths)
    # the summed products beside the blocks, which are as large
    nbytes = 8 * 3 * (own + sum(p * q for p, q in cells))
    flops = 10.0 * sum(p**3 for p in shapes.widths) + sum(2.0 * p * q * (p + q) + 20.0 * min(p, q) ** 2 * max(p, q)
                                                          for p, q in cells)
    if nbytes > budget:
        widest = shapes.widths.index(max(shapes.widths))
        name = (shapes.names_a + (shapes.names_b or ()))[widest]
        raise PlanError(f"the second-moment measures need the centred p x p blocks of every layer and cell in one "
                        f"task, {bytes_text(nbytes)} against a memory budget of {bytes_text(budget)}; the widest layer "
                        f"is {name!r} ({max(shapes.widths):,} units): pool or select layers (layers=), raise the "
                        "budget, or use the RV family or RSA, which need no blocks")
    return nbytes, flops


def cost(shapes, resources, work) -> RouteCost:
    """The feature route's :class:`~rv2dist.planning.plan.RouteCost` (see
    :func:`rv2dist.planning.planner.make_plan` for the arguments)."""
    widths_a, widths_b, n = shapes.widths_a, shapes.widths_b, shapes.n_obs
    budget = resources.memory_budget
    max_width = _column_width(widths_a, widths_b, budget)
    blocks_a = _pieces(widths_a, 0, max_width)
    blocks_b = _pieces(widths_b, len(widths_a), max_width) if widths_b else []
    products = _products(blocks_a, blocks_b, widths_b is None, work.pairs)
    groups = _group_products(products, budget)
    group_bytes = max(sum(p.size for p in products[a:b]) for a, b in groups)
    # a chunk task holds its rows of every layer, shifted slabs of at most as many
    # rows, and one group's float64 sums with their product buffers
    total_width = sum(widths_a) + sum(widths_b or ())
    itemsize, compute_itemsize = shapes.itemsize, work.compute_itemsize
    per_row = total_width * (itemsize + compute_itemsize)
    max_rows = int((budget - group_bytes * (8 + compute_itemsize)) // per_row)
    if max_rows < 1:
        raise PlanError(f"one observation of all layers ({bytes_text(per_row)}) besides the products' sums"
                        f" does not fit the memory budget of {bytes_text(budget)}")
    chunks = choose_row_chunks(n, shapes.row_chunks, max_rows, resources.parallelism)
    n_layers = len(widths_a) + len(widths_b or ())
    flops = sum(_product_flops(p, n) for p in products) + 2.0 * n * total_width * n_layers
    rows = max(chunks)
    # GPU memory has no first-touch cost to amortise: one sub-block, fewer launches
    sub_rows = rows if resources.device == "gpu" else min(rows, SUB_ROWS)
    peak = max(total_width * (rows * itemsize + sub_rows * compute_itemsize) + group_bytes * (8 + compute_itemsize),
               (SPLIT_EVERY + 1) * group_bytes * 8)
    n_tasks = len(groups) * (len(chunks) + math.ceil(len(chunks) / (SPLIT_EVERY - 1)))
    # tr(C^3) of each layer's own p x p cross-product C (wider layers: too costly)
    cubes = sum(2.0 * w**3 for w in shapes.widths if w <= MAX_CUBED_WIDTH) if work.cubes else 0.0
    block_bytes, block_flops = _second_moments(shapes, budget, widths_b is None) if work.second_moments else (0, 0.0)
    return RouteCost(flops=flops, cube_flops=cubes, peak=int(max(peak, block_bytes)), row_chunks=chunks,
                     n_tasks=n_tasks + (3 if work.second_moments else 0), blocks=tuple(blocks_a + blocks_b),
                     products=tuple(products), groups=tuple(groups), sub_rows=sub_rows, block_bytes=block_bytes,
                     block_flops=block_flops)


def describe(plan) -> list[str]:
    """The plan's printout lines of the feature route's layout."""
    cost = plan.cost
    return [f"  products       {len(cost.blocks)} column block(s), {len(cost.products)} product(s)"
            f" in {len(cost.groups)} task(s) per row chunk"]


def skewness(plan) -> str:
    """How the tests' skewness is had on this route, for the printout."""
    if plan.cost.cube_flops:
        return f"skewness from tr(A^3) of each layer's own cross-product: {flops_text(plan.cost.cube_flops)}"
    return f"normal p-values (no tr(A^3): uncentred data, or layers wider than {MAX_CUBED_WIDTH:,} units)"
