"""serve_app's constants, gathered: names, periods and limits of the running application."""

from __future__ import annotations

__all__ = [
    "APP_NAME", "ARRIVAL_PUSH_S", "ARRIVALS_HISTORY_S", "ARRIVALS_STALE_S", "CONTROLLER", "CONVERGE_POLL_S", "INGRESS",
    "FAST_PATH_ENV", "INLINE_PARSE_BYTES", "LATENCY_BUCKETS_MS", "NODE_ENV", "NODE_WATCH_S", "STAGE_SHUTDOWN_S", "SWITCH_POLL_S",
    "TOKEN_ENV",
]

#: the Serve application name `ipa-energy serve`, the planner and experiments use by default
APP_NAME = "ipa"
#: deployment names of the ingress and the plan controller (stage deployments are slots: pipeline.stage.0, serve_app.layout)
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
#: how often the plan controller asks the registry whether a slot's replicas have switched variant (s)
SWITCH_POLL_S = 0.2
#: bucket boundaries (ms) of the pipeline latency histogram: they include every catalog SLA
LATENCY_BUCKETS_MS = (50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000, 7500, 10000, 20000, 60000)
#: Ray Serve runs a replica's user code, and the router of its deployment handles, on event
#: loops of their own threads by default. On a small host the cross-thread hops of a pipeline
#: request (proxy → ingress → stage → ingress) cost ~10–25 ms (bench/overhead.py; notes of issue
#: 10). The ingress and the stage replicas never block their event loop (parsing, decoding and
#: the model run in worker threads), so they run both on the replica's own loop, as Serve's
#: throughput-optimized mode does. The plan controller, which blocks for minutes, keeps the defaults.
#: Their per-request access log lines are buffered (flushed every 1000 lines, and at once for
#: an error) rather than written one by one.
FAST_PATH_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
                 "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000"}
#: Read by processes Serve starts itself (its HTTP proxy), so they must be in the environment
#: of whatever starts the Ray node (serve_app.control.node_environment; `ray start` in
#: cluster.yaml). The proxy forwards each HTTP request to the ingress over gRPC, as a stage
#: call does, instead of a Ray actor call after which the replica fetches the body back from
#: the proxy with another actor call per request: 10–13 ms less per request on a 2-core host,
#: for any Serve app on the cluster (bench/overhead.py; notes of issue 10).
NODE_ENV = {"RAY_SERVE_PROXY_USE_GRPC": "1"}
#: request bodies up to this size are parsed on the event loop (well under a millisecond:
#: less than a hop to a worker thread costs); larger ones (image decoding checks) in a thread
INLINE_PARSE_BYTES = 64 * 1024
#: a removed variant's replicas get this long to finish what they hold (a saturated CPU drains slowly) (s)
STAGE_SHUTDOWN_S = 120.0
