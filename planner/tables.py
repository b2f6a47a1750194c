"""Plans as text: one line per plan, or a markdown table comparing plans."""

from __future__ import annotations

from collections.abc import Iterable

from ipa_energy.spec import Plan, StagePlan
from planner.checks import is_feasible

__all__ = ["comparison_table", "describe", "stage_summary"]


def stage_summary(sp: StagePlan) -> str:
    """`variant×replicas@bN`, a mix as `60% a×2@b4 + 40% b×1@b1`, autoscaling as `×1..4`."""
    if sp.mix is not None:
        return " + ".join(f"{m.share:.0%} {m.variant}×{m.replicas}@b{m.batch_size}" for m in sp.mix)
    n = f"{sp.autoscaling.min_replicas}..{sp.autoscaling.max_replicas}" if sp.autoscaling else sp.replicas
    return f"{sp.variant}×{n}@b{sp.batch_size}"


def describe(plan: Plan) -> str:
    """One line for notes and test output: policy, accuracy, W, J/request, stages."""
    o = plan.objective
    stages = ", ".join(f"{s}={stage_summary(sp)}" for s, sp in plan.stages.items())
    j = f"{plan.predicted_j_per_request:.3f} J/req" if plan.predicted_j_per_request is not None else "– J/req"
    flag = "" if is_feasible(plan) else " [INFEASIBLE best-effort]"
    return (f"{plan.policy:<10} λ̂={plan.predicted_load_rps or 0:g} req/s  accuracy={o.get('accuracy', float('nan')):.4f}  "
            f"power={plan.predicted_power_w or 0:.2f} W  {j}  cost={o.get('cost', float('nan')):g}  "
            f"[{stages}]{flag}")


def comparison_table(plans: Iterable[Plan]) -> str:
    """A markdown table of plans: load, policy, accuracy, W, J/request, cost, stages."""
    lines = ["| load (req/s) | policy | accuracy | power (W) | J/request | cost | feasible | stages |",
             "|---:|---|---:|---:|---:|---:|:---:|---|"]
    for p in plans:
        o = p.objective
        stages = ", ".join(f"{s}={stage_summary(sp)}" for s, sp in p.stages.items())
        jpr = f"{p.predicted_j_per_request:.3f}" if p.predicted_j_per_request is not None else "–"
        lines.append(f"| {p.predicted_load_rps or 0:g} | {p.policy} | {o.get('accuracy', float('nan')):.4f} | "
                     f"{p.predicted_power_w or 0:.2f} | {jpr} | {o.get('cost', float('nan')):g} | "
                     f"{'yes' if is_feasible(p) else 'NO'} | {stages} |")
    return "\n".join(lines)
