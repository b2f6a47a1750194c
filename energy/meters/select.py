"""Which meters a node uses: the best one for its CPUs (always one) and one for its GPUs.

CPUs: Zeus's RAPL layer, else powercap sysfs, else the ``tdp-estimate`` meter (also when
``EnergyConfig.force_estimate``). GPUs: Zeus/NVML where there are any.
"""

from __future__ import annotations

import logging
from typing import Callable

from energy.config import EnergyConfig
from energy.meters.base import Meter, MeterUnavailable

__all__ = ["select_meters"]

logger = logging.getLogger(__name__)


def select_meters(config: EnergyConfig) -> list[Meter]:
    """The best meter for the CPUs (always one) and for the GPUs (where there are any)."""
    from energy.meters.tdp import TdpEstimateMeter
    from energy.meters.zeus import ZeusCpuMeter, ZeusGpuMeter

    meters: list[Meter] = []
    cpu_candidates: list[Callable[[], Meter]] = [ZeusCpuMeter]
    try:
        from energy.meters.rapl import RaplSysfsMeter

        cpu_candidates.append(RaplSysfsMeter)
    except ImportError:
        pass
    if config.force_estimate:
        cpu_candidates = []
    for make in cpu_candidates:
        try:
            meters.append(make())
            break
        except MeterUnavailable as e:
            logger.info("CPU meter %s unavailable: %s", getattr(make, "__name__", make), e)
    else:
        meters.append(TdpEstimateMeter(cpu_tdp_w=config.cpu_tdp_w, cpu_idle_w=config.cpu_idle_w))
    try:
        meters.append(ZeusGpuMeter())
    except MeterUnavailable as e:
        logger.info("GPU meter unavailable: %s", e)
    return meters
