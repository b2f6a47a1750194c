"""Load shedding at the ingress: refuse at once what the plan cannot serve within the SLA.

When the offered load exceeds what the running plan serves, queues grow without bound and
every request waits for tens of seconds. The ingress instead answers 503 with Retry-After,
in well under 100 ms, when a new request's expected time through the pipeline exceeds the SLA.

The expectation uses the replicas' own timings, so it is true under contention too: each
stage answer carries its batch's forward time and size (`StageResult.compute_ms`,
`batch_size`). Per stage deployment, a moving average of compute seconds per request gives
its service rate μ = replicas / s_per_request; a request arriving behind L calls this ingress
has in flight there waits about (L + 1) / μ. With several ingress replicas each sees its
share of both the calls and the capacity (the handles spread calls evenly), so the ratio holds.
Timings are kept per deployment and variant (a slot switches variant in place): a variant with
no timing yet is not judged (a fresh variant is never refused blind).

Compute time is not all of a replica's time per request: Serve's queueing, batching and
(de)serialisation, and on a busy host the cores the load generator, proxy and ingress take, make
the calls take longer than `(L + 1) × s` (on this 2-core host about 1.3–3× under 3× overload, so
the answered requests took up to 4 s for a 1 s SLA). So the expectation is corrected by what the
calls took: each answered call sent behind a queue deep enough for the fluid model to hold
(at least two of its batches) gives observed / expected, and a moving average of that ratio,
bounded to [`FACTOR_MIN`, `FACTOR_MAX`] and easing back toward 1 with every call behind a short queue, multiplies the expectation (the planner's closed loop
corrects its profiles the same way). Calls behind a short queue teach nothing: their time is a
batch's fill and forward, not queueing.

Serve's `max_queued_requests` bounds each stage's queue as a backstop (serve_app.builder);
its BackPressureError is answered the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LoadShedder", "Verdict"]

#: weight of the newest batch in the moving average of compute seconds per request
EWMA_WEIGHT = 0.2
#: bounds of the correction of the expected wait by what queued calls took (observed / expected)
FACTOR_MIN, FACTOR_MAX = 0.5, 2.0
#: how far each call behind a short queue moves the factor back toward 1
EASE_WEIGHT = 0.05


@dataclass(frozen=True)
class Verdict:
    """Whether to refuse a request; if so, at which stage and for how long (s)."""

    shed: bool
    stage: str = ""
    expected_s: float = 0.0
    retry_after_s: int = 1


class LoadShedder:
    """Per stage deployment: compute seconds per request (moving average) and the shed rule."""

    def __init__(self, ingress_replicas: int = 1):
        self.ingress_replicas = max(1, ingress_replicas)
        self.s_per_request: dict[str, float] = {}
        self.factor: dict[str, float] = {}  # deployment → observed / expected time of queued calls (moving average)

    def observe(self, deployment: str, compute_ms: float, batch_size: int) -> None:
        """A stage answer: its batch took `compute_ms` for `batch_size` requests."""
        s = compute_ms / 1000 / max(1, batch_size)
        old = self.s_per_request.get(deployment)
        self.s_per_request[deployment] = s if old is None else old + EWMA_WEIGHT * (s - old)

    def observe_call(self, deployment: str, ahead: int, replicas: int, batch_size: int, seconds: float) -> None:
        """A call sent behind `ahead` calls of this ingress took `seconds` until its answer (which
        came in a batch of `batch_size`): learn the correction of the expected wait from it."""
        if ahead + 1 < 2 * max(1, batch_size):
            # Not queued enough for (L + 1) × s to describe it, but answered: the factor eases back
            # toward 1. Else a high factor would be a ratchet: it refuses the deeper queues whose
            # calls alone could lower it (a demo shed 3 % at 2 req/s with it).
            old = self.factor.get(deployment)
            if old is not None:
                self.factor[deployment] = old + EASE_WEIGHT * (1.0 - old)
            return
        expected = self._fluid_s(deployment, ahead, replicas)
        if not expected:
            return
        ratio = min(FACTOR_MAX, max(FACTOR_MIN, seconds / expected))
        old = self.factor.get(deployment)
        self.factor[deployment] = ratio if old is None else old + EWMA_WEIGHT * (ratio - old)

    def _fluid_s(self, deployment: str, in_flight: int, replicas: int) -> float | None:
        s = self.s_per_request.get(deployment)
        if s is None:
            return None
        share = max(1, replicas) / self.ingress_replicas  # this ingress's share of the replicas
        return (in_flight + 1) * s / share

    def wait_s(self, deployment: str, in_flight: int, replicas: int) -> float | None:
        """Expected seconds a new call to `deployment` takes behind `in_flight` calls of this
        ingress; None before the deployment has answered once."""
        fluid = self._fluid_s(deployment, in_flight, replicas)
        return None if fluid is None else fluid * self.factor.get(deployment, 1.0)

    def judge(self, route: list[tuple[str, str, int, int]], budget_s: float) -> Verdict:
        """`route`: (stage, deployment, in_flight, replicas) of every stage a request would take.

        Shed when the expected time through all stages exceeds `budget_s` (the SLA): such a
        request would miss anyway, and refusing it keeps the queue short for those that can make it.
        A request with nothing ahead of it at any stage is never shed: there is no queue to keep
        short, and its expectation is only its own service time as timed so far (make demo: a
        request reaching an idle app at 1.8 req/s, just after a fresh variant's first answers,
        was refused as 1.25 s of work, most likely a cold first batch's timing).
        """
        if all(in_flight <= 0 for _, _, in_flight, _ in route):
            return Verdict(False)
        total, worst, worst_s = 0.0, "", -1.0
        for stage, deployment, in_flight, replicas in route:
            w = self.wait_s(deployment, in_flight, replicas)
            if w is None:
                continue
            total += w
            if w > worst_s:
                worst, worst_s = stage, w
        if total <= budget_s:
            return Verdict(False, expected_s=total)
        # by then the stage that holds the most work should have drained to a servable length
        return Verdict(True, stage=worst, expected_s=total, retry_after_s=max(1, math.ceil(total - budget_s)))
