"""The exact routes, as data: one record each, the one place that says what a route
costs, how its plan is printed and which graph builder runs it.

The planner compares the routes' costs; the engine builds the chosen route's graph
with the function ``graph`` names (planning never imports the engine: it names the
builder, as an entry point does).  Adding a route is one entry here, its cost and
printout functions, a graph builder and its tests (docs/architecture.md shows how).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from rv2dist.planning import feature, gram


@dataclass(frozen=True)
class Route:
    """One exact route.

    Attributes
    ----------
    name : str
        What ``route=`` calls it.
    summary : str
        When it is the better route, in words.
    cost : callable
        ``cost(shapes, resources, work) -> RouteCost``; raises
        :class:`~rv2dist.planning.plan.PlanError` when nothing of it fits the budget.
    describe : callable
        ``describe(plan) -> list of str``: its layout's lines in the printed plan.
    skewness : callable
        ``skewness(plan) -> str``: how the tests' skewness is had, for the printout.
    graph : str
        ``"module:function"`` of the engine's graph builder of its statistics.
    takes_weights : bool
        Whether its products can weight rows (bootstrap replicates).
    """

    name: str
    summary: str
    cost: Callable
    describe: Callable
    skewness: Callable
    graph: str
    takes_weights: bool


ROUTES = MappingProxyType({route.name: route for route in (
    Route("feature", "p x q cross-products summed over row chunks", feature.cost, feature.describe, feature.skewness,
          "rv2dist.engine.feature_graph:feature_statistics", takes_weights=True),
    Route("gram", "inner products of n x n Gram tiles", gram.cost, gram.describe, gram.skewness,
          "rv2dist.engine.gram_graph:gram_statistics", takes_weights=False),
)})

# what ``route=`` takes
ROUTE_CHOICES = ("auto", *ROUTES)
