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
* decaying toward 1 by `DECAY` each interval the variant does not run: the host it was
  measured on may have changed since.

The planner then plans with the profiles' latencies × factor and throughput ÷ factor
(:meth:`Corrections.apply`). Factors are per variant of one planner, whose profiles are one
hardware id (one node class); the decision log records them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ipa_energy.records import StageObservation
from ipa_energy.spec import Profile

__all__ = ["DECAY", "FACTOR_MAX", "FACTOR_MIN", "MIN_REQUESTS", "WEIGHT", "Corrections", "expected_s_per_request"]

FACTOR_MIN, FACTOR_MAX = 0.5, 3.0
WEIGHT = 0.5
DECAY = 0.5
MIN_REQUESTS = 20


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


class Corrections:
    """Per variant: the factor on its profiled service time."""

    def __init__(self):
        self.factors: dict[str, float] = {}

    def update(self, observed: Iterable[StageObservation], profiles: Mapping[tuple[str, int], Profile],
               stretch: float = 1.0) -> dict[str, float]:
        """Fold one interval's observations in; returns the factors now (variant → factor ≠ 1)."""
        seen = set()
        for o in observed:
            expected = expected_s_per_request(profiles, o.variant, o.mean_batch, stretch)
            if o.requests < MIN_REQUESTS or not expected:
                continue
            ratio = min(FACTOR_MAX, max(FACTOR_MIN, o.s_per_request / expected))
            old = self.factors.get(o.variant, 1.0)
            self.factors[o.variant] = old + WEIGHT * (ratio - old)
            seen.add(o.variant)
        for variant in [v for v in self.factors if v not in seen]:
            f = 1.0 + (self.factors[variant] - 1.0) * DECAY
            if abs(f - 1.0) < 0.01:
                del self.factors[variant]
            else:
                self.factors[variant] = f
        return dict(self.factors)

    def apply(self, profiles: Mapping[tuple[str, int], Profile]) -> dict[tuple[str, int], Profile]:
        """`profiles` with each corrected variant's latencies × factor and throughput ÷ factor."""
        out = dict(profiles)
        for (variant, b), p in profiles.items():
            f = self.factors.get(variant)
            if f is not None:
                out[(variant, b)] = p.model_copy(update={
                    "latency_p50_ms": p.latency_p50_ms * f, "latency_p99_ms": p.latency_p99_ms * f,
                    "throughput_rps": p.throughput_rps / f})
        return out
