"""The planner's constants, gathered: defaults of the program and of the adaptation loop."""

from __future__ import annotations

__all__ = [
    "DEFAULT_BATCH_SIZES", "DEFAULT_MAX_REPLICAS", "DEFAULT_MAX_VARIANTS", "HISTORY_S", "LAT_TOL", "MAX_WAIT_MS", "MEMORY_FRACTION",
    "MIN_LOAD_RPS", "MIN_P99_CALLS", "OBJ_TOL", "SERVING_CPU_S", "STARTING_REPLICA_CORES", "SURGE_WINDOW_S", "SURGE_Z", "TREND_WINDOW_S", "UTILISATION_GRID",
    "WAIT_HYSTERESIS",
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
#: node utilisation caps ρ the program tries: each stretches service times by the contention
#: it implies (planner.capacity.stretch), so the SLA, not a tuned constant, picks the cap
UTILISATION_GRID = (0.5, 0.6, 0.7, 0.8, 0.9)
#: CPU core-seconds a request costs outside its stages: the ingress (~10 ms) and Serve's HTTP
#: proxy (~9 ms), measured as their processes' CPU time over 100 requests at 5 req/s on the
#: 2-core host (issue 11 notes); the planner counts it against the cluster's cores
SERVING_CPU_S = 0.02
#: share of a cluster's memory the replicas may hold (the rest: the OS, Ray, the serving path)
MEMORY_FRACTION = 0.8
#: seconds of arrivals the load predictor reads (IPA's LSTM: 12 slices of 10 s); a scale-in must
#: also serve the busiest second of them (planner.loop)
HISTORY_S = 120
#: fewest calls of a stage whose p99 the closed loop compares with the model's: the p99 of fewer
#: is their largest or second largest (the 94th percentile of 15 calls, at 1.5 req/s over an
#: interval), and reads as the model overpredicting; the loop pools the running plan's calls
#: over up to HISTORY_S until there are this many (planner.loop.PlannerLoop.p99_window_s)
MIN_P99_CALLS = 100
#: seconds of arrivals the planner fits a line through to see a ramp ahead of its predictor
TREND_WINDOW_S = 60
#: seconds of arrivals the planner watches between intervals for a surge past its plan's load
SURGE_WINDOW_S = 3
#: a surge: arrivals in that window above λ·w + z·√(λ·w) at the plan's load λ (a Poisson count
#: exceeds it by chance about once in 700 windows at z = 3; usually far rarer, as λ is a peak forecast)
SURGE_Z = 3.0
#: cores a replica takes while it cold-starts (a fresh process imports torch, builds and warms its
#: model up on one thread: 5.6 s of CPU in 5.6 s of wall for resnet152-112-mini, 5.1 in 5.0 for
#: resnet50, measured on the 2-core host); what the running replicas serve meanwhile has the rest
STARTING_REPLICA_CORES = 1.0
#: a batch wait that moves less than this factor is not worth a reconfigure
WAIT_HYSTERESIS = 2.0
