"""The zeus-nvml meter, through Zeus's real NVML code with the driver simulated."""

import pynvml
import pytest

from energy.meters.base import MeterUnavailable
from energy.meters.zeus import ZeusGpuMeter
from tests.unit.energy.fake_nvml import FakeNvml


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_energy_counter_gives_joules_since_start(monkeypatch):
    nvml = FakeNvml([{"name": "NVIDIA H100 80GB HBM3", "arch": pynvml.NVML_DEVICE_ARCH_HOPPER,
                      "energy_mj": 5_000_000, "power_mw": 0}]).install(monkeypatch)
    meter = ZeusGpuMeter()
    assert meter.devices() == ["gpu:0"] and meter.method == "zeus-nvml"
    assert meter.names() == {"gpu:0": "NVIDIA H100 80GB HBM3"}
    nvml.gpus[0]["energy_mj"] += 350_000  # 350 J
    sample = meter.sample()
    assert sample.energy_j == {"gpu:0": pytest.approx(350.0)} and sample.method == "zeus-nvml"


def test_gpu_without_counter_integrates_power(monkeypatch):
    nvml = FakeNvml([{"name": "Tesla P100", "arch": pynvml.NVML_DEVICE_ARCH_PASCAL,
                      "energy_mj": 0, "power_mw": 100_000}]).install(monkeypatch)
    clock = Clock()
    meter = ZeusGpuMeter(clock=clock)
    clock.t += 2.0
    assert meter.sample().energy_j["gpu:0"] == pytest.approx(200.0)  # 100 W × 2 s
    nvml.gpus[0]["power_mw"] = 50_000
    clock.t += 1.0
    assert meter.sample().energy_j["gpu:0"] == pytest.approx(250.0)


def test_two_gpus(monkeypatch):
    FakeNvml([{"name": "A", "arch": pynvml.NVML_DEVICE_ARCH_AMPERE, "energy_mj": 0, "power_mw": 0}] * 2).install(monkeypatch)
    assert ZeusGpuMeter().devices() == ["gpu:0", "gpu:1"]


def test_no_nvml_is_unavailable(monkeypatch):
    def fail():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    with pytest.raises(MeterUnavailable, match="NVML"):
        ZeusGpuMeter()
