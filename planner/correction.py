"""The closed loop: correct the profiles by what each variant achieved on the running cluster.

Profiles are measured solo on an idle host; the program adds the contention it expects
(planner.capacity.stretch). What it still gets wrong shows in the replicas' own timings: each
interval the ingress reports, per variant, the mean forward seconds per request and the mean
batch it ran at (:class:`~ipa_energy.records.StageObservation`). The ratio of that to what the
model expected (the profile's batch p50 per request at that batch, × the running plan's
stretch) moves a per-variant factor:

* bounded to [FACTOR_MIN, FACTOR_MAX], so one odd interval (a GC pause, a cold cache) cannot
  make the planner give a variant up or overload it;
* moved part of the way each interval (`WEIGHT`), from at least `MIN_REQUESTS` requests;
* decaying toward the host factor (below) by `DECAY` each interval the variant does not run:
  the host it was measured on may have changed since, and what the running variants show now
  is the best guess for it (decaying toward 1, the solo profile, planned a variant last seen at
  low load as fast as profiled on a host running everything 1.45× slower: make demo, a forced
  switch to resnet101 at 1.04× that missed the SLA for two intervals).

A variant that has not run yet takes the **host factor** (logged under `HOST`): the
request-weighted geometric mean of the ratios the running variants showed, moved and decayed
the same way. A host slower or busier than the one the profiles were measured on slows every
variant alike, so the first switch to a variant that has not run is planned with what the
others showed rather than with its solo profile (make bench on a host ~1.2× slower than its
profiles: a switch to an unobserved larger variant, planned at 1×, missed the SLA for a
whole interval before its own factor was learnt).

The planner then plans with the profiles' latencies × factor and throughput ÷ factor
(:meth:`Corrections.apply`). Factors are per variant of one planner, whose profiles are one
hardware id (one node class); the decision log records them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from ipa_energy.records import StageObservation
from ipa_energy.spec import Profile

__all__ = ["DECAY", "FACTOR_MAX", "FACTOR_MIN", "HOST", "MIN_REQUESTS", "WEIGHT", "Corrections", "expected_s_per_request"]

FACTOR_MIN, FACTOR_MAX = 0.5, 3.0
WEIGHT = 0.5
DECAY = 0.5
#: fewest requests of a variant in an interval to learn from: the statistic is a mean of forward
#: times (a few % spread), so ten give it within a few %; the bounds and WEIGHT cap one odd interval
MIN_REQUESTS = 10
#: key of the host factor among the logged factors (the variants that have not run take it)
HOST = "*"


def expected_s_per_request(profiles: Mapping[tuple[str, int], Profile], variant: str, mean_batch: float,
                           stretch: float = 1.0) -> float | None:
    """Forward seconds per request the model expects for `variant` at batches of `mean_batch`
    (the profiled batch size nearest to it), stretched by contention; None without a profile."""
    sizes = [b for v, b in profiles if v == variant]
    if not sizes:
        return None
    b = min(sizes, key=lambda s: (abs(s - mean_batch), s))
    p = profiles[(variant, b)]
    return p.latency_p50_ms / 1000 / b * stretch


def _snap(f: float) -> float:
    """1 when `f` is within 1 % of it (a factor that close is noise, and is not logged)."""
    return 1.0 if abs(f - 1.0) < 0.01 else f


def _decay(f: float, toward: float = 1.0) -> float:
    """`f` moved toward `toward` by DECAY (an interval without observations); `toward` itself
    once within 1 % of it."""
    f = toward + (f - toward) * DECAY
    return toward if abs(f - toward) < 0.01 * toward else _snap(f)


class Corrections:
    """Per variant: the factor on its profiled service time; `host`: the factor of the others."""

    def __init__(self):
        self.factors: dict[str, float] = {}
        self.host = 1.0

    def update(self, observed: Iterable[StageObservation], profiles: Mapping[tuple[str, int], Profile],
               stretch: float = 1.0) -> dict[str, float]:
        """Fold one interval's observations in; returns the factors now (:meth:`logged`)."""
        seen = set()
        log_sum = weight = 0.0
        for o in observed:
            expected = expected_s_per_request(profiles, o.variant, o.mean_batch, stretch)
            if o.requests < MIN_REQUESTS or not expected:
                continue
            ratio = min(FACTOR_MAX, max(FACTOR_MIN, o.s_per_request / expected))
            old = self.factors.get(o.variant, 1.0)
            self.factors[o.variant] = old + WEIGHT * (ratio - old)
            seen.add(o.variant)
            log_sum += o.requests * math.log(ratio)
            weight += o.requests
        self.host = _snap(self.host + WEIGHT * (math.exp(log_sum / weight) - self.host)) if weight else _decay(self.host)
        for variant in [v for v in self.factors if v not in seen]:
            self.factors[variant] = _decay(self.factors[variant], self.host)
            if self.factors[variant] == self.host:  # it takes the host factor now
                del self.factors[variant]
        return self.logged()

    def factor(self, variant: str) -> float:
        """The factor `variant` is planned with: its own, or the host's when it has none."""
        return self.factors.get(variant, self.host)

    def logged(self) -> dict[str, float]:
        """variant → factor ≠ 1, and HOST → the host factor when it is not 1 (rounded for the log)."""
        out = {v: round(f, 4) for v, f in self.factors.items()}
        if self.host != 1.0:
            out[HOST] = round(self.host, 4)
        return out

    def apply(self, profiles: Mapping[tuple[str, int], Profile]) -> dict[tuple[str, int], Profile]:
        """`profiles` with each variant's latencies × its factor and throughput ÷ its factor."""
        out = dict(profiles)
        for (variant, b), p in profiles.items():
            f = self.factor(variant)
            if f != 1.0:
                out[(variant, b)] = p.model_copy(update={
                    "latency_p50_ms": p.latency_p50_ms * f, "latency_p99_ms": p.latency_p99_ms * f,
                    "throughput_rps": p.throughput_rps / f})
        return out
