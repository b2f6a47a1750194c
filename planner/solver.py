"""The solver bridge: a PuLP model solved exactly by HiGHS (in-process, via SciPy) or CBC.

``solver="highs"`` (the default when SciPy is importable) hands the PuLP model to HiGHS
through ``scipy.optimize.milp`` (``highspy`` is not installed here); ``solver="cbc"`` uses
``PULP_CBC_CMD(msg=False)`` (a subprocess per solve). Both solve with zero MIP gap. HiGHS
avoids the subprocess and file round trip (``python -m planner.benchmark``). Where HiGHS
stops on a numerical solve error (status 4; seen on the best-effort program's linearised
products) rather than proving the model infeasible, CBC solves it instead: an error is not
an answer, and the planner would otherwise fall back to a default plan.
"""

from __future__ import annotations

import pulp

__all__ = ["DEFAULT_SOLVER", "HAVE_HIGHS", "solve_problem"]

try:  # HiGHS through SciPy, in-process
    import numpy as _np
    from scipy.optimize import Bounds as _Bounds
    from scipy.optimize import LinearConstraint as _LinearConstraint
    from scipy.optimize import milp as _milp
    from scipy.sparse import coo_matrix as _coo_matrix

    HAVE_HIGHS = True
except Exception:  # pragma: no cover - SciPy missing
    HAVE_HIGHS = False

DEFAULT_SOLVER = "highs" if HAVE_HIGHS else "cbc"


def solve_problem(prob: pulp.LpProblem, solver: str) -> bool:
    """Solve a PuLP MILP exactly with `solver` ("highs" or "cbc"); True if optimal."""
    if solver == "highs":
        solved = _solve_highs(prob)
        if solved or prob.status != pulp.LpStatusNotSolved:
            return solved
    prob.solve(pulp.PULP_CBC_CMD(msg=False, gapRel=0.0, gapAbs=0.0))
    return prob.status == pulp.LpStatusOptimal


def _solve_highs(prob: pulp.LpProblem) -> bool:
    """Solve a PuLP MILP with HiGHS via scipy.optimize.milp; set varValue; True if optimal."""
    variables = prob.variables()
    index = {v.name: i for i, v in enumerate(variables)}
    k = len(variables)
    c = _np.zeros(k)
    for v, coef in prob.objective.items():
        c[index[v.name]] = coef
    if prob.sense == pulp.LpMaximize:
        c = -c
    rows, cols, vals, lo, hi = [], [], [], [], []
    for r, con in enumerate(prob.constraints.values()):
        for v, coef in con.items():
            rows.append(r)
            cols.append(index[v.name])
            vals.append(coef)
        rhs = -con.constant
        if con.sense == pulp.LpConstraintEQ:
            lo.append(rhs), hi.append(rhs)
        elif con.sense == pulp.LpConstraintLE:
            lo.append(-_np.inf), hi.append(rhs)
        else:
            lo.append(rhs), hi.append(_np.inf)
    a = _coo_matrix((vals, (rows, cols)), shape=(len(lo), k)).tocsr()
    integrality = _np.array([1 if v.cat == pulp.LpInteger else 0 for v in variables])
    lb = _np.array([-_np.inf if v.lowBound is None else v.lowBound for v in variables], dtype=float)
    ub = _np.array([_np.inf if v.upBound is None else v.upBound for v in variables], dtype=float)
    res = _milp(c, constraints=[_LinearConstraint(a, lo, hi)], integrality=integrality,
                bounds=_Bounds(lb, ub), options={"mip_rel_gap": 0.0, "presolve": True})
    if res.x is None or res.status != 0:
        prob.status = pulp.LpStatusInfeasible if res.status == 2 else pulp.LpStatusNotSolved
        return False
    for v, val in zip(variables, res.x):
        v.varValue = float(round(val)) if v.cat == pulp.LpInteger else float(val)
    prob.status = pulp.LpStatusOptimal
    return True

