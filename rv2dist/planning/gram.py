"""The gram route's layout and cost: row blocks tiling the n x n Grams, and the pass
over triples of blocks that gives the tests' tr(A^3) (shapes only).

For a tile pair (i, j), i <= j, every layer's tile ``G_l = X_l[i] X_l[j]'`` is formed
and the L x L Frobenius inner products of their off-diagonal parts accumulated: cost
``n^2 (sum p + L^2) / 2``, memory ``L b^2``.
"""

from __future__ import annotations

import itertools
import math

from rv2dist.planning.feature import even_chunks
from rv2dist.planning.plan import PlanError, RouteCost, bytes_text, flops_text

_MIN_TILE_ROWS = 256
# the most tasks of the cube pass (one per triple of its blocks); beyond, the tests keep
# normal p-values
MAX_CUBE_TASKS = 50_000


def block_triples(count):
    """``(i, j, k, orders)`` for the row blocks ``i <= j <= k`` of ``count`` blocks, with
    the number of distinct orders of each triple (1, 3 or 6): the terms of tr(A^3) of a
    Gram in tiles (see :func:`rv2dist.core.gram.gram_cube`)."""
    return [(i, j, k, len(set(itertools.permutations((i, j, k)))))
            for i, j, k in itertools.combinations_with_replacement(range(count), 3)]


def _triples(count):
    return count * (count + 1) * (count + 2) // 6


def _cube_pass(n, rows, blocks, n_layers, budget, parallelism):
    """The pass over triples of Gram blocks for tr(A^3): ``(group, flops, tasks)``,
    ``group`` row blocks of the tiles making one block of the pass.  Blocks as large as
    a task's three assembled blocks, their inputs and a product fit the budget (fewer,
    larger tasks), while leaving about two tasks per parallel one; group 0 when it
    would take more than MAX_CUBE_TASKS tasks."""
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


def _tile_rows(n, n_layers, total_width, widest, itemsize, budget, parallelism, tests):
    """Rows per tile: about two tiles per parallel task, halved until a task fits."""
    def peak(b):
        # a tile task's float64 tiles and rows; with tests, a cube task's three tiles and a product
        return max(2 * n_layers * b * b * 8 + 2 * b * total_width * itemsize + b * widest * 8,
                   4 * n_layers * b * b * 8 if tests else 0)

    target_blocks = 1
    while target_blocks * (target_blocks + 1) // 2 < 2 * parallelism:
        target_blocks += 1
    rows = max(min(n, _MIN_TILE_ROWS), math.ceil(n / target_blocks))
    while rows > 1 and peak(rows) > budget:
        rows = rows // 2
    if peak(rows) > budget:
        raise PlanError(f"no gram tile fits the memory budget of {bytes_text(budget)}")
    return rows, peak


def cost(shapes, resources, work) -> RouteCost:
    """The gram route's :class:`~rv2dist.planning.plan.RouteCost` (see
    :func:`rv2dist.planning.planner.make_plan` for the arguments)."""
    if work.second_moments:
        raise PlanError("the gram route sums no p x p blocks, which the second-moment measures (CCA, SVCCA, PWCCA, "
                        "Procrustes, shape metrics, regression) need; the RV family and RSA it gives")
    n, widths = shapes.n_obs, shapes.widths
    n_layers, total_width = len(widths), sum(widths)
    budget, parallelism = resources.memory_budget, resources.parallelism
    rows, peak = _tile_rows(n, n_layers, total_width, max(widths), shapes.itemsize, budget, parallelism, work.cubes)
    chunks = even_chunks(n, rows)
    # the tiles i <= j: sum of b_i b_j = (n^2 + sum b_i^2) / 2, without listing them
    pairs = len(chunks) * (len(chunks) + 1) // 2
    entries = (n * n + sum(b * b for b in chunks)) / 2
    flops = entries * (2.0 * total_width + 2.0 * n_layers**2)
    group, cubes, cube_tasks = (_cube_pass(n, rows, len(chunks), n_layers, budget, parallelism) if work.cubes
                                else (0, 0.0, 0))
    return RouteCost(flops=flops, cube_flops=cubes, peak=int(peak(max(chunks))), row_chunks=chunks,
                     n_tasks=2 * len(chunks) + pairs * (3 if group else 2) + cube_tasks, cube_group=group,
                     streamed=entries * 2.0 * n_layers**2)


def describe(plan) -> list[str]:
    """The plan's printout lines of the gram route's layout."""
    rows = plan.row_chunks
    return [f"  gram tiles     {len(rows)} x {len(rows)} blocks of {max(rows):,} rows (upper half)"]


def skewness(plan) -> str:
    """How the tests' skewness is had on this route, for the printout."""
    if plan.cost.cube_group:
        rows = plan.row_chunks
        tiles = sum(b_i * b_j for i, b_i in enumerate(rows) for b_j in rows[i:])
        return (f"skewness from tr(A^3) over triples of Gram blocks: {flops_text(plan.cost.cube_flops)}; the tiles, "
                f"{bytes_text(8 * tiles * plan.n_layers)} in all, stay in worker memory until their triples are done")
    return ("normal p-values (no tr(A^3): uncentred data, or more than "
            f"{MAX_CUBE_TASKS:,} triples of Gram blocks; raise the memory budget)")
