"""Who is ahead of a request at the ingress: the bookkeeping the load shedder judges by.

Per stage deployment, one ingress replica keeps the calls it has in flight and the requests it
has admitted whose first call has not started yet (their body is being read and parsed: a
burst would otherwise be admitted whole before any of it is in flight). The shedder
(serve_app.shedding) judges a new request by them and learns from every answered call; the
plan controller drains a deployment's calls in flight before it removes it.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from ipa_energy.messages import StageResult
from ipa_energy.spec import PipelineSpec, Plan, StagePlan
from serve_app.shedding import LoadShedder, Verdict

__all__ = ["InFlight", "Place"]

#: pipeline's stage → variant → the stage deployment that serves it (serve_app.layout.targets)
Targets = Mapping[str, Mapping[str, str]]


class Place:
    """One admitted request's place among the admitted until its first stage call starts."""

    def __init__(self, admitted: collections.Counter, target: str):
        self.admitted, self.target = admitted, target
        admitted[target] += 1

    def release(self) -> None:  # idempotent: the call releases it, or the request's end
        if self.target is not None:
            self.admitted[self.target] -= 1
            self.target = None


class InFlight:
    """One ingress replica's calls in flight and admitted requests, and its load shedder."""

    def __init__(self, ingress_replicas: int = 1):
        self.in_flight: collections.Counter = collections.Counter()  # stage deployment → calls awaiting an answer
        self.admitted: collections.Counter = collections.Counter()  # first stage deployment → admitted, not yet called
        self.shedder = LoadShedder(ingress_replicas)

    def route(self, pipeline: PipelineSpec, plan: Plan, targets: Targets, draws: Sequence[float]
              ) -> list[tuple[str, str, int, int]]:
        """(stage, deployment/variant, requests ahead from here, replicas) of each stage a request
        with these draws would take. Timed per variant: a slot that switched in place is judged by
        its new variant's timings only. An autoscaled stage counts the replicas it may grow to:
        a request is never refused below what the stage can reach."""
        route = []
        for spec, u in zip(pipeline.stages, draws):
            sp = plan.stages[spec.name]
            variant = sp.route(u)
            target = targets[spec.name][variant]
            ahead = self.in_flight[target] + self.admitted[target]  # admitted ones go to their first stage
            route.append((spec.name, f"{target}/{variant}", ahead, sp.most_replicas(variant)))
        return route

    def judge(self, pipeline: PipelineSpec, plan: Plan, targets: Targets, draws: Sequence[float]) -> Verdict:
        """Whether the plan serves a request with these draws within the pipeline's SLA."""
        return self.shedder.judge(self.route(pipeline, plan, targets, draws), pipeline.sla_ms / 1000)

    def admit(self, target: str) -> Place:
        """A request admitted toward its first stage deployment `target`."""
        return Place(self.admitted, target)

    @contextmanager
    def calling(self, target: str, place: Place) -> Iterator[int]:
        """A stage call to `target` in flight; yields the calls this replica had in flight there
        before it. The request's `place` among the admitted is released: it is in flight now."""
        ahead = self.in_flight[target]
        self.in_flight[target] += 1
        place.release()
        try:
            yield ahead
        finally:
            self.in_flight[target] -= 1

    def learn(self, stage: StagePlan, variant: str, target: str, ahead: int, result: StageResult, seconds: float) -> None:
        """An answered call to `variant` (sent behind `ahead` calls, answered in `seconds`): its
        batch's compute time, and the wait it had, for the shedder's expectation."""
        timed = f"{target}/{result.variant}"
        replicas = _planned_replicas(stage, variant)
        if replicas is not None and result.variant == variant:  # (the variant a slot switched from: no lesson)
            self.shedder.observe_call(timed, ahead, replicas, result.batch_size, seconds)
        self.shedder.observe(timed, result.compute_ms, result.batch_size)

    def in_flight_to(self, deployments: Sequence[str]) -> int:
        """Calls this replica has sent to `deployments` and not yet got back."""
        return sum(self.in_flight[d] for d in deployments)


def _planned_replicas(stage: StagePlan, variant: str) -> int | None:
    """The replicas `variant` runs in `stage`; None where the count is not the plan's to say: an
    autoscaled stage is judged at its maximum (what it can grow to), which its calls, made at the
    count Serve runs now, must not correct down; or a plan that no longer runs `variant`."""
    if stage.autoscaling is not None:
        return None
    try:
        return stage.most_replicas(variant)
    except StopIteration:
        return None
