"""Meters on top of Zeus's device layer: NVIDIA GPUs (NVML) and CPUs (RAPL, or zeusd).

Zeus abstracts the vendor libraries (`zeus.device.get_gpus`, `get_cpus`); we read its
cumulative counters at our own sampling rate, so overlapping windows cost nothing. NVML's
total-energy counter (Volta and newer) is in mJ since the driver loaded; older GPUs only
report power, which we integrate between samples.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from energy.meters.base import Meter, MeterUnavailable, Sample

__all__ = ["ZeusCpuMeter", "ZeusGpuMeter"]


class ZeusGpuMeter(Meter):
    """GPU energy via Zeus/NVML. Device ids `gpu:N` (N = index among visible GPUs)."""

    method = "zeus-nvml"

    def __init__(self, gpus: Any = None, clock=time.time):
        if gpus is None:
            from zeus.device.gpu.nvidia import NVIDIAGPUs, nvml_is_available

            if not nvml_is_available():
                raise MeterUnavailable("no NVIDIA GPU: NVML is unavailable")
            try:
                gpus = NVIDIAGPUs()
            except Exception as e:  # zeus raises its own hierarchy for driver/permission errors
                raise MeterUnavailable(f"NVML could not open the GPUs: {e}") from e
        self.gpus = gpus
        self.indices = list(range(len(gpus)))
        if not self.indices:
            raise MeterUnavailable("NVML reports no GPU")
        self.clock = clock
        self._lock = threading.Lock()
        self._has_counter = {i: bool(gpus.supports_get_total_energy_consumption(i)) for i in self.indices}
        self._start_mj = {i: gpus.get_total_energy_consumption(i) for i in self.indices if self._has_counter[i]}
        self._integrated_j = {i: 0.0 for i in self.indices}
        self._last_t = clock()

    def devices(self) -> list[str]:
        return [f"gpu:{i}" for i in self.indices]

    @property
    def needs_polling(self) -> bool:
        """True when some GPU has no energy counter, so its power must be integrated often."""
        return not all(self._has_counter.values())

    def names(self) -> dict[str, str]:
        return {f"gpu:{i}": self.gpus.get_name(i) for i in self.indices}

    def sample(self) -> Sample:
        with self._lock:
            now = self.clock()
            energy = {}
            for i in self.indices:
                if self._has_counter[i]:
                    energy[f"gpu:{i}"] = (self.gpus.get_total_energy_consumption(i) - self._start_mj[i]) / 1000
                else:  # power (mW) held over the interval since the last sample
                    self._integrated_j[i] += self.gpus.get_instant_power_usage(i) / 1000 * (now - self._last_t)
                    energy[f"gpu:{i}"] = self._integrated_j[i]
            self._last_t = now
            return Sample(time_s=now, energy_j=energy, method=self.method)

    def handle(self, index: int) -> Any:
        """The NVML handle of GPU `index` (for per-process utilisation queries)."""
        return self.gpus.gpus[index].handle


class ZeusCpuMeter(Meter):
    """CPU package and DRAM energy via Zeus's RAPL layer (sysfs, or zeusd without root).

    Device ids `cpu:N` / `dram:N`. Zeus's RAPLFile unwraps counter wraparound itself (a
    tracker polls each counter faster than it can wrap), so readings only grow.
    """

    method = "zeus-rapl"

    def __init__(self, cpus: Any = None, clock=time.time):
        if cpus is None:
            from zeus.device.cpu import get_cpus

            try:
                cpus = get_cpus()
            except Exception as e:
                raise MeterUnavailable(f"no readable RAPL zone for Zeus: {e}") from e
        self.cpus = cpus
        self.clock = clock
        self._lock = threading.Lock()
        self._start = self._read_mj()

    def devices(self) -> list[str]:
        return list(self._start)

    def _read_mj(self) -> dict[str, float]:
        readings = {}
        for i in range(len(self.cpus.cpus)):
            m = self.cpus.get_total_energy_consumption(i)
            readings[f"cpu:{i}"] = m.cpu_mj
            if m.dram_mj is not None:
                readings[f"dram:{i}"] = m.dram_mj
        return readings

    def sample(self) -> Sample:
        with self._lock:
            now_mj = self._read_mj()
            return Sample(
                time_s=self.clock(),
                energy_j={d: (mj - self._start[d]) / 1000 for d, mj in now_mj.items()},
                method=self.method,
            )
