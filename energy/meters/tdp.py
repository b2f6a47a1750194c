"""The ``tdp-estimate`` method: energy estimated from TDP and utilisation, where no counter exists.

Used only where no energy counter (NVML, RAPL, etrace2) can be read, and always labelled
``tdp-estimate`` (``Measurement.measured`` is False for it), never presented as a measurement.

Model, per device::

    power = idle + (TDP - idle) * utilisation        (W; utilisation in [0, 1])

integrated over time by :class:`TdpEstimateMeter`.

Where the numbers come from
---------------------------
* CPU TDP: looked up in CodeCarbon's table by :func:`energy.meters.tdp_tables.match_cpu` (the
  model name in /proc/cpuinfo); or given explicitly (``cpu_tdp_w=``).
* Unknown CPU: CodeCarbon's own fallback of 4 W per logical CPU
  (:data:`energy.meters.tdp_tables.FALLBACK_W_PER_THREAD`, sources there).
* Idle power: ``cpu_idle_fraction`` x TDP, default **0.3**. This is an assumption of this project,
  not a published figure. For comparison, CodeCarbon's ``cpu_load`` mode puts the floor at 10 % of
  TDP (``load_factor = 0.1 + 0.9 * load**3``, ``codecarbon/external/hardware.py``), so our idle
  estimate is deliberately higher and linear. Pass ``cpu_idle_w`` when a measured idle is known.
* GPU TDP: given per GPU (``gpus=``); :func:`energy.meters.tdp_tables.gpu_tdp_w` looks one up.

Every parameter and where it came from is recorded in ``TdpEstimateMeter.assumptions`` so that a
report can print it next to the numbers.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from energy.meters.base import Meter, MeterUnavailable, Sample
from energy.meters.tdp_tables import CPU_TABLE_SOURCE, FALLBACK_SOURCE, FALLBACK_W_PER_THREAD, host_cpu_model, match_cpu

__all__ = [
    "DEFAULT_IDLE_FRACTION", "FORMULA", "INTEGRATION", "PSUTIL_UTILISATION", "CpuTimesUtilisation", "GpuEstimate",
    "TdpEstimateMeter",
]

# Assumption of this project (not a published figure): idle power as a fraction of TDP.
DEFAULT_IDLE_FRACTION = 0.3
FORMULA = "power = idle + (TDP - idle) * utilisation"
INTEGRATION = (
    "rectangle rule with the interval-mean utilisation: E += (idle + (TDP - idle) * u) * dt, "
    "u = mean utilisation since the previous sample (exact for this linear model)"
)
PSUTIL_UTILISATION = "psutil.cpu_times() deltas, system-wide, since the previous sample"


class CpuTimesUtilisation:
    """System-wide CPU utilisation in [0, 1] since the previous call, from psutil.cpu_times().

    The same arithmetic as ``psutil.cpu_percent(interval=None)`` (busy = total - idle - iowait;
    on Linux guest/guest_nice are already inside user/nice and are not counted twice), but with
    its own baseline, so other callers of cpu_percent in the process (Ray, libraries) cannot
    shift the interval. The baseline is taken at construction.
    """

    def __init__(self, cpu_times: Callable[[], object] | None = None):
        if cpu_times is None:
            try:
                import psutil
            except ImportError as e:  # pragma: no cover - psutil ships with ray
                raise MeterUnavailable(f"psutil is needed for CPU utilisation: {e}") from e
            cpu_times = psutil.cpu_times
        self._cpu_times = cpu_times
        self._last = self._read()

    def _read(self) -> tuple[float, float]:
        t = self._cpu_times()
        fields = t._asdict() if hasattr(t, "_asdict") else dict(vars(t))
        total = sum(float(v) for v in fields.values())
        total -= float(fields.get("guest", 0.0)) + float(fields.get("guest_nice", 0.0))
        idle = float(fields.get("idle", 0.0)) + float(fields.get("iowait", 0.0))
        return total, idle

    def __call__(self) -> float:
        total, idle = self._read()
        last_total, last_idle = self._last
        self._last = (total, idle)
        d_total = total - last_total
        if d_total <= 0:
            return 0.0
        return _clamp01((d_total - (idle - last_idle)) / d_total)


def _clamp01(u: float) -> float:
    u = float(u)
    if math.isnan(u):
        return 0.0
    return min(1.0, max(0.0, u))


class GpuEstimate(NamedTuple):
    """One GPU for the estimate: TDP (W), idle (W; None → gpu_idle_fraction x TDP), utilisation."""

    tdp_w: float
    idle_w: float | None
    utilisation: Callable[[], float]


class TdpEstimateMeter(Meter):
    """Estimated cumulative energy from TDP x utilisation (method ``tdp-estimate``).

    Devices: ``cpu:0`` … ``cpu:{num_sockets-1}`` (each package at the per-package TDP, all driven
    by the same system-wide utilisation, which cannot be split by package here), then ``gpu:N``
    for each GPU in ``gpus``.

    Args:
        cpu_tdp_w: TDP of one CPU package (W). None: look the host CPU up in cpu_power.csv, else
            the CodeCarbon fallback of 4 W per logical CPU (split evenly over the sockets).
        cpu_idle_fraction: idle power as a fraction of TDP when ``cpu_idle_w`` is not given
            (default 0.3: an assumption, see the module docstring).
        cpu_idle_w: idle power of one package (W), overriding the fraction.
        utilisation: callable returning the CPU utilisation in [0, 1] averaged over the interval
            since its previous call. Default: :class:`CpuTimesUtilisation` (psutil.cpu_times
            deltas, system-wide), primed at construction.
        num_sockets: CPU packages (default 1).
        gpus: ``(tdp_w, idle_w, utilisation)`` per GPU, same conventions as the CPU.
        gpu_idle_fraction: idle fraction for GPUs given with ``idle_w=None`` (assumption).
        clock: wall clock (s), ``time.time`` by default; injectable for tests.
        cpu_model: model name to look up instead of this host's /proc/cpuinfo one.
        logical_cpus: logical CPU count for the fallback (default ``os.cpu_count()``).

    ``sample()`` integrates power over the time since the previous sample (rectangle rule with the
    interval-mean utilisation: exact for this linear model), under a lock; the result never
    decreases, also when the clock steps back (that interval counts as zero).
    """

    method = "tdp-estimate"


    def __init__(
        self,
        cpu_tdp_w: float | None = None,
        cpu_idle_fraction: float = DEFAULT_IDLE_FRACTION,
        cpu_idle_w: float | None = None,
        utilisation: Callable[[], float] | None = None,
        num_sockets: int = 1,
        gpus: Sequence[GpuEstimate | tuple[float, float | None, Callable[[], float]]] = (),
        gpu_idle_fraction: float = DEFAULT_IDLE_FRACTION,
        clock: Callable[[], float] = time.time,
        cpu_model: str | None = None,
        logical_cpus: int | None = None,
    ):
        num_sockets = _check_sockets(num_sockets)
        _check_fraction("cpu_idle_fraction", cpu_idle_fraction)
        _check_fraction("gpu_idle_fraction", gpu_idle_fraction)
        model = cpu_model if cpu_model is not None else host_cpu_model()
        tdp, source, tdp_notes = _resolve_cpu_tdp(cpu_tdp_w, model, num_sockets, logical_cpus)
        idle, idle_source = _resolve_idle("cpu_idle_w", tdp, cpu_idle_w, cpu_idle_fraction)
        self._gpus, gpu_notes = _gpu_estimates(gpus, gpu_idle_fraction)

        self.tdp_source = source
        self.cpu_tdp_w = tdp  # per package
        self.cpu_idle_w = idle  # per package
        self.num_sockets = num_sockets
        self.assumptions: dict[str, Any] = {
            "method": self.method,
            "formula": FORMULA,
            "integration": INTEGRATION,
            "cpu_model": model,
            "num_sockets": num_sockets,
            **tdp_notes,
            "tdp_source": source,
            "cpu_tdp_w": tdp,
            "cpu_idle_w": idle,
            "cpu_idle_source": idle_source,
            "cpu_idle_fraction": None if cpu_idle_w is not None else cpu_idle_fraction,
            "utilisation": "injected" if utilisation is not None else PSUTIL_UTILISATION,
        }
        if gpu_notes:
            self.assumptions["gpus"] = gpu_notes

        self._utilisation = utilisation if utilisation is not None else CpuTimesUtilisation()
        self._clock = clock
        self._devices = [f"cpu:{i}" for i in range(num_sockets)] + [f"gpu:{i}" for i in range(len(self._gpus))]
        self._energy = {d: 0.0 for d in self._devices}
        self._lock = threading.Lock()
        self._last_t = float(clock())

    def devices(self) -> list[str]:
        return list(self._devices)

    def idle_power_w(self) -> dict[str, float]:
        """The idle power this estimate assumes, per device (W): never attributed to a replica."""
        return {**{f"cpu:{i}": self.cpu_idle_w for i in range(self.num_sockets)},
                **{f"gpu:{i}": g.idle_w for i, g in enumerate(self._gpus)}}

    def cpu_power_w(self, utilisation: float) -> float:
        """Estimated power of one CPU package (W) at a utilisation in [0, 1]."""
        return self.cpu_idle_w + (self.cpu_tdp_w - self.cpu_idle_w) * _clamp01(utilisation)

    def sample(self) -> Sample:
        with self._lock:
            now = float(self._clock())
            dt = max(0.0, now - self._last_t)
            p_cpu = self.cpu_power_w(self._utilisation())
            for i in range(self.num_sockets):
                self._energy[f"cpu:{i}"] += p_cpu * dt
            for i, g in enumerate(self._gpus):
                p_gpu = g.idle_w + (g.tdp_w - g.idle_w) * _clamp01(g.utilisation())
                self._energy[f"gpu:{i}"] += p_gpu * dt
            self._last_t = max(self._last_t, now)
            return Sample(time_s=now, energy_j=dict(self._energy), method=self.method)


def _resolve_cpu_tdp(
    cpu_tdp_w: float | None, model: str, num_sockets: int, logical_cpus: int | None
) -> tuple[float, str, dict[str, Any]]:
    """TDP of one CPU package (W), its source, and what the lookup assumed (for ``assumptions``).

    Given → ``config``; else the table row (``table:<name>``); else CodeCarbon's fallback of
    4 W per logical CPU, split evenly over the sockets (``fallback``).
    """
    notes: dict[str, Any] = {}
    if cpu_tdp_w is not None:
        tdp, source = float(cpu_tdp_w), "config"
    else:
        hit = match_cpu(model)
        if hit is not None:
            tdp, source = hit.tdp_w, f"table:{hit.name}"
            notes["cpu_table"] = CPU_TABLE_SOURCE
            notes["cpu_table_match"] = "exact" if hit.exact else "token"
        else:
            threads = int(logical_cpus or os.cpu_count() or 1)
            tdp, source = FALLBACK_W_PER_THREAD * threads / num_sockets, "fallback"
            notes["fallback"] = FALLBACK_SOURCE
            notes["fallback_w_per_thread"] = FALLBACK_W_PER_THREAD
            notes["logical_cpus"] = threads
    _check_tdp("CPU", tdp)
    return tdp, source, notes


def _resolve_idle(name: str, tdp: float, idle_w: float | None, idle_fraction: float) -> tuple[float, str]:
    """Idle power (W) and its source: the given ``idle_w`` (``config``), else fraction x TDP."""
    if idle_w is not None:
        idle, source = float(idle_w), "config"
    else:
        idle, source = idle_fraction * tdp, f"assumption: {idle_fraction} x TDP"
    _check_idle(name, idle, tdp)
    return idle, source


def _gpu_estimates(
    gpus: Sequence[GpuEstimate | tuple[float, float | None, Callable[[], float]]], idle_fraction: float
) -> tuple[list[GpuEstimate], list[dict[str, Any]]]:
    """The GPUs with their idle power resolved, and a note per GPU for ``assumptions``."""
    estimates: list[GpuEstimate] = []
    notes: list[dict[str, Any]] = []
    for i, (g_tdp, g_idle, g_util) in enumerate(gpus):
        g_tdp = float(g_tdp)
        _check_tdp(f"gpu:{i}", g_tdp)
        idle, source = _resolve_idle(f"gpu:{i} idle_w", g_tdp, g_idle, idle_fraction)
        estimates.append(GpuEstimate(g_tdp, idle, g_util))
        notes.append({"device": f"gpu:{i}", "tdp_w": g_tdp, "idle_w": idle, "idle_source": source})
    return estimates, notes


def _check_sockets(num_sockets: int) -> int:
    if int(num_sockets) != num_sockets or num_sockets < 1:
        raise ValueError(f"num_sockets must be a positive integer, got {num_sockets!r}")
    return int(num_sockets)


def _check_tdp(device: str, tdp: float) -> None:
    if not (math.isfinite(tdp) and tdp > 0):
        raise ValueError(f"{device} TDP must be a positive number of watts, got {tdp!r}")


def _check_fraction(name: str, value: float) -> None:
    if not (0.0 <= float(value) <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def _check_idle(name: str, idle: float, tdp: float) -> None:
    if not (math.isfinite(idle) and 0.0 <= idle <= tdp):
        raise ValueError(f"{name} must be between 0 and the TDP ({tdp} W), got {idle!r}")
