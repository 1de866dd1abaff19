"""The planner: pure, explains itself, picks the cheaper route and fits the budget."""

import pytest

from rv2dist.planning.options import Resampling
from rv2dist.planning.plan import PlanError
from rv2dist.planning.planner import make_plan

PAPER = [(f"c{i}", w) for i, w in enumerate((64, 64, 128, 128, 256, 256, 256, 512, 512, 1024, 1024))]


def test_paper_scale_picks_feature_route():
    plan = make_plan(23582, PAPER, PAPER, dtype="float32", memory_budget=2**31, parallelism=2)
    assert plan.route == "feature" and plan.compute_dtype == "float32"
    assert sum(plan.row_chunks) == 23582
    text = repr(plan)
    for needed in ("route=feature", "TFLOP", "peak per task", "23,582"):
        assert needed in text
    assert plan.peak_task_bytes <= 2**31


def test_wide_layers_pick_gram_route():
    wide = [(f"w{i}", 50_000) for i in range(4)]
    plan = make_plan(4000, wide, dtype="float32", memory_budget=2**31, parallelism=2)
    assert plan.route == "gram"
    assert plan.alternative_flops["feature"] > plan.flops


def test_tile_inner_products_weigh_more_than_matrix_products():
    """At the study's widths and n = 2,000 the gram route has fewer operations, but its
    tiles' inner products stream through memory: timed, the feature route is faster
    (benchmarks/RESULTS.md, "Route choice"); at n = 1,000 the gram route still wins."""
    from rv2dist.planning.planner import STREAMED_COST

    at_2000 = make_plan(2000, PAPER, PAPER, dtype="float32", memory_budget=2**31, parallelism=2)
    gram = make_plan(2000, PAPER, PAPER, dtype="float32", memory_budget=2**31, parallelism=2, route="gram")
    assert at_2000.route == "feature" and gram.flops < at_2000.flops
    assert gram.cost.flops + (STREAMED_COST - 1) * gram.cost.streamed > at_2000.flops
    assert "less work than gram" in at_2000.reason
    assert make_plan(1000, PAPER, PAPER, dtype="float32", memory_budget=2**31, parallelism=2).route == "gram"


def test_forced_route_and_gpu_precision():
    plan = make_plan(100, PAPER[:2], route="gram", dtype="float32", memory_budget=2**30, device="gpu")
    assert plan.route == "gram" and plan.reason == "requested" and plan.compute_dtype == "float64"
    plan = make_plan(100, PAPER[:2], dtype="float32", precision="input", memory_budget=2**30, device="gpu")
    assert plan.compute_dtype == "float32"


def test_small_budget_splits_columns_and_rows():
    plan = make_plan(10_000, PAPER, dtype="float32", route="feature", memory_budget=64 * 2**20, parallelism=1)
    assert len(plan.blocks) > 1
    widths = [sum(stop - start for _, start, stop, _ in block) for block in plan.blocks]
    assert max(widths) ** 2 * 8 * 5 <= 64 * 2**20
    assert plan.peak_task_bytes <= 64 * 2**20


def test_existing_chunks_kept_when_they_fit():
    plan = make_plan(1000, PAPER[:2], dtype="float64", memory_budget=2**30, row_chunks=(400, 400, 200))
    assert plan.row_chunks == (400, 400, 200)


def test_existing_chunks_too_large_are_split_evenly():
    stored = (16_384, 16_384, 7_000)
    plan = make_plan(sum(stored), PAPER, dtype="float32", route="feature", memory_budget=256 * 2**20,
                     row_chunks=stored)
    assert sum(plan.row_chunks) == sum(stored) and plan.peak_task_bytes <= 256 * 2**20
    bounds, edges = set(), 0
    for rows in plan.row_chunks:
        edges += rows
        bounds.add(edges)
    assert {16_384, 32_768, sum(stored)} <= bounds  # every stored chunk is read by whole parts


def test_impossible_budget_rejected_before_running():
    with pytest.raises(PlanError, match="budget"):
        make_plan(1000, [("x", 10**7)], dtype="float64", route="feature", memory_budget=1000)


def test_a_route_that_does_not_fit_leaves_the_other():
    """24 layers of 200,000 units need more than 256 column blocks of the feature route
    within 2 GiB; the gram route fits, requested or chosen.  With the tests, its pass
    over triples of Gram blocks is planned in closed form (not by listing them), and
    where it would take more than MAX_CUBE_TASKS tasks, the plan says the p-values are
    normal."""
    from rv2dist.planning.gram import MAX_CUBE_TASKS

    layers = [(f"l{i}", 200_000) for i in range(12)]
    auto = make_plan(20_000, layers, layers, memory_budget=2**31, parallelism=8, skewness=True,
                     resampling=Resampling(tests=True))
    assert auto.route == "gram" and "the only route within the memory budget (feature:" in auto.reason
    assert make_plan(20_000, layers, layers, memory_budget=2**31, route="gram").route == "gram"
    blocks = -(-len(auto.row_chunks) // auto.cube_group)
    assert auto.cube_group > 1 and 0 < auto.cube_flops < auto.flops
    assert 7 * 8 * 24 * (auto.cube_group * max(auto.row_chunks)) ** 2 <= 2**31  # a cube task fits the budget
    assert blocks * (blocks + 1) * (blocks + 2) // 6 <= MAX_CUBE_TASKS
    larger = make_plan(100_000, layers, layers, memory_budget=2**31, parallelism=8, skewness=True,
                     resampling=Resampling(tests=True))
    assert larger.cube_group == 0 and "normal p-values" in repr(larger) and "50,000 triples" in repr(larger)
    with pytest.raises(PlanError, match="256 column blocks"):
        make_plan(20_000, layers, layers, memory_budget=2**31, route="feature")
    with pytest.raises(PlanError, match="no route fits: feature: .*; gram: no gram tile fits"):
        make_plan(20_000, layers, layers, memory_budget=1000)


def test_few_stored_chunks_are_split_for_the_workers():
    """Two stored chunks of 16,384 and 7,198 rows on two workers: split into about two
    parts per worker (16,384 rows alone would hold one worker for 70 % of the job),
    never across the stored boundary."""
    plan = make_plan(23_582, PAPER, PAPER, dtype="float32", memory_budget=2**32, parallelism=2,
                     row_chunks=(16_384, 7_198))
    assert len(plan.row_chunks) >= 4 and max(plan.row_chunks) <= -(-23_582 // 4)
    assert 16_384 in {sum(plan.row_chunks[:i]) for i in range(len(plan.row_chunks) + 1)}
