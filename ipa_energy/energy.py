"""Energy figures as they cross the project's boundaries, each with its unit and method.

One method type (:data:`EnergyMethod`) and one rule for a figure made of several
(:func:`join_methods`: the distinct methods, sorted, joined by ``+``). Readings travel
between the node energy actors, the replicas, the ingress, the experiment runner and the
reports as these models: dumped at the boundary, validated on receipt.

Units: energy in joules (J), power in watts (W), times in Unix seconds, durations in
seconds. ``tdp-estimate`` is an estimate, never a measurement (:func:`is_measured`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "BASIS", "ESTIMATE", "LOADGEN", "MEASURED", "METHODS", "BatchEnergy", "DeviceEnergy", "EnergyMethod", "EnergyPart",
    "EnergyRates", "EnergyReport", "EnergyWindow", "MethodLabel", "NodeEnergyReport", "PipelineEnergy",
    "RequestEnergy", "SIMULATED", "base_methods", "is_loadgen", "is_measured", "is_simulated", "join_methods",
    "simulated", "split_methods",
]

EnergyMethod = Literal["zeus-nvml", "zeus-rapl", "rapl-sysfs", "etrace2", "tdp-estimate"]
METHODS: tuple[str, ...] = get_args(EnergyMethod)
MEASURED: frozenset[str] = frozenset({"zeus-nvml", "zeus-rapl", "rapl-sysfs", "etrace2"})
ESTIMATE = "tdp-estimate"
#: how a request's energy is allocated (carried with every per-request figure)
BASIS = "dynamic energy: node active-energy rate x this batch's CPU seconds (and GPU busy time), / requests"
#: consumer name prefix of a load generator registered with a node's energy actor: its share
#: is not the served system's (system J/request leaves it out)
LOADGEN = "loadgen:"


def is_loadgen(consumer: str) -> bool:
    return consumer.startswith(LOADGEN)


#: what a simulator's figures are labelled with: ``simulated (<the profiles' method>)`` (sim)
SIMULATED = "simulated"
_SIMULATED = re.compile(r"^simulated \((.+)\)$")
#: a '+' outside parentheses: the parts of a joined label (a simulated part holds its own '+')
_TOP_PLUS = re.compile(r"\+(?![^()]*\))")


def simulated(label: str) -> str:
    """The label of a figure a simulator computed from profiles of method(s) `label`."""
    return f"{SIMULATED} ({label})"


def split_methods(label: str | None) -> list[str]:
    """The parts of a label: ``"tdp-estimate+zeus-nvml"`` → both; None or "" → none.
    ``"simulated (tdp-estimate)"`` is one part (see :func:`base_methods`)."""
    return [m for m in _TOP_PLUS.split(label or "") if m]


def base_methods(label: str | None) -> list[str]:
    """The methods behind a label, a simulated part unwrapped: what the numbers rest on."""
    out = []
    for part in split_methods(label):
        inner = _SIMULATED.match(part)
        out += base_methods(inner.group(1)) if inner else [part]
    return out


def is_simulated(label: str | None) -> bool:
    return any(_SIMULATED.match(part) for part in split_methods(label))


def join_methods(labels: Iterable[str | None]) -> str | None:
    """The one rule for a figure made of several: distinct parts, sorted, joined by '+'.

    Labels that are already joined are split first; None when there are none.
    """
    return "+".join(sorted({m for label in labels for m in split_methods(label)})) or None


def is_measured(label: str | None) -> bool:
    """True only if every method of the label is a measurement (no tdp-estimate part, nothing simulated)."""
    methods = split_methods(label)
    return bool(methods) and all(m in MEASURED for m in methods)


def _check_label(label: str) -> str:
    unknown = [m for m in split_methods(label) if m not in METHODS and not _valid_simulated(m)]
    if unknown or not label:
        raise ValueError(f"energy method label {label!r}: want methods of {list(METHODS)} (or 'simulated (<label>)') "
                         "joined by '+'")
    if join_methods([label]) != label:
        raise ValueError(f"energy method label {label!r} is not in canonical form {join_methods([label])!r}")
    return label


def _valid_simulated(part: str) -> bool:
    inner = _SIMULATED.match(part)
    if inner is None:
        return False
    try:
        _check_label(inner.group(1))
    except ValueError:
        return False
    return not is_simulated(inner.group(1))


#: one method, or several joined by :func:`join_methods` (validated)
MethodLabel = Annotated[str, AfterValidator(_check_label)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnergyPart(_Model):
    """One device class's part of a figure."""

    j: float = Field(ge=0, description="Energy (J).")
    method: MethodLabel


