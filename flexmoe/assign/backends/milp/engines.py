"""The engines that solve a :class:`~.model.MilpModel`: HiGHS through ``highspy`` (the
arrays passed as they are), ``scipy.optimize.milp``, and PuLP (CBC, HiGHS or any solver
PuLP finds). Each maps its native statuses to one :class:`Run` explicitly.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexmoe.assign.backends._highs import new_highs, silence_highs_banner
from flexmoe.assign.backends.milp.model import MilpModel
from flexmoe.assign.deadline import Progress, current
from flexmoe.assign.errors import BackendUnavailableError
from flexmoe.assign.problem import AssignmentProblem, Float

__all__ = [
    "BOUND_SNAP",
    "ENGINES",
    "FEASIBILITY",
    "HIGHS_DEFAULTS",
    "SCIPY_DEFAULTS",
    "HighsEngine",
    "Run",
    "Settings",
    "report_to",
]

#: A bound this close (times the objective's scale, which is relative: the engines see the
#: objective in units of its largest coefficient) to the objective is reported as equal,
#: and so is one within the solvers' row feasibility tolerance `FEASIBILITY` times the
#: objective weight of the continuous (balance) columns, which may each sit that far off
#: their rows: with λ·(top − bottom), λ = 3, HiGHS proves −0.499999 for an optimum of −0.5.
BOUND_SNAP = 1e-9
FEASIBILITY = 1e-6

#: HiGHS options changed from HiGHS's defaults, because they break the time limit at
#: 1,000 × 64 (HiGHS 1.16; its issues #885, #2226, #3237): the sub-MIP heuristics (RINS,
#: RENS, root reduced cost) check neither the time limit nor the interrupt callback — one
#: ran 100 s past a 20 s limit with weighted loads, where plain branching reached a 1e-7
#: gap inside the limit — and the MIP presolve's probing ran 60–90 s past a 20 s limit
#: with storage and compute rows. The model has no forbidden-pair columns to remove, so
#: presolve buys little here. Override with ``highs_options``.
HIGHS_DEFAULTS: dict[str, Any] = {
    "presolve": "off",
    "mip_heuristic_run_rins": False,
    "mip_heuristic_run_rens": False,
    "mip_heuristic_run_root_reduced_cost": False,
}

#: ``scipy.optimize.milp`` options: SciPy's HiGHS presolve returns wrong answers on this
#: model (SciPy 1.17, HiGHS 1.8 inside): a false "infeasible" on a feasible 7 × 7 with
#: storage, "optimal" values up to 40 % below the optimum with an x that does not match
#: them, and "Solve error" on an infeasible 3 × 2 with weighted loads; without presolve
#: each is solved right (tests/assign/test_certificates.py).
SCIPY_DEFAULTS: dict[str, Any] = {"presolve": False}


@dataclass(frozen=True)
class Settings:
    """What every engine is told: the solver's own gap (a share of `mip_gap`), threads,
    seed, the PuLP solver and extra HiGHS options."""

    solver_gap: float
    threads: int | None = None
    seed: int = 0
    solver: Any = None
    highs_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """One solver run: outcome ∈ {optimal, limit, infeasible, error}, the incumbent's
    column values (None without one), the dual bound (max sense; NaN if unknown)."""

    outcome: str
    values: Float | None
    bound: float
    native: str


_HIGHS_OUTCOME = {
    "kOptimal": "optimal",
    "kInfeasible": "infeasible",
    "kUnboundedOrInfeasible": "infeasible",  # every column is bounded: not unbounded
    "kTimeLimit": "limit",
    "kIterationLimit": "limit",
    "kSolutionLimit": "limit",
    "kInterrupt": "limit",
    "kHighsInterrupt": "limit",
    "kMemoryLimit": "limit",
    "kObjectiveBound": "limit",
    "kObjectiveTarget": "limit",
}


def _highs_run(highs: Any, sign: float) -> Run:
    """Read a finished HiGHS run; `sign` = −1 when HiGHS minimised the negated objective."""
    import highspy

    status = highs.getModelStatus()
    info = highs.getInfo()
    feasible = info.primal_solution_status == highspy.SolutionStatus.kSolutionStatusFeasible
    values = np.asarray(highs.getSolution().col_value, dtype=np.float64) if feasible else None
    outcome = _HIGHS_OUTCOME.get(status.name, "error")
    bound = sign * info.mip_dual_bound
    if not math.isfinite(bound):
        bound = sign * info.objective_function_value if outcome == "optimal" else math.nan
    return Run(outcome, values, bound, highs.modelStatusToString(status))


class HighsEngine:
    """The arrays straight into HiGHS with ``passModel``: no per-variable objects."""

    def __init__(self, model: MilpModel, settings: Settings):
        self.highs = new_highs()
        options: dict[str, Any] = {
            "mip_rel_gap": settings.solver_gap,
            "mip_abs_gap": BOUND_SNAP,
            "random_seed": settings.seed,
            **HIGHS_DEFAULTS,
        }
        if settings.threads is not None:
            options["threads"] = settings.threads
        options |= settings.highs_options
        for key, value in options.items():
            if self.highs.setOptionValue(key, value).name != "kOk":
                raise ValueError(f"HiGHS rejects option {key!r} = {value!r}")
        self.highs.passModel(self._lp(model))
        self.cost = model.cost
        self.solver = f"HiGHS {self.highs.version()}"
        #: An "infeasible" is a proof only without presolve (see :data:`HIGHS_DEFAULTS`).
        self.proves_infeasibility = options["presolve"] in ("off", False)

    @staticmethod
    def _lp(model: MilpModel) -> Any:
        import highspy

        csc = model.matrix.tocsc()
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = model.shape[1], model.shape[0]
        lp.col_cost_, lp.col_lower_, lp.col_upper_ = model.cost, model.col_lo, model.col_hi
        lp.row_lower_, lp.row_upper_ = model.row_lo, model.row_hi
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_, lp.a_matrix_.index_ = csc.indptr, csc.indices
        lp.a_matrix_.value_ = csc.data
        kinds = (highspy.HighsVarType.kContinuous, highspy.HighsVarType.kInteger)
        lp.integrality_ = [kinds[i] for i in model.integer.tolist()]
        lp.sense_ = highspy.ObjSense.kMaximize
        return lp

    def watch(
        self, stop: Callable[[], bool], report: Callable[[Float | None, float], None]
    ) -> None:
        """Interrupt the MIP search once ``stop()`` is true, and ``report(values,
        dual_bound)`` (model units) each improving solution and dual bound HiGHS finds:
        what a time-limited solve answers with if HiGHS overruns its limit (it does not
        check it everywhere) and is abandoned (:mod:`flexmoe.assign.deadline`)."""

        def interrupt(event: Any) -> None:
            if stop():
                event.interrupt()
            report(None, float(event.data_out.mip_dual_bound))

        def improving(event: Any) -> None:
            values = np.array(event.data_out.mip_solution, dtype=np.float64)
            report(values, float(event.data_out.mip_dual_bound))

        self.highs.cbMipInterrupt.subscribe(interrupt)
        self.highs.cbMipImprovingSolution.subscribe(improving)

    def add_rows(self, rows: Any, lo: Float, hi: Float) -> None:
        self.highs.addRows(
            rows.shape[0], lo, hi, rows.nnz, rows.indptr[:-1], rows.indices, rows.data
        )

    def set_start(self, values: Float) -> None:
        self.highs.setSolution(values.size, np.arange(values.size, dtype=np.int32), values)

    def relax(self) -> None:
        """Solve the LP relaxation from now on (later runs start from the last basis)."""
        self.highs.setOptionValue("solve_relaxation", True)

    def duals(self) -> Float:
        """The row prices of the last LP solve (max sense: ``∂ objective / ∂ row bound``)."""
        return np.asarray(self.highs.getSolution().row_dual, dtype=np.float64)

    def run(self, time_limit: float | None) -> Run:
        self.highs.setOptionValue("time_limit", math.inf if time_limit is None else time_limit)
        self.highs.run()
        run = _highs_run(self.highs, sign=1.0)
        reported = self.highs.getInfo().objective_function_value
        if run.values is not None and not math.isclose(
            float(self.cost @ run.values), reported, rel_tol=1e-9, abs_tol=1e-9
        ):
            # HiGHS 1.16 hands back the user's start instead of the solution when presolve
            # solves the model outright; solving again without the start fixes it.
            self.highs.clearSolver()
            self.highs.run()
            run = _highs_run(self.highs, sign=1.0)
        return run


def report_to(
    progress: Progress,
    problem: AssignmentProblem,
    model: MilpModel,
    runner: Any,
    floor: float = -math.inf,
) -> None:
    """Let an engine that can (HiGHS) stop when the time-limited solve is cancelled,
    and report its incumbents and dual bounds as it finds them (they count only when
    `problem` is the solve's own, not a restricted one).

    `model` may lack pairs that are worth at most `floor` (the reduced-cost fixing of
    :mod:`.root`): a bound of its own then counts as ``max(bound, floor)``; with ``floor
    = inf`` (a sub-MIP whose other pairs are fixed) its bounds say nothing and only its
    incumbents are reported."""
    watch = getattr(runner, "watch", None)
    if watch is None or progress.problem is None:  # not a time-limited solve
        return

    def report(values: Float | None, bound: float) -> None:
        if values is not None and values.size == model.cost.size:
            x = model.assignment(values, problem.shape)
            progress.offer(problem, x, source=f"{runner.solver}'s incumbent")
        whole = max(bound * model.unit, floor)  # a bound on the whole problem
        if math.isfinite(whole):
            progress.tighten(problem, whole)

    watch(lambda: progress.cancelled, report)


class ScipyEngine:
    """``scipy.optimize.milp`` on the same arrays (SciPy's HiGHS; no warm start)."""

    def __init__(self, model: MilpModel, settings: Settings):
        self.model, self.mip_gap = model, settings.solver_gap
        self.solver = "scipy.optimize.milp (HiGHS)"
        self.proves_infeasibility = not SCIPY_DEFAULTS["presolve"]

    def add_rows(self, rows: Any, lo: Float, hi: Float) -> None:
        """Nothing to do: every run reads the model's current rows."""

    def set_start(self, values: Float) -> None:
        """SciPy's ``milp`` takes no starting point."""

    def run(self, time_limit: float | None) -> Run:
        from scipy.optimize import Bounds, LinearConstraint, milp

        m = self.model
        options: dict[str, Any] = {"disp": False, "mip_rel_gap": self.mip_gap, **SCIPY_DEFAULTS}
        if time_limit is not None:
            options["time_limit"] = time_limit
        res = milp(
            -m.cost,
            integrality=m.integer.astype(np.uint8),
            bounds=Bounds(m.col_lo, m.col_hi),
            constraints=LinearConstraint(m.matrix, m.row_lo, m.row_hi),
            options=options,
        )
        outcome = {0: "optimal", 1: "limit", 2: "infeasible"}.get(res.status, "error")
        dual = getattr(res, "mip_dual_bound", None)
        bound = -dual if dual is not None and math.isfinite(dual) else math.nan
        if math.isnan(bound) and outcome == "optimal":
            bound = -res.fun
        values = None if res.x is None else np.asarray(res.x, dtype=np.float64)
        return Run(outcome, values, bound, res.message)


def _pulp_names(model: MilpModel) -> list[str]:
    """Readable column names: ``x_n_e``, ``L_e``, ``c``, ``t_e``, ``top``, ``bottom``."""
    names = [
        f"x_{n}_{e}" for n, e in zip(model.clients.tolist(), model.experts.tolist(), strict=True)
    ]
    for key, cols in model.columns.items():
        if key != "x":
            size = cols.stop - cols.start
            names += [key] if size == 1 else [f"{key}_{i}" for i in range(size)]
    return names


#: PuLP solvers tried, in order, when none is named: CBC as PuLP 4 wants it (``COIN_CMD``,
#: a CBC on the PATH), else HiGHS through highspy. PuLP 3.3 deprecates its bundled
#: ``PULP_CBC_CMD``; it still works when named, with PuLP's deprecation warning.
PULP_DEFAULTS = ("COIN_CMD", "HiGHS")


def _pulp_solver(
    solver: Any, *, time_limit: float | None, mip_gap: float, threads: int | None
) -> Any:
    """A PuLP solver: an instance as given, or one made by name (see
    :data:`PULP_DEFAULTS`) with the options its class takes."""
    import pulp

    if isinstance(solver, pulp.LpSolver):
        return solver
    available = pulp.listSolvers(onlyAvailable=True)
    name = solver or next(n for n in PULP_DEFAULTS if n in available)
    if name not in pulp.listSolvers():
        known = ", ".join(pulp.listSolvers())
        raise ValueError(f"unknown PuLP solver {name!r}; PuLP knows: {known}")
    if name not in available:
        raise BackendUnavailableError(
            f"PuLP solver {name!r} is not available here; available: {', '.join(available)}"
        )
    cls = getattr(pulp, name)
    wanted = {"msg": False, "timeLimit": time_limit, "gapRel": mip_gap, "threads": threads}
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in wanted.items() if k in accepted})


