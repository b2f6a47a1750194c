"""serve_app's constants, gathered: names, periods and limits of the running application."""

from __future__ import annotations

__all__ = [
    "APP_NAME", "ARRIVAL_PUSH_S", "ARRIVALS_HISTORY_S", "ARRIVALS_STALE_S", "CONTROLLER", "CONVERGE_POLL_S", "INGRESS",
    "LATENCY_BUCKETS_MS", "NODE_WATCH_S", "STAGE_SHUTDOWN_S", "TOKEN_ENV",
]

#: the Serve application name `ipa-energy serve`, the planner and experiments use by default
APP_NAME = "ipa"
#: deployment names of the ingress and the plan controller (stage deployments are pipeline.stage.variant)
INGRESS = "Ingress"
CONTROLLER = "PlanController"
#: environment variable holding the bearer token of PUT /v1/plan
TOKEN_ENV = "IPA_ENERGY_TOKEN"
#: how often an ingress replica pushes its arrival counts to the app's arrivals actor (s)
ARRIVAL_PUSH_S = 1.0
#: seconds of per-second arrival counts kept
ARRIVALS_HISTORY_S = 600
#: an ingress replica silent for longer no longer bounds the arrival history's end (s)
ARRIVALS_STALE_S = 5.0
#: how often the ingress looks for nodes that joined (to start their energy actors) (s)
NODE_WATCH_S = 30.0
#: how often the plan controller polls Serve while a step converges (s)
CONVERGE_POLL_S = 0.1
#: bucket boundaries (ms) of the pipeline latency histogram: they include every catalog SLA
LATENCY_BUCKETS_MS = (50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000, 7500, 10000, 20000, 60000)
#: a removed variant's replicas get this long to finish what they hold (a saturated CPU drains slowly) (s)
STAGE_SHUTDOWN_S = 120.0
