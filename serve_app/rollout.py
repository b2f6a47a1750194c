"""Make-before-break: the sequence of app states that takes one plan set to another.

1. make   — new variants' replicas start (and existing ones grow) while traffic stays put
             (new members of a variant mix too); a slot whose variant changes switches in place
             (serve_app.layout), its replicas serving the old model until the new one is warm;
2. switch — the ingress routes by the new plans;
3. break  — what the new plans no longer need drains (Serve's graceful shutdown) and stops
             (members dropped from a mix too).
Steps that would change nothing are left out. Pure functions: no Ray needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipa_energy.spec import Plan
from serve_app.layout import Layout, Shape, layout, no_shapes, union

__all__ = ["Step", "rollout", "same_routes"]


@dataclass(frozen=True)
class Step:
    name: str
    deployments: Layout
    routing: dict[str, Plan]


def same_routes(current: dict[str, Plan], new: dict[str, Plan]) -> bool:
    """True when every stage keeps its variants and traffic shares (only batching or replica
    counts change). A mix that gains, loses or reweights a member moves traffic: a route change."""
    return all(
        current.get(p) is not None and s in current[p].stages and current[p].stages[s].routes() == sp.routes()
        for p, plan in new.items()
        for s, sp in plan.stages.items()
    )


def rollout(current: dict[str, Plan], new: dict[str, Plan], shape: Shape = no_shapes) -> list[Step]:
    now, target = layout(current, shape), layout(new, shape)
    both = union(now, target)
    if same_routes(current, new):
        steps = [Step("apply", both, new)]
    else:
        steps = [Step("make", both, current), Step("switch", both, new)]
    if target != both:
        steps.append(Step("break", target, new))
    return steps