class BatchEnergy(_Model):
    """What a stage replica charges each request of a batch (J per request)."""

    j: float = Field(ge=0, description="Dynamic energy per request (J): the sum of the parts.")
    method: MethodLabel
    parts: dict[str, EnergyPart] = Field(description="'cpu' and each 'gpu:N' → its part (J per request).")
    basis: str = BASIS


class RequestEnergy(_Model):
    """A request's energy over every stage, as its HTTP answer carries it."""

    j: float = Field(ge=0, description="Dynamic energy attributed to the request (J).")
    method: MethodLabel
    carbon_g: float = Field(ge=0, description="g CO2e: J × grid intensity × PUE.")
    stages: dict[str, EnergyPart]


class EnergyRates(_Model):
    """A node's recent energy rates, which replicas charge their batches with."""

    time_s: float = Field(description="When the rates were computed (Unix s).")
    j_per_cpu_s: float = Field(ge=0, description="Active (idle excluded) CPU+DRAM energy per busy CPU second (J/s).")
    gpu_j_per_busy_s: dict[str, float] = Field(default_factory=dict, description="gpu:N → active J per busy second.")
    power_w: dict[str, float] = Field(default_factory=dict, description="device → mean power over the span (W).")
    methods: dict[str, EnergyMethod] = Field(description="device → the method that reads it.")
    window_s: float = Field(0.0, ge=0, description="Span the rates are averaged over (s); 0 = no span yet.")


class EnergyWindow(_Model):
    """One meter of one node over [start_s, end_s]: energy per device, and how it was attributed.

    Invariant: Σ energy_j = Σ consumers_j + other_j + idle_j.
    """

    node_id: str
    start_s: float
    end_s: float
    method: MethodLabel = Field(description="The meter's method; a simulator's windows: 'simulated (<method>)'.")
    energy_j: dict[str, float] = Field(description="device (cpu:0, dram:0, gpu:0, ...) → J in the window.")
    consumers_j: dict[str, float] = Field(default_factory=dict, description="replica → active J attributed to it.")
    other_j: float = Field(0.0, description="Active J of processes not tracked.")
    idle_j: float = Field(0.0, description="Idle J (never attributed).")


class DeviceEnergy(_Model):
    energy_j: float = Field(description="J since the node's energy service started.")
    method: EnergyMethod
    mean_power_w: float
    measured: bool = Field(description="False for tdp-estimate: never present it as a measurement.")
    carbon_g: float | None = None


class NodeEnergyReport(_Model):
    """One node's totals since its energy actor started: devices = attributed + other + idle."""

    node_id: str
    start_s: float | None
    end_s: float
    devices: dict[str, DeviceEnergy] = Field(default_factory=dict)
    idle_w: dict[str, float] = Field(default_factory=dict, description="Idle power per device (W).")
    idle_source: dict[str, str] = Field(default_factory=dict)
    attributed_j: dict[str, float] = Field(default_factory=dict, description="replica → J attributed since start.")
    other_j: float = 0.0
    idle_j: float = 0.0
    consumers: dict[str, dict[str, Any]] = Field(default_factory=dict, description="replica → labels and 'running'.")
    assumptions: dict[str, dict[str, Any]] = Field(default_factory=dict, description="meter → what an estimate assumed.")
    actor_cpu_s: float = Field(0.0, description="CPU seconds the energy actor itself used.")
    overhead_cpu_percent_of_one_core: float = 0.0
    overhead_cpu_percent_of_node: float = 0.0
    restarts: int = Field(0, description="Times this node's energy service was started again and went on from "
                                         "its checkpoint (energy.accounting.journal).")
    unmetered_s: float = Field(0.0, description="Seconds since start_s whose energy no meter read: at most the time "
                                                "from each restarted service's last checkpoint to its first sample (s).")


class PipelineEnergy(_Model):
    requests: int
    energy_j: float
    methods: list[str]
    j_per_request: float
    carbon_g: float


class EnergyReport(_Model):
    """``GET /v1/energy``: node energy by device and method, J/request by pipeline."""

    unit: Literal["J"] = "J"
    carbon: dict[str, float] = Field(description="g_per_kwh and pue used for carbon.")
    pipelines: dict[str, PipelineEnergy] = Field(default_factory=dict)
    nodes: list[NodeEnergyReport | dict[str, str]] = Field(
        default_factory=list, description="A report per node, or {node_id, error} for one that did not answer.")
