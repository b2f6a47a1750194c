"""The fluid model's request rows: each second's requests aggregated into buckets of latency
bands, met and missed, as RequestRows with a count (docs/simulator.md; mixed into
:class:`sim.fluid.FluidEngine`)."""

from __future__ import annotations

import math
from statistics import NormalDist

from ipa_energy.records import RequestRow

__all__ = ["BANDS", "SHED_MS", "AggregatedRows"]

_NORMAL = NormalDist()
#: latency bands of a second's requests, as quantile ranges of its distribution
BANDS = ((0.0, 0.5), (0.5, 0.9), (0.9, 0.99), (0.99, 1.0))
_BAND_Z = tuple(_NORMAL.inv_cdf(min(0.9995, (lo + hi) / 2)) for lo, hi in BANDS)
SHED_MS = 2.0


class AggregatedRows:
    """FluidEngine's results: `rows`, filled a bucket of `aggregate_s` seconds at a time."""

    # -- aggregated request rows ------------------------------------------------------------------

    def _record(self, t, arrivals, admitted, shed, deterministic, mean, var, dyn_j, answered) -> None:
        # the stages' energy, per deployment, on the node types by their share of the cores
        cores = sum(g.active * g.cores for g in self.groups) or 1.0
        for ms in self.stages.values():
            for m in ms:
                if m.joules:
                    for g in self.groups:
                        if g.active:
                            g.consumers_j[m.name] += m.joules * g.active * g.cores / cores
        if t >= len(self.counts):
            return
        b = self._bucket
        if b is None or t >= b["start"] + self.aggregate_s:
            self._flush()
            b = self._bucket = {"start": t, "sent": 0, "shed": 0.0, "bands": [[0.0, 0.0, 0.0] for _ in BANDS],
                                "j": 0.0, "served": 0.0}
        b["sent"] += arrivals
        b["shed"] += min(shed, arrivals)
        b["j"] += dyn_j
        b["served"] += answered
        ok = max(0.0, arrivals - min(shed, arrivals))
        if ok <= 0:
            return
        if mean > 0:
            s2 = math.log(1 + var / (mean * mean))
            mu, sigma = math.log(mean) - s2 / 2, math.sqrt(s2)
        else:
            mu, sigma = -math.inf, 0.0
        room = self.sla_s - deterministic
        if room <= 0:
            met = 0.0
        elif sigma <= 0 or mu == -math.inf:
            met = 1.0 if mean <= room else 0.0
        else:
            met = _NORMAL.cdf((math.log(room) - mu) / sigma)
        for (lo, hi), z, band in zip(BANDS, _BAND_Z, b["bands"]):
            n = ok * (hi - lo)
            latency = deterministic + (math.exp(mu + sigma * z) if mu != -math.inf else 0.0)
            band[0] += n
            band[1] += n * latency
            band[2] += n * min(1.0, max(0.0, (met - lo) / (hi - lo)))

    def _flush(self, unanswered: float = 0.0) -> None:
        """The bucket's rows: per band the requests that met the SLA and those that missed it."""
        b, self._bucket = self._bucket, None
        if b is None or not b["sent"]:
            return
        base = self.base + b["start"]
        sent = base + self.aggregate_s / 2
        parts: list[tuple[float, float, int, bool]] = [(b["shed"], SHED_MS, 503, True)]
        sla_ms = self.sla_s * 1000
        for n, lat_sum, met in b["bands"]:
            if n <= 0:
                continue
            latency_ms = 1000 * lat_sum / n
            parts.append((met, min(latency_ms, sla_ms), 200, False))
            parts.append((n - met, max(latency_ms, sla_ms + 1.0), 200, False))
        counts = _round_to(b["sent"], [p[0] for p in parts])
        j = b["j"] / b["served"] if b["served"] > 0 else None
        variants = {s: sp.variant for s, sp in self.routing.stages.items()}
        for (_, latency_ms, status, shed), count in zip(parts, counts):
            if count <= 0:
                continue
            ok = status == 200
            self.rows.append(RequestRow(
                scheduled_s=sent, sent_s=sent, finished_s=sent + latency_ms / 1000, latency_ms=latency_ms, status=status,
                shed=shed, error="" if ok else "shed: the plan cannot serve the load within the SLA",
                plan_version=self.version, variants=variants if ok else {}, energy_j=j if ok else None,
                energy_method=self.method if ok and j is not None else None, count=count))

    def close(self, drain_s: float) -> None:
        """End of the run: the last bucket, and what no stage answered by the end of the drain."""
        self._flush()
        left = int(round(sum(m.backlog for ms in self.stages.values() for m in ms)))
        for m in (m for ms in self.stages.values() for m in ms):
            m.backlog = 0.0
        while left > 0 and self.rows:  # the latest answered rows were those still queued
            row = next((r for r in reversed(self.rows) if r.status == 200 and r.count > 0), None)
            if row is None:
                break
            take = min(left, row.count)
            row.count -= take
            left -= take
            end = self.base + self.now
            self.rows.append(RequestRow(scheduled_s=row.sent_s, sent_s=row.sent_s, finished_s=end,
                                        latency_ms=(end - row.sent_s) * 1000, status=0, count=take,
                                        error=f"no answer within the {drain_s:.0f} s drain"))
        self.rows = [r for r in self.rows if r.count > 0]

def _round_to(total: int, parts: list[float]) -> list[int]:
    """Integer counts proportional to `parts` that sum to `total` (largest remainders)."""
    s = sum(parts)
    if s <= 0:
        return [0] * len(parts)
    exact = [p * total / s for p in parts]
    out = [int(math.floor(x)) for x in exact]
    for i in sorted(range(len(parts)), key=lambda i: exact[i] - out[i], reverse=True)[: total - sum(out)]:
        out[i] += 1
    return out
