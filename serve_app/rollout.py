"""Make-before-break: the sequence of app states that takes one plan set to another.

0. grow   — a slot that will switch variant in place *and* needs more replicas first grows
             with the variant it runs: its new replicas cold-start (seconds on busy cores) while
             the old ones serve, so capacity never dips below the running plan's (switching
             first would put the running replicas on the new, maybe slower, variant before
             the replicas the new plan counts on exist);
1. make   — new variants' replicas start (and existing ones grow) while traffic stays put
             (new members of a variant mix too); a slot whose variant changes switches in place
             (serve_app.layout), its replicas serving the old model until the new one is warm;
2. switch — the ingress routes by the new plans;
3. break  — what the new plans no longer need drains (Serve's graceful shutdown) and stops
             (members dropped from a mix too).
Steps that would change nothing are left out. Pure functions: no Ray needed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ipa_energy.spec import Plan
from serve_app.layout import Layout, Shape, layout, no_shapes, union

__all__ = ["Step", "rollout", "same_routes"]


@dataclass(frozen=True)
class Step:
    name: str
    deployments: Layout
    routing: dict[str, Plan]


def same_routes(current: dict[str, Plan], new: dict[str, Plan]) -> bool:
    """True when every stage keeps its variants, traffic shares and primary (only batching or
    replica counts change). A mix that gains, loses or reweights a member moves traffic, and a
    new primary moves variants between slots (serve_app.layout.members_in_slots): route changes."""
    return all(
        current.get(p) is not None and s in current[p].stages and current[p].stages[s].routes() == sp.routes()
        and current[p].stages[s].variant == sp.variant
        for p, plan in new.items()
        for s, sp in plan.stages.items()
    )


def grown(now: Layout, target: Layout) -> Layout:
    """`now` with every slot that switches variant in place grown to its target replica count,
    still running its current variant and batching (the grow step)."""
    return {name: replace(d, replicas=target[name].replicas)
            if name in target and target[name].variant != d.variant and target[name].replicas > d.replicas else d
            for name, d in now.items()}


def rollout(current: dict[str, Plan], new: dict[str, Plan], shape: Shape = no_shapes) -> list[Step]:
    now, target = layout(current, shape), layout(new, shape)
    both = union(now, target)
    grow = grown(now, target)
    steps = [Step("grow", grow, current)] if grow != now else []
    if same_routes(current, new):
        steps.append(Step("apply", both, new))
    else:
        steps += [Step("make", both, current), Step("switch", both, new)]
    if target != both:
        steps.append(Step("break", target, new))
    return steps
