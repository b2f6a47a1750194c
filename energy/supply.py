"""What this node can give replicas: physical cores, memory, GPUs with their memory.

Read where it runs (the node's energy actor calls it, so each node reports its own host).
"""

from __future__ import annotations

import os

from ipa_energy.cluster import GpuSupply, NodeSupply

__all__ = ["host_supply", "physical_cores"]


def physical_cores() -> int:
    """This host's physical cores (psutil), else its logical CPUs."""
    import psutil

    return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)


def host_supply(node_id: str) -> dict:
    """This host's physical cores, memory and NVIDIA GPUs (where NVML answers), as a dumped NodeSupply."""
    import psutil

    gpus: list[GpuSupply] = []
    try:
        import pynvml

        pynvml.nvmlInit()
        for i in range(pynvml.nvmlDeviceGetCount()):
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i))
            gpus.append(GpuSupply(index=i, memory_mb=info.total / 2**20))
    except Exception:  # no driver, no GPU: a CPU node
        gpus = []
    return NodeSupply(node_id=node_id, cores=physical_cores(), memory_mb=psutil.virtual_memory().total / 2**20,
                      gpus=tuple(gpus)).model_dump()  # dumped at the actor boundary
