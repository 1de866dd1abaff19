"""The graph of the second-moment measures: from the feature route's totals, each
layer's centred block decomposed once and every cell's measures, for the job and for
each of its permutations and bootstrap replicates."""

from __future__ import annotations

from rv2dist.core import block_measures
from rv2dist.core.measures import MEASURES


def _cells(plan, offset):
    """The result's rows and columns as layer indices (``offset`` where b's layers start)."""
    la = plan.n_layers_a
    return tuple(range(la)), tuple(range(offset, offset + (la if plan.self_job else plan.n_layers - la)))


def _static(plan, spec):
    return dict(measures=[MEASURES[name] for name in spec.measures if MEASURES[name].family == "blocks"],
                options=spec.measure_options)


def _blocks(graph, totals, plan, cells, tag):
    static = dict(product_pieces=[(p.row_pieces, p.col_pieces) for p in plan.products],
                  mirrored=[p.mirrored for p in plan.products], widths=list(plan.widths), cells=cells)
    return graph.add_bound(f"blocks{tag}", (), block_measures.centred_blocks, static, sums=totals)


def job_block_values(graph, totals, plan, spec, tag):
    """Keys of the job's layer decompositions and of its :class:`BlockValues`."""
    rows, cols = _cells(plan, 0 if plan.self_job else plan.n_layers_a)
    cells = [(r, c) for r in rows for c in cols if not plan.self_job or r <= c]
    blocks = _blocks(graph, totals, plan, cells, tag)
    layers = graph.add(f"layers{tag}", (), block_measures.decompose, blocks,
                       spec.measure_options.cut_off(plan.compute_dtype))
    values = graph.add_bound(f"block-values{tag}", (), block_measures.block_values,
                             dict(rows=rows, cols=cols, symmetric_cells=plan.self_job, **_static(plan, spec)),
                             layers=layers, blocks=blocks)
    return layers, values


def permuted_block_values(graph, totals, sub_plan, main_plan, spec, layers, tag):
    """Key of one permutation's :class:`BlockValues`: its cross blocks against the job's
    own decompositions (a permutation of b's rows changes no layer's own block); in a
    self job b is a permuted copy of a, layers ``la..2la``."""
    la = main_plan.n_layers_a
    rows, cols = _cells(main_plan, la)
    blocks = _blocks(graph, totals, sub_plan, [(r, c) for r in rows for c in cols], tag)
    if main_plan.self_job:
        layers = graph.add(f"copies{tag}", (), block_measures.with_copies, layers, la, la)
    return graph.add_bound(f"block-values{tag}", (), block_measures.block_values,
                           dict(rows=rows, cols=cols, **_static(main_plan, spec)), layers=layers, blocks=blocks)
