"""workloads' constants shared by the catalog and the SAM builders."""

from __future__ import annotations

from ipa_energy.spec import Resources

__all__ = ["MINI_CPU", "TIERS"]

#: catalog tiers: `mini` (scaled-down stand-ins that run on a CPU) and `full` (the published architectures)
TIERS = ("mini", "full")
#: what one mini replica reserves
MINI_CPU = Resources(num_cpus=0.5)
