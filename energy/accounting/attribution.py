"""Split a node's energy over a window among the processes that used it, as Kepler does.

Per device over the window: idle energy = idle power × duration (never attributed to a
consumer); active energy = the rest. CPU packages and DRAM: active energy is split by each
process's CPU seconds; the CPU seconds of processes we do not track go to `other`. A GPU:
split by NVML per-process utilisation where the driver reports it, else by each replica's
GPU fraction × busy time. Invariant (tested): attributed + other + idle = measured total.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from energy.meters.base import Measurement

__all__ = ["OTHER", "Attribution", "Usage", "attribute", "joules_per_cpu_second"]

OTHER = "other"


@dataclass(frozen=True)
class Usage:
    """What the consumers did during the window."""

    cpu_s: dict[str, float] = field(default_factory=dict)  # consumer → CPU seconds
    node_cpu_s: float = 0.0  # busy CPU seconds of the whole node (≥ Σ cpu_s)
    gpu_util: dict[str, dict[str, float]] = field(default_factory=dict)  # gpu:N → consumer → NVML util
    gpu_busy: dict[str, dict[str, float]] = field(default_factory=dict)  # gpu:N → consumer → fraction × busy s


@dataclass(frozen=True)
class Attribution:
    """Energy of one window by consumer, in joules, with the method of the measurement."""

    window: Measurement
    consumers_j: dict[str, float]
    other_j: float
    idle_j: float

    @property
    def total_j(self) -> float:
        return sum(self.consumers_j.values()) + self.other_j + self.idle_j


def _split(active_j: float, weights: dict[str, float], total_weight: float) -> tuple[dict[str, float], float]:
    """Share `active_j` in proportion to `weights`; what `total_weight` leaves over is other."""
    total_weight = max(total_weight, sum(weights.values()))
    if total_weight <= 0 or active_j <= 0:
        return {}, active_j
    shares = {c: active_j * w / total_weight for c, w in weights.items() if w > 0}
    return shares, active_j - sum(shares.values())


def attribute(window: Measurement, idle_w: dict[str, float], usage: Usage) -> Attribution:
    consumers: dict[str, float] = {}
    other = idle = 0.0
    for device, energy in window.energy_j.items():
        device_idle = min(max(idle_w.get(device, 0.0), 0.0) * window.duration_s, energy)
        idle += device_idle
        active = energy - device_idle
        if device.startswith("gpu:"):
            util = usage.gpu_util.get(device) or {}
            weights = util if any(util.values()) else usage.gpu_busy.get(device, {})
            shares, rest = _split(active, weights, sum(weights.values()))
        else:  # cpu:N, dram:N, node: CPU time is the best proxy for both
            shares, rest = _split(active, usage.cpu_s, usage.node_cpu_s)
        for consumer, j in shares.items():
            consumers[consumer] = consumers.get(consumer, 0.0) + j
        other += rest
    return Attribution(window=window, consumers_j=consumers, other_j=other, idle_j=idle)


def joules_per_cpu_second(window: Measurement, idle_w: dict[str, float], node_cpu_s: float) -> float:
    """Active CPU+DRAM energy per busy CPU second: the marginal cost replicas charge requests."""
    if node_cpu_s <= 0:
        return 0.0
    active = sum(
        max(e - idle_w.get(d, 0.0) * window.duration_s, 0.0) for d, e in window.energy_j.items() if not d.startswith("gpu:")
    )
    return active / node_cpu_s
