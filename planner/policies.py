"""The one policy registry: every policy the planner or an experiment can run, and what it restricts.

Planner policies are one program under different restrictions (:func:`restrictions`):

* ``ipa``: γ = 0 (IPA's objective); ``ipa-energy``: the weights as given (γ > 0);
* ``fa2-low`` / ``fa2-high``: variant fixed to the least / most accurate variant of each
  stage (ties: fewer resources, then name); batch and replicas free; γ = 0 (FA2 is
  energy-unaware);
* ``rim``: replicas fixed (an int or a per-stage mapping; default 1); variant and batch
  free; γ = 0;
* ``infadapter``: InfAdapter's variant mix with a traffic split, a program of its own
  (:mod:`planner.infadapter`); single-stage pipelines only; γ = 0.

Policies that never re-plan: ``static`` (or any ``static-<name>``: a given plan, evaluated
with the profiles, not solved), the outside baselines ``static-max-accuracy`` and
``static-min-energy`` (provisioned once for a trace's peak) and ``serve-autoscaling`` (Ray
Serve's own autoscaler on fixed variants); :mod:`planner.baselines` builds their plans.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ipa_energy.spec import PipelineSpec
from planner.terms import Weights, resource_units

__all__ = [
    "COMPARISON", "PLANNER_POLICIES", "POLICIES", "Policy", "check_policy", "is_static", "parse_policies",
    "policy_kind", "restrictions",
]

PolicyKind = Literal["planner", "static", "serve-autoscaling"]


@dataclass(frozen=True)
class Policy:
    name: str
    kind: PolicyKind  # planner: the planner actor adapts every interval; the others never re-plan
    summary: str


POLICIES: dict[str, Policy] = {p.name: p for p in (
    Policy("ipa", "planner", "IPA's objective: accuracy, cost and batch size (γ = 0)"),
    Policy("ipa-energy", "planner", "IPA's program with predicted power in the objective (γ > 0)"),
    Policy("fa2-low", "planner", "least accurate variant per stage; batch and replicas adapt"),
    Policy("fa2-high", "planner", "most accurate variant per stage; batch and replicas adapt"),
    Policy("rim", "planner", "replicas fixed; variant and batch adapt"),
    Policy("infadapter", "planner", "InfAdapter: a mix of up to 3 variants with a traffic split (single stage)"),
    Policy("static", "static", "a given plan, evaluated with the profiles, never re-solved"),
    Policy("static-max-accuracy", "static", "the most accurate variant per stage, provisioned for the trace's peak"),
    Policy("static-min-energy", "static", "the least J/request variant per stage, provisioned for the trace's peak"),
    Policy("serve-autoscaling", "serve-autoscaling",
           "Ray Serve's autoscaler on the variants ipa picks for the trace's peak"),
)}
PLANNER_POLICIES: tuple[str, ...] = tuple(n for n, p in POLICIES.items() if p.kind == "planner")
#: what `--policies all` compares (infadapter plans single-stage pipelines only; static needs a plan)
COMPARISON: tuple[str, ...] = ("ipa", "ipa-energy", "fa2-low", "fa2-high", "rim", "static-max-accuracy",
                               "static-min-energy", "serve-autoscaling")


def is_static(policy: str) -> bool:
    """``static`` and any ``static-<name>``: a plan that is evaluated, not solved."""
    return policy == "static" or policy.startswith("static-")


def policy_kind(policy: str) -> PolicyKind:
    """The kind of a registered policy; ValueError names the known ones."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known: {tuple(POLICIES)}")
    return POLICIES[policy].kind


def parse_policies(text: str) -> list[str]:
    """`ipa,ipa-energy` → the list; `all` → every policy of the comparison."""
    names = list(COMPARISON) if text.strip() == "all" else [p.strip() for p in text.split(",") if p.strip()]
    for p in names:
        policy_kind(p)
    if not names:
        raise ValueError("no policy given")
    return names


def check_policy(pipeline: PipelineSpec, policy: str) -> None:
    """Raise ValueError for a policy that cannot plan `pipeline` (a configuration error)."""
    if is_static(policy):
        return
    if POLICIES.get(policy, Policy(policy, "static", "")).kind != "planner":
        raise ValueError(f"unknown policy {policy!r}; known: {PLANNER_POLICIES + ('static',)}")
    if policy == "infadapter" and len(pipeline.stages) != 1:
        raise ValueError(
            f"policy 'infadapter' plans single-stage pipelines only (InfAdapter splits one model's traffic "
            f"across variants; a split per stage of a chain has no joint accuracy or latency model); "
            f"{pipeline.name!r} has {len(pipeline.stages)} stages: use ipa, ipa-energy, fa2-low, fa2-high or rim")


def restrictions(pipeline: PipelineSpec, policy: str, weights: Weights, replicas: int | Mapping[str, int] | None,
                 ) -> tuple[Weights, dict[str, set[str]] | None, list[int | None]]:
    """(weights, allowed variants per stage or None, fixed replicas per stage or None) of a policy."""
    allowed: dict[str, set[str]] | None = None
    fixed: list[int | None] = [None] * len(pipeline.stages)
    if policy != "ipa-energy":
        weights = weights.model_copy(update={"gamma": 0.0})
    if policy in ("fa2-low", "fa2-high"):
        sign = 1 if policy == "fa2-low" else -1
        allowed = {st.name: {min(st.variants, key=lambda v: (sign * v.accuracy.value, resource_units(v.resources),
                                                              v.name)).name}
                   for st in pipeline.stages}
    elif policy not in ("ipa", "ipa-energy", "rim"):
        raise ValueError(f"unknown policy {policy!r}; known: {PLANNER_POLICIES}")
    if policy == "rim" or replicas is not None:  # rim: 1 per stage unless told; any policy: as told
        for i, st in enumerate(pipeline.stages):
            if replicas is None:
                fixed[i] = 1
            elif isinstance(replicas, int):
                fixed[i] = replicas
            elif st.name in replicas:
                fixed[i] = int(replicas[st.name])
            elif policy == "rim":
                fixed[i] = 1
    return weights, allowed, fixed
