"""One dask graph for a whole job, built from a :class:`~rv2dist.plan.Plan`.

Every row chunk of every layer is read once and serves every product it belongs to;
all sums over observations are tree reductions of float64 partials.  Nothing runs
until the returned :class:`dask.delayed.Delayed` is computed.
"""

from __future__ import annotations

from dask import delayed
from dask.base import tokenize

from . import kernels


def _tree(parts, name, token):
    """Reduce ``parts`` with :func:`kernels.combine` in a tree of fan-in SPLIT_EVERY."""
    from .plan import SPLIT_EVERY

    level = 0
    while len(parts) > 1:
        parts = [
            delayed(kernels.combine, pure=True)(
                parts[i : i + SPLIT_EVERY], dask_key_name=(f"{name}-{token}", level, i)
            )
            for i in range(0, len(parts), SPLIT_EVERY)
        ]
        level += 1
    return parts[0]


def _shifts(chunks, dtype, center, token):
    if not center:
        return [None] * len(chunks)
    return [
        delayed(kernels.first_rows_mean, pure=True)(
            layer[0], dtype, dask_key_name=(f"rv2dist-shift-{token}", i)
        )
        for i, layer in enumerate(chunks)
    ]


def feature_statistics(chunks, plan, center, token):
    """Delayed statistics of the feature route (see :func:`kernels.feature_statistics`)."""
    token = tokenize(token, plan, center)
    shifts = _shifts(chunks, plan.compute_dtype, center, token)
    n_chunks = len(plan.row_chunks)
    moments, partials = [], [[] for _ in plan.products]
    slab_pieces = [tuple((layer, start, stop, offset) for layer, start, stop, offset in block) for block in plan.blocks]
    for c in range(n_chunks):
        row = [layer[c] for layer in chunks]
        slabs = [
            delayed(kernels.shift_slab, pure=True)(
                row,
                [(layer, start, stop) for layer, start, stop, _ in block],
                shifts,
                plan.compute_dtype,
                dask_key_name=(f"rv2dist-slab-{token}", c, b),
            )
            for b, block in enumerate(plan.blocks)
        ]
        moments.append(
            delayed(kernels.chunk_moments, pure=True)(
                slabs, slab_pieces, plan.n_layers, dask_key_name=(f"rv2dist-moments-{token}", c)
            )
        )
        for p, product in enumerate(plan.products):
            partials[p].append(
                delayed(kernels.cross_product, pure=True)(
                    slabs[product.row_block],
                    product.row_range,
                    slabs[product.col_block],
                    product.col_range,
                    dask_key_name=(f"rv2dist-product-{token}", c, p),
                )
            )
    totals = [_tree(parts, f"rv2dist-sum-{p}", token) for p, parts in enumerate(partials)]
    return delayed(kernels.feature_statistics, pure=True)(
        _tree(moments, "rv2dist-moments-sum", token),
        totals,
        [(p.row_pieces, p.col_pieces) for p in plan.products],
        [p.mirrored for p in plan.products],
        shifts,
        center,
        dask_key_name=f"rv2dist-statistics-{token}",
    )


def gram_statistics(chunks, plan, center, token):
    """Delayed statistics of the gram route (see :func:`kernels.gram_statistics`)."""
    token = tokenize(token, plan, center, "gram")
    shifts = _shifts(chunks, "float64", center, token)
    n_chunks = len(plan.row_chunks)
    rows = [[layer[c] for layer in chunks] for c in range(n_chunks)]
    summary = _tree(
        [
            delayed(kernels.column_summary, pure=True)(
                row, shifts, dask_key_name=(f"rv2dist-summary-{token}", c)
            )
            for c, row in enumerate(rows)
        ],
        "rv2dist-summary-sum",
        token,
    )
    if center:
        means = delayed(kernels.column_means, pure=True)(
            summary, shifts, dask_key_name=f"rv2dist-means-{token}"
        )
    else:
        means = [None] * len(chunks)
    prepared = [
        delayed(kernels.gram_prepare, pure=True)(
            row, means, plan.compute_dtype, dask_key_name=(f"rv2dist-prepare-{token}", c)
        )
        for c, row in enumerate(rows)
    ]
    tiles = [
        delayed(kernels.gram_tile, pure=True)(
            prepared[i], prepared[j], i == j, dask_key_name=(f"rv2dist-tile-{token}", i, j)
        )
        for i in range(n_chunks)
        for j in range(i, n_chunks)
    ]
    diagonal_sums = [
        delayed(_diagonal_part, pure=True)(p, dask_key_name=(f"rv2dist-diagonal-{token}", c))
        for c, p in enumerate(prepared)
    ]
    return delayed(kernels.gram_statistics, pure=True)(
        summary,
        shifts,
        _tree(tiles, "rv2dist-tile-sum", token),
        _tree(diagonal_sums, "rv2dist-diagonal-sum", token),
        center,
        dask_key_name=f"rv2dist-statistics-{token}",
    )


def _diagonal_part(prepared):
    return {"norm_outer": prepared["norm_outer"], "norm_sum": prepared["norm_sum"]}


ROUTE_BUILDERS = {"feature": feature_statistics, "gram": gram_statistics}


def build_statistics(chunks, plan, center, token):
    """Delayed sufficient statistics of all layer pairs of ``plan``.

    Parameters
    ----------
    chunks : sequence of sequence
        Per layer of both sides in plan order, its row chunks ``(rows, units)`` as laid
        out by ``plan.row_chunks``: in-memory arrays or Delayeds.
    plan : Plan
    center : bool
        Centre columns before the products.
    token : str
        Identifies the inputs in task names.
    """
    return ROUTE_BUILDERS[plan.route](chunks, plan, center, token)
