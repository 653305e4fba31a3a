r"""Exact MILP for every constraint, with the solver's dual bound as a certified gap.

One formulation, built as sparse arrays with numpy, handed to an engine:

* ``highs`` (default): the arrays go straight into HiGHS through ``highspy`` — the fast
  path (no per-variable Python objects), warm-started from ``greedy:balanced``, after a
  root phase (:mod:`.root`: budget covers, a bound checked in numpy, incumbents from the
  LP, reduced-cost fixing) that often certifies the gap before any branching (its bound,
  recomputed in numpy from the LP's prices, counts as a dual bound below);
* ``pulp``: the same rows through PuLP, for breadth: CBC (bundled) by default, or any
  solver PuLP finds (``solver="HiGHS"``, ``"GUROBI_CMD"``, ``"CPLEX_CMD"``, ...);
* ``scipy``: ``scipy.optimize.milp`` (SciPy's own HiGHS), a fallback.

The package keeps the layers apart: :mod:`.model` (the formulation as sparse arrays,
:func:`formulate`), :mod:`.cuts` (valid inequalities for the budget rows, with their
proof), :mod:`.engines` (the vendor engines and their status maps), :mod:`.root` (the
``highs`` engine's root phase) and :mod:`.loop` (warm start, the outer-approximation
loop, the status of the result).

Notes
-----
Data: pairs ``(n, e)`` with ``allowed[n, e]`` (forbidden pairs get no variable),
effective utility ``ū = utility − μ·(1 − previous)``, load weights ``w`` (ones for
count loads). Variables: ``x[n, e] ∈ {0, 1}`` and loads ``L[e]``; with a variance penalty
the mean load ``c`` and epigraph variables ``t[e]``; with a range penalty ``top``, ``bottom``.

.. math::

    \max \; \sum_{n,e} ū_{ne} x_{ne} - λ \sum_e t_e
    \quad\text{or}\quad \ldots - λ\,(top - bottom)

subject to

* ``min_experts[n] ≤ Σ_e x[n, e] ≤ max_experts[n]``;
* every budget row (storage, compute, any the user adds):
  ``Σ_e cost[n, e]·x[n, e] ≤ limit[n]``;
* ``L[e] = Σ_n w[n, e]·x[n, e]`` with ``load_min[e] ≤ L[e] ≤ load_max[e]``;
* range: ``bottom ≤ L[e] ≤ top`` — exact;
* variance: ``E·c = Σ_e L[e]`` and ``t[e] ≥ s_k·(L[e] − c) + b_k`` for a family of lines
  under ``d ↦ d²``. Since ``Σ_e (L_e − L̄)² = Σ_e (L_e − c)²`` at ``c = L̄``, the model
  is a relaxation of the true objective (its dual bound is a valid upper bound) and it is
  exact wherever some line touches ``d²`` at ``d = L[e] − c``.

Which lines: with count loads ``d`` only takes values on a grid — step 1 (shifted by the
fixed mean) when every client holds a fixed number of experts, step ``1/E`` otherwise — so
the secants between consecutive grid points are valid and exact at every integer
solution. With weighted loads ``d`` is continuous and the lines are tangents. Either
way the model starts with lines around the warm start's loads (all of them when the
grid is small) and an outer-approximation loop adds the lines through the incumbent's
loads and re-solves until the true objective of the best assignment is within `mip_gap`
of the dual bound; ``info["balance_model"]`` says which case applied and
``info["rounds"]`` how many solves it took.

Certificates. Every engine sees the objective in units of ``problem.objective_unit``
(a power of two at or below its largest coefficient), so the solvers' absolute
tolerances act as relative ones whatever the scale of the utilities. ``OPTIMAL`` means
the solver finished and the library's own check holds: ``(bound − objective) /
max(|objective|, |bound|, scale) ≤ mip_gap`` (default 1e-6,
:data:`~flexmoe.assign.result.OPTIMAL_RTOL`), where `objective` and `scale` (the
magnitude of the objective's terms) are recomputed in float64 from ``x`` and `bound` is
the solver's dual bound — with the root phase of ``highs`` the least of the root's bound
(weak duality recomputed in numpy, in the problem's units) and the solver's bound on the
restricted model raised to the `floor` of the pairs fixed away (:mod:`.root`); a root
phase that finishes the solve is held to the same relative gap. A bound within
1e-9·scale plus 1e-6 (the row feasibility tolerance) times the objective weight of the
continuous balance columns counts as equal; a bound further below the objective
certifies nothing (``FEASIBLE``, the message says so). A time limit gives ``FEASIBLE``
with that bound (or, if the solver proved none yet, each client's best experts ignoring
every coupling), or ``LIMIT_NO_SOLUTION``; never ``OPTIMAL``.

``INFEASIBLE`` is proved by HiGHS without presolve: ``milp`` turns HiGHS's presolve off
(:data:`~.engines.HIGHS_DEFAULTS`), ``milp:scipy`` SciPy's
(:data:`~.engines.SCIPY_DEFAULTS`: with it SciPy's HiGHS returns false infeasibilities
and wrong optima); an "infeasible" or a failure of an engine that runs a presolve
(``milp:pulp``, or ``highs_options={"presolve": "on"}``) is solved again by HiGHS without
presolve, and ``info["confirmed_by"]`` names it.

Examples
--------
>>> import numpy as np
>>> from flexmoe.assign import AssignmentProblem, solve
>>> p = AssignmentProblem([[6.0, 1.0], [5.0, 4.0], [1.0, 6.0]], max_experts=1,
...                       load_weight=[[3, 2], [2, 2], [2, 3]], load_max=4)
>>> r = solve(p, backend="milp")
>>> r.status, r.objective, r.gap
(<Status.OPTIMAL: 'optimal'>, 7.0, 0.0)
>>> solve(p, backend="milp:pulp").objective
7.0
"""

from __future__ import annotations

from flexmoe.assign.backends._highs import new_highs, quiet_stdout, silence_highs_banner
from flexmoe.assign.backends.milp.engines import HIGHS_DEFAULTS
from flexmoe.assign.backends.milp.loop import DEFAULT_MIP_GAP, solve
from flexmoe.assign.backends.milp.model import MilpModel, formulate, load_scale
from flexmoe.assign.registry import Variant

__all__ = [
    "DEFAULT_MIP_GAP",
    "EXACT",
    "HIGHS_DEFAULTS",
    "NAME",
    "VARIANTS",
    "VARIANT_OPTION",
    "MilpModel",
    "formulate",
    "load_scale",
    "new_highs",
    "quiet_stdout",
    "silence_highs_banner",
    "solve",
]

NAME = "milp"
EXACT = True
VARIANT_OPTION = "engine"
VARIANTS = (
    Variant("highs", ("highspy",), extra="", options=("highs_options", "tighten"),
            description="HiGHS through highspy, the arrays passed as they are (fast)"),
    Variant("pulp", ("pulp",), extra="pulp", options=("solver",),
            description="PuLP: CBC, HiGHS or any solver PuLP finds"),
    Variant("scipy", ("scipy",), extra="",
            description="scipy.optimize.milp (SciPy's HiGHS)"),
)  # fmt: skip
