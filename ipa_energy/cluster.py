"""What a cluster gives replicas: each node's physical cores, memory and GPUs.

Read on each node by its agent (``energy.supply.host_supply`` in the node's energy actor),
carried to the planner as these models; offline, a file of the same shape.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ClusterSupply", "GpuSupply", "NodeSupply"]


class GpuSupply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0)
    memory_mb: float = Field(gt=0, description="The GPU's memory (MiB).")


class NodeSupply(BaseModel):
    """One node as replicas consume it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str
    cores: float = Field(gt=0, description="Physical cores (not logical CPUs: hyper-threads share a core).")
    memory_mb: float = Field(gt=0, description="Physical memory (MiB).")
    gpus: tuple[GpuSupply, ...] = ()
    outside_cores: float = Field(0.0, ge=0, description="Cores recently busy outside the stage replicas (the serving "
                                 "path, Ray's own daemons, a co-located load generator, the OS), measured by the "
                                 "node's energy actor over its last seconds (0: not measured).")


class ClusterSupply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    nodes: tuple[NodeSupply, ...] = Field(min_length=1)
    source: str = Field(description="Where the figures come from: 'ray', 'this host', or a file.")
    background_cores: float = Field(0.0, ge=0, description="Cores the plan cannot have: busy outside the stage "
                                    "replicas and beyond the modelled serving path (the planner sets it each interval).")

    @property
    def outside_cores(self) -> float:
        return sum(n.outside_cores for n in self.nodes)

    @property
    def outside_share(self) -> float:
        """The share of the cores of the nodes in use (those that read some load outside the
        replicas) busy outside them: what a node in use has left for replicas is 1 − this."""
        busy = [n for n in self.nodes if n.outside_cores > 0]
        return sum(n.outside_cores for n in busy) / sum(n.cores for n in busy) if busy else 0.0

    def with_background(self, serving_cores: float, outside_cores: float | None = None) -> ClusterSupply:
        """This supply with `background_cores` = what is busy outside the stages (`outside_cores`,
        default this supply's own reading) less the serving path the program counts itself
        (`serving_cores`: λ × its CPU seconds per request)."""
        outside = self.outside_cores if outside_cores is None else outside_cores
        return self.model_copy(update={"background_cores": max(0.0, outside - serving_cores)})

    @property
    def cores(self) -> float:
        return sum(n.cores for n in self.nodes)

    @property
    def memory_mb(self) -> float:
        return sum(n.memory_mb for n in self.nodes)
