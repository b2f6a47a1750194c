"""A two-node local Ray cluster (ray.cluster_utils.Cluster) serving the classify pipeline, probed
end to end; run by test_multinode.py in a process of its own (the suite's Ray session stays
untouched). Prints one JSON line: what the test asserts on.

    .venv/bin/python tests/integration/multinode_probe.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from energy.actor import ensure_node_actors  # noqa: E402
from experiments.runner import ExperimentConfig, run_experiment  # noqa: E402
from experiments.summary import load_run  # noqa: E402
from loadgen.traces import parse_trace  # noqa: E402
from serve_app import control  # noqa: E402
from serve_app.config import from_args  # noqa: E402
from workloads import payloads  # noqa: E402

REPLICAS = 4  # 0.5 CPU each: two nodes of one logical CPU must both hold some


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(out: Path) -> dict:
    control.node_environment()  # before the nodes start: they inherit it
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"
        spec, plans = from_args({"pipelines": "classify"})
        plan = plans["classify"]
        stage = next(iter(plan.stages))
        plan = plan.model_copy(update={"stages": {stage: plan.stages[stage].model_copy(update={"replicas": REPLICAS})}})
        control.deploy(spec, {"classify": plan})
        answered = sum(httpx.post(f"{url}/v1/pipelines/classify", json=payloads.image_request(seed=i), timeout=120)
                       .status_code == 200 for i in range(12))
        nodes = {n["NodeID"]: n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")}
        # the GCS actor table (the state API needs the dashboard, which this cluster does not run)
        replicas = Counter(a["Address"]["NodeID"] for a in ray._private.state.actors().values()
                           if a["State"] == "ALIVE" and "#classify.classifier" in a["Name"])
        actors = ensure_node_actors(spec.energy)
        time.sleep(3)  # a few energy samples on every node
        energy = httpx.get(f"{url}/v1/energy", timeout=60).json()
        cfg = ExperimentConfig(name="multinode", pipeline="classify", policies=["static-min-energy"],
                               trace=parse_trace("constant:2", 15), out=out, address=cluster.address, url=url,
                               drain_s=15, max_replicas=REPLICAS, settle_s=1.0)
        exp = run_experiment(cfg)
        run = load_run(exp / "static-min-energy")
        return {
            "nodes": nodes,
            "answered": answered,
            "replica_cpus_by_node": {n: 0.5 * k for n, k in replicas.items()},
            "energy_actor_nodes": sorted(actors),
            "v1_energy_nodes": sorted(n["node_id"] for n in energy["nodes"] if "devices" in n),
            "results_energy_nodes": sorted({w.node_id for w in run.energy}),
            "results_requests": len(run.requests),
            "results_answered": sum(r.status == 200 for r in run.requests),
        }
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()


if __name__ == "__main__":
    result = main(Path(sys.argv[1]))
    print(json.dumps(result), flush=True)
