"""The planner's constants, gathered: defaults of the program and of the adaptation loop."""

from __future__ import annotations

__all__ = [
    "DEFAULT_BATCH_SIZES", "DEFAULT_MAX_REPLICAS", "DEFAULT_MAX_VARIANTS", "LAT_TOL", "MAX_WAIT_MS", "MIN_LOAD_RPS",
    "OBJ_TOL", "WAIT_HYSTERESIS",
]

#: batch sizes the program chooses among (profiles are fitted where not measured)
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
#: replica cap N per stage
DEFAULT_MAX_REPLICAS = 16
#: most variants in an infadapter mix (InfAdapter keeps the set small)
DEFAULT_MAX_VARIANTS = 3
#: objective values within this (absolute) count as equal: the fewest-changes tie-break
OBJ_TOL = 1e-7
#: latency slack (ms) for float round-off in the SLA constraint
LAT_TOL = 1e-9
#: longest batch wait a plan sets (ms; Serve's batch_wait_timeout_s is capped the same way)
MAX_WAIT_MS = 10_000.0
#: solving for zero load is degenerate (batch-fill time (b-1)/λ): the loop plans at least this (req/s)
MIN_LOAD_RPS = 0.1
#: a batch wait that moves less than this factor is not worth a reconfigure
WAIT_HYSTERESIS = 2.0
