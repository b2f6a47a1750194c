"""Energy telemetry settings (pydantic); shared by the node actors, the app and reports."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["EnergyConfig"]


class EnergyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_interval_s: float = Field(1.0, gt=0, le=1.0, description="CPU meter sampling period (s); ≤1 s.")
    gpu_interval_s: float = Field(0.1, gt=0, le=0.1, description="GPU meter sampling period (s); ≤100 ms.")
    history_s: float = Field(900.0, gt=0, description="How much sample history each node keeps (s).")
    force_estimate: bool = Field(False, description="Use the TDP estimate for CPUs even where RAPL is readable.")
    cpu_tdp_w: float | None = Field(None, gt=0, description="CPU TDP for the estimate (W); default: looked up.")
    cpu_idle_w: float | None = Field(None, ge=0, description="CPU idle power for the estimate (W).")
    idle_w: dict[str, float] = Field(default_factory=dict, description="Known idle power per device id (W).")
    carbon_g_per_kwh: float = Field(
        445.0, ge=0,
        description="Grid carbon intensity (g CO2e/kWh). Default: the 2024 world average electricity "
        "CO2 intensity, 445 g/kWh (IEA, Electricity 2025: https://www.iea.org/reports/electricity-2025/emissions).",
    )
    pue: float = Field(1.0, ge=1.0, description="Data-centre power usage effectiveness applied to carbon.")

    @model_validator(mode="after")
    def _gpu_faster_than_cpu(self) -> EnergyConfig:
        if self.gpu_interval_s > self.cpu_interval_s:
            raise ValueError("gpu_interval_s must not exceed cpu_interval_s")
        return self

    def carbon_g(self, joules: float) -> float:
        """g CO2e for `joules` of IT energy: J → kWh × intensity × PUE."""
        return joules / 3.6e6 * self.carbon_g_per_kwh * self.pue
