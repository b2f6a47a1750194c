"""Multi-node for real (issue 13): two Ray nodes on this host, in a process of their own
(tests/integration/multinode_probe.py), so the suite's shared Ray session is not disturbed."""

import json
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).with_name("multinode_probe.py")


def test_two_nodes_each_have_an_energy_actor_hold_replicas_within_capacity_and_report_energy(tmp_path):
    proc = subprocess.run([sys.executable, str(PROBE), str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    nodes = r["nodes"]
    assert len(nodes) == 2
    assert r["answered"] == 12
    assert r["energy_actor_nodes"] == sorted(nodes)  # one energy actor per node
    # Serve spread the replicas: both nodes hold some, none beyond its CPUs
    assert set(r["replica_cpus_by_node"]) == set(nodes)
    assert all(cpus <= nodes[n] + 1e-9 for n, cpus in r["replica_cpus_by_node"].items())
    assert r["v1_energy_nodes"] == sorted(nodes)  # per-node energy in GET /v1/energy
    assert r["results_energy_nodes"] == sorted(nodes)  # and in an experiment's results
    assert r["results_requests"] == 30 and r["results_answered"] == 30
