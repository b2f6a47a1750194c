"""A stand-in for the NVML C library, patched into pynvml at its function boundary.

Zeus's own NVIDIAGPUs code runs unchanged on top; only the driver calls are simulated.
"""

from types import SimpleNamespace

import pynvml


class FakeNvml:
    def __init__(self, gpus: list[dict]):
        # each gpu: name, arch, energy_mj (counter), power_mw, processes {pid: sm_util}
        self.gpus = gpus

    def install(self, monkeypatch) -> "FakeNvml":
        m = monkeypatch.setattr
        m(pynvml, "nvmlInit", lambda: None)
        m(pynvml, "nvmlShutdown", lambda: None)
        m(pynvml, "nvmlDeviceGetCount", lambda: len(self.gpus))
        m(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: SimpleNamespace(index=i))
        m(pynvml, "nvmlDeviceGetName", lambda h: self.gpus[h.index]["name"])
        m(pynvml, "nvmlDeviceGetArchitecture", lambda h: self.gpus[h.index]["arch"])
        m(pynvml, "nvmlDeviceGetTotalEnergyConsumption", lambda h: self.gpus[h.index]["energy_mj"])
        m(pynvml, "nvmlDeviceGetC2cModeInfoV", self._not_supported)
        m(pynvml, "nvmlDeviceGetFieldValues", self._field_values)
        m(pynvml, "nvmlDeviceGetProcessUtilization", self._process_utilization)
        # zeus caches whether NVML is there (lru_cache); an earlier test on this GPU-less host
        # may have cached False
        from zeus.device.gpu import nvidia

        m(nvidia, "nvml_is_available", lambda: True)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        monkeypatch.delenv("ZEUSD_SOCK_PATH", raising=False)
        return self

    @staticmethod
    def _not_supported(handle):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def _field_values(self, handle, fields):
        return [SimpleNamespace(nvmlReturn=pynvml.NVML_SUCCESS, value=SimpleNamespace(uiVal=self.gpus[handle.index]["power_mw"]))]

    def _process_utilization(self, handle, last_seen):
        procs = self.gpus[handle.index].get("processes", {})
        return [SimpleNamespace(pid=pid, smUtil=util, timeStamp=last_seen + 1) for pid, util in procs.items()]
