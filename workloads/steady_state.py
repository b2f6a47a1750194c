"""The profiler's measurement: a steady window of whole batches, idle power, dynamic energy.

:func:`steady_window` runs one batch back to back: a warm-up (discarded), a window of whole
batches with every meter sampled at its edges and between batches, then a drain outside the
window. :func:`node_idle_power`, :func:`allocation_idle_power` and :func:`dynamic_energy_j` are
the energy arithmetic, :func:`energy_method` the profile's method label. The method and its
rationale: :mod:`workloads.profiler`.

Counted devices: ``cpu:*`` and ``dram:*`` always, plus ``gpu:N`` when profiling on ``cuda:N``.
"""

from __future__ import annotations

import os
import time
from typing import Callable, NamedTuple, Sequence

from energy.meters.base import Measurement, Meter, Sample
from ipa_energy.energy import ESTIMATE, EnergyMethod
from ipa_energy.spec import VariantSpec
from workloads.payloads import Payload, Runner

__all__ = ["Window", "allocation_idle_power", "dynamic_energy_j", "energy_method", "node_idle_power", "steady_window"]


class Window(NamedTuple):
    """One batch size's measured window: whole batches only, between two samples of every meter."""

    latencies_s: list[float]  # wall time of each batch in the window
    start: list[Sample]  # one per meter, at the window's start
    end: list[Sample]  # one per meter, at its end
    opened: float  # time.perf_counter() after the start samples
    closed: float  # time.perf_counter() after the end samples
    cpu_s: float = 0.0  # this process's CPU time (all threads) over the window (s)

    @property
    def duration_s(self) -> float:
        return self.closed - self.opened


# --------------------------------------------------------------------------------------------
# Devices, idle power and energy
# --------------------------------------------------------------------------------------------


def _counted(device_id: str, gpu_index: int | None) -> bool:
    if device_id.startswith(("cpu:", "dram:")):
        return True
    return gpu_index is not None and device_id == f"gpu:{gpu_index}"


def _sample_all(meters: Sequence[Meter]) -> list[Sample]:
    return [m.sample() for m in meters]


def node_idle_power(meters: Sequence[Meter], idle_s: float = 1.0) -> tuple[dict[str, float], dict[str, str]]:
    """Node idle power per device (W) and where each figure came from ('meter' | 'measured').

    A meter with ``idle_power_w()`` (the TDP estimate) gives its own; for the others the
    meters are sampled, we sleep `idle_s`, and sample again (mean power while idle).
    """
    idle: dict[str, float] = {}
    source: dict[str, str] = {}
    to_measure = []
    for m in meters:
        own = getattr(m, "idle_power_w", None)
        if callable(own):
            for d, w in own().items():
                idle[d], source[d] = float(w), "meter"
        else:
            to_measure.append(m)
    if to_measure:
        first = _sample_all(to_measure)
        time.sleep(idle_s)
        for a, b in zip(first, _sample_all(to_measure)):
            w = Measurement.between(a, b)
            for d, j in w.energy_j.items():
                if d not in idle:
                    idle[d], source[d] = max(j, 0.0) / w.duration_s if w.duration_s > 0 else 0.0, "measured"
    return idle, source


def allocation_idle_power(variant: VariantSpec, idle: dict[str, float], gpu_index: int | None) -> float:
    """The replica's share of the node idle (W): num_cpus / cpu_count of CPU/DRAM, min(num_gpus, 1) of the GPU."""
    share_cpu = variant.resources.num_cpus / (os.cpu_count() or 1)
    share_gpu = min(variant.resources.num_gpus, 1.0)
    return sum(w * (share_gpu if d.startswith("gpu:") else share_cpu)
               for d, w in idle.items() if _counted(d, gpu_index))


def energy_method(meters: Sequence[Meter], gpu_index: int | None) -> EnergyMethod:
    """The profile's method: tdp-estimate if any contributing meter estimates, else the GPU's, else the CPU's."""
    contributing = [m for m in meters if any(_counted(d, gpu_index) for d in m.devices())]
    if not contributing:
        raise ValueError("no meter covers the profiled devices (cpu:*, dram:*, gpu:N)")
    if any(m.method == ESTIMATE for m in contributing):
        return ESTIMATE
    if gpu_index is not None:
        gpu = [m for m in contributing if f"gpu:{gpu_index}" in m.devices()]
        if gpu:
            return gpu[0].method
    cpu = [m for m in contributing if any(d.startswith("cpu:") for d in m.devices())]
    return (cpu or contributing)[0].method


def dynamic_energy_j(window: Window, idle: dict[str, float], gpu_index: int | None) -> float:
    """Window energy minus node idle × each meter's window duration, over the counted devices (J)."""
    dynamic = 0.0
    for s0, s1 in zip(window.start, window.end):
        w = Measurement.between(s0, s1)
        dynamic += sum(j - idle.get(d, 0.0) * w.duration_s for d, j in w.energy_j.items() if _counted(d, gpu_index))
    return dynamic


# --------------------------------------------------------------------------------------------
# The steady window
# --------------------------------------------------------------------------------------------


def _warm_up(run: Runner, batch: list[Payload], sync: Callable[[], None], warmup_s: float) -> None:
    """At least one batch, then batches until `warmup_s` has passed (discarded)."""
    t0 = time.perf_counter()
    while True:
        run(batch)
        sync()
        if time.perf_counter() - t0 >= warmup_s:
            break


def _measure(run: Runner, batch: list[Payload], meters: Sequence[Meter], sync: Callable[[], None],
             window_s: float, min_batches: int, sample_interval_s: float) -> Window:
    """Whole batches until ≥ `window_s` and ≥ `min_batches`; meters sampled between batches only."""
    clock = time.perf_counter
    start = _sample_all(meters)
    window_start = last_sample = clock()
    cpu_start = time.process_time()  # process-wide: every torch thread counts
    latencies = []
    while True:
        s = clock()
        run(batch)
        sync()
        e = clock()
        latencies.append(e - s)
        if e - window_start >= window_s and len(latencies) >= min_batches:
            break
        if e - last_sample >= sample_interval_s:  # between batches only; counters stay cumulative
            _sample_all(meters)
            last_sample = clock()
    cpu_s = time.process_time() - cpu_start
    end = _sample_all(meters)
    return Window(latencies, start, end, window_start, clock(), cpu_s)


def _drain(run: Runner, batch: list[Payload], sync: Callable[[], None], drain_s: float, since: float) -> None:
    """Load continues until `drain_s` after `since` (the window's close), outside the window."""
    while time.perf_counter() - since < drain_s:
        run(batch)
        sync()


def steady_window(run: Runner, batch: list[Payload], meters: Sequence[Meter], sync: Callable[[], None], *,
                  warmup_s: float, window_s: float, drain_s: float, min_batches: int,
                  sample_interval_s: float) -> Window:
    """Warm-up, then a window of whole batches (≥ window_s and ≥ min_batches), then drain."""
    _warm_up(run, batch, sync, warmup_s)
    window = _measure(run, batch, meters, sync, window_s, min_batches, sample_interval_s)
    _drain(run, batch, sync, drain_s, since=window.closed)
    return window
