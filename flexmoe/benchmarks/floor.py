"""The physical floor of an assignment: one top-k pass over the utility matrix.

Choosing each client's k best experts (``np.argpartition(U, E - k, axis=1)``) reads
every utility once and is what any assignment costs at least; ``flexmoe-bench solvers``
reports every backend's time as a multiple of it ("× floor"), measured on the same
instance in the same sweep.
"""

from __future__ import annotations

import math
import time

import numpy as np

from flexmoe.assign import AssignmentProblem

__all__ = ["DEFAULT_REPEATS", "topk_floor"]

#: Repeats of the top-k pass; the best one is the floor.
DEFAULT_REPEATS = 5


def topk_floor(problem: AssignmentProblem, repeats: int = DEFAULT_REPEATS) -> float:
    """Seconds of the top-k pass on `problem`'s utility: the best of `repeats` runs.

    k is the largest ``max_experts``; one untimed pass first brings the matrix into
    cache, as a solver's own first pass would find it.

    Parameters
    ----------
    problem : AssignmentProblem
    repeats : int
        Timed passes (at least 1); the minimum is returned, the usual estimate of a
        short operation's cost without the machine's noise.

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem
    >>> problem = AssignmentProblem(np.random.default_rng(0).random((1000, 64)), max_experts=8)
    >>> 0 < topk_floor(problem, repeats=3) < 1
    True
    """
    if repeats < 1:
        raise ValueError(f"`repeats` must be >= 1; got {repeats!r}")
    utility = problem.utility
    n_experts = utility.shape[1]
    kth = min(max(n_experts - int(problem.max_experts.max()), 0), n_experts - 1)
    np.argpartition(utility, kth, axis=1)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.argpartition(utility, kth, axis=1)
        best = min(best, time.perf_counter() - start)
    return best
