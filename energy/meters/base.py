"""The meter interface every energy source implements, and its result types.

A meter exposes *cumulative* energy counters per device (J since the meter started,
never decreasing: counter wraparound is the meter's job). Windows are differences of two
samples, so any number of overlapping windows can be cut from one stream of samples.
Device ids: ``cpu:N`` (CPU package N), ``dram:N`` (its memory), ``gpu:N``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from ipa_energy.energy import MEASURED, EnergyMethod
from ipa_energy.errors import IpaEnergyError

__all__ = ["Measurement", "Meter", "MeterUnavailable", "Sample"]


class MeterUnavailable(IpaEnergyError):
    """This meter cannot read anything on this host (no device, no permission, no driver)."""


@dataclass(frozen=True)
class Sample:
    """Cumulative energy of each device at one instant."""

    time_s: float  # wall clock, time.time() (s)
    energy_j: dict[str, float]  # device id → J since the meter started
    method: EnergyMethod


@dataclass(frozen=True)
class Measurement:
    """Energy over the window [start_s, end_s] (wall clock, s), per device, in joules."""

    start_s: float
    end_s: float
    energy_j: dict[str, float] = field(default_factory=dict)
    method: EnergyMethod = "tdp-estimate"

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def total_j(self) -> float:
        return sum(self.energy_j.values())

    @property
    def mean_power_w(self) -> float:
        return self.total_j / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def measured(self) -> bool:
        """False for estimates (tdp-estimate): never present those as measurements."""
        return self.method in MEASURED

    @staticmethod
    def between(first: Sample, last: Sample) -> Measurement:
        return Measurement(
            start_s=first.time_s,
            end_s=last.time_s,
            energy_j={d: last.energy_j[d] - first.energy_j.get(d, 0.0) for d in last.energy_j},
            method=last.method,
        )


class Meter(abc.ABC):
    """One energy source on this node."""

    method: EnergyMethod

    @abc.abstractmethod
    def devices(self) -> list[str]:
        """Device ids this meter covers."""

    @abc.abstractmethod
    def sample(self) -> Sample:
        """Read every device's cumulative energy now."""

    def close(self) -> None:
        """Release the device handles (optional)."""