class PulpEngine:
    """The same rows through PuLP: CBC (bundled), HiGHS, or any solver PuLP finds."""

    def __init__(self, model: MilpModel, settings: Settings):
        import pulp

        self.model, self.mip_gap, self.threads = model, settings.solver_gap, settings.threads
        self.choice = settings.solver
        self.prob = pulp.LpProblem("flexmoe_assignment", pulp.LpMaximize)
        cat = {True: pulp.LpInteger, False: pulp.LpContinuous}
        progress = current()  # a cancellation point every 4,096 columns (pure Python)
        self.vars = []
        columns = zip(_pulp_names(model), model.col_lo, model.col_hi, model.integer, strict=True)
        for j, (name, lo, hi, i) in enumerate(columns):
            if j % 4096 == 0:
                progress.check()
            self.vars.append(self.prob.add_variable(name, _finite(lo), _finite(hi), cat[bool(i)]))
        nonzero = np.flatnonzero(model.cost)
        self.prob += pulp.LpAffineExpression(
            [(self.vars[j], float(model.cost[j])) for j in nonzero]
        )
        self.add_rows(model.matrix, model.row_lo, model.row_hi)
        self.solver = str(settings.solver or "PuLP default")
        #: CBC and HiGHS run their presolve under PuLP: an "infeasible" needs a witness.
        self.proves_infeasibility = False

    def add_rows(self, rows: Any, lo: Float, hi: Float) -> None:
        import pulp

        progress = current()
        for i in range(rows.shape[0]):
            if i % 1024 == 0:
                progress.check()
            span = slice(rows.indptr[i], rows.indptr[i + 1])
            terms = zip(rows.indices[span].tolist(), rows.data[span].tolist(), strict=True)
            expr = pulp.LpAffineExpression([(self.vars[j], v) for j, v in terms])
            if lo[i] == hi[i]:
                self.prob += expr == float(lo[i])
                continue
            if math.isfinite(lo[i]):
                self.prob += expr >= float(lo[i])
            if math.isfinite(hi[i]):
                self.prob += expr <= float(hi[i])

    def set_start(self, values: Float) -> None:
        """No MIP start through PuLP: CBC has returned a start as "Optimal" without
        searching (seen on 4 × 2 problems), which would be a wrong certificate."""

    def run(self, time_limit: float | None) -> Run:
        import pulp

        silence_highs_banner()
        solver = _pulp_solver(self.choice, time_limit=time_limit, mip_gap=self.mip_gap,
                              threads=self.threads)  # fmt: skip
        self.solver = solver.name
        with tempfile.TemporaryDirectory(prefix="flexmoe-pulp-") as tmp:
            log = _redirect_files(solver, tmp)
            try:
                self.prob.solve(solver)
            except pulp.PulpSolverError as err:
                return Run("error", None, math.nan, f"PuLP: {err}")
            if isinstance(solver, pulp.HiGHS):
                run = _highs_run(self.prob.solverModel, sign=-1.0)
                run.values = None if run.values is None else self._values()
                return run
            return self._read(log)

    def _values(self) -> Float:
        return np.array([v.varValue or 0.0 for v in self.vars], dtype=np.float64)

    def _read(self, log: str | None) -> Run:
        """Map PuLP's status pair explicitly (PuLP reports a time limit as "Optimal")."""
        import pulp

        status, solution = self.prob.status, self.prob.sol_status
        native = f"{pulp.LpStatus[status]} / solution {solution}"
        values = self._values() if solution in (1, 2) else None
        value = pulp.value(self.prob.objective) if values is not None else math.nan
        logged = _cbc_bound(log)
        if solution == pulp.LpSolutionOptimal:
            bound = value + self.mip_gap * abs(value) if logged is None else logged
            return Run("optimal", values, max(bound, value), native)
        if status == pulp.LpStatusInfeasible:
            return Run("infeasible", None, math.nan, native)
        if status in (pulp.LpStatusOptimal, pulp.LpStatusNotSolved):
            return Run("limit", values, math.nan if logged is None else logged, native)
        return Run("error", values, math.nan, native)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _redirect_files(solver: Any, tmp: str) -> str | None:
    """Point a command-line solver's temporary files (and CBC's log) into `tmp`."""
    if hasattr(solver, "tmpDir"):
        solver.tmpDir = tmp
    if type(solver).__name__ in ("PULP_CBC_CMD", "COIN_CMD") and not solver.msg:
        log = os.path.join(tmp, "cbc.log")
        solver.optionsDict["logPath"] = log
        return log
    return None


def _cbc_bound(log: str | None) -> float | None:
    """CBC's dual bound from its log ("Upper bound: 102.020" when stopped), rounded up
    by half a unit of the last printed digit."""
    if log is None or not os.path.exists(log):
        return None
    with open(log) as fh:
        match = re.search(r"^Upper bound:\s+(-?[\d.]+(?:e[-+]?\d+)?)", fh.read(), re.MULTILINE)
    if match is None:
        return None
    text = match.group(1)
    decimals = len(text.partition(".")[2]) if "e" not in text else 12
    return float(text) + 0.5 * 10.0**-decimals


ENGINES: dict[str, Any] = {"highs": HighsEngine, "pulp": PulpEngine, "scipy": ScipyEngine}
