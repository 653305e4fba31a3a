"""The expert-assignment problem of federated MoE: model, solvers, checker, instances.

>>> import numpy as np
>>> from flexmoe.assign import AssignmentProblem, solve
>>> problem = AssignmentProblem(np.array([[3.0, 1.0], [2.0, 0.5]]), max_experts=1, load_min=1)
>>> solve(problem).experts_of(1)
[1]
"""

from flexmoe.assign import instances
from flexmoe.assign.errors import (
    AssignError,
    BackendUnavailableError,
    InvalidProblemError,
    SolverError,
    UnknownBackendError,
    UnsupportedProblemError,
)
from flexmoe.assign.io import load_problem, save_problem
from flexmoe.assign.precheck import infeasibility_reason
from flexmoe.assign.problem import AssignmentProblem, BalanceMetric, BudgetRow
from flexmoe.assign.registry import (
    Backend,
    Solver,
    Variant,
    available_backends,
    canonical_spec,
    choose_backend,
    exact_backends,
    get_backend,
    register,
    registered_backends,
    solve,
)
from flexmoe.assign.result import (
    OPTIMAL_RTOL,
    Assignment,
    LoadStats,
    Status,
    load_stats,
    relative_gap,
)
from flexmoe.assign.verify import (
    Verification,
    expert_loads,
    imbalance,
    objective_scale,
    objective_value,
    verify,
)

__all__ = [
    "OPTIMAL_RTOL",
    "AssignError",
    "Assignment",
    "AssignmentProblem",
    "Backend",
    "BackendUnavailableError",
    "BalanceMetric",
    "BudgetRow",
    "InvalidProblemError",
    "LoadStats",
    "Solver",
    "SolverError",
    "Status",
    "UnknownBackendError",
    "UnsupportedProblemError",
    "Variant",
    "Verification",
    "available_backends",
    "canonical_spec",
    "choose_backend",
    "exact_backends",
    "expert_loads",
    "get_backend",
    "imbalance",
    "infeasibility_reason",
    "instances",
    "load_problem",
    "load_stats",
    "objective_scale",
    "objective_value",
    "register",
    "registered_backends",
    "relative_gap",
    "save_problem",
    "solve",
    "verify",
]

from flexmoe.assign.registry import _load_builtins

_load_builtins()
del _load_builtins
