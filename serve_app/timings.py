"""What each stage variant achieved, per second, as the ingress saw it: for the planner's closed loop.

Every stage answer carries its batch's forward time and size (`StageResult.compute_ms`,
`batch_size`); the ingress also times the call (queueing included). :class:`StageTimings`
keeps, per (pipeline, stage, variant) and whole second: requests, compute seconds (each
request's share of its batch) and call latencies. Ingress replicas push them with their
arrival counts (serve_app.arrivals; the same set-not-add rule, so a repeated push never
double-counts), and :func:`observe` sums them over replicas into
:class:`~ipa_energy.records.StageObservation` rows for an interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ipa_energy.records import StageObservation

__all__ = ["MAX_SAMPLES_PER_SECOND", "StageTimings", "key", "observe"]

#: call latencies kept per variant per second (enough for a p99 at any rate this host serves)
MAX_SAMPLES_PER_SECOND = 500

Entry = list  # [requests, compute_s, [latency_ms, ...], batches]: JSON-able for the actor call


def key(pipeline: str, stage: str, variant: str) -> str:
    return f"{pipeline}/{stage}/{variant}"  # '/' is not in spec.NAME_PATTERN


class StageTimings:
    """One ingress replica's per-second stage timings."""

    def __init__(self, keep_s: int):
        self.keep_s = keep_s
        self.seconds: dict[str, dict[int, Entry]] = {}

    def record(self, pipeline: str, stage: str, variant: str, now: float, compute_ms: float, batch_size: int,
               latency_ms: float) -> None:
        second = int(now)
        by_second = self.seconds.setdefault(key(pipeline, stage, variant), {})
        entry = by_second.get(second)
        if entry is None:
            entry = by_second[second] = [0, 0.0, [], 0.0]
            for old in [s for s in by_second if s < second - self.keep_s]:
                del by_second[old]
        entry[0] += 1
        entry[1] += compute_ms / 1000 / max(1, batch_size)
        if len(entry[2]) < MAX_SAMPLES_PER_SECOND:
            entry[2].append(round(latency_ms, 3))
        entry[3] += 1 / max(1, batch_size)  # each request's share of its batch: Σ = batches

    def complete(self, now: float, since: int) -> dict[str, dict[int, Entry]]:
        """Entries of the complete seconds from `since` on (the current one is still open)."""
        end = int(now)
        return {k: {s: e for s, e in by_second.items() if since <= s < end} for k, by_second in self.seconds.items()}


def observe(entries: Iterable[Mapping[str, Mapping[int, Entry]]], pipeline: str, start: int, end: int
            ) -> list[StageObservation]:
    """Sum every replica's entries of `pipeline` over seconds [start, end) into one row per variant."""
    merged: dict[str, list] = {}
    for replica in entries:
        for k, by_second in replica.items():
            if not k.startswith(f"{pipeline}/"):
                continue
            acc = merged.setdefault(k, [0, 0.0, [], 0.0])
            for second, (n, compute_s, latencies, batches) in by_second.items():
                if start <= int(second) < end:
                    acc[0] += n
                    acc[1] += compute_s
                    acc[2].extend(latencies)
                    acc[3] += batches
    rows = []
    for k, (n, compute_s, latencies, batches) in sorted(merged.items()):
        if n == 0:
            continue
        _, stage, variant = k.split("/")
        rows.append(StageObservation(
            stage=stage, variant=variant, seconds=end - start, requests=n, s_per_request=compute_s / n,
            mean_batch=n / batches if batches > 0 else 1.0,
            p99_ms=float(np.percentile(latencies, 99)) if latencies else None))
    return rows
